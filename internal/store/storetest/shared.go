package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// sharedTests is the part of the suite for the state every node shares
// (secrets, DMARC reports, TLS-RPT, rate windows, destinations) on one
// node; sharedNodeTests (in nodeTests) covers two.
var sharedTests = []test{
	{"Secret", testSecret},
	{"DMARCReports", testDMARCReports},
	{"TLSCounts", testTLSCounts},
	{"TLSClaims", testTLSClaims},
	{"RateWindows", testRateWindows},
	{"DestinationConnections", testDestinationConnections},
	{"DestinationRate", testDestinationRate},
	{"DestinationBackOff", testDestinationBackOff},
}

var sharedNodeTests = []nodeTest{
	{"SameSecret", testNodesSameSecret},
	{"DMARCReportOnce", testNodesDMARCReportOnce},
	{"TLSReportSentOnce", testNodesTLSReportSentOnce},
	{"RateShared", testNodesRateShared},
	{"DestinationSlotsShared", testNodesDestinationSlotsShared},
	{"DestinationSlotsExpire", testNodesDestinationSlotsExpire},
	{"DestinationPauseShared", testNodesDestinationPauseShared},
	{"FirstUseConcurrent", testNodesFirstUseConcurrent},
}

func testSecret(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.Secret(ctx, "verp", nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("absent secret read: %v, want ErrNotFound", err)
	}
	a, b := bytes.Repeat([]byte{0xa1}, 32), bytes.Repeat([]byte{0xb2}, 32)
	got, err := s.Secret(ctx, "verp", a)
	must(t, "create secret", err)
	if !bytes.Equal(got, a) {
		t.Fatalf("created secret %x, want %x", got, a)
	}
	if got, err := s.Secret(ctx, "verp", b); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("second creation: %x %v, want the first secret kept", got, err)
	}
	if got, err := s.Secret(ctx, "verp", nil); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("read: %x %v", got, err)
	}
	if got, err := s.Secret(ctx, "other", b); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("another name: %x %v", got, err)
	}
}

func dmarcReport(domain, reporter, id string, begin time.Time, data string) store.DMARCReport {
	return store.DMARCReport{Domain: domain, Reporter: reporter, ReportID: id, Begin: begin, End: begin.Add(24*time.Hour - time.Second),
		Received: base, Data: []byte(data)}
}

func reportSummary(rs []store.DMARCReport) []string {
	var out []string
	for _, r := range rs {
		out = append(out, fmt.Sprintf("%s %s %s %s %s", r.Domain, r.Reporter, r.ReportID, r.Begin.UTC().Format("01-02"), r.Data))
	}
	return out
}

func testDMARCReports(t *testing.T, s store.Store) {
	ctx := context.Background()
	day := base.Truncate(24 * time.Hour)
	must(t, "add", s.AddDMARCReport(ctx, dmarcReport("Example.com", "google.com", "r1", day, `{"n":1}`)))
	must(t, "add", s.AddDMARCReport(ctx, dmarcReport("example.com", "yahoo.com", "r1", day.Add(-24*time.Hour), `{"n":2}`)))
	must(t, "add", s.AddDMARCReport(ctx, dmarcReport("other.test", "google.com", "r9", day, `{"n":3}`)))
	// The same report again, even with other contents: kept once.
	if err := s.AddDMARCReport(ctx, dmarcReport("example.com", "google.com", "r1", day, `{"n":4}`)); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate report: %v, want ErrExists", err)
	}
	// The same ID for another period is another report.
	must(t, "add", s.AddDMARCReport(ctx, dmarcReport("example.com", "google.com", "r1", day.Add(24*time.Hour), `{"n":5}`)))

	got, err := s.ListDMARCReports(ctx, "EXAMPLE.com")
	must(t, "list", err)
	want := []string{"example.com yahoo.com r1 11-25 {\"n\":2}", "example.com google.com r1 11-26 {\"n\":1}", "example.com google.com r1 11-27 {\"n\":5}"}
	if !slices.Equal(reportSummary(got), want) {
		t.Fatalf("reports of example.com:\n%q\nwant\n%q", reportSummary(got), want)
	}
	if got[0].End != day.Add(-time.Second) || !got[0].Received.Equal(base) {
		t.Errorf("period end %v received %v", got[0].End, got[0].Received)
	}
	all, err := s.ListDMARCReports(ctx, "")
	must(t, "list all", err)
	if len(all) != 4 || all[2].Domain != "other.test" && all[1].Domain != "other.test" {
		t.Fatalf("all reports: %q", reportSummary(all))
	}
	if none, err := s.ListDMARCReports(ctx, "nobody.test"); err != nil || len(none) != 0 {
		t.Fatalf("unknown domain: %v %v", none, err)
	}
}

var stsPolicy = []string{"version: STSv1", "mode: enforce", "mx: *.mail.example.com", "max_age: 86400"}

func tlsOK(day time.Time, domain string, n int64) store.TLSCount {
	return store.TLSCount{Day: day, Domain: domain, PolicyType: "sts", PolicyString: stsPolicy, MXPatterns: []string{"*.mail.example.com"}, Count: n}
}

func tlsFail(day time.Time, domain string, n int64) store.TLSCount {
	c := tlsOK(day, domain, n)
	c.Result, c.MXHost, c.ReceivingIP, c.Info = "certificate-expired", "mx2.mail.example.com", "192.0.2.2", "expired"
	return c
}

func countSummary(cs []store.TLSCount) []string {
	var out []string
	for _, c := range cs {
		out = append(out, fmt.Sprintf("%s %s %s %d", c.Domain, c.PolicyType, c.Result, c.Count))
	}
	slices.Sort(out)
	return out
}

func testTLSCounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	day := base.Truncate(24 * time.Hour)
	must(t, "add", s.AddTLSCounts(ctx, []store.TLSCount{tlsOK(day, "Example.com", 3), tlsFail(day, "example.com", 2),
		{Day: day, Domain: "other.test", PolicyType: "no-policy-found", Count: 1}}))
	must(t, "add", s.AddTLSCounts(ctx, []store.TLSCount{tlsOK(day.Add(5*time.Hour), "example.com", 4), tlsOK(day.Add(24*time.Hour), "example.com", 1)}))
	must(t, "add nothing", s.AddTLSCounts(ctx, nil))

	got, err := s.TLSCounts(ctx, day.Add(time.Hour))
	must(t, "counts", err)
	want := []string{"example.com sts  7", "example.com sts certificate-expired 2", "other.test no-policy-found  1"}
	if !slices.Equal(countSummary(got), want) {
		t.Fatalf("counts %q, want %q", countSummary(got), want)
	}
	for _, c := range got {
		if c.Result == "certificate-expired" && (c.MXHost != "mx2.mail.example.com" || c.ReceivingIP != "192.0.2.2" || c.Info != "expired" ||
			!slices.Equal(c.PolicyString, stsPolicy) || c.MXPatterns[0] != "*.mail.example.com" || !c.Day.Equal(day)) {
			t.Errorf("failure counter %+v", c)
		}
		if c.Domain == "other.test" && (c.PolicyString != nil || c.MXPatterns != nil) {
			t.Errorf("empty lists read back as %q %q", c.PolicyString, c.MXPatterns)
		}
	}
	days, err := s.TLSCountDays(ctx, day.Add(24*time.Hour))
	must(t, "days", err)
	if len(days) != 1 || !days[0].Equal(day) {
		t.Fatalf("days before tomorrow: %v", days)
	}
	days, err = s.TLSCountDays(ctx, day.Add(48*time.Hour))
	must(t, "days", err)
	if len(days) != 2 || !days[1].Equal(day.Add(24*time.Hour)) {
		t.Fatalf("days: %v", days)
	}
	must(t, "prune", s.PruneTLSReports(ctx, day.Add(24*time.Hour)))
	if got, _ := s.TLSCounts(ctx, day); len(got) != 0 {
		t.Fatalf("pruned day still has %q", countSummary(got))
	}
	if got, _ := s.TLSCounts(ctx, day.Add(24*time.Hour)); len(got) != 1 {
		t.Fatalf("the next day lost its counts: %q", countSummary(got))
	}
}

func testTLSClaims(t *testing.T, s store.Store) {
	ctx := context.Background()
	day := base.Truncate(24 * time.Hour)
	now := day.Add(24*time.Hour + 5*time.Minute)
	must(t, "add", s.AddTLSCounts(ctx, []store.TLSCount{tlsOK(day, "example.com", 3), tlsOK(day, "other.test", 1)}))
	tok, err := s.ClaimTLSReport(ctx, "example.com", day, now, now.Add(10*time.Minute))
	must(t, "claim", err)
	if tok == "" {
		t.Fatal("first claim refused")
	}
	if again, err := s.ClaimTLSReport(ctx, "EXAMPLE.com", day, now.Add(time.Minute), now.Add(11*time.Minute)); err != nil || again != "" {
		t.Fatalf("claim while held: %q %v, want refused", again, err)
	}
	// A claim that ran out (its node died while sending) is taken over,
	// and the first one can no longer finish.
	late := now.Add(11 * time.Minute)
	tok2, err := s.ClaimTLSReport(ctx, "example.com", day, late, late.Add(10*time.Minute))
	must(t, "take over", err)
	if tok2 == "" || tok2 == tok {
		t.Fatalf("take-over token %q (first %q)", tok2, tok)
	}
	if err := s.FinishTLSReport(ctx, "example.com", day, tok); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("finish with the lost claim: %v, want ErrLeaseLost", err)
	}
	if err := s.FinishTLSReport(ctx, "example.com", day, ""); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("finish without a token: %v, want ErrLeaseLost", err)
	}
	must(t, "finish", s.FinishTLSReport(ctx, "example.com", day, tok2))
	got, err := s.TLSCounts(ctx, day)
	must(t, "counts", err)
	if want := []string{"other.test sts  1"}; !slices.Equal(countSummary(got), want) {
		t.Fatalf("after finishing example.com: %q, want %q", countSummary(got), want)
	}
	// A finished report is never claimed again, even long after.
	if again, err := s.ClaimTLSReport(ctx, "example.com", day, late.Add(time.Hour), late.Add(2*time.Hour)); err != nil || again != "" {
		t.Fatalf("claim after finish: %q %v", again, err)
	}
	if err := s.FinishTLSReport(ctx, "example.com", day, tok2); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("second finish: %v, want ErrLeaseLost", err)
	}
	// Another day of the same domain is its own report.
	if other, err := s.ClaimTLSReport(ctx, "example.com", day.Add(24*time.Hour), late, late.Add(time.Hour)); err != nil || other == "" {
		t.Fatalf("claim of another day: %q %v", other, err)
	}
	must(t, "prune", s.PruneTLSReports(ctx, day.Add(24*time.Hour)))
	if tok, err := s.ClaimTLSReport(ctx, "example.com", day, late.Add(3*time.Hour), late.Add(4*time.Hour)); err != nil || tok == "" {
		t.Fatalf("claim after the claims were pruned: %q %v", tok, err)
	}
}

// slotSum adds up the live counts of window w.
func slotSum(slots []ratelimit.Slot, w int, now time.Time) int64 {
	var n int64
	for _, s := range slots {
		if s.Window == w && ratelimit.Live(s, now) {
			n += s.Count
		}
	}
	return n
}

func testRateWindows(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := base.Add(1300 * time.Millisecond)
	l := ratelimit.Limits{PerMinute: 10, PerHour: 25, PerDay: 40}
	ok, slots, err := s.TakeRate(ctx, "account:a", l, 6, now)
	must(t, "take", err)
	if !ok || slotSum(slots, 0, now) != 6 || slotSum(slots, 1, now) != 6 || slotSum(slots, 2, now) != 6 {
		t.Fatalf("first take: %v %+v", ok, slots)
	}
	now = now.Add(20 * time.Second)
	ok, slots, err = s.TakeRate(ctx, "account:a", l, 5, now)
	must(t, "take", err)
	if ok || slotSum(slots, 0, now) != 6 {
		t.Fatalf("take over the minute limit: ok=%v slots %+v, want refused and nothing counted", ok, slots)
	}
	if fits, wait := ratelimit.Check(slots, l, 5, now); fits || wait < 40*time.Second || wait > 45*time.Second {
		t.Fatalf("the refused take's wait from its slots: %v %v", fits, wait)
	}
	if ok, _, _ := s.TakeRate(ctx, "account:a", l, 4, now); !ok {
		t.Fatal("take up to the limit refused")
	}
	// Other keys are independent.
	if ok, _, _ := s.TakeRate(ctx, "user:b@example.com", l, 10, now); !ok {
		t.Fatal("another key refused")
	}
	// A minute later the minute window has room, the hour's counts stay.
	now = now.Add(65 * time.Second)
	slots, err = s.RateSlots(ctx, "account:a", now)
	must(t, "slots", err)
	if slotSum(slots, 0, now) != 0 || slotSum(slots, 1, now) != 10 {
		t.Fatalf("after a minute: %+v", slots)
	}
	for _, sl := range slots {
		if !ratelimit.Live(sl, now) {
			t.Errorf("dead slot returned: %+v", sl)
		}
	}
	if ok, _, _ := s.TakeRate(ctx, "account:a", l, 10, now); !ok {
		t.Fatal("a new minute refused")
	}
	if ok, _, _ := s.TakeRate(ctx, "account:a", l, 10, now.Add(2*time.Minute)); ok {
		t.Fatal("the hour limit (25) let 30 through")
	}
	// More than a limit at once never fits, and counts nothing.
	if ok, slots, _ := s.TakeRate(ctx, "account:c", l, 11, now); ok || len(slots) != 0 {
		t.Fatalf("n above the limit: %v %+v", ok, slots)
	}
	// Without any limit nothing is refused.
	if ok, _, err := s.TakeRate(ctx, "account:free", ratelimit.Limits{}, 1000, now); !ok || err != nil {
		t.Fatalf("unlimited: %v %v", ok, err)
	}
	// A day later everything has expired.
	later := now.Add(25 * time.Hour)
	if slots, _ := s.RateSlots(ctx, "account:a", later); len(slots) != 0 {
		t.Fatalf("a day later: %+v", slots)
	}
	if ok, _, _ := s.TakeRate(ctx, "account:a", l, 10, later); !ok {
		t.Fatal("refused a day later")
	}
}

// acquire is AcquireDestination that fails the test on an error.
func acquire(t *testing.T, s store.Store, key string, l store.DestinationLimits, now time.Time) store.DestinationGrant {
	t.Helper()
	g, err := s.AcquireDestination(context.Background(), key, l, now, now.Add(time.Minute))
	if err != nil {
		t.Fatalf("acquire %s: %v", key, err)
	}
	return g
}

func testDestinationConnections(t *testing.T, s store.Store) {
	ctx := context.Background()
	l := store.DestinationLimits{MaxConnections: 3}
	now := base
	var toks []string
	for i := range 3 {
		g := acquire(t, s, "gmail.com", l, now)
		if !g.OK || g.Token == "" || g.State.Factor != 1 {
			t.Fatalf("connection %d: %+v", i, g)
		}
		toks = append(toks, g.Token)
	}
	if g := acquire(t, s, "gmail.com", l, now); g.OK || g.Wait != 0 {
		t.Fatalf("fourth connection: %+v, want refused, no wait (busy)", g)
	}
	if g := acquire(t, s, "example.org", l, now); !g.OK {
		t.Fatal("another destination refused")
	}
	must(t, "release", s.ReleaseDestination(ctx, "gmail.com", toks[0]))
	must(t, "release again", s.ReleaseDestination(ctx, "gmail.com", toks[0]))
	must(t, "release unknown", s.ReleaseDestination(ctx, "nowhere.test", "x"))
	g := acquire(t, s, "gmail.com", l, now)
	if !g.OK {
		t.Fatal("refused after a release")
	}
	// Renewed connections are held past their first end; others run out.
	must(t, "renew", s.RenewDestination(ctx, "gmail.com", toks[1], now.Add(10*time.Minute)))
	must(t, "renew", s.RenewDestination(ctx, "gmail.com", toks[2], now.Add(10*time.Minute)))
	later := now.Add(2 * time.Minute) // g's connection ran out
	if g2 := acquire(t, s, "gmail.com", l, later); !g2.OK {
		t.Fatal("a connection that ran out was not given back")
	}
	if g3 := acquire(t, s, "gmail.com", l, later); g3.OK {
		t.Fatal("renewed connections were given back")
	}
	if err := s.RenewDestination(ctx, "gmail.com", g.Token, later.Add(time.Minute)); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("renewing a connection given back: %v, want ErrLeaseLost", err)
	}
	if err := s.RenewDestination(ctx, "gmail.com", "", later); !errors.Is(err, store.ErrLeaseLost) {
		t.Fatalf("renewing no token: %v", err)
	}
	// ReleaseLeases (start-up) gives back this node's connections.
	must(t, "release leases", s.ReleaseLeases(ctx))
	for i := range 3 {
		if g := acquire(t, s, "gmail.com", l, later); !g.OK {
			t.Fatalf("connection %d after ReleaseLeases refused", i)
		}
	}
	// No connection limit: no token, nothing held.
	for range 20 {
		if g := acquire(t, s, "free.test", store.DestinationLimits{}, now); !g.OK || g.Token != "" {
			t.Fatalf("unlimited destination: %+v", g)
		}
	}
}

func testDestinationRate(t *testing.T, s store.Store) {
	l := store.DestinationLimits{MessagesPerMinute: 20}
	now := base.Add(2 * time.Second)
	for i := range 20 {
		if g := acquire(t, s, "yahoo.com", l, now.Add(time.Duration(i)*time.Second)); !g.OK || g.Token != "" {
			t.Fatalf("message %d: %+v", i, g)
		}
	}
	at := now.Add(20 * time.Second)
	g := acquire(t, s, "yahoo.com", l, at)
	// The first message's slot (base..base+5s) stops counting at
	// base+65s.
	if g.OK || g.Wait != base.Add(65*time.Second).Sub(at) {
		t.Fatalf("21st message: %+v, want refused for %v", g, base.Add(65*time.Second).Sub(at))
	}
	if g := acquire(t, s, "yahoo.com", l, at.Add(g.Wait)); !g.OK {
		t.Fatal("refused after the wait")
	}
	// A connection limit and a rate together: a refusal by the rate holds
	// no connection.
	both := store.DestinationLimits{MaxConnections: 1, MessagesPerMinute: 1}
	g1 := acquire(t, s, "both.test", both, now)
	must(t, "release", s.ReleaseDestination(context.Background(), "both.test", g1.Token))
	if g := acquire(t, s, "both.test", both, now); g.OK || g.Wait <= 0 {
		t.Fatalf("over the rate: %+v", g)
	}
	if g := acquire(t, s, "both.test", store.DestinationLimits{MaxConnections: 1}, now); !g.OK {
		t.Fatal("a refusal by the rate held the connection")
	}
}

func testDestinationBackOff(t *testing.T, s store.Store) {
	ctx := context.Background()
	st, err := s.DestinationState(ctx, "outlook.com")
	must(t, "state", err)
	if st.Factor != 1 || st.Version != 0 || st.Strikes != 0 || !st.PausedUntil.IsZero() {
		t.Fatalf("state of an unknown destination: %+v", st)
	}
	now := base
	paused := store.DestinationState{Factor: 0.5, Strikes: 1, PausedUntil: now.Add(time.Minute), LastChange: now}
	ok, err := s.SetDestinationState(ctx, "outlook.com", 0, paused)
	must(t, "set", err)
	if !ok {
		t.Fatal("first set refused")
	}
	if ok, err := s.SetDestinationState(ctx, "outlook.com", 0, store.DestinationState{Factor: 1}); err != nil || ok {
		t.Fatalf("set with a stale version: %v %v, want refused", ok, err)
	}
	st, err = s.DestinationState(ctx, "outlook.com")
	must(t, "state", err)
	if st.Factor != 0.5 || st.Strikes != 1 || !st.PausedUntil.Equal(now.Add(time.Minute)) || !st.LastChange.Equal(now) || st.Version == 0 {
		t.Fatalf("state read back: %+v", st)
	}
	l := store.DestinationLimits{MaxConnections: 4, MessagesPerMinute: 10}
	g := acquire(t, s, "outlook.com", l, now.Add(20*time.Second))
	if g.OK || g.Wait != 40*time.Second || g.State.Version != st.Version {
		t.Fatalf("while paused: %+v, want refused for 40s", g)
	}
	// After the pause the halved limits apply: 2 connections, 5 a minute.
	after := now.Add(time.Minute)
	var toks []string
	for range 2 {
		g := acquire(t, s, "outlook.com", l, after)
		if !g.OK {
			t.Fatalf("after the pause: %+v", g)
		}
		toks = append(toks, g.Token)
	}
	if g := acquire(t, s, "outlook.com", l, after); g.OK {
		t.Fatal("a third connection at factor 0.5 of 4")
	}
	for _, tok := range toks {
		must(t, "release", s.ReleaseDestination(ctx, "outlook.com", tok))
	}
	for i := range 3 {
		g := acquire(t, s, "outlook.com", l, after)
		if !g.OK {
			t.Fatalf("message %d: %+v", i+3, g)
		}
		must(t, "release", s.ReleaseDestination(ctx, "outlook.com", g.Token))
	}
	if g := acquire(t, s, "outlook.com", l, after); g.OK || g.Wait <= 0 {
		t.Fatalf("a sixth message a minute at factor 0.5 of 10: %+v", g)
	}
	// Recovery: the next version replaces it.
	ok, err = s.SetDestinationState(ctx, "outlook.com", st.Version, store.DestinationState{Factor: 1, LastChange: after})
	if err != nil || !ok {
		t.Fatalf("recovery: %v %v", ok, err)
	}
	if st2, _ := s.DestinationState(ctx, "outlook.com"); st2.Factor != 1 || st2.Version == st.Version || !st2.PausedUntil.IsZero() {
		t.Fatalf("after recovery: %+v", st2)
	}
}

func testNodesSameSecret(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("b"), open("c")}
	for round := range 5 {
		name := fmt.Sprintf("secret%d", round)
		got := make([][]byte, len(nodes))
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() {
				v, err := n.Secret(ctx, name, bytes.Repeat([]byte{byte(i + 1)}, 32))
				if err != nil {
					t.Errorf("node %d: %v", i, err)
				}
				got[i] = v
			})
		}
		wg.Wait()
		for i := range got {
			if !bytes.Equal(got[i], got[0]) || len(got[i]) != 32 {
				t.Fatalf("round %d: node %d got %x, node 0 %x", round, i, got[i], got[0])
			}
		}
	}
}

func testNodesDMARCReportOnce(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	b := open("b")
	day := base.Truncate(24 * time.Hour)
	var added atomic.Int32
	var wg sync.WaitGroup
	for _, n := range []store.Store{s, b, s, b} {
		wg.Go(func() {
			err := n.AddDMARCReport(ctx, dmarcReport("example.com", "google.com", "r1", day, `{}`))
			switch {
			case err == nil:
				added.Add(1)
			case !errors.Is(err, store.ErrExists):
				t.Errorf("add: %v", err)
			}
		})
	}
	wg.Wait()
	if added.Load() != 1 {
		t.Fatalf("the same report was added %d times", added.Load())
	}
	for _, n := range []store.Store{s, b} {
		if got, err := n.ListDMARCReports(ctx, "example.com"); err != nil || len(got) != 1 {
			t.Fatalf("reports seen by a node: %q %v", reportSummary(got), err)
		}
	}
}

func testNodesTLSReportSentOnce(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("b"), open("c")}
	day := base.Truncate(24 * time.Hour)
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(func() {
			for range 10 {
				if err := n.AddTLSCounts(ctx, []store.TLSCount{tlsOK(day, "example.com", 1), tlsFail(day, "example.com", 1)}); err != nil {
					t.Errorf("add: %v", err)
				}
			}
		})
	}
	wg.Wait()
	got, err := nodes[1].TLSCounts(ctx, day)
	must(t, "counts", err)
	if want := []string{"example.com sts  30", "example.com sts certificate-expired 30"}; !slices.Equal(countSummary(got), want) {
		t.Fatalf("counts of three nodes: %q, want %q", countSummary(got), want)
	}
	now := day.Add(24*time.Hour + 5*time.Minute)
	toks := make([]string, len(nodes))
	for i, n := range nodes {
		wg.Go(func() {
			tok, err := n.ClaimTLSReport(ctx, "example.com", day, now, now.Add(10*time.Minute))
			if err != nil {
				t.Errorf("claim: %v", err)
			}
			toks[i] = tok
		})
	}
	wg.Wait()
	winner := -1
	for i, tok := range toks {
		if tok != "" {
			if winner >= 0 {
				t.Fatalf("nodes %d and %d both claimed the report", winner, i)
			}
			winner = i
		}
	}
	if winner < 0 {
		t.Fatal("no node claimed the report")
	}
	must(t, "finish", nodes[winner].FinishTLSReport(ctx, "example.com", day, toks[winner]))
	for _, n := range nodes {
		if tok, err := n.ClaimTLSReport(ctx, "example.com", day, now.Add(time.Hour), now.Add(2*time.Hour)); err != nil || tok != "" {
			t.Fatalf("claim after the report was sent: %q %v", tok, err)
		}
	}
}

func testNodesRateShared(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("b"), open("c")}
	l := ratelimit.Limits{PerMinute: 50, PerDay: 1000}
	now := base.Add(time.Second)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for _, n := range nodes {
		for range 2 {
			wg.Go(func() {
				for range 40 {
					got, _, err := n.TakeRate(ctx, "account:shared", l, 1, now)
					if err != nil {
						t.Errorf("take: %v", err)
						return
					}
					if got {
						ok.Add(1)
					}
				}
			})
		}
	}
	wg.Wait()
	if ok.Load() != 50 {
		t.Fatalf("three nodes took %d, want exactly the limit of 50", ok.Load())
	}
	for _, n := range nodes {
		slots, err := n.RateSlots(ctx, "account:shared", now)
		must(t, "slots", err)
		if slotSum(slots, 0, now) != 50 || slotSum(slots, 2, now) != 50 {
			t.Fatalf("a node sees %+v", slots)
		}
	}
}

func testNodesDestinationSlotsShared(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("b"), open("c")}
	l := store.DestinationLimits{MaxConnections: 4, MessagesPerMinute: 30}
	now := base.Add(time.Second)
	type held struct {
		node  int
		token string
	}
	var mu sync.Mutex
	var got []held
	var wg sync.WaitGroup
	for i, n := range nodes {
		for range 3 {
			wg.Go(func() {
				for range 5 {
					g, err := n.AcquireDestination(ctx, "gmail.com", l, now, now.Add(time.Minute))
					if err != nil {
						t.Errorf("acquire: %v", err)
						return
					}
					if g.OK {
						mu.Lock()
						got = append(got, held{i, g.Token})
						mu.Unlock()
					}
				}
			})
		}
	}
	wg.Wait()
	if len(got) != 4 {
		t.Fatalf("three nodes hold %d connections, want the limit of 4", len(got))
	}
	// Released on any node, a connection is free for every node; each
	// node's ReleaseLeases gives back only its own.
	must(t, "release", nodes[(got[0].node+1)%3].ReleaseDestination(ctx, "gmail.com", got[0].token))
	if g := acquire(t, nodes[2], "gmail.com", l, now); !g.OK {
		t.Fatal("a released connection was not free for another node")
	}
	if g := acquire(t, nodes[1], "gmail.com", l, now); g.OK {
		t.Fatal("a fifth connection")
	}
	mine := 0
	for _, h := range got[1:] {
		if h.node == 1 {
			mine++
		}
	}
	must(t, "release leases", nodes[1].ReleaseLeases(ctx))
	for i := range mine {
		if g := acquire(t, nodes[0], "gmail.com", l, now); !g.OK {
			t.Fatalf("connection %d given back by node b's ReleaseLeases refused", i)
		}
	}
	if g := acquire(t, nodes[0], "gmail.com", l, now); g.OK {
		t.Fatal("ReleaseLeases of node b gave back another node's connections")
	}
	// The messages of every node count against one rate: 30 a minute.
	started := 4 + 1 + mine
	for i := started; i < 30; i++ {
		g := acquire(t, nodes[i%3], "gmail.com", store.DestinationLimits{MessagesPerMinute: 30}, now)
		if !g.OK {
			t.Fatalf("message %d refused: %+v", i+1, g)
		}
	}
	if g := acquire(t, nodes[0], "gmail.com", store.DestinationLimits{MessagesPerMinute: 30}, now); g.OK {
		t.Fatal("a 31st message in the minute")
	}
}

func testNodesDestinationSlotsExpire(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	dead := open("dead")
	l := store.DestinationLimits{MaxConnections: 2}
	now := base
	for range 2 {
		if g := acquire(t, dead, "example.org", l, now); !g.OK {
			t.Fatal("refused")
		}
	}
	// The node dies: it never renews nor releases. Until its connections
	// run out the others wait; then they have them.
	if g := acquire(t, s, "example.org", l, now.Add(30*time.Second)); g.OK {
		t.Fatal("a live connection of a dead node was taken")
	}
	g := acquire(t, s, "example.org", l, now.Add(61*time.Second))
	if !g.OK {
		t.Fatal("the dead node's connections did not run out")
	}
	must(t, "close dead node", dead.Close())
	must(t, "renew", s.RenewDestination(ctx, "example.org", g.Token, now.Add(5*time.Minute)))
	if g2 := acquire(t, s, "example.org", l, now.Add(62*time.Second)); !g2.OK {
		t.Fatal("second connection refused")
	}
	if g3 := acquire(t, s, "example.org", l, now.Add(63*time.Second)); g3.OK {
		t.Fatal("a third connection")
	}
}

func testNodesDestinationPauseShared(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	b := open("b")
	now := base
	st, err := s.DestinationState(ctx, "yahoo.com")
	must(t, "state", err)
	// Both nodes saw a throttling reply; one backs off, the other's
	// change is refused and must reread.
	next := store.DestinationState{Factor: 0.5, Strikes: 1, PausedUntil: now.Add(2 * time.Minute), LastChange: now}
	okA, errA := s.SetDestinationState(ctx, "yahoo.com", st.Version, next)
	okB, errB := b.SetDestinationState(ctx, "yahoo.com", st.Version, next)
	if errA != nil || errB != nil || !okA || okB {
		t.Fatalf("concurrent back-off: a %v %v, b %v %v; want exactly a's applied", okA, errA, okB, errB)
	}
	g, err := b.AcquireDestination(ctx, "yahoo.com", store.DestinationLimits{}, now.Add(time.Minute), now.Add(2*time.Minute))
	must(t, "acquire", err)
	if g.OK || g.Wait != time.Minute || g.State.Strikes != 1 {
		t.Fatalf("node b while a paused the destination: %+v", g)
	}
	if st, _ := b.DestinationState(ctx, "yahoo.com"); st.Factor != 0.5 || !st.PausedUntil.Equal(now.Add(2*time.Minute)) {
		t.Fatalf("node b reads %+v", st)
	}
}

// Many nodes using a key for the first time at once (no row yet, in a
// backend that keeps one per key): every charge and every session under
// the limits is granted, none refused for the race.
func testNodesFirstUseConcurrent(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("b"), open("c")}
	now := base.Add(time.Second)
	for round := range 3 {
		rateKey, destKey := fmt.Sprintf("account:fresh%d", round), fmt.Sprintf("fresh%d.test", round)
		var refused atomic.Int32
		var wg sync.WaitGroup
		for i := range 24 {
			n := nodes[i%3]
			wg.Go(func() {
				ok, _, err := n.TakeRate(ctx, rateKey, ratelimit.Limits{PerMinute: 1000}, 1, now)
				if err != nil || !ok {
					refused.Add(1)
				}
				g, err := n.AcquireDestination(ctx, destKey, store.DestinationLimits{MaxConnections: 100, MessagesPerMinute: 1000}, now, now.Add(time.Minute))
				if err != nil || !g.OK {
					refused.Add(1)
				}
			})
		}
		wg.Wait()
		if refused.Load() != 0 {
			t.Fatalf("round %d: %d of 48 first uses refused under the limits", round, refused.Load())
		}
	}
}
