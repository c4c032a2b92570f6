package webhook_test

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/webhook"
)

// signalStore is a store that reports how many deliveries each batch
// record carried.
type signalStore struct {
	store.Store
	recorded chan int
}

func (s signalStore) RecordWebhookAttempts(ctx context.Context, atts []store.WebhookAttempt) error {
	err := s.Store.RecordWebhookAttempts(ctx, atts)
	s.recorded <- len(atts)
	return err
}

// TestBatchTwoNodes: two nodes' dispatchers on one PostgreSQL store share
// a batched webhook's deliveries; every event reaches the receiver
// exactly once, in batches, and every delivery ends delivered after one
// attempt.
func TestBatchTwoNodes(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.NewSchema(t)
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	open := func(node string) *postgres.Store {
		st, err := postgres.Open(ctx, dsn, postgres.Options{Node: node, Logger: quiet})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	a, b := open("mx1"), open("mx2")
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	rcv := newReceiver(t, "sec", clk)
	if err := a.AddAccount(ctx, store.Account{ID: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	if err := a.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: rcv.srv.URL, Secret: "sec", BatchMax: 25}); err != nil {
		t.Fatal(err)
	}
	const n = 600
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Type: store.EventDelivered, Account: "acme", Time: clk.Now(), Recipient: fmt.Sprintf("r%d@example.org", i)}
	}
	if err := a.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	recorded := make(chan int, n)
	var ds []*webhook.Dispatcher
	for _, st := range []store.Store{a, b} {
		d := webhook.New(signalStore{st, recorded}, webhook.Options{Clock: clk, PollInterval: time.Hour, Logger: quiet})
		runDispatcher(t, d)
		ds = append(ds, d)
	}
	for _, d := range ds {
		d.Wake()
	}
	for got := 0; got < n; {
		select {
		case k := <-recorded:
			got += k
		case <-time.After(30 * time.Second):
			t.Fatalf("%d of %d deliveries recorded", got, n)
		}
	}
	seen := map[int64]int{}
	posts := 0
	for len(rcv.posts) > 0 {
		p := <-rcv.posts
		posts++
		if p.sigErr != nil || len(p.events) > 25 {
			t.Errorf("request with %d events: %v", len(p.events), p.sigErr)
		}
		for _, e := range p.events {
			seen[e.ID]++
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct events received, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("event %d received %d times", id, c)
		}
	}
	if posts >= n/2 {
		t.Errorf("%d events in %d requests: not batched", n, posts)
	}
	dls, err := b.ListWebhookDeliveries(ctx, "acme", "wh1", 1000)
	if err != nil || len(dls) != n {
		t.Fatalf("deliveries: %d, %v", len(dls), err)
	}
	for _, dl := range dls {
		if dl.Status != webhook.StatusDelivered || dl.Attempts != 1 {
			t.Errorf("delivery of event %d: %s after %d attempts", dl.Event.ID, dl.Status, dl.Attempts)
		}
	}
	t.Logf("%d events in %d requests from two nodes", n, posts)
}
