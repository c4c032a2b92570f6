package arc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"strings"
	"testing"
)

// BenchmarkVerify measures a two-hop RSA chain on a 64 KiB body.
func BenchmarkVerify(b *testing.B) {
	ka, kb, _ := keys(b)
	z := zone{}.add(ka, kb)
	msg := []byte(baseMessage + strings.Repeat("some body text with  spaces\r\n", 64<<10/30))
	msg = seal(b, msg, ka, "none", aar1)
	msg = seal(b, msg, kb, "pass", aar2)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		res, err := Verify(context.Background(), bytes.NewReader(msg), z.lookup)
		if err != nil || res.ChainValidation != StatusPass {
			b.Fatal(err, res.Reason)
		}
	}
}

// BenchmarkBodyCanonRelaxed measures canonicalizing and hashing a body;
// compare with BenchmarkSHA256 (hashing alone) from the same run.
func BenchmarkBodyCanonRelaxed(b *testing.B) {
	body := []byte(strings.Repeat("some body text with  spaces\r\n", 64<<10/30))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		c := newBodyCanon(true, sha256.New(), -1)
		c.Write(body)
		c.Sum()
	}
}

// BenchmarkSHA256 is the floor for BenchmarkBodyCanonRelaxed.
func BenchmarkSHA256(b *testing.B) {
	body := []byte(strings.Repeat("some body text with  spaces\r\n", 64<<10/30))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		sha256.Sum256(body)
	}
}
