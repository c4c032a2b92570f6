package queue_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/store"
)

// BounceMessage fails only the pending recipients, queues their DSN first
// and removes the message once nothing is pending.
func TestBounceMessage(t *testing.T) {
	e := start(t, queue.Config{RetryInitial: time.Hour, RetryJitter: 0.01}, map[string][]queue.Result{
		"ok@x.test":   {queue.Delivered},
		"slow@x.test": {queue.Temporary},
	})
	id := e.submit(t, "sender@example.com", "ok@x.test", "slow@x.test")
	e.waitAttempts(t, 2)
	ctx := context.Background()
	deadline := time.Now().Add(5 * time.Second)
	for {
		m, err := e.st.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if m.Recipients[0].Status.Final() && m.Recipients[1].Status == store.StatusDeferred ||
			m.Recipients[1].Status.Final() && m.Recipients[0].Status == store.StatusDeferred {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("recipients not delivered and deferred: %+v", m.Recipients)
		}
		time.Sleep(2 * time.Millisecond)
	}
	if err := e.sched.BounceMessage(ctx, id, "bounced by the operator"); err != nil {
		t.Fatal(err)
	}
	e.bnc.mu.Lock()
	if len(e.bnc.kinds) != 1 || e.bnc.kinds[0] != queue.BounceFailed || len(e.bnc.rcpts[0]) != 1 ||
		e.bnc.rcpts[0][0].Recipient.Address != "slow@x.test" || !strings.Contains(e.bnc.rcpts[0][0].Attempt.Reply(), "550 5.0.0 bounced by the operator") {
		t.Errorf("DSNs queued: %v %+v", e.bnc.kinds, e.bnc.rcpts)
	}
	e.bnc.mu.Unlock()
	if _, err := e.st.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bounced message still queued: %v", err)
	}
	if err := e.sched.BounceMessage(ctx, id, "again"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bouncing a gone message: %v", err)
	}
}
