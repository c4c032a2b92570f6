package webhook

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// attempt is one RecordWebhookAttempt call seen by fakeStore.
type attempt struct {
	ID         int64
	Status     string
	Next       time.Time
	Err        string
	HTTPStatus int
}

// fakeStore is an in-memory Store following store.Platform's documented
// semantics: Lease returns due, unleased, pending deliveries (earliest
// first) and hides them for d; RecordWebhookAttempt counts the attempt,
// sets status, next attempt and error, releases the lease and appends to
// the attempt log.
type fakeStore struct {
	mu       sync.Mutex
	hooks    []store.Webhook
	rows     map[int64]*row
	log      []attempt
	recorded chan attempt
}

type row struct {
	d          store.WebhookDelivery
	leaseUntil time.Time
}

func newFakeStore() *fakeStore {
	return &fakeStore{rows: map[int64]*row{}, recorded: make(chan attempt, 100)}
}

func (f *fakeStore) addHook(w store.Webhook) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hooks = append(f.hooks, w)
}

func (f *fakeStore) addDelivery(id int64, hook string, ev store.Event, next time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rows[id] = &row{d: store.WebhookDelivery{ID: id, WebhookID: hook, Event: ev, NextAttempt: next, Status: StatusPending}}
}

func (f *fakeStore) get(id int64) store.WebhookDelivery {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rows[id].d
}

func (f *fakeStore) LeaseWebhookDeliveries(ctx context.Context, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var due []*row
	for _, r := range f.rows {
		if r.d.Status == StatusPending && !r.d.NextAttempt.After(now) && !r.leaseUntil.After(now) {
			due = append(due, r)
		}
	}
	slices.SortFunc(due, func(a, b *row) int {
		return cmp.Or(a.d.NextAttempt.Compare(b.d.NextAttempt), cmp.Compare(a.d.ID, b.d.ID))
	})
	var out []store.WebhookDelivery
	for _, r := range due[:min(limit, len(due))] {
		r.leaseUntil = now.Add(d)
		out = append(out, r.d)
	}
	return out, nil
}

func (f *fakeStore) RecordWebhookAttempt(ctx context.Context, id int64, status string, next time.Time, errText string, httpStatus int) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.rows[id]
	if !ok {
		return fmt.Errorf("delivery %d: %w", id, store.ErrNotFound)
	}
	if status != StatusPending && status != StatusDelivered && status != StatusFailed {
		return fmt.Errorf("bad status %q", status)
	}
	r.d.Attempts++
	r.d.Status, r.d.NextAttempt, r.d.LastError = status, next, errText
	r.leaseUntil = time.Time{}
	a := attempt{id, status, next, errText, httpStatus}
	f.log = append(f.log, a)
	f.recorded <- a
	return nil
}

func (f *fakeStore) ListWebhooks(ctx context.Context, account string) ([]store.Webhook, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []store.Webhook
	for _, w := range f.hooks {
		if w.Account == account {
			out = append(out, w)
		}
	}
	return out, nil
}

// getterStore adds GetWebhook to fakeStore.
type getterStore struct{ *fakeStore }

func (g getterStore) GetWebhook(ctx context.Context, id string) (store.Webhook, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, w := range g.hooks {
		if w.ID == id {
			return w, nil
		}
	}
	return store.Webhook{}, store.ErrNotFound
}

// next waits for the next recorded attempt.
func (f *fakeStore) next(t *testing.T) attempt {
	t.Helper()
	select {
	case a := <-f.recorded:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("no attempt recorded within 5s")
		return attempt{}
	}
}

func storeEvent() store.Event {
	return store.Event{ID: 1, Type: store.EventBounced, Time: time.Date(2025, 1, 1, 1, 0, 0, 0, time.FixedZone("X", 3600))}
}
