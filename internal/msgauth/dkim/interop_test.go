package dkim

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

const python = "/usr/bin/python3"

var dkimpyErr = sync.OnceValue(func() error {
	return exec.Command(python, "-c", "import dkim").Run()
})

// needDkimpy skips the test when Debian's python3-dkim is not installed
// (CI installs it).
func needDkimpy(t *testing.T) {
	t.Helper()
	if err := dkimpyErr(); err != nil {
		t.Skipf("dkimpy (python3-dkim) not available: %v", err)
	}
}

// dkimpy runs testdata/dkimpy.py with args and returns its output.
func dkimpy(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(python, append([]string{"testdata/dkimpy.py"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy %s: %v\n%s", args[0], err, stderr.String())
	}
	return string(out)
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// Herald's signatures, single and dual, verify in dkimpy; a copy with a
// second From added does not (so the check can fail).
func TestDkimpyVerifiesHerald(t *testing.T) {
	t.Parallel()
	needDkimpy(t)
	rsaKey, edKey := key(t, "rsa", "r1"), key(t, "ed25519", "e1")
	z := zone{}
	z.add(t, rsaKey)
	z.add(t, edKey)
	zj, _ := json.Marshal(z)
	cases := []struct {
		name string
		keys []Key
		opts SignOptions
	}{
		{"rsa", []Key{rsaKey}, SignOptions{}},
		{"ed25519", []Key{edKey}, SignOptions{Expiration: 7 * 24 * time.Hour}},
		{"dual", []Key{rsaKey, edKey}, SignOptions{}},
	}
	var files []string
	var want strings.Builder
	for i, tc := range cases {
		_, signed := sign(t, tc.keys, tc.opts, testMessage(4<<10), 0)
		forged := append([]byte("From: ceo@example.com\r\n"), signed...)
		files = append(files, writeFile(t, tc.name+".eml", signed), writeFile(t, tc.name+"-forged.eml", forged))
		for j := range tc.keys {
			fmt.Fprintf(&want, "%d %d pass\n", 2*i, j)
		}
		for j := range tc.keys {
			fmt.Fprintf(&want, "%d %d fail\n", 2*i+1, j)
		}
	}
	got := dkimpy(t, append([]string{"verify", writeFile(t, "keys.json", zj)}, files...)...)
	if got != want.String() {
		t.Errorf("dkimpy verdicts (file#, signature#: rsa, rsa forged, ed25519, ed25519 forged, dual, dual forged):\n%s\nwant:\n%s", got, want.String())
	}
}

// Messages signed by dkimpy (RSA and Ed25519) verify in Herald, with the
// keys published through a real DNS server in Herald's zone-file form.
func TestHeraldVerifiesDkimpy(t *testing.T) {
	t.Parallel()
	needDkimpy(t)
	dns := testdns.Start(t)
	client, err := resolve.NewClient(dns.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	msg := testMessage(4 << 10)
	msgFile := writeFile(t, "msg.eml", msg)
	algos := []struct{ algo, pyAlgo string }{{"rsa", "rsa-sha256"}, {"ed25519", "ed25519-sha256"}}
	var jobs []map[string]string
	var keys []Key
	for _, a := range algos {
		k := key(t, a.algo, "py"+a.algo)
		keys = append(keys, k)
		name, value, err := DNSRecord(k.Domain, k.Selector, k.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		dns.Add(FormatZoneLine(name, value))
		pyKey := k.PrivateKey
		if a.algo == "ed25519" {
			// dkimpy takes the base64 32-byte seed.
			signer, _, err := ParsePrivateKey(k.PrivateKey)
			if err != nil {
				t.Fatal(err)
			}
			pyKey = []byte(base64.StdEncoding.EncodeToString(signer.(ed25519.PrivateKey).Seed()))
		}
		jobs = append(jobs, map[string]string{
			"msg": msgFile, "algo": a.pyAlgo, "domain": k.Domain, "selector": k.Selector,
			"key": writeFile(t, "key-"+a.algo, pyKey), "headers": "from:to:subject:date:message-id",
		})
	}
	jj, _ := json.Marshal(jobs)
	var sigs []string
	if err := json.Unmarshal([]byte(dkimpy(t, "sign", writeFile(t, "jobs.json", jj))), &sigs); err != nil || len(sigs) != len(algos) {
		t.Fatalf("dkimpy sign output: %v, %d signatures", err, len(sigs))
	}
	for i, a := range algos {
		signed := append([]byte(sigs[i]), msg...)
		r := verify(t, signed, client.LookupTXT)
		if len(r) != 1 || r[0].Result != ResultPass || r[0].Selector != keys[i].Selector || r[0].Algorithm != a.pyAlgo {
			t.Errorf("%s signed by dkimpy: %+v\n%s", a.algo, r, sigs[i])
		}
		tampered := bytes.Replace(signed, []byte("Subject: Quarterly"), []byte("Subject: Quarterly!"), 1)
		if r := verify(t, tampered, client.LookupTXT); r[0].Result != ResultFail {
			t.Errorf("%s signed by dkimpy, subject changed: %+v", a.algo, r[0])
		}
	}
	// Both signatures on one message: dual verification.
	dual := append([]byte(sigs[0]+sigs[1]), msg...)
	if r := verify(t, dual, client.LookupTXT); len(r) != 2 || r[0].Result != ResultPass || r[1].Result != ResultPass {
		t.Errorf("dual dkimpy signatures: %+v", r)
	}
}
