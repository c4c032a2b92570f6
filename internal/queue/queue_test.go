package queue_test

import (
	"context"
	"errors"
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

// scriptTransport answers each attempt with the next result scripted for
// the recipient (the last one repeats) and records what it saw.
type scriptTransport struct {
	mu      sync.Mutex
	script  map[string][]queue.Result
	calls   map[string]int
	bodies  map[string]string
	domains map[string]int
	done    chan string // recipient address after each attempt
}

func newScript(script map[string][]queue.Result) *scriptTransport {
	return &scriptTransport{script: script, calls: map[string]int{}, bodies: map[string]string{},
		domains: map[string]int{}, done: make(chan string, 100)}
}

func (s *scriptTransport) Deliver(ctx context.Context, msg *store.Message, domain string, rcpts []store.Recipient, body func() (io.ReadCloser, error)) []queue.Attempt {
	rc, err := body()
	var data []byte
	if err == nil {
		data, _ = io.ReadAll(rc)
		rc.Close()
	}
	var out []queue.Attempt
	s.mu.Lock()
	s.domains[domain]++
	for _, r := range rcpts {
		steps := s.script[r.Address]
		n := s.calls[r.Address]
		s.calls[r.Address]++
		res := queue.Delivered
		if len(steps) > 0 {
			res = steps[min(n, len(steps)-1)]
		}
		s.bodies[r.Address] = string(data)
		a := queue.Attempt{RecipientID: r.ID, Result: res, Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "ok", RemoteMTA: "mx.test[127.0.0.2]"}
		switch res {
		case queue.Temporary:
			a.Code, a.Enhanced, a.Text = 451, smtp.EnhancedCode{4, 2, 0}, "try later"
		case queue.Permanent:
			a.Code, a.Enhanced, a.Text = 550, smtp.EnhancedCode{5, 1, 1}, "no such user"
		}
		out = append(out, a)
	}
	s.mu.Unlock()
	for _, r := range rcpts {
		s.done <- r.Address
	}
	return out
}

type recBouncer struct {
	mu    sync.Mutex
	kinds []queue.BounceKind
	rcpts [][]queue.BouncedRecipient
	fail  bool
	ch    chan struct{}
}

func (b *recBouncer) Bounce(ctx context.Context, msg *store.Message, kind queue.BounceKind, rcpts []queue.BouncedRecipient) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return errors.New("disk on fire")
	}
	b.kinds = append(b.kinds, kind)
	b.rcpts = append(b.rcpts, rcpts)
	if b.ch != nil {
		b.ch <- struct{}{}
	}
	return nil
}

type env struct {
	st    *sqlite.Store
	sched *queue.Scheduler
	spool *spool.Spool
	tr    *scriptTransport
	bnc   *recBouncer
}

func start(t *testing.T, cfg queue.Config, script map[string][]queue.Result) *env {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &env{st: st, tr: newScript(script), bnc: &recBouncer{ch: make(chan struct{}, 10)}}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = 5 * time.Millisecond
	}
	if cfg.RetryInitial == 0 {
		cfg.RetryInitial = 10 * time.Millisecond
	}
	cfg.Workers = 4
	e.sched = queue.New(cfg, st, e.tr, e.bnc, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	e.spool = spool.New(st, e.sched, clock.Real{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { e.sched.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	return e
}

func (e *env) submit(t *testing.T, sender string, rcpts ...string) string {
	t.Helper()
	msg := &store.Message{Sender: sender}
	for _, r := range rcpts {
		msg.Recipients = append(msg.Recipients, store.Recipient{Address: r})
	}
	id, err := e.spool.Accept(context.Background(), msg, strings.NewReader("Subject: t\r\n\r\nhello\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func (e *env) waitAttempts(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for range n {
		select {
		case <-e.tr.done:
		case <-timeout:
			t.Fatalf("timed out waiting for %d attempts", n)
		}
	}
}

// waitGone waits until the message left the queue (all recipients final).
func (e *env) waitGone(t *testing.T, id string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := e.st.Get(context.Background(), id); errors.Is(err, store.ErrNotFound) {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("message %s still queued", id)
}

func TestDeliveredLeavesQueue(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{}, nil)
	id := e.submit(t, "a@x.test", "b@y.test", "c@z.test", "d@y.test")
	e.waitAttempts(t, 3)
	e.waitGone(t, id)
	e.tr.mu.Lock()
	defer e.tr.mu.Unlock()
	if e.tr.domains["y.test"] != 1 || e.tr.domains["z.test"] != 1 {
		t.Errorf("want one call per domain, got %v", e.tr.domains)
	}
	if !strings.Contains(e.tr.bodies["b@y.test"], "hello") {
		t.Errorf("body not passed: %q", e.tr.bodies["b@y.test"])
	}
	if len(e.bnc.kinds) != 0 {
		t.Errorf("unexpected bounce")
	}
}

func TestTemporaryThenDelivered(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{}, map[string][]queue.Result{"b@y.test": {queue.Temporary, queue.Temporary, queue.Delivered}})
	id := e.submit(t, "a@x.test", "b@y.test")
	e.waitAttempts(t, 1)
	// After the first failure the recipient is deferred with its reply recorded.
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := e.st.Get(context.Background(), id)
		if err == nil && m.Recipients[0].Status == store.StatusDeferred {
			if !strings.Contains(m.Recipients[0].LastReply, "451 4.2.0") {
				t.Errorf("last reply %q", m.Recipients[0].LastReply)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never deferred: %v %+v", err, m)
		}
		time.Sleep(time.Millisecond)
	}
	e.waitAttempts(t, 2)
	e.waitGone(t, id)
	if n := e.tr.calls["b@y.test"]; n != 3 {
		t.Errorf("attempts = %d, want 3", n)
	}
}

func TestPermanentFailureBounces(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{}, map[string][]queue.Result{"bad@y.test": {queue.Permanent}})
	id := e.submit(t, "a@x.test", "bad@y.test", "good@y.test")
	e.waitAttempts(t, 2)
	<-e.bnc.ch
	e.waitGone(t, id)
	e.bnc.mu.Lock()
	defer e.bnc.mu.Unlock()
	if len(e.bnc.rcpts) != 1 || len(e.bnc.rcpts[0]) != 1 || e.bnc.rcpts[0][0].Recipient.Address != "bad@y.test" || e.bnc.kinds[0] != queue.BounceFailed {
		t.Fatalf("bounce = %+v", e.bnc.rcpts)
	}
	if e.bnc.rcpts[0][0].Attempt.Code != 550 {
		t.Errorf("attempt code %d", e.bnc.rcpts[0][0].Attempt.Code)
	}
}

// A failed message with the null sender (a notification itself) is handed
// to the Bouncer, which tells the postmaster; delay and success notices
// are never sent for it.
func TestNullSenderFailureGoesToBouncer(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{}, map[string][]queue.Result{"bad@y.test": {queue.Permanent}})
	id := e.submit(t, "", "bad@y.test")
	e.waitAttempts(t, 1)
	<-e.bnc.ch
	e.waitGone(t, id)
	e.bnc.mu.Lock()
	defer e.bnc.mu.Unlock()
	if len(e.bnc.kinds) != 1 || e.bnc.kinds[0] != queue.BounceFailed || e.bnc.rcpts[0][0].Recipient.Address != "bad@y.test" {
		t.Fatalf("bounces = %v %+v, want one failure notice", e.bnc.kinds, e.bnc.rcpts)
	}
}

func TestExpiryBounces(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{MaxLifetime: 30 * time.Millisecond, RetryInitial: 20 * time.Millisecond},
		map[string][]queue.Result{"slow@y.test": {queue.Temporary}})
	id := e.submit(t, "a@x.test", "slow@y.test")
	<-e.bnc.ch
	e.waitGone(t, id)
	e.bnc.mu.Lock()
	defer e.bnc.mu.Unlock()
	if !e.bnc.rcpts[0][0].Expired {
		t.Fatal("bounce not marked expired")
	}
}

func TestDelayWarningOnce(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{DelayWarning: time.Nanosecond, RetryInitial: 5 * time.Millisecond, RetryMax: 5 * time.Millisecond},
		map[string][]queue.Result{"slow@y.test": {queue.Temporary, queue.Temporary, queue.Temporary, queue.Delivered}})
	id := e.submit(t, "a@x.test", "slow@y.test")
	e.waitAttempts(t, 4)
	e.waitGone(t, id)
	e.bnc.mu.Lock()
	defer e.bnc.mu.Unlock()
	if len(e.bnc.kinds) != 1 || e.bnc.kinds[0] != queue.BounceDelayed {
		t.Fatalf("want exactly one delay notice, got %v", e.bnc.kinds)
	}
}

func TestBounceFailureKeepsRecipient(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{RetryInitial: time.Hour}, map[string][]queue.Result{"bad@y.test": {queue.Permanent}})
	e.bnc.fail = true
	id := e.submit(t, "a@x.test", "bad@y.test")
	e.waitAttempts(t, 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := e.st.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("message lost although its bounce could not be queued: %v", err)
		}
		if m.Recipients[0].Status == store.StatusDeferred {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s", m.Recipients[0].Status)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestBackoff(t *testing.T) {
	s := queue.New(queue.Config{RetryInitial: time.Minute, RetryMax: 10 * time.Minute, RetryFactor: 2, RetryJitter: 0},
		nil, nil, nil, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	for n, want := range map[int]time.Duration{1: time.Minute, 2: 2 * time.Minute, 3: 4 * time.Minute, 4: 8 * time.Minute, 5: 10 * time.Minute, 50: 10 * time.Minute} {
		if got := s.Backoff(n); got != want {
			t.Errorf("Backoff(%d) = %v, want %v", n, got, want)
		}
	}
	j := queue.New(queue.Config{RetryInitial: time.Minute, RetryJitter: 0.2}, nil, nil, nil, clock.Real{}, slog.New(slog.DiscardHandler), nil)
	for range 100 {
		if d := j.Backoff(1); d < 48*time.Second || d > 72*time.Second {
			t.Fatalf("jittered backoff %v outside ±20%%", d)
		}
	}
}

// denyOnce refuses the first Acquire of each domain, then allows.
type denyOnce struct {
	mu       sync.Mutex
	seen     map[string]bool
	observed []int
}

func (d *denyOnce) Acquire(domain string) (func(), time.Duration, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.seen[domain] {
		d.seen[domain] = true
		return nil, 20 * time.Millisecond, false
	}
	return func() {}, 0, true
}

func (d *denyOnce) Observe(domain string, a queue.Attempt) {
	d.mu.Lock()
	d.observed = append(d.observed, a.Code)
	d.mu.Unlock()
}

// A destination out of budget holds its recipients back without counting
// an attempt; they go out once the throttle allows.
func TestThrottleHoldsBack(t *testing.T) {
	t.Parallel()
	e := start(t, queue.Config{}, nil)
	th := &denyOnce{seen: map[string]bool{}}
	e.sched.SetThrottle(th)
	id := e.submit(t, "a@x.test", "b@y.test")
	e.waitAttempts(t, 1)
	e.waitGone(t, id)
	if n := e.tr.calls["b@y.test"]; n != 1 {
		t.Errorf("transport called %d times, want 1 (the throttled round is not an attempt)", n)
	}
	th.mu.Lock()
	defer th.mu.Unlock()
	if len(th.observed) != 1 || th.observed[0] != 250 {
		t.Errorf("observed replies %v, want [250]", th.observed)
	}
}
