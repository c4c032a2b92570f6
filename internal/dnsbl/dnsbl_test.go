package dnsbl

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func TestParseSite(t *testing.T) {
	for _, c := range []struct {
		in     string
		zone   string
		weight int
		str    string
	}{
		{"zen.spamhaus.org*3", "zen.spamhaus.org", 3, "zen.spamhaus.org*3"},
		{"bl.spamcop.net", "bl.spamcop.net", 1, "bl.spamcop.net"},
		{"list.dnswl.org=127.0.[0..255].[1..3]*-2", "list.dnswl.org", -2, "list.dnswl.org=127.0.[0..255].[1..3]*-2"},
		{"ZEN.Spamhaus.org.=127.0.0.[2..11;20]", "zen.spamhaus.org", 1, "zen.spamhaus.org=127.0.0.[2..11;20]"},
	} {
		s, err := ParseSite(c.in, true)
		if err != nil {
			t.Errorf("ParseSite(%q): %v", c.in, err)
			continue
		}
		if s.Zone != c.zone || s.Weight != c.weight || s.String() != c.str {
			t.Errorf("ParseSite(%q) = %q weight %d (%s), want %q weight %d (%s)", c.in, s.Zone, s.Weight, s, c.zone, c.weight, c.str)
		}
	}
	for _, bad := range []string{"", "zen", "zen.spamhaus.org*x", "zen.spamhaus.org*0", "zen.spamhaus.org*5000",
		"zen.spamhaus.org=127.0.0", "zen.spamhaus.org=127.0.0.[11..2]", "zen.spamhaus.org=127.0.0.256",
		"zen.spamhaus.org=127.0.0.[2..x]", "zen spamhaus.org", "-bad.example", "a..b"} {
		if _, err := ParseSite(bad, true); err == nil {
			t.Errorf("ParseSite(%q) accepted", bad)
		}
	}
	if _, err := ParseSite("dbl.spamhaus.org*2", false); err == nil {
		t.Error("a weight on a reputation list was accepted")
	}
}

func TestFilterAndErrorCodes(t *testing.T) {
	s, err := ParseSite("zen.spamhaus.org=127.0.0.[2..11]", true)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := ParseSite("bl.example", true)
	for _, c := range []struct {
		addr          string
		filtered, any bool
	}{
		{"127.0.0.2", true, true},
		{"127.0.0.11", true, true},
		{"127.0.0.12", false, true},
		{"127.0.1.2", false, true},
		{"127.255.255.254", false, false}, // Spamhaus: query through a public resolver
		{"127.255.255.255", false, false}, // Spamhaus: too many queries
		{"192.0.2.1", false, false},       // not a list answer at all
	} {
		a := netip.MustParseAddr(c.addr)
		if got := s.Counts(a); got != c.filtered {
			t.Errorf("filtered Counts(%s) = %v, want %v", c.addr, got, c.filtered)
		}
		if got := plain.Counts(a); got != c.any {
			t.Errorf("unfiltered Counts(%s) = %v, want %v", c.addr, got, c.any)
		}
	}
}

func TestReverseName(t *testing.T) {
	if got := ReverseName(netip.MustParseAddr("192.0.2.99"), "zen.example"); got != "99.2.0.192.zen.example" {
		t.Errorf("IPv4: %s", got)
	}
	if got := ReverseName(netip.MustParseAddr("::ffff:192.0.2.99"), "zen.example"); got != "99.2.0.192.zen.example" {
		t.Errorf("IPv4-mapped: %s", got)
	}
	want := "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.zen.example" // RFC 5782 §2.4
	if got := ReverseName(netip.MustParseAddr("4321:0:1:2:3:4:567:89ab"), "zen.example"); got != want {
		t.Errorf("IPv6: %s, want %s", got, want)
	}
}

func TestSanitize(t *testing.T) {
	if got := Sanitize("  listed\r\n\x00see  https://x.example/?q=1\t\u00e9 "); got != "listedsee https://x.example/?q=1" {
		t.Errorf("Sanitize = %q", got)
	}
	if got := Sanitize(strings.Repeat("a", 1000)); len(got) != maxReason {
		t.Errorf("not cut: %d bytes", len(got))
	}
}

type env struct {
	dns *testdns.Server
	res *resolve.Client
	clk *clock.Fake
	reg *metrics.Registry
	m   Metrics
}

func newEnv(t *testing.T) *env {
	t.Helper()
	d := testdns.Start(t)
	res, err := resolve.NewClient(d.Addr(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	reg := metrics.NewRegistry()
	return &env{dns: d, res: res, clk: clock.NewFake(time.Date(2026, 12, 2, 8, 0, 0, 0, time.UTC)), reg: reg, m: NewMetrics(reg)}
}

func (e *env) checker(t *testing.T, threshold int, sites ...string) *Checker {
	t.Helper()
	var ss []Site
	for _, s := range sites {
		site, err := ParseSite(s, true)
		if err != nil {
			t.Fatal(err)
		}
		ss = append(ss, site)
	}
	return New(Config{Sites: ss, Threshold: threshold, Timeout: 5 * time.Second, Resolver: e.res, Clock: e.clk, Metrics: e.m})
}

var ctx = context.Background()

func TestCheckerVerdicts(t *testing.T) {
	e := newEnv(t)
	// 127.0.0.2 is on zen (with a reason) and on the allow-list; .3 only
	// on zen; .4 on zen with an error code; .5 nowhere; ::2 on zen (v6).
	e.dns.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.2")
	e.dns.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.4")
	e.dns.AddTXT("2.0.0.127.zen.test", "Listed by ZEN, see https://zen.test/q/127.0.0.2")
	e.dns.Add("3.0.0.127.zen.test. 300 IN A 127.0.0.3")
	e.dns.Add("4.0.0.127.zen.test. 300 IN A 127.255.255.254")
	e.dns.Add("6.0.0.127.zen.test. 300 IN A 127.0.0.1") // outside the filter
	e.dns.Add("2.0.0.127.wl.test. 300 IN A 127.0.10.2")
	e.dns.Add("2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.zen.test. 300 IN A 127.0.0.2")

	c := e.checker(t, 3, "zen.test=127.0.0.[2..11]*3", "other.test*1")
	v := c.Check(ctx, netip.MustParseAddr("127.0.0.2"))
	if !v.Listed || v.Score != 3 || !slices.Equal(v.Lists(), []string{"zen.test"}) {
		t.Fatalf("listed client: %+v", v)
	}
	if v.Reason() != "Listed by ZEN, see https://zen.test/q/127.0.0.2" {
		t.Errorf("reason %q", v.Reason())
	}
	if got := v.Hits[0].Codes; len(got) != 2 {
		t.Errorf("codes %v, want 127.0.0.2 and 127.0.0.4", got)
	}
	if v := c.Check(ctx, netip.MustParseAddr("::2")); !v.Listed {
		t.Errorf("IPv6 client (nibbles) not listed: %+v", v)
	}
	if v := c.Check(ctx, netip.MustParseAddr("127.0.0.5")); v.Listed || len(v.Hits) != 0 {
		t.Errorf("client on no list: %+v", v)
	}
	if v := c.Check(ctx, netip.MustParseAddr("127.0.0.4")); v.Listed || len(v.Hits) != 0 || !slices.Equal(v.Failed, []string{"zen.test"}) {
		t.Errorf("127.255.255.254 (an error code) counted: %+v", v)
	}
	if v := c.Check(ctx, netip.MustParseAddr("127.0.0.6")); v.Listed || len(v.Hits) != 0 || len(v.Failed) != 0 {
		t.Errorf("an answer outside the filter counted: %+v", v)
	}
	if got := e.m.Errors.Value("zen.test"); got != 1 {
		t.Errorf("errors{zen.test} = %d, want 1", got)
	}
	if got := e.m.Hits.Value("zen.test"); got != 2 {
		t.Errorf("hits{zen.test} = %d, want 2", got)
	}

	// Below the threshold: one list of weight 1 is not enough for 3.
	e.dns.Add("7.0.0.127.other.test. 300 IN A 127.0.0.2")
	if v := c.Check(ctx, netip.MustParseAddr("127.0.0.7")); v.Listed || v.Score != 1 {
		t.Errorf("score 1 refused at threshold 3: %+v", v)
	}

	// The allow-list cancels the blocklist.
	wl := e.checker(t, 1, "zen.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-3")
	if v := wl.Check(ctx, netip.MustParseAddr("127.0.0.2")); v.Listed || v.Score != 0 || len(v.Hits) != 2 {
		t.Errorf("allow-listed client: %+v", v)
	}
	if v := wl.Check(ctx, netip.MustParseAddr("127.0.0.3")); !v.Listed || v.Score != 3 {
		t.Errorf("client only on the blocklist: %+v", v)
	}
}

func TestCheckerTimeout(t *testing.T) {
	e := newEnv(t)
	e.dns.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.2")
	e.dns.SetSilent("slow.test")
	c := e.checker(t, 1, "zen.test", "slow.test*5")
	answered := make(chan struct{})
	c.afterResult = func(left int) {
		if left == 1 {
			close(answered)
		}
	}
	l := c.Start(ctx, netip.MustParseAddr("127.0.0.2"))
	<-answered // zen.test has answered; slow.test never will
	if err := e.clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(5 * time.Second)
	v := l.Wait(ctx)
	if !v.Listed || !slices.Equal(v.Lists(), []string{"zen.test"}) || !slices.Equal(v.TimedOut, []string{"slow.test"}) {
		t.Fatalf("verdict %+v; want listed by zen.test, slow.test timed out", v)
	}
	if got := e.m.Timeouts.Value("slow.test"); got != 1 {
		t.Errorf("timeouts{slow.test} = %d, want 1", got)
	}
	if got := e.m.Hits.Value("slow.test"); got != 0 {
		t.Errorf("a timed-out list counted a hit")
	}
}

func TestCacheHonoursTTL(t *testing.T) {
	e := newEnv(t)
	e.dns.Add("2.0.0.127.zen.test. 120 IN A 127.0.0.2")
	e.dns.SetSOA("zen.test", 3600, 600) // not listed: kept 10 minutes
	c := e.checker(t, 1, "zen.test")
	listed, clean := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.9")

	if v := c.Check(ctx, listed); !v.Listed {
		t.Fatalf("not listed: %+v", v)
	}
	if v := c.Check(ctx, clean); v.Listed {
		t.Fatalf("listed: %+v", v)
	}
	q := e.dns.Queries()
	// The list changes: the cached answers hold until their TTLs pass.
	e.dns.Remove("2.0.0.127.zen.test")
	e.dns.Add("9.0.0.127.zen.test. 120 IN A 127.0.0.2")
	e.clk.Advance(119 * time.Second)
	if v := c.Check(ctx, listed); !v.Listed {
		t.Errorf("cached listing lost before its TTL")
	}
	if v := c.Check(ctx, clean); v.Listed {
		t.Errorf("cached negative answer lost before its TTL")
	}
	if got := e.dns.Queries(); got != q {
		t.Errorf("%d questions asked within the TTL, want 0", got-q)
	}
	e.clk.Advance(2 * time.Second) // 121s: the listing's 120s TTL passed
	if v := c.Check(ctx, listed); v.Listed {
		t.Errorf("delisted client still listed after the TTL")
	}
	if v := c.Check(ctx, clean); v.Listed {
		t.Errorf("negative answer (600s) dropped after 121s")
	}
	e.clk.Advance(600 * time.Second)
	if v := c.Check(ctx, clean); !v.Listed {
		t.Errorf("new listing not seen after the negative TTL")
	}
}

func TestCacheBounded(t *testing.T) {
	e := newEnv(t)
	c := New(Config{Sites: []Site{{Zone: "zen.test", Weight: 1}}, CacheSize: 20, Resolver: e.res, Clock: e.clk})
	for i := range 100 {
		c.Check(ctx, netip.AddrFrom4([4]byte{127, 1, byte(i / 256), byte(i)}))
		if n := c.cache.len(); n > 20 {
			t.Fatalf("cache holds %d entries, bound 20", n)
		}
	}
}

func TestDisabledChecker(t *testing.T) {
	c := New(Config{})
	if c.Enabled() {
		t.Fatal("enabled without lists")
	}
	if l := c.Start(ctx, netip.MustParseAddr("127.0.0.2")); l != nil || l.Wait(ctx).Listed {
		t.Fatal("a disabled checker looked something up")
	}
}

func TestMonitor(t *testing.T) {
	e := newEnv(t)
	ipSite, _ := ParseSite("zen.test=127.0.0.[2..11]", false)
	dblSite, _ := ParseSite("dbl.test", false)
	var changes []Change
	domains := []string{"example.test", "other.test"}
	m := NewMonitor(MonitorConfig{
		IPs:         []netip.Addr{netip.MustParseAddr("127.0.0.20"), netip.MustParseAddr("::20")},
		IPSites:     []Site{ipSite},
		Domains:     func(context.Context) ([]string, error) { return domains, nil },
		DomainSites: []Site{dblSite},
		Interval:    30 * time.Minute,
		Resolver:    e.res, Clock: e.clk, Metrics: e.m,
		OnChange: func(c Change) { changes = append(changes, c) },
	})
	var subscribed []Change
	m.Subscribe(func(c Change) { subscribed = append(subscribed, c) })
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { m.Run(rctx); close(done) }()
	defer func() { cancel(); <-done }()
	round := func() {
		t.Helper()
		if err := e.clk.WaitTimers(ctx, 1); err != nil { // the round ended, the next is due
			t.Fatal(err)
		}
	}
	round()
	if s := m.Status(); len(s) != 0 || m.LastCheck().IsZero() {
		t.Fatalf("status before any listing: %+v (last check %v)", s, m.LastCheck())
	}

	e.dns.Add("20.0.0.127.zen.test. 300 IN A 127.0.0.3")
	e.dns.AddTXT("20.0.0.127.zen.test", "listed: spam trap hits")
	e.dns.Add("example.test.dbl.test. 300 IN A 127.0.1.2")
	listedAt := e.clk.Now().Add(30 * time.Minute)
	e.clk.Advance(30 * time.Minute)
	round()
	s := m.Status()
	if len(s) != 2 {
		t.Fatalf("status: %+v; want 127.0.0.20 on zen.test and example.test on dbl.test", s)
	}
	if s[0].Target != "127.0.0.20" || s[0].Kind != KindIP || s[0].List != "zen.test" || !s[0].Since.Equal(listedAt) ||
		!slices.Equal(s[0].Codes, []string{"127.0.0.3"}) || s[0].Reason != "listed: spam trap hits" {
		t.Errorf("IP listing: %+v", s[0])
	}
	if s[1].Target != "example.test" || s[1].Kind != KindDomain || s[1].List != "dbl.test" {
		t.Errorf("domain listing: %+v", s[1])
	}
	if v, ok := e.m.Listed.Value("127.0.0.20", "zen.test"); !ok || v != 1 {
		t.Errorf("herald_blocklist_listed{127.0.0.20,zen.test} = %v, %v", v, ok)
	}
	if len(changes) != 2 || !changes[0].Listed {
		t.Errorf("changes: %+v", changes)
	}

	// Still listed a round later: Since stays; then delisted.
	e.clk.Advance(30 * time.Minute)
	round()
	if s := m.Status(); len(s) != 2 || !s[0].Since.Equal(listedAt) || !s[0].Checked.After(listedAt) {
		t.Errorf("status a round later: %+v", s)
	}
	e.dns.Remove("20.0.0.127.zen.test")
	e.clk.Advance(30 * time.Minute)
	round()
	if s := m.Status(); len(s) != 1 || s[0].Target != "example.test" {
		t.Errorf("status after delisting: %+v", s)
	}
	if _, ok := e.m.Listed.Value("127.0.0.20", "zen.test"); ok {
		t.Error("the gauge of a delisted IP is still exported")
	}
	if len(changes) != 3 || changes[2].Listed || changes[2].Target != "127.0.0.20" {
		t.Errorf("changes: %+v", changes)
	}
	if len(subscribed) != 3 {
		t.Errorf("a subscriber saw %d changes, want 3", len(subscribed))
	}

	// A list that stops answering changes nothing.
	e.dns.SetServfail("example.test.dbl.test")
	e.clk.Advance(30 * time.Minute)
	round()
	if s := m.Status(); len(s) != 1 || s[0].Target != "example.test" {
		t.Errorf("status after a failed lookup: %+v", s)
	}
	var b strings.Builder
	e.reg.Write(&b)
	if !strings.Contains(b.String(), `herald_blocklist_listed{target="example.test",list="dbl.test"} 1`) {
		t.Errorf("metrics:\n%s", b.String())
	}

	// A domain removed from the store is no longer reported.
	domains = []string{"other.test"}
	e.clk.Advance(30 * time.Minute)
	round()
	if s := m.Status(); len(s) != 0 {
		t.Errorf("status after the listed domain was removed: %+v", s)
	}
	if _, ok := e.m.Listed.Value("example.test", "dbl.test"); ok {
		t.Error("the gauge of a removed domain is still exported")
	}
}

// A list that fails for every client is counted each time but logged once
// a minute, not once per client.
func TestFailingListLoggedOncePerMinute(t *testing.T) {
	e := newEnv(t)
	e.dns.SetServfail("1.0.0.127.down.test")
	e.dns.SetServfail("2.0.0.127.down.test")
	var logs strings.Builder
	site, _ := ParseSite("down.test", true)
	c := New(Config{Sites: []Site{site}, Resolver: e.res, Clock: e.clk, Metrics: e.m,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	c.Check(ctx, netip.MustParseAddr("127.0.0.1"))
	c.Check(ctx, netip.MustParseAddr("127.0.0.2"))
	if n := strings.Count(logs.String(), "lookup failed"); n != 1 {
		t.Errorf("%d warnings for two failures within a minute, want 1:\n%s", n, logs.String())
	}
	e.clk.Advance(time.Minute)
	c.Check(ctx, netip.MustParseAddr("127.0.0.1"))
	if n := strings.Count(logs.String(), "lookup failed"); n != 2 {
		t.Errorf("%d warnings after a minute, want 2", n)
	}
	if got := e.m.Errors.Value("down.test"); got != 3 {
		t.Errorf("errors{down.test} = %d, want 3", got)
	}
}

// BenchmarkCheck measures the verdict for a client on three lists:
// uncached (three questions in parallel to the loopback DNS server, plus a
// TXT for the listing) and cached.
func BenchmarkCheck(b *testing.B) {
	d := testdns.Start(b)
	res, err := resolve.NewClient(d.Addr(), 5*time.Second)
	if err != nil {
		b.Fatal(err)
	}
	d.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.2")
	d.AddTXT("2.0.0.127.zen.test", "listed")
	var sites []Site
	for _, s := range []string{"zen.test*3", "bl.test", "wl.test*-2"} {
		site, _ := ParseSite(s, true)
		sites = append(sites, site)
	}
	ip := netip.MustParseAddr("127.0.0.2")
	b.Run("uncached", func(b *testing.B) {
		c := New(Config{Sites: sites, Resolver: res, CacheSize: 1})
		for b.Loop() {
			c.cache = newCache(1, time.Minute, time.Hour, clock.Real{}) // empty
			if !c.Check(ctx, ip).Listed {
				b.Fatal("not listed")
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		c := New(Config{Sites: sites, Resolver: res})
		c.Check(ctx, ip)
		for b.Loop() {
			if !c.Check(ctx, ip).Listed {
				b.Fatal("not listed")
			}
		}
	})
}
