package queue_test

import (
	"context"
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

// soonTransport defers every recipient at its first attempt asking for a
// retry after retryAfter, and delivers it at the next.
type soonTransport struct{ retryAfter time.Duration }

func (s soonTransport) Deliver(_ context.Context, _ *store.Message, _ string, rcpts []store.Recipient, _ func() (io.ReadCloser, error)) []queue.Attempt {
	out := make([]queue.Attempt, 0, len(rcpts))
	for _, r := range rcpts {
		a := queue.Attempt{RecipientID: r.ID, Result: queue.Delivered, Code: 250, Enhanced: smtp.EnhancedCode{2, 0, 0}, Text: "ok"}
		if r.Attempts == 0 {
			a.Result, a.Code, a.Enhanced, a.Text, a.RetryAfter = queue.Temporary, 451, smtp.EnhancedCode{4, 2, 0}, "later", s.retryAfter
		}
		out = append(out, a)
	}
	return out
}

// followUps records what FollowUp saw, and whether the store already held
// the outcome's event when it was called.
type followUps struct {
	st   *sqlite.Store
	mu   sync.Mutex
	seen []string // "result:event recorded"
	ch   chan struct{}
}

func (f *followUps) Recorded(ctx context.Context, msg *store.Message, attempts []queue.Attempt) {
	for _, a := range attempts {
		typ := store.EventDelivered
		if a.Result == queue.Temporary {
			typ = store.EventDeferred
		}
		evs, err := f.st.ListEvents(ctx, store.EventFilter{MessageID: msg.ID, Types: []string{typ}, Limit: 10})
		f.mu.Lock()
		f.seen = append(f.seen, a.Result.String()+":"+map[bool]string{true: "recorded", false: "missing"}[err == nil && len(evs) > 0])
		f.mu.Unlock()
	}
	f.ch <- struct{}{}
}

func (f *followUps) wait(t *testing.T) {
	t.Helper()
	select {
	case <-f.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("FollowUp not called")
	}
}

// A temporary failure with RetryAfter is due after the shorter of it and
// the retry schedule; FollowUp sees each attempt after its outcome and
// event are in the store.
func TestRetryAfterAndFollowUp(t *testing.T) {
	for _, c := range []struct {
		name       string
		retryAfter time.Duration
		want       time.Duration
	}{
		{"sooner than the schedule", time.Minute, time.Minute},
		{"later than the schedule", time.Hour, 5 * time.Minute},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
			if err != nil {
				t.Fatal(err)
			}
			clk := clock.NewFake(time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC))
			sched := queue.New(queue.Config{RetryInitial: 5 * time.Minute, PollInterval: 5 * time.Millisecond, Workers: 2},
				st, soonTransport{c.retryAfter}, nil, clk, slog.New(slog.DiscardHandler), nil)
			fu := &followUps{st: st, ch: make(chan struct{}, 4)}
			sched.SetFollowUp(fu)
			sp := spool.New(st, sched, clk)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { sched.Run(ctx); close(done) }()
			t.Cleanup(func() { cancel(); <-done; st.Close() })

			id, err := sp.Accept(ctx, &store.Message{Sender: "a@example.org", Recipients: []store.Recipient{{Address: "b@example.net"}}},
				strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
			if err != nil {
				t.Fatal(err)
			}
			fu.wait(t)
			m, err := st.Get(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			r := m.Recipients[0]
			if r.Status != store.StatusDeferred || !r.NextAttempt.Equal(clk.Now().Add(c.want)) {
				t.Fatalf("after the first attempt: %s, next attempt %s; want deferred, due %s", r.Status, r.NextAttempt, clk.Now().Add(c.want))
			}
			clk.Advance(c.want)
			fu.wait(t)
			fu.mu.Lock()
			defer fu.mu.Unlock()
			if got := strings.Join(fu.seen, " "); got != "deferred:recorded delivered:recorded" {
				t.Errorf("FollowUp saw %q; want each attempt after its event was recorded", got)
			}
		})
	}
}
