package dnscheck_test

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/miekg/dns"
)

// parseZone parses zone text with miekg/dns's zone parser, failing the
// test on any line that does not parse, and returns the records.
func parseZone(t *testing.T, text string) []dns.RR {
	t.Helper()
	zp := dns.NewZoneParser(strings.NewReader(text), "", "setup")
	var rrs []dns.RR
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		rrs = append(rrs, rr)
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("zone does not parse: %v\n%s", err, text)
	}
	// Every line that is neither blank nor a comment is one record.
	n := 0
	for line := range strings.SplitSeq(text, "\n") {
		if l := strings.TrimSpace(line); l != "" && !strings.HasPrefix(l, ";") {
			n++
			if _, err := dns.NewRR(l); err != nil {
				t.Errorf("line %q does not parse on its own: %v", l, err)
			}
		}
	}
	if n != len(rrs) {
		t.Errorf("%d record lines, %d records parsed", n, len(rrs))
	}
	return rrs
}

func testRecords(t *testing.T, ips ...string) ([]dnscheck.Record, []testKey) {
	t.Helper()
	rk, ek := rsaKey(t, 0, "herald202612r"), edKey(t, "herald202612e")
	var pubs []dnscheck.DKIMPublic
	for _, k := range []testKey{rk, ek} {
		name, value, err := dkim.DNSRecord(domain, k.key.Selector, k.key.PrivateKey)
		if err != nil {
			t.Fatal(err)
		}
		pubs = append(pubs, dnscheck.DKIMPublic{Name: name, Value: value})
	}
	var addrs []netip.Addr
	for _, s := range ips {
		addrs = append(addrs, netip.MustParseAddr(s))
	}
	rs := dnscheck.Records(dnscheck.RecordOptions{Domain: domain, Hostname: hostname, IPs: addrs, DKIM: pubs,
		Now: time.Date(2026, 12, 2, 9, 30, 0, 0, time.UTC)})
	return rs, []testKey{rk, ek}
}

// Every record setup prints is valid zone-file syntax with the types and
// values meant, and TXT strings stay within 255 bytes.
func TestRecordsZoneSyntax(t *testing.T) {
	rs, _ := testRecords(t, ip4, ip6)
	rrs := parseZone(t, dnscheck.Zone(rs))
	got := map[string]string{}
	for _, rr := range rrs {
		h := rr.Header()
		if h.Ttl != dnscheck.RecordTTL || h.Class != dns.ClassINET {
			t.Errorf("%s: TTL %d class %d", rr, h.Ttl, h.Class)
		}
		if txt, ok := rr.(*dns.TXT); ok {
			for _, s := range txt.Txt {
				if len(s) > 255 {
					t.Errorf("%s: a string of %d bytes", h.Name, len(s))
				}
			}
			got[h.Name+" TXT "+strings.Split(strings.Join(txt.Txt, ""), ";")[0]] = strings.Join(txt.Txt, "")
			continue
		}
		k := h.Name + " " + dns.TypeToString[h.Rrtype]
		got[k] = strings.TrimPrefix(rr.String(), rr.Header().String())
	}
	for k, v := range map[string]string{
		"example.com. MX":        "10 mail.example.com.",
		"mail.example.com. A":    ip4,
		"mail.example.com. AAAA": ip6,
		"example.com. TXT v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all":      "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all",
		"mail.example.com. TXT v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all": "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all",
		"_dmarc.example.com. TXT v=DMARC1":                                  "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.com",
		"_mta-sts.example.com. TXT v=STSv1":                                 "v=STSv1; id=20261202093000",
		"_smtp._tls.example.com. TXT v=TLSRPTv1":                            "v=TLSRPTv1; rua=mailto:tls-reports@example.com",
		"mta-sts.example.com. CNAME":                                        "mail.example.com.",
		"autoconfig.example.com. CNAME":                                     "mail.example.com.",
		"autodiscover.example.com. CNAME":                                   "mail.example.com.",
		"_submissions._tcp.example.com. SRV":                                "0 1 465 mail.example.com.",
		"_submission._tcp.example.com. SRV":                                 "10 1 587 mail.example.com.",
		"_autodiscover._tcp.example.com. SRV":                               "0 1 443 autodiscover.example.com.",
		"10.2.0.192.in-addr.arpa. PTR":                                      "mail.example.com.",
		reverse6(ip6) + ". PTR":                                             "mail.example.com.",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	var dkimRSA string
	for k, v := range got {
		if strings.HasPrefix(k, "herald202612r._domainkey.example.com. TXT") {
			dkimRSA = v
		}
	}
	if !strings.HasPrefix(dkimRSA, "v=DKIM1; k=rsa; p=MII") || len(dkimRSA) <= 255 {
		t.Errorf("RSA DKIM record %q", dkimRSA)
	}
}

// Hostile text in a TXT value cannot break out of its string or the line.
func TestRecordsTXTQuoting(t *testing.T) {
	rs := dnscheck.Records(dnscheck.RecordOptions{Domain: domain, Hostname: hostname,
		DKIM: []dnscheck.DKIMPublic{{Name: "s._domainkey.example.com.", Value: "a\"b\\c\nd; " + strings.Repeat("x", 600)}}})
	rrs := parseZone(t, dnscheck.Zone(rs))
	for _, rr := range rrs {
		if rr.Header().Name == "s._domainkey.example.com." {
			txt := rr.(*dns.TXT)
			if len(txt.Txt) != 3 {
				t.Errorf("%d strings, want 3", len(txt.Txt))
			}
			return
		}
	}
	t.Fatal("DKIM record missing")
}

// Without addresses, SPF falls back to mx/a and no A/AAAA/PTR is printed.
func TestRecordsWithoutAddresses(t *testing.T) {
	rs, _ := testRecords(t)
	for _, rr := range parseZone(t, dnscheck.Zone(rs)) {
		switch v := rr.(type) {
		case *dns.A, *dns.AAAA, *dns.PTR:
			t.Errorf("unexpected %s", rr)
		case *dns.TXT:
			if s := strings.Join(v.Txt, ""); strings.HasPrefix(s, "v=spf1") && s != "v=spf1 mx -all" && s != "v=spf1 a -all" {
				t.Errorf("SPF %q", s)
			}
		}
	}
}

// The doctor agrees with setup: once every record Records suggests is
// published (and the policy Herald serves answers), it finds nothing to
// fix; before, it reports errors.
func TestRecordsSatisfyDoctor(t *testing.T) {
	rs, keys := testRecords(t, ip4, ip6)
	d := testdns.Start(t)
	r, err := resolve.New(d.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	opts := dnscheck.Options{Domain: domain, Hostname: hostname,
		SendingIPs: []netip.Addr{netip.MustParseAddr(ip4), netip.MustParseAddr(ip6)},
		HTTPGet: func(_ context.Context, url string) ([]byte, error) {
			if url != "https://mta-sts.example.com/.well-known/mta-sts.txt" {
				return nil, errors.New("404")
			}
			return []byte("version: STSv1\r\nmode: testing\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"), nil
		}}
	ks := memKeys{keys[0].key, keys[1].key}
	before := dnscheck.Check(t.Context(), r, ks, opts)
	if before.Errors() == 0 {
		t.Fatalf("no error before the records are published:\n%v", before.Findings)
	}
	for _, rr := range parseZone(t, dnscheck.Zone(rs)) {
		d.Add(rr.String())
	}
	after := dnscheck.Check(t.Context(), r, ks, opts)
	for _, f := range after.Findings {
		if f.Level != dnscheck.LevelOK {
			t.Errorf("%s %s: %s (fix: %s)", f.Level, f.Check, f.Message, f.Fix)
		}
	}
	if len(after.Findings) < 15 {
		t.Errorf("only %d findings", len(after.Findings))
	}
}
