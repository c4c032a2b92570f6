package queue_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// Lease renewal and takeover between nodes: two handles on one SQLite
// database are two nodes; the scheduler under test runs on node "a", and
// the test plays node "b" through its handle.

// safety bounds every wait of these tests: reaching it is a failure (a
// hang), never part of what is asserted.
const safety = 10 * time.Second

// gateTransport holds each delivery until released (or until its context
// ends) and answers with result.
type gateTransport struct {
	result  queue.Result
	entered chan string   // message ID, when a delivery starts
	release chan struct{} // one delivery may finish per value
	ended   chan error    // the delivery context's error when it finished
	mu      sync.Mutex
	calls   int
}

func newGate(result queue.Result) *gateTransport {
	return &gateTransport{result: result, entered: make(chan string, 10), release: make(chan struct{}, 10),
		ended: make(chan error, 10)}
}

func (g *gateTransport) Deliver(ctx context.Context, msg *store.Message, domain string, rcpts []store.Recipient, body func() (io.ReadCloser, error)) []queue.Attempt {
	g.mu.Lock()
	g.calls++
	g.mu.Unlock()
	g.entered <- msg.ID
	res := g.result
	select {
	case <-g.release:
	case <-ctx.Done():
		res = queue.Temporary
	}
	g.ended <- ctx.Err()
	var out []queue.Attempt
	for _, r := range rcpts {
		a := queue.Attempt{RecipientID: r.ID, Result: res, Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "ok by a"}
		switch res {
		case queue.Temporary:
			a.Code, a.Enhanced, a.Text = 451, smtp.EnhancedCode{4, 4, 1}, "cut off"
		case queue.Permanent:
			a.Code, a.Enhanced, a.Text = 550, smtp.EnhancedCode{5, 1, 1}, "no such user"
		}
		out = append(out, a)
	}
	return out
}

// warnings is a slog handler passing the messages of warnings and errors
// to a channel, so a test can wait for the scheduler to report.
type warnings chan string

func (w warnings) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }
func (w warnings) Handle(_ context.Context, r slog.Record) error {
	select {
	case w <- r.Message:
	default:
	}
	return nil
}
func (w warnings) WithAttrs([]slog.Attr) slog.Handler { return w }
func (w warnings) WithGroup(string) slog.Handler      { return w }

// waitWarning waits for a warning containing text.
func (w warnings) wait(t *testing.T, text string) {
	t.Helper()
	timeout := time.After(safety)
	for {
		select {
		case m := <-w:
			if strings.Contains(m, text) {
				return
			}
		case <-timeout:
			t.Fatalf("no warning %q", text)
		}
	}
}

// node is a scheduler on one handle of a shared database.
type node struct {
	st    *sqlite.Store
	sched *queue.Scheduler
	spool *spool.Spool
	stop  func() // stops the scheduler, waiting for its deliveries
}

func openNode(t *testing.T, dir, name string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(dir, sqlite.Options{Node: name, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func startNode(t *testing.T, dir, name string, cfg queue.Config, tr queue.Transport, b queue.Bouncer, clk clock.Clock, log *slog.Logger) *node {
	t.Helper()
	n := &node{st: openNode(t, dir, name)}
	n.sched = queue.New(cfg, n.st, tr, b, clk, log, nil)
	n.spool = spool.New(n.st, n.sched, clk)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.sched.Run(ctx); close(done) }()
	var once sync.Once
	n.stop = func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(n.stop)
	return n
}

func (n *node) submit(t *testing.T, rcpts ...string) *store.Message {
	t.Helper()
	msg := &store.Message{Sender: "a@x.test"}
	for _, r := range rcpts {
		msg.Recipients = append(msg.Recipients, store.Recipient{Address: r, Notify: "FAILURE"})
	}
	if _, err := n.spool.Accept(context.Background(), msg, strings.NewReader("Subject: t\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	return msg
}

func recv[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(safety):
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

func waitTimers(t *testing.T, clk *clock.Fake, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()
	if err := clk.WaitTimers(ctx, n); err != nil {
		t.Fatalf("waiting for %d renewal timers: %v", n, err)
	}
}

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// A delivery that runs six times longer than the lease keeps it: the
// scheduler renews it every LeaseTimeout/3, so the other node never takes
// the recipients over, and the outcome is recorded once.
func TestRenewalKeepsSlowDelivery(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	dir := t.TempDir()
	tr := newGate(queue.Delivered)
	bnc := &recBouncer{}
	a := startNode(t, dir, "a", queue.Config{LeaseTimeout: time.Minute, PollInterval: time.Hour}, tr, bnc, clk,
		slog.New(slog.DiscardHandler))
	b := openNode(t, dir, "b")
	msg := a.submit(t, "r@y.test")
	recv(t, tr.entered, "the delivery to start")
	for i := range 18 { // 6 minutes in steps of 20 s
		waitTimers(t, clk, 1) // the renewal of the previous step is done
		clk.Advance(20 * time.Second)
		if i%3 == 2 {
			waitTimers(t, clk, 1)
			ls, err := b.Lease(context.Background(), clk.Now().Add(time.Millisecond), time.Minute, 10)
			if err != nil || len(ls) != 0 {
				t.Fatalf("at +%v node b leased %d messages (%v): the renewed lease was taken over", clk.Now().Sub(t0), len(ls), err)
			}
		}
	}
	tr.release <- struct{}{}
	if err := recv(t, tr.ended, "the delivery to end"); err != nil {
		t.Fatalf("the delivery was cancelled: %v", err)
	}
	a.stop() // waits for the outcome to be recorded
	if _, err := a.st.Get(context.Background(), msg.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delivered message still queued: %v", err)
	}
	if tr.calls != 1 {
		t.Errorf("transport called %d times, want 1", tr.calls)
	}
}

// When another node took the lease over while this one was delivering,
// this node's outcome is dropped: neither its DSN (a permanent failure)
// nor its state (a delivery) overwrites what the new owner recorded.
func TestLostLeaseOutcomeDropped(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		result queue.Result
		warn   string
	}{
		{"failure", queue.Permanent, "lost before its DSNs"},
		{"delivery", queue.Delivered, "lost before its outcome was recorded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			clk := clock.NewFake(t0)
			dir := t.TempDir()
			tr := newGate(tc.result)
			bnc := &recBouncer{}
			warn := make(warnings, 100)
			a := startNode(t, dir, "a", queue.Config{LeaseTimeout: time.Minute, PollInterval: time.Hour}, tr, bnc, clk, slog.New(warn))
			b := openNode(t, dir, "b")
			msg := a.submit(t, "r@y.test")
			recv(t, tr.entered, "the delivery to start")
			// Node a stalls past its lease (no renewal: the clock stands
			// still for it); node b takes over and defers the recipient.
			ls, err := b.Lease(context.Background(), t0.Add(time.Minute+time.Second), time.Minute, 10)
			if err != nil || len(ls) != 1 {
				t.Fatalf("node b Lease = %d, %v", len(ls), err)
			}
			rid := ls[0].Message.Recipients[0].ID
			if err := b.Update(context.Background(), msg.ID, ls[0].Token, []store.Outcome{{RecipientID: rid,
				Status: store.StatusDeferred, NextAttempt: t0.Add(time.Hour), Reply: "451 by b"}}); err != nil {
				t.Fatal(err)
			}
			tr.release <- struct{}{}
			warn.wait(t, tc.warn)
			a.stop()
			g, err := b.Get(context.Background(), msg.ID)
			if err != nil {
				t.Fatal(err)
			}
			if r := g.Recipients[0]; r.Status != store.StatusDeferred || r.LastReply != "451 by b" || r.Attempts != 1 {
				t.Errorf("recipient = %+v, want node b's outcome", r)
			}
			bnc.mu.Lock()
			defer bnc.mu.Unlock()
			if len(bnc.kinds) != 0 {
				t.Errorf("node a sent DSNs %v for recipients it lost", bnc.kinds)
			}
		})
	}
}

// A renewal that finds the lease lost cancels the attempt in progress and
// drops its outcome; the new owner's lease is untouched.
func TestLostLeaseCancelsDelivery(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	dir := t.TempDir()
	tr := newGate(queue.Delivered)
	bnc := &recBouncer{}
	warn := make(warnings, 100)
	a := startNode(t, dir, "a", queue.Config{LeaseTimeout: time.Minute, PollInterval: time.Hour}, tr, bnc, clk, slog.New(warn))
	b := openNode(t, dir, "b")
	msg := a.submit(t, "r@y.test")
	recv(t, tr.entered, "the delivery to start")
	waitTimers(t, clk, 1)
	ls, err := b.Lease(context.Background(), t0.Add(time.Minute+time.Second), time.Minute, 10)
	if err != nil || len(ls) != 1 {
		t.Fatalf("node b Lease = %d, %v", len(ls), err)
	}
	clk.Advance(20 * time.Second) // node a's renewal finds the lease lost
	if err := recv(t, tr.ended, "the delivery to end"); !errors.Is(err, context.Canceled) {
		t.Fatalf("delivery context error = %v, want Canceled", err)
	}
	warn.wait(t, "lost during the attempt")
	a.stop()
	g, err := b.Get(context.Background(), msg.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := g.Recipients[0]; r.Status != store.StatusQueued || r.Attempts != 0 {
		t.Errorf("node a recorded its cancelled attempt: %+v", r)
	}
	if err := b.Update(context.Background(), msg.ID, ls[0].Token, []store.Outcome{{RecipientID: g.Recipients[0].ID,
		Status: store.StatusDelivered}}); err != nil {
		t.Errorf("node b's lease was disturbed: %v", err)
	}
}

// countTransport delivers at once and counts deliveries per recipient.
type countTransport struct {
	mu   sync.Mutex
	seen map[string]int
	done chan string
}

func (c *countTransport) Deliver(ctx context.Context, msg *store.Message, domain string, rcpts []store.Recipient, body func() (io.ReadCloser, error)) []queue.Attempt {
	var out []queue.Attempt
	for _, r := range rcpts {
		c.mu.Lock()
		c.seen[r.Address]++
		c.mu.Unlock()
		c.done <- r.Address
		out = append(out, queue.Attempt{RecipientID: r.ID, Result: queue.Delivered, Code: 250, Text: "ok"})
	}
	return out
}

// Two nodes running schedulers on one queue deliver every message exactly
// once: messages found by polling (both nodes race for them) and messages
// handed over directly by either node's spool.
func TestTwoSchedulersNoDuplicates(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const polled, direct = 40, 20
	tr := &countTransport{seen: map[string]int{}, done: make(chan string, polled+direct)}
	// Queued before the schedulers start: both poll for them at once.
	seed := openNode(t, dir, "seed")
	for i := range polled {
		m := &store.Message{ID: store.NewID(), Sender: "a@x.test", Received: time.Now(),
			Recipients: []store.Recipient{{Address: fmt.Sprintf("p%d@y.test", i)}}}
		body, err := seed.NewBody()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(body, "Subject: t\r\n\r\nhi\r\n")
		if _, err := seed.Enqueue(context.Background(), m, body, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := queue.Config{PollInterval: 5 * time.Millisecond, Workers: 3}
	log := slog.New(slog.DiscardHandler)
	nodes := []*node{
		startNode(t, dir, "a", cfg, tr, &recBouncer{}, clock.Real{}, log),
		startNode(t, dir, "b", cfg, tr, &recBouncer{}, clock.Real{}, log),
	}
	for i := range direct {
		nodes[i%2].submit(t, fmt.Sprintf("d%d@y.test", i))
	}
	for range polled + direct {
		recv(t, tr.done, "deliveries")
	}
	for _, n := range nodes {
		n.stop()
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.seen) != polled+direct {
		t.Errorf("%d recipients delivered, want %d", len(tr.seen), polled+direct)
	}
	for addr, n := range tr.seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", addr, n)
		}
	}
	st, err := seed.Stats(context.Background())
	if err != nil || st.Messages != 0 {
		t.Errorf("queue after delivery: %+v, %v; want empty", st, err)
	}
}
