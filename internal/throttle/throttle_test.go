package throttle

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

var start = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openStore returns a store of its own for one test.
func openStore(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(dir, sqlite.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func newTest(t *testing.T, domains map[string]Limits) (*Throttle, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(start)
	return New(Config{Store: openStore(t, t.TempDir()), Domains: domains, Clock: clk, Logger: discard()}), clk
}

func TestRateLimit(t *testing.T) {
	t.Parallel()
	th, clk := newTest(t, map[string]Limits{"example.com": {MessagesPerMinute: 20}})
	var ok, refused int
	var wait time.Duration
	for range 100 {
		release, w, got := th.Acquire("example.com")
		if got {
			ok++
			release()
			continue
		}
		refused++
		wait = w
		if w <= 0 || w > 65*time.Second {
			t.Fatalf("wait = %v, want (0, 65s]", w)
		}
	}
	if ok != 20 || refused != 80 {
		t.Fatalf("ok %d refused %d, want 20 and 80", ok, refused)
	}
	// Not one more before the minute's slot expires, and then all of it.
	clk.Advance(wait - time.Second)
	if _, _, got := th.Acquire("example.com"); got {
		t.Fatal("a 21st message within the minute")
	}
	clk.Advance(time.Second)
	n := 0
	for range 100 {
		if _, _, got := th.Acquire("EXAMPLE.com."); got {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("after the minute %d went through, want 20", n)
	}
	// Other domains are not affected (no table entry, zero Default).
	for range 100 {
		if _, _, got := th.Acquire("other.example"); !got {
			t.Fatal("unlimited domain refused")
		}
	}
}

func TestConnectionCap(t *testing.T) {
	t.Parallel()
	th, _ := newTest(t, map[string]Limits{"example.com": {MaxConnections: 3}})
	var rels []func()
	for range 3 {
		r, _, ok := th.Acquire("example.com")
		if !ok {
			t.Fatal("refused below the cap")
		}
		rels = append(rels, r)
	}
	if _, wait, ok := th.Acquire("example.com"); ok || wait != 2*time.Second {
		t.Fatalf("4th session: ok=%v wait=%v", ok, wait)
	}
	rels[0]()
	rels[0]() // idempotent: must not free a second slot
	if _, _, ok := th.Acquire("example.com"); !ok {
		t.Fatal("refused after a release")
	}
	if _, _, ok := th.Acquire("example.com"); ok {
		t.Fatal("double release freed two slots")
	}
}

// queue.max_per_destination caps every destination, the table's too.
func TestMaxPerDestination(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(start)
	th := New(Config{Store: openStore(t, t.TempDir()), Domains: map[string]Limits{"big.example": {MaxConnections: 50}, "small.example": {MaxConnections: 1}},
		MaxPerDestination: 2, Clock: clk, Logger: discard()})
	for d, want := range map[string]int{"big.example": 2, "small.example": 1, "unknown.example": 2} {
		n := 0
		for range 5 {
			if _, _, ok := th.Acquire(d); ok {
				n++
			}
		}
		if n != want {
			t.Errorf("%s: %d sessions, want %d", d, n, want)
		}
	}
}

func TestConnectionCapConcurrent(t *testing.T) {
	t.Parallel()
	const limit = 5
	th, _ := newTest(t, map[string]Limits{"example.com": {MaxConnections: limit}})
	var (
		cur, peak, done atomic.Int64
		wg              sync.WaitGroup
	)
	for range 20 {
		wg.Go(func() {
			for range 50 {
				release, _, ok := th.Acquire("example.com")
				if !ok {
					runtime.Gosched()
					continue
				}
				n := cur.Add(1)
				for {
					p := peak.Load()
					if n <= p || peak.CompareAndSwap(p, n) {
						break
					}
				}
				runtime.Gosched()
				cur.Add(-1)
				done.Add(1)
				release()
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p > limit || p < 1 {
		t.Fatalf("peak concurrency %d, want 1..%d", p, limit)
	}
	if done.Load() == 0 {
		t.Fatal("no session ran")
	}
	for i := range limit {
		if _, _, ok := th.Acquire("example.com"); !ok {
			t.Fatalf("session %d refused after all releases", i+1)
		}
	}
}

// factor returns the back-off factor of domain in the store.
func factor(t *testing.T, th *Throttle, domain string) store.DestinationState {
	t.Helper()
	s, err := th.Status(domain)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestBackoffAndRecovery(t *testing.T) {
	t.Parallel()
	th, clk := newTest(t, map[string]Limits{"example.com": {MaxConnections: 4, MessagesPerMinute: 20}})
	th.Observe("example.com", Reply{Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 0}, Text: "Too many connections, try again later", Remote: true})
	_, wait, ok := th.Acquire("example.com")
	if ok || wait != time.Minute {
		t.Fatalf("after 421: ok=%v wait=%v, want paused 1m", ok, wait)
	}
	// Replies from sessions that were already running do not escalate.
	th.Observe("example.com", Reply{Code: 421, Enhanced: smtp.EnhancedCode{}, Text: "busy", Remote: true})
	if _, wait, _ := th.Acquire("example.com"); wait != time.Minute {
		t.Fatalf("in-flight 421 escalated: wait %v", wait)
	}
	clk.Advance(time.Minute)
	// The effective rate is halved: 10 a minute, 2 connections.
	if s := factor(t, th, "example.com"); s.Factor != 0.5 {
		t.Fatalf("Factor = %v", s.Factor)
	}
	var rels []func()
	for range 2 {
		r, _, ok := th.Acquire("example.com")
		if !ok {
			t.Fatal("refused after the pause")
		}
		rels = append(rels, r)
	}
	if _, _, ok := th.Acquire("example.com"); ok {
		t.Fatal("connection cap not halved")
	}
	for _, r := range rels {
		r()
	}
	n := 2
	for range 30 {
		if r, _, ok := th.Acquire("example.com"); ok {
			n++
			r()
		}
	}
	if n != 10 {
		t.Fatalf("%d messages after back-off, want 10", n)
	}
	// Further episodes pause for 2m, 4m ... at most 30m.
	for _, want := range []time.Duration{2, 4, 8, 16, 30, 30} {
		th.Observe("example.com", Reply{Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 28}, Text: "Gmail has detected an unusual rate of unsolicited mail", Remote: true})
		if _, wait, _ := th.Acquire("example.com"); wait != want*time.Minute {
			t.Fatalf("pause %v, want %v", wait, want*time.Minute)
		}
		clk.Advance(want * time.Minute)
	}
	if s := factor(t, th, "example.com"); s.Factor != minFactor {
		t.Fatalf("Factor = %v, want floor %v", s.Factor, minFactor)
	}
	// Successes recover at most once a minute, doubling the rate.
	th.Acquire("example.com") // learns the state, as a delivery does
	th.Observe("example.com", Reply{Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "ok", Remote: true})
	if s := factor(t, th, "example.com"); s.Factor != 2*minFactor {
		t.Fatalf("Factor after a success = %v", s.Factor)
	}
	th.Observe("example.com", Reply{Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "ok", Remote: true})
	if s := factor(t, th, "example.com"); s.Factor != 2*minFactor {
		t.Fatalf("recovered twice in a minute: %v", s.Factor)
	}
	for range 4 {
		clk.Advance(time.Minute)
		th.Observe("example.com", Reply{Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "ok", Remote: true})
	}
	if s := factor(t, th, "example.com"); s.Factor != 1 {
		t.Fatalf("Factor after recovery = %v, want 1", s.Factor)
	}
	clk.Advance(time.Hour)
	n = 0
	for range 30 {
		if r, _, ok := th.Acquire("example.com"); ok {
			n++
			r()
		}
	}
	if n != 20 {
		t.Fatalf("%d messages after recovery, want 20", n)
	}
}

// Real reply texts from the providers (as published or seen in logs, the
// sending IP replaced) and from common MTAs.
var replyCases = []struct {
	name     string
	code     int
	enh      smtp.EnhancedCode
	text     string
	throttle bool
}{
	// Throttling.
	{"gmail 4.7.28", 421, smtp.EnhancedCode{4, 7, 28}, "[192.0.2.1] Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily rate limited. Please visit https://support.google.com/mail/?p=UnsolicitedRateLimitError to review our Bulk Email Senders Guidelines. - gsmtp", true},
	{"gmail 4.7.28 as 451", 451, smtp.EnhancedCode{4, 7, 28}, "Gmail has detected an unusual rate of email. - gsmtp", true},
	{"gmail DoS at HELO", 421, smtp.EnhancedCode{4, 7, 0}, "Try again later, closing connection. - gsmtp", true},
	{"gmail server busy", 421, smtp.EnhancedCode{4, 4, 5}, "Server busy, try again later. - gsmtp", true},
	{"yahoo TSS04", 421, smtp.EnhancedCode{4, 7, 0}, "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes", true},
	{"yahoo TSS04 as 451", 451, smtp.EnhancedCode{4, 7, 0}, "[TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints", true},
	{"yahoo TS02", 451, smtp.EnhancedCode{}, "[TS02] Temporarily deferred", true},
	{"outlook 4.7.650", 451, smtp.EnhancedCode{4, 7, 650}, "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. For e-mail delivery information, see https://aka.ms/postmaster (S775)", true},
	{"outlook 4.7.651", 451, smtp.EnhancedCode{4, 7, 651}, "The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation. (S3114)", true},
	{"outlook server busy", 451, smtp.EnhancedCode{4, 7, 500}, "Server busy. Please try again later from [192.0.2.1]. (S77714) [Hostname=AM0EUR02FT001.eop-EUR02.prod.protection.outlook.com]", true},
	{"outlook RP-001", 450, smtp.EnhancedCode{}, "RP-001 (BAY004-MC1F15) Unfortunately, some messages from 192.0.2.1 weren't sent. The sending IP exceeded a rate limit related to IP or domain reputation.", true},
	{"comcast throttled", 421, smtp.EnhancedCode{4, 1, 0}, "192.0.2.1 Throttled - try again later. Please see https://www.xfinity.com/support/articles/email-error-codes", true},
	{"comcast RL000003", 452, smtp.EnhancedCode{}, "RL000003 Too many sessions opened", true},
	{"icloud rate", 451, smtp.EnhancedCode{4, 7, 1}, "Rate limit exceeded, try again later", true},
	{"web.de too many messages", 421, smtp.EnhancedCode{}, "web.de (mxweb113) Nemesis ESMTP Service not available Service unavailable Reject due to policy restrictions Please try again later. Too many messages have been received in a short period of time.", true},
	{"gmx too many connections", 450, smtp.EnhancedCode{4, 7, 0}, "Too many connections from your IP, please reduce the sending rate", true},
	{"postfix anvil", 421, smtp.EnhancedCode{4, 7, 0}, "mx.example.com Error: too many connections from 192.0.2.1", true},
	{"generic 421", 421, smtp.EnhancedCode{}, "Service not available", true},

	// Not throttling.
	{"generic try again later", 451, smtp.EnhancedCode{4, 3, 0}, "try again later", false},
	{"gmail temporary system problem 451", 451, smtp.EnhancedCode{4, 3, 0}, "Mail server temporarily rejected message. - gsmtp", false},
	{"postgrey", 450, smtp.EnhancedCode{4, 2, 0}, "<bob@example.com>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/example.com.html", false},
	{"greylisting 4.7.1", 451, smtp.EnhancedCode{4, 7, 1}, "Greylisting in action, please come back later", false},
	{"rspamd greylist", 451, smtp.EnhancedCode{4, 7, 1}, "Try again later", false},
	{"greylisted 421", 421, smtp.EnhancedCode{4, 7, 0}, "greylisted, try again in 5 minutes", false},
	{"gmail receiving rate (one mailbox)", 450, smtp.EnhancedCode{4, 2, 1}, "The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. Please resend your message at a later time. - gsmtp", false},
	{"mailbox full", 452, smtp.EnhancedCode{4, 2, 2}, "The email account that you tried to reach is over quota. - gsmtp", false},
	{"too many recipients", 452, smtp.EnhancedCode{4, 5, 3}, "Your message has too many recipients. - gsmtp", false},
	{"gmail TLS required", 421, smtp.EnhancedCode{4, 7, 0}, "TLS required for RCPT domain, closing connection. - gsmtp", false},
	{"starttls unavailable", 454, smtp.EnhancedCode{4, 7, 0}, "TLS not available due to temporary reason", false},
	{"policy 4.7.1", 450, smtp.EnhancedCode{4, 7, 1}, "Client host rejected: cannot find your hostname", false},
	{"hostname is not a marker", 451, smtp.EnhancedCode{4, 3, 0}, "mx.corp-001.example: temporary failure, corporate limit policy", false},
	{"permanent with rate words", 554, smtp.EnhancedCode{5, 7, 1}, "too many complaints, rate limit", false},
	{"user unknown", 550, smtp.EnhancedCode{5, 1, 1}, "User unknown", false},
	{"success", 250, smtp.EnhancedCode{2, 0, 0}, "ok", false},
}

func TestIsThrottling(t *testing.T) {
	t.Parallel()
	for _, tc := range replyCases {
		if got := IsThrottling(tc.code, tc.enh, tc.text); got != tc.throttle {
			t.Errorf("%s: IsThrottling(%d %s %q) = %v, want %v", tc.name, tc.code, tc.enh, tc.text, got, tc.throttle)
		}
	}
}

// Each reply, from the remote, pauses a fresh destination exactly when it
// is a throttling signal.
func TestObserveReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range replyCases {
		th, _ := newTest(t, nil)
		th.Observe("gmail.com", Reply{Code: tc.code, Enhanced: tc.enh, Text: tc.text, Remote: true})
		_, _, ok := th.Acquire("gmail.com")
		if paused := !ok; paused != tc.throttle {
			t.Errorf("%s: %d %s %q paused=%v, want %v", tc.name, tc.code, tc.enh, tc.text, paused, tc.throttle)
		}
	}
}

// The review's finding: one "451 4.3.0 try again later" for one recipient
// paused the whole destination and halved its rate. It must not; a
// "421 4.7.0" does.
func TestGenericTempFailDoesNotPause(t *testing.T) {
	t.Parallel()
	th, _ := newTest(t, map[string]Limits{"example.com": {MaxConnections: 4, MessagesPerMinute: 20}})
	th.Observe("example.com", Reply{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Text: "try again later", Remote: true})
	if s := factor(t, th, "example.com"); !s.PausedUntil.IsZero() || s.Factor != 1 {
		t.Fatalf("after 451 4.3.0: paused until %v, rate factor %v; want not paused, 1", s.PausedUntil, s.Factor)
	}
	if r, _, ok := th.Acquire("example.com"); !ok {
		t.Fatal("451 4.3.0 paused the destination")
	} else {
		r()
	}
	th.Observe("example.com", Reply{Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 0}, Text: "Try again later, closing connection", Remote: true})
	if s := factor(t, th, "example.com"); s.PausedUntil.IsZero() || s.Factor != 0.5 {
		t.Fatalf("after 421 4.7.0: paused until %v, rate factor %v; want paused, 0.5", s.PausedUntil, s.Factor)
	}
	if _, wait, ok := th.Acquire("example.com"); ok || wait != time.Minute {
		t.Fatalf("after 421 4.7.0: ok=%v wait=%v, want paused 1m", ok, wait)
	}
}

// Herald's own deferrals (TLS policy, DNS, connection failures, the
// throttle's own hold-back) never pause a destination, whatever their
// code; nor do successes of local deliveries restore one.
func TestOwnDeferralsDoNotPause(t *testing.T) {
	t.Parallel()
	th, _ := newTest(t, nil)
	for _, r := range []Reply{
		{Code: 451, Enhanced: smtp.EnhancedCode{4, 7, 5}, Text: "mx.example.com: mta-sts: mx.example.com is not an MX host allowed by the policy of example.com"},
		{Code: 451, Enhanced: smtp.EnhancedCode{4, 7, 4}, Text: "mx.example.com[192.0.2.1]: STARTTLS not offered and TLS is required"},
		{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 3}, Text: "mx.example.com: dane: TLSA lookup for mx.example.com failed"},
		{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 1}, Text: "mx.example.com[192.0.2.1]: connect failed: connection refused"},
		{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 5}, Text: "delivery not started: waiting for a connection slot for example.com: context deadline exceeded"},
		{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Text: "held back: destination rate limit"},
		{Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 0}, Text: "too many connections"}, // not Remote
	} {
		th.Observe("example.com", r)
		if _, _, ok := th.Acquire("example.com"); !ok {
			t.Fatalf("our own %d %s %q paused the destination", r.Code, r.Enhanced, r.Text)
		}
	}
	if th.Len() != 1 {
		t.Errorf("%d destinations remembered", th.Len())
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	th, _ := newTest(t, nil)
	for in, want := range map[string]string{
		"GoogleMail.com.": "gmail.com", "hotmail.com": "outlook.com", "live.com": "outlook.com",
		"msn.com": "outlook.com", "aol.com": "yahoo.com", "ymail.com": "yahoo.com", "me.com": "icloud.com",
		"gmx.de": "gmx.net", "web.de": "web.de", "example.org": "example.org",
	} {
		if got := th.Key(in); got != want {
			t.Errorf("Key(%q) = %q, want %q", in, got, want)
		}
	}
	if got := th.KeyForMX("corp.example", []string{"aspmx.l.google.com."}); got != "gmail.com" {
		t.Errorf("Workspace domain key = %q", got)
	}
	if got := th.KeyForMX("corp.example", []string{"corp-example.mail.protection.outlook.com"}); got != "outlook.com" {
		t.Errorf("Microsoft 365 domain key = %q", got)
	}
	if got := th.KeyForMX("corp.example", []string{"mx.corp.example"}); got != "corp.example" {
		t.Errorf("self-hosted domain key = %q", got)
	}
	if l := th.Limits("googlemail.com"); l != DefaultDomains()["gmail.com"] {
		t.Errorf("Limits(googlemail.com) = %+v", l)
	}
	// An alias shares its provider's state.
	for range 60 {
		th.Acquire("gmail.com")
	}
	if _, _, ok := th.Acquire("googlemail.com"); ok {
		t.Error("googlemail.com did not share gmail.com's bucket")
	}
	// A table entry for an alias domain takes precedence over the alias.
	own := New(Config{Domains: map[string]Limits{"Hotmail.com": {MaxConnections: 1}}})
	if k := own.Key("hotmail.com"); k != "hotmail.com" {
		t.Errorf("Key with own entry = %q", k)
	}
	for k, l := range DefaultDomains() {
		if l.MaxConnections <= 0 || l.MessagesPerConnection <= 0 || l.MessagesPerMinute <= 0 {
			t.Errorf("default %s has a zero limit: %+v", k, l)
		}
	}
}

// The states kept in memory are bounded; a session whose destination was
// forgotten still gives its connection back.
func TestBoundedMemory(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(start)
	th := New(Config{Store: openStore(t, t.TempDir()), Default: Limits{MaxConnections: 1}, Domains: map[string]Limits{},
		Clock: clk, MaxDestinations: 100, Logger: discard()})
	held, _, _ := th.Acquire("held.example")
	for i := range 2000 {
		r, _, ok := th.Acquire(fmt.Sprintf("d%d.example", i))
		if !ok {
			t.Fatal("refused")
		}
		r()
	}
	if n := th.Len(); n > 100 {
		t.Fatalf("%d destinations remembered, want <= 100", n)
	}
	if _, _, ok := th.Acquire("held.example"); ok {
		t.Fatal("the held destination's connection was lost")
	}
	held()
	if r, _, ok := th.Acquire("held.example"); !ok {
		t.Fatal("the connection was not given back")
	} else {
		r()
	}
}

// A session's connection is renewed while it lasts, however long; a node
// that dies (its store handle gone: no renewal, no release) holds its
// connections only until they run out, then the other nodes have them.
// Two nodes of one SQLite database share its destinations in memory.
func TestConnectionHeldAndDeadNodeExpires(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	clk := clock.NewFake(start)
	cfg := Config{Domains: map[string]Limits{"example.com": {MaxConnections: 1}}, Hold: time.Minute, Clock: clk, Logger: discard()}
	a, b := cfg, cfg
	stA, err := sqlite.Open(dir, sqlite.Options{Node: "a", Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	a.Store, b.Store = stA, openStore(t, dir)
	thA, thB := New(a), New(b)
	release, _, ok := thA.Acquire("example.com")
	if !ok {
		t.Fatal("refused")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A long session: ten minutes, renewed every 20 seconds.
	for range 30 {
		if err := clk.WaitTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(20 * time.Second)
	}
	if err := clk.WaitTimers(ctx, 1); err != nil { // the renewal ran and armed the next
		t.Fatal(err)
	}
	if _, _, ok := thB.Acquire("example.com"); ok {
		t.Fatal("a session of ten minutes lost its connection")
	}
	release()
	if r, _, ok := thB.Acquire("example.com"); !ok {
		t.Fatal("a released connection is not free for the other node")
	} else {
		r()
	}
	// Node a takes the connection and dies.
	if _, _, ok := thA.Acquire("example.com"); !ok {
		t.Fatal("refused")
	}
	stA.Close()
	clk.Advance(59 * time.Second)
	if err := clk.WaitTimers(ctx, 1); err != nil { // its renewals failed
		t.Fatal(err)
	}
	if _, _, ok := thB.Acquire("example.com"); ok {
		t.Fatal("the dead node's connection was given back before it ran out")
	}
	clk.Advance(2 * time.Second)
	if r, _, ok := thB.Acquire("example.com"); !ok {
		t.Fatal("the dead node's connection did not run out")
	} else {
		r()
	}
}

// Three nodes on one PostgreSQL database: the connection cap and the
// minute hold for all of them together, and a throttling reply seen by
// one node pauses the destination for every node; two nodes seeing one at
// once make one episode.
func TestSharedByNodes(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.NewSchema(t)
	clk := clock.NewFake(start)
	var nodes []*Throttle
	for i := range 3 {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Node: fmt.Sprintf("mx%d", i), Logger: discard()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		nodes = append(nodes, New(Config{Store: st, Domains: map[string]Limits{"gmail.com": {MaxConnections: 4, MessagesPerMinute: 10}},
			Clock: clk, Logger: discard()}))
	}
	var held atomic.Int64
	var rels []func()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, th := range nodes {
		for range 3 {
			wg.Go(func() {
				if r, _, ok := th.Acquire("googlemail.com"); ok {
					held.Add(1)
					mu.Lock()
					rels = append(rels, r)
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if held.Load() != 4 {
		t.Fatalf("three nodes hold %d sessions to gmail.com, want 4", held.Load())
	}
	for _, r := range rels {
		r()
	}
	// 4 messages started; 6 more in the minute on any node, then none.
	n := 0
	for i := range 20 {
		if r, _, ok := nodes[i%3].Acquire("gmail.com"); ok {
			n++
			r()
		}
	}
	if n != 6 {
		t.Fatalf("%d more messages in the minute, want 6", n)
	}
	clk.Advance(2 * time.Minute)
	var obs sync.WaitGroup
	for _, th := range nodes[:2] {
		obs.Go(func() {
			th.Observe("gmail.com", Reply{Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 28}, Text: "unusual rate", Remote: true})
		})
	}
	obs.Wait()
	if s := factor(t, nodes[2], "gmail.com"); s.Strikes != 1 || s.Factor != 0.5 || !s.PausedUntil.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("after two nodes saw one throttling episode: %+v", s)
	}
	if _, wait, ok := nodes[2].Acquire("gmail.com"); ok || wait != time.Minute {
		t.Fatalf("the third node during the pause: ok %v wait %v", ok, wait)
	}
}

// With ConnWait, a session to a destination at its cap waits for a
// connection instead of being deferred: it is woken as soon as a session
// of this node ends, oldest first; at most four wait per connection of
// the destination, and a wait that runs out is told to defer.
func TestConnWait(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(start)
	th := New(Config{Store: openStore(t, t.TempDir()), Domains: map[string]Limits{"example.com": {MaxConnections: 1}},
		ConnWait: 10 * time.Second, ConnRetry: time.Second, Clock: clk, Logger: discard()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	held, _, ok := th.Acquire("example.com")
	if !ok {
		t.Fatal("refused")
	}
	type result struct {
		release func()
		wait    time.Duration
		ok      bool
	}
	got := make(chan result, 1)
	go func() {
		r, w, ok := th.Acquire("example.com")
		got <- result{r, w, ok}
	}()
	// The holder's renewal timer and the waiter's retry timer.
	if err := clk.WaitTimers(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// Four wait per connection: a fifth caller is told at once.
	more := make(chan result, 3)
	for range 3 {
		go func() {
			r, w, ok := th.Acquire("example.com")
			more <- result{r, w, ok}
		}()
	}
	if err := clk.WaitTimers(ctx, 5); err != nil {
		t.Fatal(err)
	}
	if _, wait, ok := th.Acquire("example.com"); ok || wait != 2*time.Second {
		t.Fatalf("a fifth waiter: ok %v wait %v", ok, wait)
	}
	held()
	r := <-got // the oldest waiter is woken first
	if !r.ok {
		t.Fatalf("the waiter was not given the released connection: wait %v", r.wait)
	}
	// Nobody releases now: the others wait ConnWait, then defer.
	for range 10 {
		if err := clk.WaitTimers(ctx, 4); err != nil { // three retry timers and r's renewal
			t.Fatal(err)
		}
		clk.Advance(time.Second)
	}
	for range 3 {
		if r2 := <-more; r2.ok || r2.wait != 2*time.Second {
			t.Fatalf("after ConnWait: ok %v wait %v", r2.ok, r2.wait)
		}
	}
	r.release()
}
