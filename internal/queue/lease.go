package queue

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

// keeper holds one delivery's lease: it renews it every LeaseTimeout/3
// while the delivery runs, notices when it is lost, and records the
// outcome under its token. Renewals and outcome writes are serialised, so
// a renewal never races the Update that ends the lease.
type keeper struct {
	s         *Scheduler
	id, token string
	cancel    context.CancelFunc // ends the delivery when the lease is lost

	mu   sync.Mutex
	lost bool // another node holds the recipients now
	done bool // the outcome is recorded: nothing left to renew

	quit   chan struct{}
	exited chan struct{}
}

// keep starts renewing lease l; cancel is called if it is lost. The caller
// must call stop.
func (s *Scheduler) keep(ctx context.Context, l store.Lease, cancel context.CancelFunc) *keeper {
	k := &keeper{s: s, id: l.Message.ID, token: l.Token, cancel: cancel,
		quit: make(chan struct{}), exited: make(chan struct{})}
	go k.run(ctx)
	return k
}

// run renews the lease every LeaseTimeout/3 (on the scheduler's clock)
// until stop, or until the lease is lost or the outcome recorded.
func (k *keeper) run(ctx context.Context) {
	defer close(k.exited)
	every := max(k.s.cfg.LeaseTimeout/3, time.Millisecond)
	for {
		t := clock.NewTimer(k.s.clock, every)
		select {
		case <-k.quit:
			t.Stop()
			return
		case <-t.C():
		}
		if !k.renew(ctx) {
			return
		}
	}
}

// stop ends the renewals and waits for a renewal in progress.
func (k *keeper) stop() {
	close(k.quit)
	<-k.exited
}

// renew extends the lease to now+LeaseTimeout. It reports false when there
// is nothing more to renew: the lease is lost (the delivery is cancelled)
// or the outcome recorded. A failure of the store is logged and the lease
// is renewed again at the next tick (it lasts three ticks).
func (k *keeper) renew(ctx context.Context) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lost || k.done {
		return false
	}
	err := k.s.store.Renew(ctx, k.id, k.token, k.s.clock.Now().Add(k.s.cfg.LeaseTimeout))
	switch {
	case err == nil:
		return true
	case errors.Is(err, store.ErrLeaseLost):
		k.lost = true
		k.s.log.Warn("delivery lease lost (taken over after it expired, or the message was deleted); cancelling the attempt",
			"id", k.id, "err", err)
		k.cancel()
		return false
	case ctx.Err() != nil:
		return false // shutting down: the lease is left to expire or be released
	default:
		k.s.log.Warn("renewing delivery lease failed; retrying", "id", k.id, "err", err)
		return true
	}
}

// confirm renews the lease now, before something that must not be done
// twice (queueing DSNs). It reports false only when the lease is known to
// be lost; a store failure is not proof of that, and a DSN sent twice is
// better than one lost.
func (k *keeper) confirm(ctx context.Context) bool {
	k.renew(ctx)
	return !k.isLost()
}

func (k *keeper) isLost() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lost
}

// update records outcomes under the lease's token. After it succeeds, or
// finds the lease lost, no renewal is attempted any more.
func (k *keeper) update(ctx context.Context, outcomes []store.Outcome) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.lost {
		return store.ErrLeaseLost
	}
	err := k.s.store.Update(ctx, k.id, k.token, outcomes)
	switch {
	case err == nil:
		k.done = true
	case errors.Is(err, store.ErrLeaseLost):
		k.lost = true
	}
	return err
}
