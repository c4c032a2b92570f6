package arc

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const python = "/usr/bin/python3"

// dkimpyReq is one operation for testdata/dkimpy_arc.py.
type dkimpyReq struct {
	Op      string      `json:"op"` // "seal" or "verify"
	Message string      `json:"message"`
	Hops    []dkimpyHop `json:"hops,omitempty"`
	DNS     zone        `json:"dns,omitempty"`
}

type dkimpyHop struct {
	Domain        string `json:"domain"`
	Selector      string `json:"selector"`
	Key           string `json:"key"`
	SrvID         string `json:"srv_id"`
	AR            string `json:"ar"`
	SubjectPrefix string `json:"subject_prefix,omitempty"`
}

type dkimpyAnswer struct {
	Message string `json:"message"` // seal
	CV      string `json:"cv"`      // verify
	Reason  string `json:"reason"`  // verify
}

// runDkimpy runs the requests in one Python process (start-up dominates on
// a loaded machine). The test is skipped when dkimpy is not installed.
func runDkimpy(t *testing.T, reqs ...dkimpyReq) []dkimpyAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	in, err := json.Marshal(reqs)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, python, "testdata/dkimpy_arc.py")
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	got, err := cmd.Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() == 77 || errors.Is(err, exec.ErrNotFound) {
		t.Skipf("dkimpy not available (install python3-dkim): %v %s", err, stderr.String())
	}
	if err != nil {
		t.Fatalf("dkimpy: %v\n%s", err, stderr.String())
	}
	var out []dkimpyAnswer
	if err := json.Unmarshal(got, &out); err != nil || len(out) != len(reqs) {
		t.Fatalf("dkimpy answer %q: %v", got, err)
	}
	return out
}

// Chains sealed by dkimpy must pass Verify.
func TestInteropVerifyDkimpySealed(t *testing.T) {
	t.Parallel()
	a, b, _ := keys(t)
	z := zone{}.add(a, b)
	hop1 := dkimpyHop{Domain: a.d, Selector: a.s, Key: a.pemKey(), SrvID: "mx.example.org",
		AR: "spf=pass smtp.mailfrom=alice@example.org; dkim=pass header.d=example.org"}
	hop2 := dkimpyHop{Domain: b.d, Selector: b.s, Key: b.pemKey(), SrvID: "lists.example.net",
		AR: "arc=pass; spf=pass smtp.mailfrom=list@lists.example.net", SubjectPrefix: "[list] "}
	out := runDkimpy(t,
		dkimpyReq{Op: "seal", Message: baseMessage, Hops: []dkimpyHop{hop1}},
		dkimpyReq{Op: "seal", Message: baseMessage, Hops: []dkimpyHop{hop1, hop2}},
	)
	one, two := []byte(out[0].Message), []byte(out[1].Message)

	res := verify(t, one, z)
	wantStatus(t, res, StatusPass, "")
	if res.Instances != 1 || res.OldestPass != 1 || res.Domain != a.d || res.Selector != a.s {
		t.Fatalf("one hop: %+v", res)
	}
	if !strings.HasPrefix(res.AAR[0], "mx.example.org; spf=pass") {
		t.Fatalf("AAR = %q", res.AAR)
	}

	res = verify(t, two, z)
	wantStatus(t, res, StatusPass, "")
	// The list rewrote the Subject after hop 1 sealed: AMS i=1 breaks.
	if res.Instances != 2 || res.OldestPass != 2 || res.Domain != b.d {
		t.Fatalf("two hops: %+v", res)
	}

	tampered := bytes.Replace(two, []byte("a  line"), []byte("b  line"), 1)
	wantStatus(t, verify(t, tampered, z), StatusFail, "body hash")
	wantStatus(t, verify(t, two, zone{}.add(a)), StatusFail, "no such record")
}

// Chains sealed by this package's test helper must pass dkimpy, so the
// helper (and the canonicalization it shares with Verify) is right.
func TestInteropDkimpyVerifiesHelper(t *testing.T) {
	t.Parallel()
	a, b, _ := keys(t)
	z := zone{}.add(a, b)
	one := seal(t, []byte(baseMessage), a, "none", aar1)
	two := seal(t, bytes.ReplaceAll(one, []byte("\r\n"), []byte("\n")), b, "pass", aar2)
	bad := bytes.Replace(two, []byte("spf=pass"), []byte("spf=fail"), 1)
	out := runDkimpy(t,
		dkimpyReq{Op: "verify", Message: string(one), DNS: z},
		dkimpyReq{Op: "verify", Message: string(two), DNS: z},
		dkimpyReq{Op: "verify", Message: string(bad), DNS: z},
	)
	for i, name := range []string{"one hop", "two hops"} {
		if out[i].CV != "pass" {
			t.Errorf("%s: dkimpy says %q (%s)", name, out[i].CV, out[i].Reason)
		}
	}
	// The oracle is not vacuous: it rejects what Verify rejects.
	if out[2].CV != "fail" {
		t.Errorf("tampered AAR: dkimpy says %q", out[2].CV)
	}
	wantStatus(t, verify(t, bad, z), StatusFail, "ARC-Seal i=2")
}
