package dnscheck_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/miekg/dns"
)

const (
	domain   = "example.com"
	hostname = "mail.example.com"
	ip4      = "192.0.2.10"
	ip6      = "2001:db8::10"
	policy   = "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmax_age: 604800\r\n"
)

// testKey is a generated DKIM key with the p= value it publishes.
type testKey struct {
	key store.DKIMKey
	p   string
}

func makeKey(t testing.TB, selector string, priv any, pub []byte) testKey {
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	alg := store.DKIMAlgorithmRSA
	if _, ok := priv.(ed25519.PrivateKey); ok {
		alg = store.DKIMAlgorithmEd25519
	}
	return testKey{
		key: store.DKIMKey{Domain: domain, Selector: selector, Algorithm: alg, Active: true,
			PrivateKey: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})},
		p: base64.StdEncoding.EncodeToString(pub),
	}
}

// rsaKeys are generated once: RSA generation is slow under -race.
var rsaKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var out [2]*rsa.PrivateKey
	for i := range out {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		out[i] = k
	}
	return out
})

func rsaKey(t testing.TB, i int, selector string) testKey {
	k := rsaKeys()[i]
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return makeKey(t, selector, k, der)
}

func edKey(t testing.TB, selector string) testKey {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return makeKey(t, selector, priv, pub)
}

// memKeys is an in-memory KeySource.
type memKeys []store.DKIMKey

func (m memKeys) ActiveDKIMKeys(_ context.Context, d string) ([]store.DKIMKey, error) {
	var out []store.DKIMKey
	for _, k := range m {
		if k.Active && k.Domain == d {
			out = append(out, k)
		}
	}
	return out, nil
}

type failingKeys struct{}

func (failingKeys) ActiveDKIMKeys(context.Context, string) ([]store.DKIMKey, error) {
	return nil, errors.New("disk on fire")
}

// setup is one test zone: records by owner name (zone-file syntax), the
// keys Herald holds and the policy file served.
type setup struct {
	zone   map[string][]string
	keys   dnscheck.KeySource
	policy string // "" means the fetch fails with 404
	opts   dnscheck.Options
}

// goodSetup returns a zone with everything right.
func goodSetup(t *testing.T) *setup {
	rk, ek := rsaKey(t, 0, "rsa1"), edKey(t, "ed1")
	s := &setup{
		zone: map[string][]string{
			domain: {
				"MX 10 mail.example.com.",
				`TXT "v=spf1 mx -all"`,
				`TXT "google-site-verification=abc"`,
			},
			hostname:                       {"A " + ip4, "AAAA " + ip6, `TXT "v=spf1 a -all"`},
			"rsa1._domainkey." + domain:    {fmt.Sprintf(`TXT "v=DKIM1; k=rsa; p=%s" "%s"`, rk.p[:200], rk.p[200:])},
			"ed1._domainkey." + domain:     {`TXT "v=DKIM1; k=ed25519; p=` + ek.p + `"`},
			"_dmarc." + domain:             {`TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"`},
			"_mta-sts." + domain:           {`TXT "v=STSv1; id=20260101T000000"`},
			"_smtp._tls." + domain:         {`TXT "v=TLSRPTv1; rua=mailto:tlsrpt@example.com"`},
			"10.2.0.192.in-addr.arpa":      {"PTR mail.example.com."},
			reverse6(ip6):                  {"PTR mail.example.com."},
			"autoconfig." + domain:         {"CNAME mail.example.com."},
			"autodiscover." + domain:       {"CNAME mail.example.com."},
			"_submissions._tcp." + domain:  {"SRV 0 1 465 mail.example.com."},
			"_submission._tcp." + domain:   {"SRV 10 1 587 mail.example.com."},
			"_autodiscover._tcp." + domain: {"SRV 0 1 443 autodiscover.example.com."},
		},
		keys:   memKeys{rk.key, ek.key},
		policy: policy,
		opts:   dnscheck.Options{Domain: domain, Hostname: hostname},
	}
	return s
}

func reverse6(ip string) string {
	a := netip.MustParseAddr(ip).As16()
	var b strings.Builder
	for i := len(a) - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "%x.%x.", a[i]&0xf, a[i]>>4)
	}
	return b.String() + "ip6.arpa"
}

// run serves the zone on a loopback DNS server and checks it.
func (s *setup) run(t *testing.T) dnscheck.Report {
	t.Helper()
	d := testdns.Start(t)
	for _, name := range slices.Sorted(maps.Keys(s.zone)) {
		for _, rr := range s.zone[name] {
			d.Add(name + ". 300 IN " + rr)
		}
	}
	r, err := resolve.New(d.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	opts := s.opts
	var fetched []string
	opts.HTTPGet = func(_ context.Context, url string) ([]byte, error) {
		fetched = append(fetched, url)
		if s.policy == "" {
			return nil, errors.New("404 Not Found")
		}
		return []byte(s.policy), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep := dnscheck.Check(ctx, r, s.keys, opts)
	if _, ok := s.zone["_mta-sts."+domain]; ok && len(fetched) == 1 && fetched[0] != "https://mta-sts.example.com/.well-known/mta-sts.txt" {
		t.Errorf("fetched %v", fetched)
	}
	checkFixSyntax(t, rep)
	return rep
}

// checkFixSyntax asserts that every fix line that looks like a DNS record
// ("name. TYPE ...") is valid zone-file syntax.
func checkFixSyntax(t *testing.T, rep dnscheck.Report) {
	t.Helper()
	for _, f := range rep.Findings {
		for line := range strings.SplitSeq(f.Fix, "\n") {
			fields := strings.Fields(line)
			if len(fields) < 3 || !strings.HasSuffix(fields[0], ".") || !slices.Contains([]string{"TXT", "MX", "A", "AAAA", "CNAME", "SRV"}, fields[1]) {
				continue
			}
			rr, err := dns.NewRR(line)
			if err != nil || rr == nil {
				t.Errorf("fix %q is not a valid record: %v", line, err)
				continue
			}
			if txt, ok := rr.(*dns.TXT); ok {
				for _, s := range txt.Txt {
					if len(s) > 255 {
						t.Errorf("fix %q has a string over 255 bytes", line)
					}
				}
			}
		}
	}
}

func dump(rep dnscheck.Report) string {
	var b strings.Builder
	for _, f := range rep.Findings {
		fmt.Fprintf(&b, "  %-5s %s: %s\n", f.Level, f.Check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(&b, "        fix: %s\n", f.Fix)
		}
	}
	return b.String()
}

// want asserts that rep has a finding of check at level whose message
// contains msg and whose fix contains fix.
func want(t *testing.T, rep dnscheck.Report, check string, level dnscheck.Level, msg, fix string) {
	t.Helper()
	for _, f := range rep.Findings {
		if f.Check == check && f.Level == level && strings.Contains(f.Message, msg) && strings.Contains(f.Fix, fix) {
			return
		}
	}
	t.Errorf("no %s %s finding with message %q and fix %q in:\n%s", level, check, msg, fix, dump(rep))
}

// only asserts that the WARN/ERROR findings are exactly of the given checks
// (each "level check" string once per finding), so one broken record does
// not drag others down.
func only(t *testing.T, rep dnscheck.Report, problems ...string) {
	t.Helper()
	var got []string
	for _, f := range rep.Findings {
		if f.Level != dnscheck.LevelOK {
			got = append(got, f.Level.String()+" "+f.Check)
		}
	}
	slices.Sort(got)
	slices.Sort(problems)
	if !slices.Equal(got, problems) {
		t.Errorf("problems = %q, want %q; report:\n%s", got, problems, dump(rep))
	}
}

func TestCorrectZone(t *testing.T) {
	t.Parallel()
	rep := goodSetup(t).run(t)
	only(t, rep)
	if rep.Errors() != 0 || rep.Warnings() != 0 {
		t.Fatalf("Errors() = %d, Warnings() = %d", rep.Errors(), rep.Warnings())
	}
	for _, c := range []string{"host", "mx", "spf", "spf-helo", "dkim", "dmarc", "ptr", "mta-sts", "tls-rpt"} {
		want(t, rep, c, dnscheck.LevelOK, "", "")
	}
	// Sending addresses default to the hostname's.
	if want := []netip.Addr{netip.MustParseAddr(ip4), netip.MustParseAddr(ip6)}; !slices.Equal(rep.SendingIPs, want) {
		t.Errorf("SendingIPs = %v, want %v", rep.SendingIPs, want)
	}
	want(t, rep, "ptr", dnscheck.LevelOK, ip6+" has forward-confirmed reverse DNS mail.example.com", "")
	want(t, rep, "spf", dnscheck.LevelOK, "1 of 10 DNS lookups", "")
}

func TestBrokenZones(t *testing.T) {
	t.Parallel()
	type tc struct {
		name   string
		mutate func(t *testing.T, s *setup)
		check  func(t *testing.T, rep dnscheck.Report)
	}
	setTXT := func(s *setup, name string, txt ...string) {
		var kept []string
		for _, rr := range s.zone[name] {
			if !strings.HasPrefix(rr, "TXT") {
				kept = append(kept, rr)
			}
		}
		for _, t := range txt {
			kept = append(kept, `TXT "`+t+`"`)
		}
		s.zone[name] = kept
	}
	// chain publishes a chain of n includes under example.net, the last
	// authorising nothing useful.
	chain := func(s *setup, n int) {
		for i := 1; i < n; i++ {
			s.zone[fmt.Sprintf("i%d.example.net", i)] = []string{fmt.Sprintf(`TXT "v=spf1 include:i%d.example.net -all"`, i+1)}
		}
		s.zone[fmt.Sprintf("i%d.example.net", n)] = []string{`TXT "v=spf1 ip4:198.51.100.0/24 -all"`}
	}
	var missingP string // set by "missing DKIM record"
	cases := []tc{
		{"missing SPF", func(t *testing.T, s *setup) { setTXT(s, domain, "google-site-verification=abc") },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "spf", dnscheck.LevelError, "example.com has no SPF record", `example.com. TXT "v=spf1 mx -all"`)
				only(t, rep, "ERROR spf")
			}},
		{"two SPF records", func(t *testing.T, s *setup) { setTXT(s, domain, "v=spf1 mx -all", "v=spf1 ip4:192.0.2.10 -all") },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "spf", dnscheck.LevelError, "has 2 SPF records", `example.com. TXT "v=spf1 mx -all"`)
				want(t, rep, "spf", dnscheck.LevelError, "permerror", "")
				only(t, rep, "ERROR spf")
			}},
		{"SPF needs 11 lookups", func(t *testing.T, s *setup) {
			setTXT(s, domain, "v=spf1 mx include:i1.example.net -all")
			chain(s, 10)
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "spf", dnscheck.LevelError, "SPF needs 11 DNS lookups", "ip4:/ip6:")
			only(t, rep, "ERROR spf")
		}},
		{"SPF with exactly 10 lookups", func(t *testing.T, s *setup) {
			setTXT(s, domain, "v=spf1 mx include:i1.example.net -all")
			chain(s, 9)
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "spf", dnscheck.LevelOK, "10 of 10 DNS lookups", "")
			only(t, rep)
		}},
		{"SPF over the limit before reaching our address", func(t *testing.T, s *setup) {
			setTXT(s, domain, "v=spf1 include:i1.example.net mx -all")
			chain(s, 10)
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "spf", dnscheck.LevelError, "SPF needs 11 DNS lookups", "")
			want(t, rep, "spf", dnscheck.LevelError, "does not authorise sending address 192.0.2.10: result permerror (more than 10 DNS lookups)", "")
		}},
		{"SPF not authorising our address", func(t *testing.T, s *setup) { setTXT(s, domain, "v=spf1 ip4:198.51.100.1 ~all") },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "spf", dnscheck.LevelError, "does not authorise sending address 192.0.2.10: result softfail (~all",
					`example.com. TXT "v=spf1 ip4:198.51.100.1 ip4:192.0.2.10 ~all"`)
				want(t, rep, "spf", dnscheck.LevelError, "does not authorise sending address 2001:db8::10",
					`example.com. TXT "v=spf1 ip4:198.51.100.1 ip6:2001:db8::10 ~all"`)
				only(t, rep, "ERROR spf", "ERROR spf")
			}},
		{"SPF authorising through include and ip6 ranges", func(t *testing.T, s *setup) {
			setTXT(s, domain, "v=spf1 include:_spf.example.net ?ip6:2001:db8::/32 -all")
			s.zone["_spf.example.net"] = []string{`TXT "v=spf1 ip4:192.0.2.0/24 a:mail.example.com//64 -all"`}
		}, func(t *testing.T, rep dnscheck.Report) {
			only(t, rep)
		}},
		{"SPF +all, parse error, redirect", func(t *testing.T, s *setup) {
			setTXT(s, domain, "v=spf1 redirect=_spf.example.net")
			s.zone["_spf.example.net"] = []string{`TXT "v=spf1 mx:example.com +all"`}
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "spf", dnscheck.LevelError, "record of _spf.example.net ends with +all: it authorises every address", `example.com. TXT "v=spf1 -all redirect=_spf.example.net"`)
			only(t, rep, "ERROR spf")
		}},
		{"SPF without all and with a syntax error", func(t *testing.T, s *setup) { setTXT(s, domain, "v=spf1 mx") },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "spf", dnscheck.LevelWarn, "does not end with -all or ~all", `example.com. TXT "v=spf1 mx -all"`)
				only(t, rep, "WARN spf")
			}},
		{"SPF syntax error", func(t *testing.T, s *setup) { setTXT(s, domain, "v=spf1 mx ip4:300.1.1.1 -all") },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "spf", dnscheck.LevelError, `"ip4:300.1.1.1": bad ip4 address`, `"v=spf1 mx -all"`)
			}},
		{"SPF void lookups and missing include", func(t *testing.T, s *setup) {
			setTXT(s, domain, "v=spf1 a:nx1.example.com a:nx2.example.com a:nx3.example.com include:nx4.example.com mx -all")
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "spf", dnscheck.LevelWarn, "4 lookups that find nothing", "")
			want(t, rep, "spf", dnscheck.LevelError, "include:nx4.example.com has no SPF record (permerror)", "")
			want(t, rep, "spf", dnscheck.LevelError, "result permerror", "")
		}},
		{"wrong DKIM key", func(t *testing.T, s *setup) {
			other := rsaKey(t, 1, "rsa1")
			s.zone["rsa1._domainkey."+domain] = []string{fmt.Sprintf(`TXT "v=DKIM1; k=rsa; p=%s" "%s"`, other.p[:200], other.p[200:])}
		}, func(t *testing.T, rep dnscheck.Report) {
			rk := rsaKey(t, 0, "rsa1")
			want(t, rep, "dkim", dnscheck.LevelError, "rsa1._domainkey.example.com does not match Herald's rsa key rsa1",
				`rsa1._domainkey.example.com. TXT "v=DKIM1; k=rsa; p=`+rk.p[:237]+`" "`+rk.p[237:]+`"`)
			want(t, rep, "dkim", dnscheck.LevelOK, "ed1._domainkey.example.com matches", "")
			only(t, rep, "ERROR dkim")
		}},
		{"missing DKIM record", func(t *testing.T, s *setup) {
			delete(s.zone, "ed1._domainkey."+domain)
			k := edKey(t, "ed1")
			missingP = k.p
			s.keys = memKeys{s.keys.(memKeys)[0], k.key}
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "dkim", dnscheck.LevelError, "no DKIM record at ed1._domainkey.example.com", `ed1._domainkey.example.com. TXT "v=DKIM1; k=ed25519; p=`+missingP+`"`)
			only(t, rep, "ERROR dkim")
		}},
		{"revoked DKIM key and PKCS#1 RSA record", func(t *testing.T, s *setup) {
			s.zone["ed1._domainkey."+domain] = []string{`TXT "v=DKIM1; k=ed25519; p="`}
			k := rsaKeys()[0]
			p := base64.StdEncoding.EncodeToString(x509.MarshalPKCS1PublicKey(&k.PublicKey))
			s.zone["rsa1._domainkey."+domain] = []string{`TXT "p=` + p + `"`} // v= and k= are optional
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "dkim", dnscheck.LevelError, "empty p= (key revoked)", "")
			want(t, rep, "dkim", dnscheck.LevelOK, "rsa1._domainkey.example.com matches", "")
			only(t, rep, "ERROR dkim")
		}},
		{"no DKIM keys", func(t *testing.T, s *setup) { s.keys = memKeys{} },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "dkim", dnscheck.LevelWarn, "no active DKIM key", "herald dkim keygen example.com")
				only(t, rep, "WARN dkim")
			}},
		{"key store failure", func(t *testing.T, s *setup) { s.keys = failingKeys{} },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "dkim", dnscheck.LevelError, "disk on fire", "")
			}},
		{"no DMARC", func(t *testing.T, s *setup) { delete(s.zone, "_dmarc."+domain) },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "dmarc", dnscheck.LevelError, "example.com has no DMARC record",
					`_dmarc.example.com. TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@example.com"`)
				only(t, rep, "ERROR dmarc")
			}},
		{"DMARC p=none", func(t *testing.T, s *setup) {
			setTXT(s, "_dmarc."+domain, "v=DMARC1; p=none; rua=mailto:d@example.com")
		},
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "dmarc", dnscheck.LevelWarn, "p=none", `_dmarc.example.com. TXT "v=DMARC1; p=quarantine; rua=mailto:d@example.com"`)
				only(t, rep, "WARN dmarc")
			}},
		{"DMARC pct and no rua", func(t *testing.T, s *setup) { setTXT(s, "_dmarc."+domain, "v=DMARC1; p=reject; pct=50") },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "dmarc", dnscheck.LevelWarn, "pct=50", `"v=DMARC1; p=reject; pct=100"`)
				want(t, rep, "dmarc", dnscheck.LevelWarn, "no rua=", `"v=DMARC1; p=reject; pct=50; rua=mailto:dmarc-reports@example.com"`)
				only(t, rep, "WARN dmarc", "WARN dmarc")
			}},
		{"DMARC bad policy", func(t *testing.T, s *setup) {
			setTXT(s, "_dmarc."+domain, "v=DMARC1; p=block; rua=mailto:d@example.com")
		},
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "dmarc", dnscheck.LevelError, "p=block is not none", "")
				only(t, rep, "ERROR dmarc")
			}},
		{"PTR mismatch", func(t *testing.T, s *setup) {
			s.zone["10.2.0.192.in-addr.arpa"] = []string{"PTR host-10.provider.example."}
			s.zone["host-10.provider.example"] = []string{"A " + ip4}
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "ptr", dnscheck.LevelWarn, "PTR of 192.0.2.10 is host-10.provider.example, not the HELO name mail.example.com",
				"ask your provider to set the PTR of 192.0.2.10 to mail.example.com")
			only(t, rep, "WARN ptr")
		}},
		{"PTR not forward-confirmed", func(t *testing.T, s *setup) {
			s.zone["10.2.0.192.in-addr.arpa"] = []string{"PTR ghost.provider.example."}
			s.zone["ghost.provider.example"] = []string{"A 203.0.113.5"}
			delete(s.zone, reverse6(ip6))
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "ptr", dnscheck.LevelError, "PTR of 192.0.2.10 is ghost.provider.example, which does not resolve back to 192.0.2.10",
				"ask your provider to set the PTR of 192.0.2.10 to mail.example.com")
			want(t, rep, "ptr", dnscheck.LevelError, "2001:db8::10 has no reverse DNS", "")
			only(t, rep, "ERROR ptr", "ERROR ptr")
		}},
		{"explicit sending address whose PTR names us but that we do not resolve to", func(t *testing.T, s *setup) {
			s.opts.SendingIPs = []netip.Addr{netip.MustParseAddr("192.0.2.99")}
			s.zone["99.2.0.192.in-addr.arpa"] = []string{"PTR mail.example.com."}
			setTXT(s, domain, "v=spf1 mx ip4:192.0.2.99 -all")
			setTXT(s, hostname, "v=spf1 ip4:192.0.2.99 -all")
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "ptr", dnscheck.LevelError, "does not resolve back", "mail.example.com. A 192.0.2.99")
			want(t, rep, "host", dnscheck.LevelWarn, "resolves to 192.0.2.10, 2001:db8::10, not to 192.0.2.99", "mail.example.com. A 192.0.2.99")
			only(t, rep, "ERROR ptr", "WARN host")
		}},
		{"MX not pointing to us", func(t *testing.T, s *setup) {
			s.zone[domain][0] = "MX 10 mx.elsewhere.example."
			s.zone["mx.elsewhere.example"] = []string{"A 203.0.113.9"}
			setTXT(s, domain, "v=spf1 a:mail.example.com -all")
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mx", dnscheck.LevelError, "no MX of example.com (10 mx.elsewhere.example) points to this server", "example.com. MX 10 mail.example.com.")
			want(t, rep, "mta-sts", dnscheck.LevelError, "does not list MX host mx.elsewhere.example", "mx: mx.elsewhere.example")
			only(t, rep, "ERROR mx", "ERROR mta-sts")
		}},
		{"MX host without address and no MX at all", func(t *testing.T, s *setup) {
			s.zone[domain][0] = "MX 10 mail.example.com."
			s.zone[domain] = append(s.zone[domain], "MX 20 backup.example.com.")
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mx", dnscheck.LevelError, "MX host backup.example.com does not resolve", "")
		}},
		{"null MX", func(t *testing.T, s *setup) {
			s.zone[domain][0] = "MX 0 ."
			setTXT(s, domain, "v=spf1 a:mail.example.com -all")
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mx", dnscheck.LevelWarn, "null MX", "example.com. MX 10 mail.example.com.")
			only(t, rep, "WARN mx")
		}},
		{"no MX", func(t *testing.T, s *setup) {
			s.zone[domain] = []string{`TXT "v=spf1 a:mail.example.com -all"`}
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mx", dnscheck.LevelError, "example.com has no MX record", "example.com. MX 10 mail.example.com.")
			only(t, rep, "ERROR mx")
		}},
		{"no autoconfig, SRV to the wrong port (optional)", func(t *testing.T, s *setup) {
			delete(s.zone, "autoconfig."+domain)
			s.zone["autodiscover."+domain] = []string{"A 203.0.113.9"}
			s.zone["_submissions._tcp."+domain] = []string{"SRV 0 1 993 mail.example.com."}
			delete(s.zone, "_submission._tcp."+domain)
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "clients", dnscheck.LevelWarn, "autoconfig.example.com does not resolve", "autoconfig.example.com. CNAME mail.example.com.")
			want(t, rep, "clients", dnscheck.LevelWarn, "autodiscover.example.com resolves to 203.0.113.9, not to this server", "autodiscover.example.com. CNAME mail.example.com.")
			want(t, rep, "clients", dnscheck.LevelWarn, "SRV _submissions._tcp.example.com is 0 1 993 mail.example.com, not port 465", "_submissions._tcp.example.com. SRV 0 1 465 mail.example.com.")
			want(t, rep, "clients", dnscheck.LevelWarn, "no SRV record _submission._tcp.example.com", "_submission._tcp.example.com. SRV 10 1 587 mail.example.com.")
			want(t, rep, "clients", dnscheck.LevelOK, "SRV _autodiscover._tcp.example.com: 0 1 443 autodiscover.example.com", "")
			only(t, rep, "WARN clients", "WARN clients", "WARN clients", "WARN clients")
		}},
		{"no MTA-STS, no TLS-RPT (optional)", func(t *testing.T, s *setup) {
			delete(s.zone, "_mta-sts."+domain)
			delete(s.zone, "_smtp._tls."+domain)
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mta-sts", dnscheck.LevelWarn, "no MTA-STS policy (optional)", "mx: mail.example.com\nmax_age: 604800")
			want(t, rep, "tls-rpt", dnscheck.LevelWarn, "no TLS-RPT record (optional)", `_smtp._tls.example.com. TXT "v=TLSRPTv1; rua=mailto:tls-reports@example.com"`)
			only(t, rep, "WARN mta-sts", "WARN tls-rpt")
			if rep.Errors() != 0 {
				t.Errorf("Errors() = %d", rep.Errors())
			}
		}},
		{"MTA-STS policy unreachable", func(t *testing.T, s *setup) { s.policy = "" },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "mta-sts", dnscheck.LevelError, "cannot be fetched: 404", "Herald serves the policy at https://mta-sts.example.com/.well-known/mta-sts.txt itself: with [acme] enabled = true")
				only(t, rep, "ERROR mta-sts")
			}},
		{"MTA-STS wildcard, testing mode, short max_age", func(t *testing.T, s *setup) {
			s.policy = "version: STSv1\nmode: testing\nmx: *.example.com\nmax_age: 3600\n"
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mta-sts", dnscheck.LevelWarn, "max_age 3600", "")
			only(t, rep, "WARN mta-sts")
		}},
		{"MTA-STS bad policy and bad TLS-RPT", func(t *testing.T, s *setup) {
			s.policy = "version: STSv1\nmode: enforce\nmax_age: 86400\n"
			setTXT(s, "_smtp._tls."+domain, "v=TLSRPTv1; rua=tlsrpt@example.com")
		}, func(t *testing.T, rep dnscheck.Report) {
			want(t, rep, "mta-sts", dnscheck.LevelError, "does not parse: no mx", "")
			want(t, rep, "tls-rpt", dnscheck.LevelError, "is not a mailto: or https: URI", "")
			only(t, rep, "ERROR mta-sts", "ERROR tls-rpt")
		}},
		{"HELO name without SPF", func(t *testing.T, s *setup) { setTXT(s, hostname) },
			func(t *testing.T, rep dnscheck.Report) {
				want(t, rep, "spf-helo", dnscheck.LevelWarn, "HELO name mail.example.com has no SPF record",
					`mail.example.com. TXT "v=spf1 ip4:192.0.2.10 ip6:2001:db8::10 -all"`)
				only(t, rep, "WARN spf-helo")
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			s := goodSetup(t)
			c.mutate(t, s)
			rep := s.run(t)
			c.check(t, rep)
			if (rep.Errors() > 0) != slices.ContainsFunc(rep.Findings, func(f dnscheck.Finding) bool { return f.Level == dnscheck.LevelError }) {
				t.Errorf("Errors() = %d disagrees with the findings", rep.Errors())
			}
		})
	}
}

func TestHostnameProblems(t *testing.T) {
	t.Parallel()
	s := goodSetup(t)
	s.opts.Hostname = "localhost"
	rep := s.run(t)
	want(t, rep, "host", dnscheck.LevelError, `hostname "localhost" is not a public DNS name`, "")
	want(t, rep, "host", dnscheck.LevelError, "no sending address known", "--ip")

	s = goodSetup(t)
	delete(s.zone, hostname)
	s.opts.SendingIPs = []netip.Addr{netip.MustParseAddr(ip4)}
	rep = s.run(t)
	want(t, rep, "host", dnscheck.LevelError, "hostname mail.example.com does not resolve", "mail.example.com. A 192.0.2.10")
}

func TestTemporaryFailure(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.SetServfail(domain)
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	rep := dnscheck.Check(context.Background(), r, memKeys{}, dnscheck.Options{Domain: domain, Hostname: hostname,
		SendingIPs: []netip.Addr{netip.MustParseAddr(ip4)}})
	want(t, rep, "mx", dnscheck.LevelError, "temporary DNS failure", "")
	want(t, rep, "spf", dnscheck.LevelError, "temporary DNS failure", "")
	if rep.Errors() == 0 {
		t.Fatal("no errors")
	}
}
