package dkim

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func FuzzFromDomain(f *testing.F) {
	f.Add([]byte("From: Alice <alice@example.com>\r\n\r\n"))
	f.Add([]byte("From: a@example.com, b@example.org\r\nFrom: x\r\n"))
	f.Add([]byte("From: =?utf-8?b?w7Y=?= <a@b\xc3\xbc.example>\r\n\r\n"))
	f.Fuzz(func(t *testing.T, header []byte) {
		d, err := FromDomain(header)
		if err == nil && (d == "" || d != strings.ToLower(d)) {
			t.Errorf("FromDomain = %q without error", d)
		}
	})
}

// Verify never panics, and reports at least one and at most MaxSignatures
// results; a message Herald signed itself always passes.
func FuzzVerify(f *testing.F) {
	k := key(f, AlgorithmEd25519, "e1")
	z := zone{}
	z.add(f, k)
	f.Add([]byte("From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"))
	f.Add([]byte("DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=x; h=from; bh=; b=\r\nFrom: a@example.com\r\n\r\n"))
	f.Add([]byte("DKIM-Signature: ;;;==\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, err := Verify(context.Background(), bytes.NewReader(msg), z.lookup)
		if err == nil && (len(res) == 0 || len(res) > MaxSignatures) {
			t.Errorf("%d results", len(res))
		}
		// Sign well-formed messages (CRLF only, a From, a blank line) and
		// check they verify.
		if bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\n")) ||
			bytes.ContainsRune(msg, '\r') && bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\r")) {
			return
		}
		if _, err := FromDomain(msg); err != nil || !bytes.HasPrefix(msg, []byte("From:")) || !bytes.Contains(msg, []byte("\r\n\r\n")) {
			return
		}
		s, err := NewSigner([]Key{k}, SignOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Write(msg)
		h, err := s.Headers()
		if err != nil {
			return
		}
		res, err = Verify(context.Background(), bytes.NewReader(append(h, msg...)), z.lookup)
		if err != nil || res[0].Result != ResultPass {
			t.Errorf("self-signed message does not verify: %+v %v\n%q", res, err, msg)
		}
	})
}

// Signature fields are found as go-msgauth finds them, even on odd
// headers, so that results line up with signatures.
func TestVerifyOddHeader(t *testing.T) {
	t.Parallel()
	k := key(t, AlgorithmEd25519, "e1")
	z := zone{}
	z.add(t, k)
	msg := []byte("From: a@example.com\r\n\r\nbody\r\n")
	sigs, _ := sign(t, []Key{k}, SignOptions{}, msg, 0)
	odd := append(append([]byte(" "), sigs...), msg...)
	res, err := Verify(context.Background(), bytes.NewReader(odd), z.lookup)
	if err != nil || len(res) != 1 || res[0].Selector != "e1" {
		t.Errorf("leading continuation line: %+v, %v", res, err)
	}
}
