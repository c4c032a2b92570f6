package arc

import (
	"bytes"
	"context"
	"testing"
)

// FuzzVerify checks that no input panics and that results stay coherent.
func FuzzVerify(f *testing.F) {
	a, _, ed := keys(f)
	z := zone{}.add(a, ed)
	one := seal(f, []byte(baseMessage), a, "none", aar1)
	two := seal(f, one, ed, "pass", aar2)
	f.Add(two)
	f.Add(one)
	f.Add([]byte(baseMessage))
	f.Add([]byte(""))
	f.Add([]byte("ARC-Seal: i=1; cv=none\r\n\r\n"))
	f.Add([]byte("ARC-Authentication-Results: i=1\n ; x\nARC-Message-Signature: i=1; b=; bh=; h=; d=; s=; a=rsa-sha256\n\n"))
	f.Add([]byte(" folded first line\r\nno colon\r\n\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		res, err := Verify(context.Background(), bytes.NewReader(msg), z.lookup)
		if err != nil {
			return
		}
		switch res.ChainValidation {
		case StatusNone:
			if res.Instances != 0 {
				t.Fatalf("none with %d instances", res.Instances)
			}
		case StatusPass:
			if res.Instances < 1 || res.OldestPass < 1 || res.OldestPass > res.Instances || len(res.AAR) != res.Instances {
				t.Fatalf("incoherent pass: %+v", res)
			}
		case StatusFail:
			if res.OldestPass != 0 {
				t.Fatalf("fail with OldestPass %d", res.OldestPass)
			}
		default:
			t.Fatalf("status %q", res.ChainValidation)
		}
	})
}
