package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// addDKIMKey generates and activates a key and publishes its record.
func (h *herald) addDKIMKey(domain, selector, alg string) (name, value string) {
	h.t.Helper()
	priv, err := dkim.GenerateKey(alg)
	if err != nil {
		h.t.Fatal(err)
	}
	must(h.t, h.app.Store().AddDKIMKey(context.Background(), store.DKIMKey{Domain: domain, Selector: selector, Algorithm: alg, PrivateKey: priv, Active: true}))
	name, value, err = dkim.DNSRecord(domain, selector, priv)
	if err != nil {
		h.t.Fatal(err)
	}
	h.dns.AddTXT(strings.TrimSuffix(name, "."), value)
	return name, value
}

// Mail submitted by a user is DKIM-signed with both the RSA and the
// Ed25519 key of its From domain; Herald's verifier and dkimpy (an
// independent implementation) both accept the signatures.
func TestDKIMDualSigningVerifiedByDkimpy(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})
	rsaName, rsaValue := h.addDKIMKey("example.com", "r2026", "rsa")
	edName, edValue := h.addDKIMKey("example.com", "e2026", "ed25519")

	body := "From: Alice <alice@example.com>\r\nTo: <bob@remote.test>\r\nSubject: signed\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <signed@example.com>\r\n\r\nSigned body.\r\n"
	h.submit("alice@example.com", pw, "alice@example.com", []string{"bob@remote.test"}, body)
	got := mx.WaitMessages(t, 1, 10*time.Second)[0].Body
	if n := strings.Count(headerBlock(string(got)), "DKIM-Signature:"); n != 2 {
		t.Fatalf("want 2 DKIM signatures (RSA and Ed25519), got %d:\n%s", n, headerBlock(string(got)))
	}
	res, err := resolve.New(h.dns.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	results, err := dkim.Verify(context.Background(), strings.NewReader(string(got)), res.LookupTXT)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range results {
		if r.Result != dkim.ResultPass {
			t.Errorf("Herald's verifier: %s %s: %s %s", r.Domain, r.Selector, r.Result, r.Reason)
		}
	}

	if err := exec.Command("/usr/bin/python3", "-c", "import dkim").Run(); err != nil {
		t.Skip("python3-dkim (dkimpy) not installed")
	}
	py := `
import sys, dkim
msg = sys.stdin.buffer.read()
records = {sys.argv[1].encode(): sys.argv[2].encode(), sys.argv[3].encode(): sys.argv[4].encode()}
def dnsfunc(name, timeout=5):
    return records.get(name)
d = dkim.DKIM(msg)
ok = []
for i in range(2):
    ok.append(d.verify(idx=i, dnsfunc=dnsfunc))
print(ok)
sys.exit(0 if all(ok) else 1)
`
	cmd := exec.Command("/usr/bin/python3", "-c", py, rsaName, rsaValue, edName, edValue)
	cmd.Stdin = strings.NewReader(string(got))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dkimpy rejected Herald's signatures: %v\n%s", err, out)
	}
}
