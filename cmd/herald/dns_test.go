package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// dnsZone serves a correct zone for example.org, whose MX is host.example
// (newCLI's hostname) at 192.0.2.20, and stores the matching DKIM key.
func dnsZone(t *testing.T, extraConfig string) (*cli, *testdns.Server) {
	t.Helper()
	d := testdns.Start(t)
	c := newCLI(t, "[dns]\nresolver = \""+d.Addr()+"\"\ntimeout = \"2s\"\n"+extraConfig)
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	st := c.store()
	defer st.Close()
	err = st.AddDKIMKey(context.Background(), store.DKIMKey{Domain: "example.org", Selector: "s1", Algorithm: store.DKIMAlgorithmEd25519,
		Active: true, PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})})
	if err != nil {
		t.Fatal(err)
	}
	d.AddMX("example.org", "host.example", 10)
	d.AddA("host.example", "192.0.2.20")
	d.AddTXT("example.org", "v=spf1 mx -all")
	d.AddTXT("host.example", "v=spf1 a -all")
	d.AddTXT("s1._domainkey.example.org", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(pub))
	d.AddTXT("_dmarc.example.org", "v=DMARC1; p=reject; rua=mailto:dmarc@example.org")
	d.AddPTR("192.0.2.20", "host.example")
	d.AddTXT("_smtp._tls.example.org", "v=TLSRPTv1; rua=mailto:tls@example.org")
	d.AddCNAME("autoconfig.example.org", "host.example")
	d.AddCNAME("autodiscover.example.org", "host.example")
	d.Add("_submissions._tcp.example.org. SRV 0 1 465 host.example.")
	d.Add("_submission._tcp.example.org. SRV 10 1 587 host.example.")
	d.Add("_autodiscover._tcp.example.org. SRV 0 1 443 autodiscover.example.org.")
	return c, d
}

func TestDNSCheckCommand(t *testing.T) {
	t.Parallel()
	c, d := dnsZone(t, "")
	out := c.ok("", "dns", "check", "Example.ORG.")
	for _, s := range []string{
		"DNS check of example.org (hostname host.example, sending from 192.0.2.20)\n",
		"OK     mx: MX of example.org: 10 host.example\n",
		"OK     dkim: DKIM record at s1._domainkey.example.org matches Herald's ed25519 key\n",
		"OK     ptr: 192.0.2.20 has forward-confirmed reverse DNS host.example\n",
		// MTA-STS is optional: a warning, not an error.
		"WARN   mta-sts: example.org publishes no MTA-STS policy (optional)",
		"       fix: _mta-sts.example.org. TXT \"v=STSv1; id=",
		"            and Herald serves the policy at https://mta-sts.example.org/.well-known/mta-sts.txt itself: with [acme] enabled = true",
		"            mta-sts.example.org. CNAME host.example.\n",
		"            mx: host.example\n",
		"OK     clients: SRV _submissions._tcp.example.org: 0 1 465 host.example\n",
		"example.org: 13 OK, 1 warning, 0 errors\n",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}

	// Break DMARC and send from an address SPF does not cover: exit 1.
	d.Remove("_dmarc.example.org")
	d.AddPTR("192.0.2.99", "host.example")
	code, out, errs := c.run("", "dns", "check", "example.org", "--ip", "192.0.2.99")
	if code != 1 || !strings.Contains(errs, "dns check example.org: 3 errors") {
		t.Fatalf("exit %d, stderr %q\n%s", code, errs, out)
	}
	for _, s := range []string{
		"ERROR  dmarc: example.org has no DMARC record",
		"       fix: _dmarc.example.org. TXT \"v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.org\"\n",
		"ERROR  spf: SPF does not authorise sending address 192.0.2.99: result fail",
		"       fix: example.org. TXT \"v=spf1 mx ip4:192.0.2.99 -all\"\n",
		"ERROR  ptr: PTR of 192.0.2.99 is host.example, which does not resolve back to 192.0.2.99",
		"       fix: host.example. A 192.0.2.99\n",
		"WARN   spf-helo: SPF of the HELO name host.example does not authorise 192.0.2.99",
		"WARN   host: hostname host.example resolves to 192.0.2.20, not to 192.0.2.99",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestDNSCheckSourceAddressesAndNoKeys(t *testing.T) {
	t.Parallel()
	c, _ := dnsZone(t, "[delivery]\nsource_ipv4 = \"192.0.2.20\"\nsource_ipv6 = \"2001:db8::20\"\n")
	code, out, _ := c.run("", "dns", "check", "example.org")
	if code != 1 || !strings.Contains(out, "sending from 192.0.2.20, 2001:db8::20)") ||
		!strings.Contains(out, "ERROR  ptr: 2001:db8::20 has no reverse DNS") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// A domain without keys in the store gets a warning naming the command.
	if code, out, _ := c.run("", "dns", "check", "other.example"); code != 1 ||
		!strings.Contains(out, "WARN   dkim: Herald holds no active DKIM key for other.example") ||
		!strings.Contains(out, "fix: run: herald dkim keygen other.example") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	c.fails(2, "herald dns check DOMAIN", "dns", "check")
	c.fails(2, "herald dns check DOMAIN", "dns", "frob", "example.org")
	c.fails(2, "bad address", "dns", "check", "example.org", "--ip", "nope")
}
