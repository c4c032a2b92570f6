package spf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func newDNS(t *testing.T) (*testdns.Server, resolve.Resolver) {
	t.Helper()
	s := testdns.Start(t)
	r, err := resolve.New(s.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

func TestCheck(t *testing.T) {
	t.Parallel()
	s, r := newDNS(t)

	s.AddTXT("pass.example", "v=spf1 ip4:192.0.2.0/24 -all")
	s.AddTXT("fail.example", "v=spf1 ip4:198.51.100.1 -all")
	s.AddTXT("soft.example", "v=spf1 ip4:198.51.100.1 ~all")
	s.AddTXT("neutral.example", "v=spf1 ?all")
	s.AddTXT("nomatch.example", "v=spf1 ip4:198.51.100.1")
	s.AddTXT("other-txt.example", "google-site-verification=abc")
	s.AddTXT("servfail-inc.example", "v=spf1 include:broken.example -all")
	s.SetServfail("broken.example")
	s.SetServfail("servfail.example")
	s.AddTXT("two.example", "v=spf1 ip4:192.0.2.1 -all")
	s.AddTXT("two.example", "v=spf1 -all")
	s.AddTXT("syntax.example", "v=spf1 ip4:192.0.2.300 -all")
	s.AddTXT("unknown-mech.example", "v=spf1 bogus:x -all")
	s.AddTXT("split.example", "v=spf1 ip4:192.0.2.5", " -all") // multi-string TXT is joined
	// A chain of 11 includes: the 11th lookup is over the limit.
	for i := range 11 {
		s.AddTXT(fmt.Sprintf("l%d.loop.example", i), fmt.Sprintf("v=spf1 include:l%d.loop.example -all", i+1))
	}
	s.AddTXT("l11.loop.example", "v=spf1 +all")
	// Exactly 10 lookups is allowed.
	for i := range 9 {
		s.AddTXT(fmt.Sprintf("m%d.ten.example", i), fmt.Sprintf("v=spf1 include:m%d.ten.example -all", i+1))
	}
	s.AddTXT("m9.ten.example", "v=spf1 ip4:192.0.2.0/24 -all")
	s.AddTXT("ten.example", "v=spf1 include:m0.ten.example -all")
	s.AddTXT("eleven.example", "v=spf1 include:l0.loop.example -all")

	s.AddTXT("inc.example", "v=spf1 include:pass.example -all")
	s.AddTXT("redir.example", "v=spf1 redirect=fail.example")
	s.AddTXT("a.example", "v=spf1 a -all")
	s.AddA("a.example", "192.0.2.20")
	s.AddTXT("a-other.example", "v=spf1 a:host.a-other.example/24 -all")
	s.AddA("host.a-other.example", "192.0.2.99")
	s.AddTXT("mx.example", "v=spf1 mx -all")
	s.AddMX("mx.example", "mail.mx.example", 10)
	s.AddA("mail.mx.example", "192.0.2.30")
	s.AddTXT("v6.example", "v=spf1 ip6:2001:db8::/32 a:v6host.v6.example -all")
	s.AddAAAA("v6host.v6.example", "2001:db9::25")
	s.AddTXT("ptr.example", "v=spf1 ptr -all")
	s.AddPTR("192.0.2.40", "out.ptr.example")
	s.AddA("out.ptr.example", "192.0.2.40")
	s.AddTXT("helo.example", "v=spf1 ip4:192.0.2.50 -all")

	ip := netip.MustParseAddr
	tests := []struct {
		name     string
		ip       string
		helo     string
		from     string
		want     Status
		domain   string
		wantErr  bool
		explains string
	}{
		{"pass", "192.0.2.10", "h.example", "a@pass.example", Pass, "pass.example", false, "matched ip"},
		{"pass case-insensitive domain", "192.0.2.10", "h.example", "a@PASS.Example.", Pass, "pass.example", false, ""},
		{"fail", "192.0.2.10", "h.example", "a@fail.example", Fail, "fail.example", false, "matched all"},
		{"softfail", "192.0.2.10", "h.example", "a@soft.example", SoftFail, "soft.example", false, ""},
		{"neutral", "192.0.2.10", "h.example", "a@neutral.example", Neutral, "neutral.example", false, ""},
		{"neutral by default", "192.0.2.10", "h.example", "a@nomatch.example", Neutral, "nomatch.example", false, ""},
		{"none no record", "192.0.2.10", "h.example", "a@nothing.example", None, "nothing.example", false, ""},
		{"none other TXT", "192.0.2.10", "h.example", "a@other-txt.example", None, "other-txt.example", false, ""},
		{"temperror servfail", "192.0.2.10", "h.example", "a@servfail.example", TempError, "servfail.example", true, ""},
		{"temperror in include", "192.0.2.10", "h.example", "a@servfail-inc.example", TempError, "servfail-inc.example", true, ""},
		{"permerror two records", "192.0.2.1", "h.example", "a@two.example", PermError, "two.example", true, ""},
		{"permerror bad ip", "192.0.2.10", "h.example", "a@syntax.example", PermError, "syntax.example", true, ""},
		{"permerror unknown mechanism", "192.0.2.10", "h.example", "a@unknown-mech.example", PermError, "unknown-mech.example", true, ""},
		{"permerror 11 lookups", "192.0.2.10", "h.example", "a@eleven.example", PermError, "eleven.example", true, "lookup limit"},
		{"10 lookups allowed", "192.0.2.10", "h.example", "a@ten.example", Pass, "ten.example", false, ""},
		{"multi-string TXT", "192.0.2.5", "h.example", "a@split.example", Pass, "split.example", false, ""},
		{"include pass", "192.0.2.10", "h.example", "a@inc.example", Pass, "inc.example", false, ""},
		{"include no match", "203.0.113.1", "h.example", "a@inc.example", Fail, "inc.example", false, ""},
		{"redirect", "198.51.100.1", "h.example", "a@redir.example", Pass, "redir.example", false, ""},
		{"redirect fail", "192.0.2.10", "h.example", "a@redir.example", Fail, "redir.example", false, ""},
		{"a", "192.0.2.20", "h.example", "a@a.example", Pass, "a.example", false, "matched a"},
		{"a miss", "192.0.2.21", "h.example", "a@a.example", Fail, "a.example", false, ""},
		{"a with cidr", "192.0.2.1", "h.example", "a@a-other.example", Pass, "a-other.example", false, ""},
		{"mx", "192.0.2.30", "h.example", "a@mx.example", Pass, "mx.example", false, "matched mx"},
		{"mx miss", "192.0.2.31", "h.example", "a@mx.example", Fail, "mx.example", false, ""},
		{"ipv6 ip6", "2001:db8::1", "h.example", "a@v6.example", Pass, "v6.example", false, ""},
		{"ipv6 aaaa", "2001:db9::25", "h.example", "a@v6.example", Pass, "v6.example", false, ""},
		{"ipv6 fail", "2001:db7::1", "h.example", "a@v6.example", Fail, "v6.example", false, ""},
		{"ipv4 vs ip6", "192.0.2.10", "h.example", "a@v6.example", Fail, "v6.example", false, ""},
		{"ptr", "192.0.2.40", "h.example", "a@ptr.example", Pass, "ptr.example", false, ""},
		{"ptr miss", "192.0.2.41", "h.example", "a@ptr.example", Fail, "ptr.example", false, ""},
		{"null sender uses helo", "192.0.2.50", "helo.example", "", Pass, "helo.example", false, ""},
		{"null sender helo fail", "192.0.2.51", "helo.example", "", Fail, "helo.example", false, ""},
		{"null sender literal helo", "192.0.2.51", "[192.0.2.51]", "", None, "[192.0.2.51]", false, ""},
		{"ipv4-mapped client", "::ffff:192.0.2.10", "h.example", "a@pass.example", Pass, "pass.example", false, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			got := Check(ctx, r, ip(tc.ip), tc.helo, tc.from)
			if got.Result != tc.want || got.Domain != tc.domain {
				t.Fatalf("Check(%s, %q) = %+v, want %s for %s", tc.ip, tc.from, got, tc.want, tc.domain)
			}
			if (got.Err != nil) != tc.wantErr {
				t.Fatalf("Err = %v, want error: %v", got.Err, tc.wantErr)
			}
			if tc.explains != "" && !strings.Contains(got.Explanation, tc.explains) {
				t.Fatalf("Explanation = %q, want it to mention %q", got.Explanation, tc.explains)
			}
		})
	}
}

func TestCheckHELO(t *testing.T) {
	t.Parallel()
	s, r := newDNS(t)
	s.AddTXT("mta.example", "v=spf1 ip4:192.0.2.7 -all")
	ctx := context.Background()
	if got := CheckHELO(ctx, r, netip.MustParseAddr("192.0.2.7"), "MTA.example"); got.Result != Pass || got.Domain != "mta.example" {
		t.Fatalf("CheckHELO pass = %+v", got)
	}
	if got := CheckHELO(ctx, r, netip.MustParseAddr("192.0.2.8"), "mta.example"); got.Result != Fail {
		t.Fatalf("CheckHELO fail = %+v", got)
	}
	if got := CheckHELO(ctx, r, netip.MustParseAddr("192.0.2.8"), "[192.0.2.8]"); got.Result != None {
		t.Fatalf("CheckHELO literal = %+v", got)
	}
	if got := CheckHELO(ctx, r, netip.MustParseAddr("192.0.2.8"), ""); got.Result != None {
		t.Fatalf("CheckHELO empty = %+v", got)
	}
}

func TestCheckCanceledAndInvalid(t *testing.T) {
	t.Parallel()
	s, r := newDNS(t)
	s.AddTXT("x.example", "v=spf1 -all")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := Check(ctx, r, netip.MustParseAddr("192.0.2.1"), "h.example", "a@x.example"); got.Result != TempError || got.Err == nil {
		t.Fatalf("canceled = %+v, want temperror", got)
	}
	if got := Check(context.Background(), r, netip.Addr{}, "h.example", "a@x.example"); got.Result != PermError {
		t.Fatalf("invalid IP = %+v, want permerror", got)
	}
	if s.Queries() != 0 {
		t.Fatalf("queries = %d, want none for canceled/invalid checks", s.Queries())
	}
}
