package dnscheck

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSPF(t *testing.T) {
	t.Parallel()
	rec, err := parseSPF("v=spf1 +a -mx:Example.COM/24//64 ~ip4:192.0.2.0/24 ?ip6:2001:db8::/32 ptr include:_spf.example.net exists:%{i}.bl.example a//48 redirect=r.example exp=e.example x-foo=bar -all")
	if err != nil {
		t.Fatal(err)
	}
	type want struct {
		qual         byte
		mech, domain string
		cidr4, cidr6 int
		prefix       string
	}
	wants := []want{
		{'+', "a", "", -1, -1, "invalid Prefix"},
		{'-', "mx", "example.com", 24, 64, "invalid Prefix"},
		{'~', "ip4", "", -1, -1, "192.0.2.0/24"},
		{'?', "ip6", "", -1, -1, "2001:db8::/32"},
		{'+', "ptr", "", -1, -1, "invalid Prefix"},
		{'+', "include", "_spf.example.net", -1, -1, "invalid Prefix"},
		{'+', "exists", "%{i}.bl.example", -1, -1, "invalid Prefix"},
		{'+', "a", "", -1, 48, "invalid Prefix"},
		{'-', "all", "", -1, -1, "invalid Prefix"},
	}
	if len(rec.terms) != len(wants) {
		t.Fatalf("%d terms, want %d", len(rec.terms), len(wants))
	}
	for i, w := range wants {
		g := rec.terms[i]
		got := want{g.qual, g.mech, g.domain, g.cidr4, g.cidr6, g.prefix.String()}
		if got != w {
			t.Errorf("term %d = %+v, want %+v", i, got, w)
		}
	}
	if rec.redirect != "r.example" || rec.exp != "e.example" {
		t.Errorf("redirect %q exp %q", rec.redirect, rec.exp)
	}
	for _, bad := range []string{
		"v=spf2 -all", "spf1", "v=spf1 all:x", "v=spf1 include", "v=spf1 include:", "v=spf1 ip4:2001:db8::1",
		"v=spf1 ip6:192.0.2.1", "v=spf1 ip4:192.0.2.1/33", "v=spf1 ip6:::1/129", "v=spf1 a/08", "v=spf1 mx:example.com/x",
		"v=spf1 foo", "v=spf1 redirect=a.example redirect=b.example", "v=spf1 exp=", "v=spf1 include:nodot",
	} {
		if _, err := parseSPF(bad); err == nil {
			t.Errorf("parseSPF(%q) succeeded", bad)
		}
	}
	if isSPF("v=spf10 -all") || !isSPF("V=SPF1 -all") || !isSPF("v=spf1") {
		t.Error("isSPF")
	}
}

func TestInCIDR(t *testing.T) {
	t.Parallel()
	term, err := parseTerm("a/24//64")
	if err != nil {
		t.Fatal(err)
	}
	e := &spfEval{ip: netip.MustParseAddr("192.0.2.200")}
	addrs := []netip.Addr{netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("192.0.2.1")}
	if !e.inCIDR(addrs, term) {
		t.Error("192.0.2.200 not in 192.0.2.1/24")
	}
	e.ip = netip.MustParseAddr("192.0.3.1")
	if e.inCIDR(addrs, term) {
		t.Error("192.0.3.1 in 192.0.2.1/24")
	}
	e.ip = netip.MustParseAddr("2001:db8::ffff")
	if !e.inCIDR(addrs, term) {
		t.Error("2001:db8::ffff not in 2001:db8::1/64")
	}
}

func TestSTSPolicyAndMatch(t *testing.T) {
	t.Parallel()
	p, err := parseSTSPolicy("version: STSv1\r\nmode: enforce\r\nmx: MX1.example.com.\r\nmx: *.example.net\r\nmax_age: 86400\r\n")
	if err != nil || p.mode != "enforce" || p.maxAge != 86400 || strings.Join(p.mx, ",") != "mx1.example.com,*.example.net" {
		t.Fatalf("policy = %+v, %v", p, err)
	}
	for _, bad := range []string{
		"mode: enforce\nmx: a.example\nmax_age: 1",
		"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1",
		"version: STSv1\nmode: enforce\nmax_age: 1",
		"version: STSv1\nmode: enforce\nmx: a.example",
		"version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 99999999",
		"version: STSv1\nmode: enforce\nmode: testing\nmx: a.example\nmax_age: 1",
		"garbage",
	} {
		if _, err := parseSTSPolicy(bad); err == nil {
			t.Errorf("parseSTSPolicy(%q) succeeded", bad)
		}
	}
	for _, c := range []struct {
		pattern, host string
		want          bool
	}{
		{"mx.example.com", "mx.example.com", true},
		{"*.example.com", "mx.example.com", true},
		{"*.example.com", "a.mx.example.com", false},
		{"*.example.com", "example.com", false},
		{"mx.example.com", "mx2.example.com", false},
	} {
		if got := stsMatch(c.pattern, c.host); got != c.want {
			t.Errorf("stsMatch(%q, %q) = %v", c.pattern, c.host, got)
		}
	}
}

func TestTXTRecordSplitsAndQuotes(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 300)
	if got, want := txtRecord("x.example", long), `x.example. TXT "`+long[:255]+`" "`+long[255:]+`"`; got != want {
		t.Errorf("txtRecord = %q", got)
	}
	if got := txtRecord("x.example", `a"b`); got != `x.example. TXT "a\"b"` {
		t.Errorf("txtRecord = %q", got)
	}
}
