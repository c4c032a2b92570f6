package dkim

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// Keys are generated once: RSA generation is slow.
var testKeys = sync.OnceValues(func() (map[string][]byte, error) {
	out := map[string][]byte{}
	for _, algo := range []string{AlgorithmRSA, AlgorithmEd25519} {
		k, err := GenerateKey(algo)
		if err != nil {
			return nil, err
		}
		out[algo] = k
	}
	return out, nil
})

// key returns a test key of domain example.com with selector sel.
func key(t testing.TB, algo, sel string) Key {
	t.Helper()
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	return Key{Domain: "example.com", Selector: sel, PrivateKey: ks[algo]}
}

// algorithmOf returns "rsa" or "ed25519" for a key.
func algorithmOf(t testing.TB, k Key) string {
	t.Helper()
	_, alg, err := ParsePrivateKey(k.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return alg
}

// zone maps TXT owner names (without trailing dot) to values, as a lookup.
type zone map[string]string

func (z zone) add(t testing.TB, k Key) {
	t.Helper()
	name, value, err := DNSRecord(k.Domain, k.Selector, k.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	z[strings.TrimSuffix(name, ".")] = value
}

func (z zone) lookup(_ context.Context, name string) ([]string, error) {
	v, ok := z[strings.ToLower(strings.TrimSuffix(name, "."))]
	if !ok {
		return nil, fmt.Errorf("%s: %w", name, resolve.ErrNotFound)
	}
	return []string{v}, nil
}

// testMessage returns a message of about size bytes with CRLF endings.
func testMessage(size int) []byte {
	var b bytes.Buffer
	b.WriteString("Received: from client.example by mx.example.com; Thu, 26 Nov 2026 12:00:00 +0000\r\n" +
		"From: Alice Example <alice@example.com>\r\n" +
		"To: Bob <bob@example.org>, carol@example.net\r\n" +
		"Subject: Quarterly report\r\n" +
		"\tcontinued subject line\r\n" +
		"Date: Thu, 26 Nov 2026 12:00:00 +0000\r\n" +
		"Message-ID: <report-1@example.com>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"X-Mailer: test\r\n" +
		"\r\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "Line %04d of the body,   with  some   spaces and a trailing tab\t\r\n", i)
	}
	return b.Bytes()
}

// sign signs msg with keys, writing it in chunks of chunk bytes (0: at
// once), and returns the signature fields and the signed message.
func sign(t testing.TB, keys []Key, opts SignOptions, msg []byte, chunk int) (sigs, signed []byte) {
	t.Helper()
	s, err := NewSigner(keys, opts)
	if err != nil {
		t.Fatal(err)
	}
	if chunk <= 0 {
		chunk = len(msg) + 1
	}
	for p := msg; len(p) > 0; {
		n := min(chunk, len(p))
		if w, err := s.Write(p[:n]); w != n || err != nil {
			t.Fatalf("Write = %d, %v", w, err)
		}
		p = p[n:]
	}
	h, err := s.Headers()
	if err != nil {
		t.Fatalf("Headers: %v", err)
	}
	return h, append(append([]byte{}, h...), msg...)
}

func verify(t testing.TB, msg []byte, lookup LookupTXT) []Result {
	t.Helper()
	res, err := Verify(context.Background(), bytes.NewReader(msg), lookup)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

// tagValue returns a tag of the first DKIM-Signature in sig.
func tagValue(sig []byte, tag string) string {
	tags := signatureFields(sig)
	if len(tags) == 0 {
		return ""
	}
	return tags[0][tag]
}

func TestGenerateKeyAndDNSRecord(t *testing.T) {
	t.Parallel()
	ks, err := testKeys()
	if err != nil {
		t.Fatal(err)
	}
	for algo, pemKey := range ks {
		signer, got, err := ParsePrivateKey(pemKey)
		if err != nil || got != algo {
			t.Fatalf("ParsePrivateKey(%s key) = %s, %v", algo, got, err)
		}
		if !bytes.HasPrefix(pemKey, []byte("-----BEGIN PRIVATE KEY-----\n")) {
			t.Errorf("%s key is not PKCS#8 PEM: %.40q", algo, pemKey)
		}
		name, value, err := DNSRecord("Example.COM", "S1", pemKey)
		if err != nil {
			t.Fatal(err)
		}
		if name != "s1._domainkey.example.com." {
			t.Errorf("%s name = %q", algo, name)
		}
		prefix := "v=DKIM1; k=" + algo + "; p="
		if !strings.HasPrefix(value, prefix) {
			t.Fatalf("%s value = %q", algo, value)
		}
		p, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(value, prefix))
		if err != nil {
			t.Fatal(err)
		}
		switch algo {
		case AlgorithmRSA:
			pub, err := x509.ParsePKIXPublicKey(p)
			if err != nil || !pub.(*rsa.PublicKey).Equal(signer.Public()) || pub.(*rsa.PublicKey).N.BitLen() != 2048 {
				t.Errorf("RSA p= does not hold the 2048-bit public key: %v", err)
			}
		case AlgorithmEd25519:
			if !bytes.Equal(p, signer.Public().(ed25519.PublicKey)) {
				t.Errorf("Ed25519 p= is not the raw public key")
			}
		}
		line := FormatZoneLine(name, value)
		if !strings.HasPrefix(line, name+" IN TXT ( \"") || !strings.HasSuffix(line, "\" )") {
			t.Errorf("zone line %q", line)
		}
		var joined string
		for i, part := range strings.Split(line[strings.Index(line, "(")+1:strings.LastIndex(line, ")")], "\"") {
			if i%2 == 1 {
				if len(part) > 255 {
					t.Errorf("TXT string of %d bytes", len(part))
				}
				joined += part
			}
		}
		if joined != value {
			t.Errorf("zone line strings join to %q, want %q", joined, value)
		}
	}
	if _, err := GenerateKey("dsa"); err == nil {
		t.Error("GenerateKey(dsa) succeeded")
	}
	if _, _, err := DNSRecord("example.com", "bad selector", ks["rsa"]); err == nil {
		t.Error("DNSRecord accepted a selector with a space")
	}
	if _, _, err := DNSRecord("example.com", "s1", []byte("not a key")); err == nil {
		t.Error("DNSRecord accepted garbage as a key")
	}
}

func TestSignVerify(t *testing.T) {
	t.Parallel()
	msg := testMessage(4 << 10)
	for _, tc := range []struct {
		name string
		keys []Key
	}{
		{"rsa", []Key{key(t, "rsa", "r1")}},
		{"ed25519", []Key{key(t, "ed25519", "e1")}},
		{"dual", []Key{key(t, "rsa", "r1"), key(t, "ed25519", "e1")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			z := zone{}
			for _, k := range tc.keys {
				z.add(t, k)
			}
			sigs, signed := sign(t, tc.keys, SignOptions{}, msg, 0)
			if n := bytes.Count(sigs, []byte("DKIM-Signature:")); n != len(tc.keys) {
				t.Fatalf("%d signature fields for %d keys:\n%s", n, len(tc.keys), sigs)
			}
			if !bytes.HasSuffix(sigs, []byte("\r\n")) || bytes.Contains(bytes.ReplaceAll(sigs, []byte("\r\n"), nil), []byte("\n")) {
				t.Errorf("signature fields not CRLF-terminated:\n%q", sigs)
			}
			res := verify(t, signed, z.lookup)
			if len(res) != len(tc.keys) {
				t.Fatalf("%d results, want %d", len(res), len(tc.keys))
			}
			for i, r := range res {
				k := tc.keys[i]
				if r.Result != ResultPass || r.Domain != "example.com" || r.Selector != k.Selector ||
					r.Algorithm != algorithmOf(t, k)+"-sha256" || r.Identifier != "@example.com" {
					t.Errorf("result %d = %+v", i, r)
				}
				if len(r.HeaderB) < 8 || !strings.HasPrefix(signatureFields(sigs)[i]["b"], r.HeaderB) {
					t.Errorf("header.b %q is not a prefix of b=", r.HeaderB)
				}
			}
			h := strings.ToLower(tagValue(sigs, "h"))
			if want := "from:to:subject:date:message-id:mime-version:content-type:from"; !sameSet(h, want) {
				t.Errorf("h=%s, want the fields of %s", h, want)
			}
			if strings.Contains(h, "received") || strings.Contains(h, "x-mailer") {
				t.Errorf("h=%s signs trace or private fields", h)
			}
			if c := tagValue(sigs, "c"); c != "relaxed/relaxed" {
				t.Errorf("c=%s", c)
			}
			if ts := tagValue(sigs, "t"); ts == "" || tagValue(sigs, "x") != "" {
				t.Errorf("t=%q x=%q, want t= and no x=", ts, tagValue(sigs, "x"))
			}
		})
	}
}

// sameSet compares colon lists as multisets.
func sameSet(a, b string) bool {
	count := map[string]int{}
	for f := range strings.SplitSeq(a, ":") {
		count[f]++
	}
	for f := range strings.SplitSeq(b, ":") {
		count[f]--
	}
	for _, n := range count {
		if n != 0 {
			return false
		}
	}
	return true
}

// Writing in any chunking gives the same signature input, and the header
// end may straddle writes.
func TestSignStreaming(t *testing.T) {
	t.Parallel()
	msg := testMessage(8 << 10)
	k := key(t, "ed25519", "e1")
	z := zone{}
	z.add(t, k)
	ref, _ := sign(t, []Key{k}, SignOptions{}, msg, 0)
	for _, chunk := range []int{1, 2, 3, 7, 100, 4096} {
		sigs, signed := sign(t, []Key{k}, SignOptions{}, msg, chunk)
		if tagValue(sigs, "bh") != tagValue(ref, "bh") || tagValue(sigs, "h") != tagValue(ref, "h") {
			t.Errorf("chunk %d: bh/h differ from a single write", chunk)
		}
		if r := verify(t, signed, z.lookup); r[0].Result != ResultPass {
			t.Errorf("chunk %d: %+v", chunk, r[0])
		}
	}
	// A message that is all header (no blank line) still signs.
	hdrOnly := []byte("From: a@example.com\r\nSubject: x\r\n")
	sigs, _ := sign(t, []Key{k}, SignOptions{}, hdrOnly, 5)
	if r := verify(t, append(append([]byte{}, sigs...), hdrOnly...), z.lookup); r[0].Result != ResultPass {
		t.Errorf("header-only message: %+v", r[0])
	}
}

func TestVerifyFailures(t *testing.T) {
	t.Parallel()
	k := key(t, "rsa", "r1")
	z := zone{}
	z.add(t, k)
	msg := testMessage(2 << 10)
	sigs, signed := sign(t, []Key{k}, SignOptions{}, msg, 0)
	if r := verify(t, signed, z.lookup); r[0].Result != ResultPass {
		t.Fatalf("untouched message: %+v", r[0])
	}
	expired, _ := sign(t, []Key{k}, SignOptions{
		Expiration: time.Hour,
		Now:        func() time.Time { return time.Now().Add(-2 * time.Hour) },
	}, msg, 0)
	temp := func(_ context.Context, name string) ([]string, error) {
		return nil, fmt.Errorf("%s: i/o timeout: %w", name, resolve.ErrTemporary)
	}
	revoked := zone{"r1._domainkey.example.com": "v=DKIM1; k=rsa; p="}
	for _, tc := range []struct {
		name   string
		msg    []byte
		lookup LookupTXT
		want   string
		reason string
	}{
		{"body changed", bytes.Replace(signed, []byte("Line 0003"), []byte("Line 9999"), 1), z.lookup, ResultFail, "body hash"},
		{"line added to body", append(append([]byte{}, signed...), "P.S. pay here\r\n"...), z.lookup, ResultFail, "body hash"},
		{"subject changed", bytes.Replace(signed, []byte("Subject: Quarterly"), []byte("Subject: Urgent"), 1), z.lookup, ResultFail, "signature"},
		{"second From on top", append([]byte("From: ceo@example.com\r\n"), signed...), z.lookup, ResultFail, "signature"},
		{"second From below", bytes.Replace(signed, []byte("X-Mailer: test\r\n"), []byte("X-Mailer: test\r\nFrom: ceo@example.com\r\n"), 1), z.lookup, ResultFail, "signature"},
		{"missing key", signed, zone{}.lookup, ResultPermError, "no key"},
		{"revoked key", signed, revoked.lookup, ResultPermError, "revoked"},
		{"DNS timeout", signed, temp, ResultTempError, "unavailable"},
		{"expired", append(append([]byte{}, expired...), msg...), z.lookup, ResultPermError, "expired"},
	} {
		r := verify(t, tc.msg, tc.lookup)
		if len(r) != 1 || r[0].Result != tc.want || !strings.Contains(r[0].Reason, tc.reason) {
			t.Errorf("%s: got %+v, want %s (%s)", tc.name, r, tc.want, tc.reason)
		}
		if r[0].Domain != "example.com" || r[0].Selector != "r1" {
			t.Errorf("%s: domain/selector %q/%q", tc.name, r[0].Domain, r[0].Selector)
		}
	}
	_ = sigs

	// Without over-signing, a From added on top passes: the reason From is
	// listed once more than it occurs.
	_, plain := sign(t, []Key{k}, SignOptions{Oversign: []string{}}, msg, 0)
	if r := verify(t, append([]byte("From: ceo@example.com\r\n"), plain...), z.lookup); r[0].Result != ResultPass {
		t.Errorf("control without over-signing: %+v (expected the weakness to show)", r[0])
	}
}

func TestVerifyNoneAndLimit(t *testing.T) {
	t.Parallel()
	msg := testMessage(1 << 10)
	r := verify(t, msg, zone{}.lookup)
	if len(r) != 1 || r[0].Result != ResultNone {
		t.Errorf("unsigned message: %+v", r)
	}
	// Seven signatures: only MaxSignatures are checked.
	z := zone{}
	signed := msg
	for i := range 7 {
		k := key(t, "ed25519", fmt.Sprintf("e%d", i))
		z.add(t, k)
		var sigs []byte
		sigs, signed = sign(t, []Key{k}, SignOptions{}, signed, 0)
		_ = sigs
	}
	r = verify(t, signed, z.lookup)
	if len(r) != MaxSignatures {
		t.Fatalf("%d results for 7 signatures, want %d", len(r), MaxSignatures)
	}
	seen := map[string]bool{}
	for _, x := range r {
		if x.Result != ResultPass {
			t.Errorf("%+v", x)
		}
		if seen[x.HeaderB] {
			t.Errorf("header.b %q not unique", x.HeaderB)
		}
		seen[x.HeaderB] = true
	}
}

func TestFromDomain(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		header, want string
	}{
		{"From: Alice <alice@Example.COM>\r\nTo: b@x.example\r\n\r\n", "example.com"},
		{"from: alice@example.com\r\n", "example.com"},
		{"Subject: x\r\nFrom: =?utf-8?q?J=C3=B6rg?=\r\n <j@B\xc3\xbccher.example>\r\n\r\nbody", "xn--bcher-kva.example"},
		{"From: \"Weird, Name\" <a@sub.example.org>\r\n\r\n", "sub.example.org"},
		{"From: =?x-unknown?q?abc?= <a@example.net>\r\n\r\n", "example.net"},
		{"To: b@example.com\r\n\r\n", "error"},
		{"From: a@example.com\r\nFrom: b@example.org\r\n\r\n", "error"},
		{"From: a@example.com, b@example.com\r\n\r\n", "error"},
		{"From: undisclosed:;\r\n\r\n", "error"},
		{"From: nobody\r\n\r\n", "error"},
		{"From: a@[192.0.2.1]\r\n\r\n", "error"},
	} {
		got, err := FromDomain([]byte(tc.header))
		if err != nil {
			got = "error"
		}
		if got != tc.want {
			t.Errorf("FromDomain(%q) = %q (%v), want %q", tc.header, got, err, tc.want)
		}
	}
}

func TestSignerErrors(t *testing.T) {
	t.Parallel()
	if _, err := NewSigner(nil, SignOptions{}); !errors.Is(err, ErrNoKeys) {
		t.Errorf("NewSigner(no keys) = %v", err)
	}
	if _, err := NewSigner([]Key{{Domain: "example.com", Selector: "s", PrivateKey: []byte("junk")}}, SignOptions{}); err == nil {
		t.Error("NewSigner accepted a bad key")
	}
	k := key(t, "ed25519", "e1")
	s, err := NewSigner([]Key{k}, SignOptions{MaxHeaderBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	big := "From: a@example.com\r\nSubject: " + strings.Repeat("x", 200) + "\r\n\r\nbody\r\n"
	if n, err := io.WriteString(s, big); n != len(big) || err != nil {
		t.Errorf("Write = %d, %v; a tee must never fail", n, err)
	}
	if _, err := s.Headers(); err == nil || !strings.Contains(err.Error(), "header longer") {
		t.Errorf("Headers after an oversized header: %v", err)
	}
	if _, err := s.Write([]byte("x")); err == nil {
		t.Error("Write after Headers succeeded")
	}
	// Close abandons a signer mid-message without leaking.
	s, _ = NewSigner([]Key{k}, SignOptions{})
	io.WriteString(s, "From: a@example.com\r\n\r\nhalf a bo")
	if err := s.Close(); err != nil {
		t.Error(err)
	}
}

// The TXT record published in zone-file form, served by a real DNS server
// and read with Herald's resolver, verifies; DNS failures classify.
func TestVerifyThroughDNS(t *testing.T) {
	t.Parallel()
	dns := testdns.Start(t)
	keys := []Key{key(t, "rsa", "r1"), key(t, "ed25519", "e1")}
	for _, k := range keys {
		name, value, err := DNSRecord(k.Domain, k.Selector, k.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		dns.Add(FormatZoneLine(name, value))
	}
	client, err := resolve.NewClient(dns.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, signed := sign(t, keys, SignOptions{}, testMessage(1<<10), 0)
	r := verify(t, signed, client.LookupTXT)
	if len(r) != 2 || r[0].Result != ResultPass || r[1].Result != ResultPass {
		t.Fatalf("through DNS: %+v", r)
	}

	dns.SetServfail("r1._domainkey.example.com")
	r = verify(t, signed, client.LookupTXT)
	if r[0].Result != ResultTempError || r[1].Result != ResultPass {
		t.Errorf("SERVFAIL: %+v", r)
	}
	dns.Remove("e1._domainkey.example.com")
	r = verify(t, signed, client.LookupTXT)
	if r[1].Result != ResultPermError {
		t.Errorf("NXDOMAIN: %+v", r[1])
	}

	// A server that never answers: a timeout is a temperror.
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	silent, err := resolve.NewClient(pc.LocalAddr().String(), 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	_, one := sign(t, keys[1:], SignOptions{}, testMessage(1<<10), 0)
	r = verify(t, one, silent.LookupTXT)
	if r[0].Result != ResultTempError {
		t.Errorf("DNS timeout: %+v", r[0])
	}
}

func BenchmarkSign4K(b *testing.B) {
	msg := testMessage(4 << 10)
	for _, tc := range []struct {
		name string
		algs []string
	}{{"rsa", []string{"rsa"}}, {"ed25519", []string{"ed25519"}}, {"dual", []string{"rsa", "ed25519"}}} {
		var keys []Key
		for _, a := range tc.algs {
			keys = append(keys, key(b, a, "s"+a))
		}
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				s, err := NewSigner(keys, SignOptions{})
				if err != nil {
					b.Fatal(err)
				}
				s.Write(msg)
				if _, err := s.Headers(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// Many signed fields: h= is capped so the field stays within line limits,
// From stays signed and the signature verifies.
func TestSignManyFields(t *testing.T) {
	t.Parallel()
	k := key(t, "ed25519", "e1")
	z := zone{}
	z.add(t, k)
	msg := []byte("From: a@example.com\r\n" + strings.Repeat("Cc: someone-with-a-long-name@example.org\r\n", 300) +
		"Resent-From: b@example.com\r\nX-Other: x\r\n\r\nbody\r\n")
	sigs, signed := sign(t, []Key{k}, SignOptions{}, msg, 0)
	for l := range strings.SplitSeq(string(sigs), "\r\n") {
		if len(l) > 998 {
			t.Errorf("signature line of %d bytes", len(l))
		}
	}
	h := strings.Split(strings.ToLower(tagValue(sigs, "h")), ":")
	if len(h) > maxSignedFields+1 || h[len(h)-1] != "from" {
		t.Errorf("h= has %d names: %v...", len(h), h[:3])
	}
	if h[0] != "resent-from" {
		t.Errorf("Resent-* not signed: h=%v...", h[:3])
	}
	if r := verify(t, signed, z.lookup); r[0].Result != ResultPass {
		t.Errorf("%+v", r[0])
	}
}

// NewSignerFor picks the keys of the From domain once the header is seen.
func TestSignerForFromDomain(t *testing.T) {
	t.Parallel()
	keys := map[string][]Key{"example.com": {key(t, "rsa", "r1"), key(t, "ed25519", "e1")}}
	z := zone{}
	for _, k := range keys["example.com"] {
		z.add(t, k)
	}
	sel := func(header []byte) ([]Key, error) {
		d, err := FromDomain(header)
		if err != nil {
			return nil, err
		}
		return keys[d], nil
	}
	for _, tc := range []struct {
		msg     string
		wantErr string
		sigs    int
	}{
		{"From: Alice <alice@EXAMPLE.com>\r\nSubject: hi\r\n\r\nbody\r\n", "", 2},
		{"From: mallory@other.example\r\n\r\nbody\r\n", "no signing key", 0},
		{"From: a@example.com\r\nFrom: b@example.com\r\n\r\nbody\r\n", "2 From fields", 0},
	} {
		s := NewSignerFor(sel, SignOptions{})
		for i := 0; i < len(tc.msg); i += 3 {
			s.Write([]byte(tc.msg[i:min(i+3, len(tc.msg))]))
		}
		h, err := s.Headers()
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err = %v, want %q", tc.msg, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tc.msg, err)
		}
		r := verify(t, append(h, tc.msg...), z.lookup)
		if len(r) != tc.sigs || r[0].Result != ResultPass || r[1].Result != ResultPass {
			t.Errorf("%q: %+v", tc.msg, r)
		}
	}
}
