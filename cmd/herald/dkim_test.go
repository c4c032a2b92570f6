package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/heraldmail/herald/internal/msgauth/dkim"
)

// zoneTXT parses a printed zone-file line and returns its owner and joined
// TXT value, as a DNS server loading it would.
func zoneTXT(t *testing.T, line string) (string, string) {
	t.Helper()
	rr, err := dns.NewRR(line)
	if err != nil {
		t.Fatalf("printed record %q does not parse: %v", line, err)
	}
	txt, ok := rr.(*dns.TXT)
	if !ok {
		t.Fatalf("printed record %q is not TXT", line)
	}
	return txt.Hdr.Name, strings.Join(txt.Txt, "")
}

func recordLine(t *testing.T, out string) string {
	t.Helper()
	for l := range strings.SplitSeq(out, "\n") {
		if strings.Contains(l, "IN TXT") {
			return l
		}
	}
	t.Fatalf("no TXT record in output:\n%s", out)
	return ""
}

func TestDKIMCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	sel := defaultSelector(time.Now(), "rsa")
	if !strings.HasPrefix(sel, "herald") || !strings.HasSuffix(sel, "r") || len(sel) != len("herald202611r") {
		t.Errorf("default selector %q", sel)
	}

	// First RSA key: default selector, active, record printed.
	out := c.ok("", "dkim", "keygen", "Example.COM")
	if !strings.Contains(out, "active") || strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("keygen output:\n%s", out)
	}
	name, value := zoneTXT(t, recordLine(t, out))
	if name != sel+"._domainkey.example.com." || !strings.HasPrefix(value, "v=DKIM1; k=rsa; p=MII") {
		t.Errorf("record %s %q", name, value)
	}
	// The printed record is the stored key's public half.
	st := c.store()
	k, err := st.GetDKIMKey(context.Background(), "example.com", sel)
	st.Close()
	if err != nil || !k.Active || k.Algorithm != "rsa" {
		t.Fatalf("stored key %+v, %v", k, err)
	}
	if _, want, _ := dkim.DNSRecord("example.com", sel, k.PrivateKey); value != want {
		t.Errorf("printed value %q, want %q", value, want)
	}

	// First Ed25519 key is active too (dual signing); a second RSA key is not.
	out = c.ok("", "dkim", "keygen", "example.com", "--algorithm", "ed25519", "--selector", "ed1")
	if _, v := zoneTXT(t, recordLine(t, out)); !strings.HasPrefix(v, "v=DKIM1; k=ed25519; p=") || !strings.Contains(out, "active") {
		t.Errorf("ed25519 keygen output:\n%s", out)
	}
	out = c.ok("", "dkim", "keygen", "example.com", "--selector", "rsa2")
	if !strings.Contains(out, "inactive") || !strings.Contains(out, "herald dkim activate example.com rsa2") {
		t.Errorf("second RSA keygen output:\n%s", out)
	}
	c.fails(1, "already exists", "dkim", "keygen", "example.com", "--selector", "rsa2")

	active := func() string {
		st := c.store()
		defer st.Close()
		ks, err := st.ActiveDKIMKeys(context.Background(), "example.com")
		if err != nil {
			t.Fatal(err)
		}
		var l []string
		for _, k := range ks {
			l = append(l, k.Selector)
		}
		return strings.Join(l, ",")
	}
	if a := active(); a != "ed1,"+sel {
		t.Errorf("active keys %q", a)
	}

	out = c.ok("", "dkim", "list")
	for _, want := range []string{"DOMAIN", "example.com", sel, "rsa2", "ed1", "ed25519", "inactive"} {
		if !strings.Contains(out, want) {
			t.Errorf("list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "PRIVATE") {
		t.Errorf("list shows a private key")
	}

	// Rotation: activating rsa2 deactivates the first RSA key only.
	c.ok("", "dkim", "activate", "example.com", "rsa2")
	if a := active(); a != "ed1,rsa2" {
		t.Errorf("after activate rsa2: active %q", a)
	}
	rec := c.ok("", "dkim", "record", "EXAMPLE.com", "rsa2")
	if n, _ := zoneTXT(t, recordLine(t, rec)); n != "rsa2._domainkey.example.com." {
		t.Errorf("record output %q", rec)
	}
	c.ok("", "dkim", "deactivate", "example.com", "ed1")
	c.ok("", "dkim", "del", "example.com", sel)
	if a := active(); a != "rsa2" {
		t.Errorf("after deactivate/del: active %q", a)
	}
	c.fails(1, "not found", "dkim", "del", "example.com", sel)
	c.fails(1, "not found", "dkim", "record", "example.com", "nope")
	c.fails(2, "usage", "dkim", "keygen", "example.com", "--algorithm", "dsa")
	c.fails(2, "usage", "dkim", "activate", "example.com")
	c.fails(2, "usage", "dkim", "frob")
	c.fails(1, "invalid domain", "dkim", "list", "not a domain")
	c.fails(1, "invalid selector", "dkim", "keygen", "example.com", "--selector", "bad sel")
	if _, o, e := c.run("", "dkim", "list", "other.example"); o != "" || !strings.Contains(e, "no DKIM keys") {
		t.Errorf("list of a domain without keys: %q %q", o, e)
	}
}
