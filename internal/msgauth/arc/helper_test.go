package arc

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/heraldmail/herald/internal/resolve"
)

// testKey is a signing key published at s._domainkey.d in a fake zone.
type testKey struct {
	d, s string
	rsa  *rsa.PrivateKey
	ed   ed25519.PrivateKey
}

func (k testKey) alg() string {
	if k.ed != nil {
		return "ed25519-sha256"
	}
	return "rsa-sha256"
}

// txt returns the DKIM key record.
func (k testKey) txt() string {
	if k.ed != nil {
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k.ed.Public().(ed25519.PublicKey))
	}
	der, err := x509.MarshalPKIXPublicKey(&k.rsa.PublicKey)
	if err != nil {
		panic(err)
	}
	return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der)
}

// pemKey is the PKCS#1 PEM form dkimpy wants.
func (k testKey) pemKey() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k.rsa)}))
}

func (k testKey) sign(data []byte) []byte {
	digest := sha256.Sum256(data)
	if k.ed != nil {
		return ed25519.Sign(k.ed, digest[:])
	}
	sig, err := rsa.SignPKCS1v15(nil, k.rsa, crypto.SHA256, digest[:])
	if err != nil {
		panic(err)
	}
	return sig
}

var (
	keysOnce         sync.Once
	rsaKeyA, rsaKeyB *rsa.PrivateKey
	edKeyA           ed25519.PrivateKey
	errKeygen        error
)

// keys returns an RSA key for example.org, another for lists.example.net,
// and an Ed25519 key for ed.example.com, generated once per test binary.
func keys(t testing.TB) (a, b, ed testKey) {
	t.Helper()
	keysOnce.Do(func() {
		if rsaKeyA, errKeygen = rsa.GenerateKey(rand.Reader, 2048); errKeygen != nil {
			return
		}
		if rsaKeyB, errKeygen = rsa.GenerateKey(rand.Reader, 1024); errKeygen != nil {
			return
		}
		_, edKeyA, errKeygen = ed25519.GenerateKey(rand.Reader)
	})
	if errKeygen != nil {
		t.Fatal(errKeygen)
	}
	return testKey{d: "example.org", s: "sel1", rsa: rsaKeyA},
		testKey{d: "lists.example.net", s: "arc2026", rsa: rsaKeyB},
		testKey{d: "ed.example.com", s: "ed", ed: edKeyA}
}

// zone is a fake DNS for key lookups.
type zone map[string]string

func (z zone) add(keys ...testKey) zone {
	for _, k := range keys {
		z[k.s+"._domainkey."+k.d] = k.txt()
	}
	return z
}

func (z zone) lookup(_ context.Context, name string) ([]string, error) {
	if v, ok := z[strings.TrimSuffix(name, ".")]; ok {
		return []string{v}, nil
	}
	return nil, fmt.Errorf("%s: %w", name, resolve.ErrNotFound)
}

// splitMessage returns the parsed header fields and the body.
func splitMessage(t testing.TB, msg []byte) ([]field, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(msg))
	fields, err := readHeader(br, MaxHeaderBytes)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	if _, err := body.ReadFrom(br); err != nil {
		t.Fatal(err)
	}
	return fields, body.Bytes()
}

// foldB formats a signature so that b= is folded over two lines.
func foldB(sig []byte) string {
	s := base64.StdEncoding.EncodeToString(sig)
	return "\r\n\t" + s[:len(s)/2] + "\r\n\t " + s[len(s)/2:]
}

// seal adds one ARC set to msg with key k, the given cv and AAR payload,
// the AMS signing h= with relaxed/relaxed canonicalization. It is this
// package's test-only sealer; TestInteropDkimpyVerifiesHelper checks it
// against dkimpy.
func seal(t testing.TB, msg []byte, k testKey, cv, payload string) []byte {
	t.Helper()
	fields, body := splitMessage(t, msg)
	inst := 1
	prior := map[int][3]*field{}
	for i := range fields {
		f := &fields[i]
		var n int
		var err error
		slot := -1
		switch f.lname {
		case hdrAAR:
			n, _, err = splitAAR(string(f.value()))
			slot = 0
		case hdrAMS, hdrAS:
			var tags map[string]string
			if tags, err = parseTags(string(f.value())); err == nil {
				n, err = parseInstance(tags["i"])
			}
			slot = 1
			if f.lname == hdrAS {
				slot = 2
			}
		default:
			continue
		}
		if err != nil {
			t.Fatalf("seal: %v", err)
		}
		set := prior[n]
		set[slot] = f
		prior[n] = set
		inst = max(inst, n+1)
	}

	bc := newBodyCanon(true, sha256.New(), -1)
	bc.Write(body)
	bh, _ := bc.Sum()

	aar := fmt.Sprintf("ARC-Authentication-Results: i=%d; %s\r\n", inst, payload)

	h := []string{"from", "to", "subject", "date", "message-id"}
	ams := fmt.Sprintf("ARC-Message-Signature: i=%d; a=%s; c=relaxed/relaxed; d=%s;\r\n\ts=%s; t=1767225600; h=%s;\r\n\tbh=%s; b=",
		inst, k.alg(), k.d, k.s, strings.Join(h, ":"), base64.StdEncoding.EncodeToString(bh))
	var data []byte
	next := map[string]int{}
	for _, name := range h {
		j, ok := next[name]
		if !ok {
			j = len(fields)
		}
		for j--; j >= 0; j-- {
			if fields[j].lname == name {
				data = canonHeader(data, &fields[j], true)
				break
			}
		}
		next[name] = max(j, 0)
	}
	data = canonSigHeader(data, &field{name: "ARC-Message-Signature", raw: []byte(ams + "\r\n")}, true)
	ams += foldB(k.sign(data)) + "\r\n"

	as := fmt.Sprintf("ARC-Seal: i=%d; a=%s; t=1767225600; cv=%s;\r\n\td=%s; s=%s; b=", inst, k.alg(), cv, k.d, k.s)
	data = nil
	for j := 1; j < inst; j++ {
		for _, f := range prior[j] {
			if f == nil {
				t.Fatalf("seal: instance %d incomplete", j)
			}
			data = canonHeader(data, f, true)
		}
	}
	data = canonHeader(data, &field{name: "ARC-Authentication-Results", raw: []byte(aar)}, true)
	data = canonHeader(data, &field{name: "ARC-Message-Signature", raw: []byte(ams)}, true)
	data = canonSigHeader(data, &field{name: "ARC-Seal", raw: []byte(as + "\r\n")}, true)
	as += foldB(k.sign(data)) + "\r\n"

	return append([]byte(as+ams+aar), msg...)
}

const baseMessage = "From: Alice <alice@example.org>\r\n" +
	"To: list@lists.example.net\r\n" +
	"Subject: Hello   there\r\n" +
	"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
	"Message-ID: <1@example.org>\r\n" +
	"\r\n" +
	"Hi all,\r\n" +
	"\r\n" +
	"a  line with   spaces \t\r\n" +
	"\r\n\r\n"
