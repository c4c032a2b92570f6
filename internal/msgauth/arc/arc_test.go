package arc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/resolve"
)

const (
	aar1 = "mx.example.net; spf=pass smtp.mailfrom=example.org; dkim=pass header.d=example.org; dmarc=pass header.from=example.org"
	aar2 = "mx.lists.example.net; arc=pass; dkim=fail header.d=example.org"
)

func verify(t *testing.T, msg []byte, z zone) Result {
	t.Helper()
	res, err := Verify(context.Background(), bytes.NewReader(msg), z.lookup)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

func wantStatus(t *testing.T, res Result, want Status, reasonPart string) {
	t.Helper()
	if res.ChainValidation != want {
		t.Fatalf("ChainValidation = %q (reason %q), want %q", res.ChainValidation, res.Reason, want)
	}
	if reasonPart != "" && !strings.Contains(res.Reason, reasonPart) {
		t.Fatalf("Reason = %q, want it to mention %q", res.Reason, reasonPart)
	}
}

func TestNoARC(t *testing.T) {
	t.Parallel()
	res := verify(t, []byte(baseMessage), zone{})
	wantStatus(t, res, StatusNone, "")
	if res.Instances != 0 || res.AAR != nil {
		t.Fatalf("unexpected %+v", res)
	}
	res = verify(t, nil, zone{})
	wantStatus(t, res, StatusNone, "")
}

func TestPassOneHop(t *testing.T) {
	t.Parallel()
	a, _, ed := keys(t)
	for _, k := range []testKey{a, ed} {
		t.Run(k.alg(), func(t *testing.T) {
			msg := seal(t, []byte(baseMessage), k, "none", aar1)
			res := verify(t, msg, zone{}.add(k))
			wantStatus(t, res, StatusPass, "")
			if res.Instances != 1 || res.OldestPass != 1 || res.Domain != k.d || res.Selector != k.s {
				t.Fatalf("result %+v", res)
			}
			if len(res.AAR) != 1 || res.AAR[0] != aar1 {
				t.Fatalf("AAR = %q", res.AAR)
			}
		})
	}
}

func TestPassThreeHopsMixedKeys(t *testing.T) {
	t.Parallel()
	a, b, ed := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	msg = seal(t, msg, ed, "pass", aar2)
	msg = seal(t, msg, b, "pass", "mx.example.com; arc=pass")
	// An intermediary may add fields that no AMS signs.
	msg = append([]byte("Received: from x by y; Thu, 01 Jan 2026 00:00:01 +0000\r\n"), msg...)
	res := verify(t, msg, zone{}.add(a, b, ed))
	wantStatus(t, res, StatusPass, "")
	if res.Instances != 3 || res.OldestPass != 1 || res.Domain != b.d || res.Selector != b.s {
		t.Fatalf("result %+v", res)
	}
	if len(res.AAR) != 3 || res.AAR[0] != aar1 || res.AAR[1] != aar2 {
		t.Fatalf("AAR = %q", res.AAR)
	}
}

// A list that rewrites the Subject breaks AMS i=1 but reseals: the chain
// passes and oldest-pass says which hop's view of the message survives.
func TestOldestPassAfterModification(t *testing.T) {
	t.Parallel()
	a, b, _ := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	msg = bytes.Replace(msg, []byte("Subject: Hello"), []byte("Subject: [list] Hello"), 1)
	msg = seal(t, msg, b, "pass", aar2)
	res := verify(t, msg, zone{}.add(a, b))
	wantStatus(t, res, StatusPass, "")
	if res.OldestPass != 2 {
		t.Fatalf("OldestPass = %d, want 2", res.OldestPass)
	}
}

func TestLFLineEndings(t *testing.T) {
	t.Parallel()
	a, _, _ := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	lf := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	wantStatus(t, verify(t, lf, zone{}.add(a)), StatusPass, "")
}

func TestFailures(t *testing.T) {
	t.Parallel()
	a, b, _ := keys(t)
	one := seal(t, []byte(baseMessage), a, "none", aar1)
	two := seal(t, one, b, "pass", aar2)
	z := zone{}.add(a, b)
	replace := func(msg []byte, old, new string) []byte {
		t.Helper()
		if !bytes.Contains(msg, []byte(old)) {
			t.Fatalf("%q not in message", old)
		}
		return bytes.Replace(msg, []byte(old), []byte(new), 1)
	}
	cases := []struct {
		name   string
		msg    []byte
		z      zone
		reason string
	}{
		{"tampered body", append(bytes.Clone(two), "P.S. buy now\r\n"...), z, "body hash mismatch"},
		{"tampered signed header", replace(two, "Subject: Hello", "Subject: Bye"), z, "i=2: bad signature"},
		{"tampered AAR i=1", replace(two, "spf=pass", "spf=fail"), z, "ARC-Seal i=2: bad signature"},
		{"tampered AS i=1 (one hop)", replace(one, "i=1; a=rsa-sha256; t=1767225600", "i=1; a=rsa-sha256; t=1767225601"), z, "ARC-Seal i=1: bad signature"},
		{"tampered AS i=1 (two hops)", replace(two, "i=1; a=rsa-sha256; t=1767225600", "i=1; a=rsa-sha256; t=1767225601"), z, "ARC-Seal i=2: bad signature"},
		{"latest cv=fail", seal(t, one, b, "fail", aar2), z, "cv=fail"},
		{"cv=pass at i=1", seal(t, []byte(baseMessage), a, "pass", aar1), z, "want none"},
		{"cv=none at i=2", seal(t, one, b, "none", aar2), z, "want pass"},
		{"missing key", two, zone{}.add(a), "no such record"},
		{"revoked key", two, zone{}.add(a).add(b).set(b, "v=DKIM1; k=rsa; p="), "revoked"},
		{"wrong key", two, zone{}.add(a).set(b, a.txt()), "bad signature"},
		{"gap", replace(two, "i=1;", "i=3;"), z, ""},
		{"duplicate AAR", append([]byte("ARC-Authentication-Results: i=1; x; spf=none\r\n"), two...), z, "1 has 2 AAR"},
		{"instance too large", replace(one, "ARC-Seal: i=1", "ARC-Seal: i=51"), z, "exceeds 50"},
		{"malformed instance", replace(one, "ARC-Seal: i=1", "ARC-Seal: i=x"), z, "malformed ARC-Seal"},
		{"AMS signs ARC-Seal", replace(one, "h=from:", "h=arc-seal:from:"), z, "includes ARC-Seal"},
		{"AS with h=", replace(one, "cv=none;", "cv=none; h=from;"), z, "h= not allowed"},
		{"only an AAR", []byte("ARC-Authentication-Results: i=1; x; spf=pass\r\n" + baseMessage), z, "0 AMS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			res := verify(t, tc.msg, tc.z)
			wantStatus(t, res, StatusFail, tc.reason)
			if res.OldestPass != 0 || res.Temporary {
				t.Fatalf("result %+v", res)
			}
		})
	}
}

func (z zone) set(k testKey, txt string) zone {
	z[k.s+"._domainkey."+k.d] = txt
	return z
}

func TestTemporaryDNSFailure(t *testing.T) {
	t.Parallel()
	a, _, _ := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	lookup := func(ctx context.Context, name string) ([]string, error) {
		return nil, fmt.Errorf("lookup %s: %w", name, resolve.ErrTemporary)
	}
	res, err := Verify(context.Background(), bytes.NewReader(msg), lookup)
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, StatusFail, "temporary")
	if !res.Temporary {
		t.Fatalf("Temporary not set: %+v", res)
	}
}

func TestKeysLookedUpOnce(t *testing.T) {
	t.Parallel()
	a, _, _ := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	msg = seal(t, msg, a, "pass", aar2)
	msg = seal(t, msg, a, "pass", aar2)
	z := zone{}.add(a)
	calls := 0
	res, err := Verify(context.Background(), bytes.NewReader(msg), func(ctx context.Context, name string) ([]string, error) {
		calls++
		return z.lookup(ctx, name)
	})
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, res, StatusPass, "")
	if calls != 1 {
		t.Fatalf("%d lookups, want 1", calls)
	}
}

func TestContextCancelled(t *testing.T) {
	t.Parallel()
	a, _, _ := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Verify(ctx, bytes.NewReader(msg), zone{}.add(a).lookup); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}

func TestHeaderTooLarge(t *testing.T) {
	t.Parallel()
	big := "X-Pad: " + strings.Repeat("a", MaxHeaderBytes) + "\r\n\r\nbody\r\n"
	if _, err := Verify(context.Background(), strings.NewReader(big), zone{}.lookup); !errors.Is(err, ErrHeaderTooLarge) {
		t.Fatalf("err = %v, want ErrHeaderTooLarge", err)
	}
}

type errReader struct{ data io.Reader }

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.data.Read(p)
	if err == io.EOF {
		return n, errors.New("disk on fire")
	}
	return n, err
}

func TestReadError(t *testing.T) {
	t.Parallel()
	a, _, _ := keys(t)
	msg := seal(t, []byte(baseMessage), a, "none", aar1)
	_, err := Verify(context.Background(), &errReader{bytes.NewReader(msg)}, zone{}.add(a).lookup)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Fatalf("err = %v", err)
	}
}

func canonBody(relaxed bool, body string, limit int64) string {
	var out bytes.Buffer
	c := newBodyCanon(relaxed, nopHash{&out}, limit)
	// Feed byte by byte to exercise state across writes.
	for i := 0; i < len(body); i++ {
		c.Write([]byte{body[i]})
	}
	c.Sum()
	return out.String()
}

// nopHash records what is written instead of hashing it.
type nopHash struct{ *bytes.Buffer }

func (nopHash) Sum(b []byte) []byte { return b }
func (nopHash) Size() int           { return 0 }
func (nopHash) BlockSize() int      { return 1 }

func TestBodyCanonicalization(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in, simple, relaxed string
	}{
		// RFC 6376 §3.4.5 example.
		{" C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n", " C\r\nD E\r\n"},
		{"", "\r\n", ""},
		{"\r\n\r\n", "\r\n", ""},
		{"no newline", "no newline\r\n", "no newline\r\n"},
		{"a\n\nb\n\n", "a\r\n\r\nb\r\n", "a\r\n\r\nb\r\n"},
		{"x \r\n \t\r\n", "x \r\n \t\r\n", "x\r\n"},
		{"lone\rcr\r", "lone\rcr\r\r\n", "lone\rcr\r\r\n"},
	}
	for _, tc := range cases {
		if got := canonBody(false, tc.in, -1); got != tc.simple {
			t.Errorf("simple(%q) = %q, want %q", tc.in, got, tc.simple)
		}
		if got := canonBody(true, tc.in, -1); got != tc.relaxed {
			t.Errorf("relaxed(%q) = %q, want %q", tc.in, got, tc.relaxed)
		}
	}
	if got := canonBody(true, "abc def\r\n", 4); got != "abc " {
		t.Errorf("limit 4: %q", got)
	}
	// Empty body hashes as in RFC 6376 §3.4.3/§3.4.4.
	sum := func(relaxed bool) string {
		c := newBodyCanon(relaxed, sha256.New(), -1)
		s, _ := c.Sum()
		return hex.EncodeToString(s)
	}
	if got := sum(true); got != "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" {
		t.Errorf("relaxed empty = %s", got)
	}
	if got := sum(false); got != hex.EncodeToString(sha256Of("\r\n")) {
		t.Errorf("simple empty = %s", got)
	}
}

func sha256Of(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func TestHeaderCanonicalization(t *testing.T) {
	t.Parallel()
	// RFC 6376 §3.4.5 example.
	f := field{name: "A", raw: []byte("A: X\r\n")}
	g := field{name: "B ", raw: []byte("B : Y\t\r\n\tZ  \r\n")}
	got := string(canonHeader(canonHeader(nil, &f, true), &g, true))
	if got != "a:X\r\nb:Y Z\r\n" {
		t.Fatalf("relaxed = %q", got)
	}
	if got := string(canonHeader(nil, &g, false)); got != string(g.raw) {
		t.Fatalf("simple = %q", got)
	}
	sig := field{name: "ARC-Seal", raw: []byte("ARC-Seal: i=1; bh=AAAA; b=abc\r\n def== ; d=x\r\n")}
	if got := string(canonSigHeader(nil, &sig, false)); got != "ARC-Seal: i=1; bh=AAAA; b= ; d=x" {
		t.Fatalf("stripped simple = %q", got)
	}
	if got := string(canonSigHeader(nil, &sig, true)); got != "arc-seal:i=1; bh=AAAA; b= ; d=x" {
		t.Fatalf("stripped relaxed = %q", got)
	}
}

func TestParseKeyRecord(t *testing.T) {
	t.Parallel()
	a, _, ed := keys(t)
	for _, txt := range []string{a.txt(), ed.txt(), strings.TrimPrefix(a.txt(), "v=DKIM1; k=rsa; ")} {
		if _, err := parseKeyRecord(txt); err != nil {
			t.Errorf("%.40q: %v", txt, err)
		}
	}
	for _, txt := range []string{
		"v=DKIM2; p=AAAA", "v=DKIM1; k=rsa; p=", "k=dsa; p=AAAA", "v=DKIM1; k=ed25519; p=AAAA",
		"v=DKIM1; h=sha1; " + strings.TrimPrefix(a.txt(), "v=DKIM1; "), "v=DKIM1; s=tlsrpt; k=ed25519; p=" + strings.Repeat("A", 44),
		"garbage",
	} {
		if _, err := parseKeyRecord(txt); err == nil {
			t.Errorf("%.40q accepted", txt)
		}
	}
}
