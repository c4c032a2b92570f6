package throttle

import (
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
)

var start = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func newTest(t *testing.T, domains map[string]Limits) (*Throttle, *clock.Fake) {
	t.Helper()
	clk := clock.NewFake(start)
	return New(Config{Domains: domains, Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}), clk
}

func TestBurstRate(t *testing.T) {
	t.Parallel()
	th, clk := newTest(t, map[string]Limits{"example.com": {MessagesPerMinute: 20}})
	var ok, refused int
	for range 100 {
		release, wait, got := th.Acquire("example.com")
		if got {
			ok++
			release()
			continue
		}
		refused++
		if wait <= 0 || wait > 3*time.Second+time.Millisecond {
			t.Fatalf("wait = %v, want (0, 3s]", wait)
		}
	}
	if ok != 20 || refused != 80 {
		t.Fatalf("ok %d refused %d, want 20 and 80", ok, refused)
	}
	// One token comes back every 3 seconds.
	clk.Advance(3 * time.Second)
	if _, _, got := th.Acquire("example.com"); !got {
		t.Fatal("refused after 3s")
	}
	if _, _, got := th.Acquire("example.com"); got {
		t.Fatal("two messages after 3s")
	}
	// A full minute refills the whole burst, and no more.
	clk.Advance(10 * time.Minute)
	n := 0
	for range 100 {
		if _, _, got := th.Acquire("EXAMPLE.com."); got {
			n++
		}
	}
	if n != 20 {
		t.Fatalf("after a quiet period %d went through, want 20", n)
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

func TestConnectionCapConcurrent(t *testing.T) {
	t.Parallel()
	const limit = 5
	th, _ := newTest(t, map[string]Limits{"example.com": {MaxConnections: limit}})
	var (
		cur, peak, done atomic.Int64
		wg              sync.WaitGroup
	)
	for range 50 {
		wg.Go(func() {
			for range 200 {
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
	if s := th.Status("example.com"); s.Active != 0 {
		t.Fatalf("Active = %d after all releases", s.Active)
	}
	t.Logf("peak %d, %d sessions", peak.Load(), done.Load())
}

func TestBackoffAndRecovery(t *testing.T) {
	t.Parallel()
	th, clk := newTest(t, map[string]Limits{"example.com": {MaxConnections: 4, MessagesPerMinute: 20}})
	th.Observe("example.com", 421, smtp.EnhancedCode{4, 7, 0}, "Too many connections, try again later")
	_, wait, ok := th.Acquire("example.com")
	if ok || wait != time.Minute {
		t.Fatalf("after 421: ok=%v wait=%v, want paused 1m", ok, wait)
	}
	// Replies from sessions that were already running do not escalate.
	th.Observe("example.com", 421, smtp.EnhancedCode{}, "busy")
	if _, wait, _ := th.Acquire("example.com"); wait != time.Minute {
		t.Fatalf("in-flight 421 escalated: wait %v", wait)
	}
	clk.Advance(time.Minute)
	// The effective rate is halved: 10 of a burst, 2 connections.
	if s := th.Status("example.com"); s.RateFactor != 0.5 {
		t.Fatalf("RateFactor = %v", s.RateFactor)
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
		th.Observe("example.com", 450, smtp.EnhancedCode{4, 2, 1}, "receiving mail at a rate that prevents additional messages")
		if _, wait, _ := th.Acquire("example.com"); wait != want*time.Minute {
			t.Fatalf("pause %v, want %v", wait, want*time.Minute)
		}
		clk.Advance(want * time.Minute)
	}
	if s := th.Status("example.com"); s.RateFactor != minFactor {
		t.Fatalf("RateFactor = %v, want floor %v", s.RateFactor, minFactor)
	}
	// Successes recover at most once a minute, doubling the rate.
	th.Observe("example.com", 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	if s := th.Status("example.com"); s.RateFactor != 2*minFactor {
		t.Fatalf("RateFactor after a success = %v", s.RateFactor)
	}
	th.Observe("example.com", 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	if s := th.Status("example.com"); s.RateFactor != 2*minFactor {
		t.Fatalf("recovered twice in a minute: %v", s.RateFactor)
	}
	for range 4 {
		clk.Advance(time.Minute)
		th.Observe("example.com", 250, smtp.EnhancedCode{2, 0, 0}, "ok")
	}
	if s := th.Status("example.com"); s.RateFactor != 1 {
		t.Fatalf("RateFactor after recovery = %v, want 1", s.RateFactor)
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

func TestObserveIgnores(t *testing.T) {
	t.Parallel()
	th, _ := newTest(t, nil)
	for _, r := range []struct {
		code int
		enh  smtp.EnhancedCode
		text string
	}{
		{550, smtp.EnhancedCode{5, 1, 1}, "User unknown"},
		{554, smtp.EnhancedCode{5, 7, 1}, "too many complaints"}, // permanent
		{452, smtp.EnhancedCode{4, 2, 2}, "Mailbox full"},
		{451, smtp.EnhancedCode{4, 4, 2}, "connection lost"},
		{250, smtp.EnhancedCode{2, 0, 0}, "ok"},
	} {
		th.Observe("gmail.com", r.code, r.enh, r.text)
		if _, _, ok := th.Acquire("gmail.com"); !ok {
			t.Fatalf("reply %d %v %q paused the destination", r.code, r.enh, r.text)
		}
	}
	for _, r := range []struct {
		code int
		enh  smtp.EnhancedCode
		text string
	}{
		{421, smtp.EnhancedCode{}, "Service not available"},
		{451, smtp.EnhancedCode{4, 7, 500}, "Server busy"},
		{450, smtp.EnhancedCode{}, "Too many messages, rate limit exceeded"},
	} {
		if !IsThrottling(r.code, r.enh, r.text) {
			t.Errorf("IsThrottling(%d, %v, %q) = false", r.code, r.enh, r.text)
		}
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

func TestBoundedMemory(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(start)
	th := New(Config{Default: Limits{MessagesPerMinute: 10}, Domains: map[string]Limits{}, Clock: clk, MaxDestinations: 100})
	held, _, _ := th.Acquire("held.example")
	for i := range 5000 {
		r, _, ok := th.Acquire(fmt.Sprintf("d%d.example", i))
		if !ok {
			t.Fatal("refused")
		}
		r()
		if i%50 == 0 {
			clk.Advance(time.Second)
		}
	}
	if n := th.Len(); n > 100 {
		t.Fatalf("%d destinations remembered, want <= 100", n)
	}
	if s := th.Status("held.example"); s.Active != 1 {
		t.Fatal("a destination with a session was forgotten")
	}
	held()
}
