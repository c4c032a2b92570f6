package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/webhook"
)

// batchStore is the real SQLite store that reports every batch recorded
// (the number of deliveries) and every hold.
type batchStore struct {
	*sqlite.Store
	recorded chan []store.WebhookAttempt
	held     chan int
}

func (b batchStore) RecordWebhookAttempts(ctx context.Context, atts []store.WebhookAttempt) error {
	err := b.Store.RecordWebhookAttempts(ctx, atts)
	b.recorded <- atts
	return err
}

func (b batchStore) HoldWebhookDeliveries(ctx context.Context, ids []int64, until time.Time) error {
	err := b.Store.HoldWebhookDeliveries(ctx, ids, until)
	b.held <- len(ids)
	return err
}

// post is one request the receiver got.
type post struct {
	count  string // Herald-Event-Count
	events []webhook.Payload
	sigErr error // Verify with the receiver's secret
	raw    []byte
	sig    string
}

// receiver is a real HTTP endpoint that verifies and decodes batched
// requests; fail answers 500 to the first n of them.
type receiver struct {
	srv   *httptest.Server
	posts chan post
	mu    sync.Mutex
	fail  int
}

func newReceiver(t *testing.T, secret string, clk clock.Clock) *receiver {
	r := &receiver{posts: make(chan post, 10000)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		p := post{count: req.Header.Get(webhook.HeaderEventCount), raw: body, sig: req.Header.Get(webhook.HeaderSignature)}
		p.sigErr = webhook.Verify(secret, p.sig, body, clk.Now(), time.Minute)
		var bp webhook.BatchPayload
		if err := json.Unmarshal(body, &bp); err != nil {
			p.sigErr = errors.Join(p.sigErr, err)
		}
		p.events = bp.Events
		r.mu.Lock()
		fail := r.fail > 0
		r.fail--
		r.mu.Unlock()
		if fail {
			w.WriteHeader(http.StatusInternalServerError)
		}
		r.posts <- p
	}))
	t.Cleanup(r.srv.Close)
	return r
}

// openBatchStore opens a real SQLite store with account acme.
func openBatchStore(t *testing.T) batchStore {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddAccount(context.Background(), store.Account{ID: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	return batchStore{st, make(chan []store.WebhookAttempt, 1000), make(chan int, 100)}
}

// addEvents records n delivered events of acme at t.
func addEvents(t *testing.T, st store.Platform, n int, t0 time.Time) []store.Event {
	t.Helper()
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Type: store.EventDelivered, Account: "acme", Time: t0, Recipient: fmt.Sprintf("r%d@example.org", i)}
	}
	if err := st.AddEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	return evs
}

// runDispatcher runs d until the test ends.
func runDispatcher(t *testing.T, d *webhook.Dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// waitRecorded waits until n deliveries were recorded with status and
// returns how many record calls that took.
func waitRecorded(t *testing.T, st batchStore, n int, status string) int {
	t.Helper()
	calls := 0
	for got := 0; got < n; {
		select {
		case atts := <-st.recorded:
			calls++
			for _, a := range atts {
				if a.Status != status {
					t.Fatalf("recorded %+v, want status %s", a, status)
				}
			}
			got += len(atts)
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of %d deliveries recorded %s", got, n, status)
		}
	}
	return calls
}

// TestBatchEveryEventOnce: 250 events to a webhook batching 100 arrive in
// far fewer requests, every request signed and counted right, every event
// exactly once, and the store shows each delivery delivered.
func TestBatchEveryEventOnce(t *testing.T) {
	t.Parallel()
	st := openBatchStore(t)
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	rcv := newReceiver(t, "sec", clk)
	ctx := context.Background()
	if err := st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: rcv.srv.URL, Secret: "sec", BatchMax: 100}); err != nil {
		t.Fatal(err)
	}
	const n = 250
	evs := addEvents(t, st, n, clk.Now())
	d := webhook.New(st, webhook.Options{Clock: clk, PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	runDispatcher(t, d)
	d.Wake()
	waitRecorded(t, st, n, webhook.StatusDelivered)

	seen := map[int64]int{}
	posts := 0
	for len(rcv.posts) > 0 {
		p := <-rcv.posts
		posts++
		if p.sigErr != nil {
			t.Errorf("request %d: %v", posts, p.sigErr)
		}
		if p.count != strconv.Itoa(len(p.events)) || len(p.events) == 0 || len(p.events) > 100 {
			t.Errorf("request %d: %s %q with %d events", posts, webhook.HeaderEventCount, p.count, len(p.events))
		}
		for i, e := range p.events {
			seen[e.ID]++
			if i > 0 && e.ID <= p.events[i-1].ID {
				t.Errorf("request %d: events out of order", posts)
			}
		}
	}
	// At most one batch per worker that leased a first delivery, plus full batches.
	if posts < 3 || posts > 3+4 {
		t.Errorf("%d events arrived in %d requests, want 3 to 7", n, posts)
	}
	for _, e := range evs {
		if seen[e.ID] != 1 {
			t.Errorf("event %d received %d times", e.ID, seen[e.ID])
		}
	}
	if len(seen) != n {
		t.Errorf("received %d distinct events, want %d", len(seen), n)
	}
	ds, err := st.ListWebhookDeliveries(ctx, "acme", "wh1", 1000)
	if err != nil || len(ds) != n {
		t.Fatalf("ListWebhookDeliveries: %d, %v", len(ds), err)
	}
	for _, dl := range ds {
		if dl.Status != webhook.StatusDelivered || dl.Attempts != 1 {
			t.Errorf("delivery of event %d: %s after %d attempts", dl.Event.ID, dl.Status, dl.Attempts)
		}
	}
}

// TestBatchRetry: a batch answered 500 is retried as a whole after the
// backoff, each delivery keeping its attempts; the second request carries
// the same events and delivers them.
func TestBatchRetry(t *testing.T) {
	t.Parallel()
	st := openBatchStore(t)
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	rcv := newReceiver(t, "sec", clk)
	rcv.fail = 1
	ctx := context.Background()
	if err := st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: rcv.srv.URL, Secret: "sec", BatchMax: 50}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	addEvents(t, st, n, clk.Now())
	d := webhook.New(st, webhook.Options{Clock: clk, PollInterval: time.Hour, Workers: 1, Jitter: -1, Logger: slog.New(slog.DiscardHandler)})
	runDispatcher(t, d)
	d.Wake()
	waitRecorded(t, st, n, webhook.StatusPending)
	first := <-rcv.posts
	if len(first.events) != n || first.sigErr != nil {
		t.Fatalf("first request: %d events, %v", len(first.events), first.sigErr)
	}
	ds, _ := st.ListWebhookDeliveries(ctx, "acme", "wh1", 100)
	for _, dl := range ds {
		if dl.Status != webhook.StatusPending || dl.Attempts != 1 || dl.LastError != "HTTP 500" ||
			!dl.NextAttempt.Equal(clk.Now().Add(webhook.DefaultBackoff[0])) {
			t.Fatalf("after the failed batch: %+v", dl)
		}
	}
	clk.Advance(webhook.DefaultBackoff[0])
	d.Wake()
	waitRecorded(t, st, n, webhook.StatusDelivered)
	second := <-rcv.posts
	if len(second.events) != n || second.sigErr != nil {
		t.Fatalf("retry: %d events, %v", len(second.events), second.sigErr)
	}
	for i := range second.events {
		if second.events[i].ID != first.events[i].ID {
			t.Fatalf("retry carried other events: %d vs %d", second.events[i].ID, first.events[i].ID)
		}
	}
	if len(rcv.posts) != 0 {
		t.Errorf("%d more requests", len(rcv.posts))
	}
	ds, _ = st.ListWebhookDeliveries(ctx, "acme", "wh1", 100)
	for _, dl := range ds {
		if dl.Status != webhook.StatusDelivered || dl.Attempts != 2 {
			t.Errorf("after the retry: %+v", dl)
		}
	}
}

// TestBatchGiveUp: a batch failing past MaxAge is marked failed for every
// event in it.
func TestBatchGiveUp(t *testing.T) {
	t.Parallel()
	st := openBatchStore(t)
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	rcv := newReceiver(t, "sec", clk)
	rcv.fail = 1000
	ctx := context.Background()
	if err := st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: rcv.srv.URL, Secret: "sec", BatchMax: 50}); err != nil {
		t.Fatal(err)
	}
	addEvents(t, st, 5, clk.Now().Add(-2*time.Hour))
	d := webhook.New(st, webhook.Options{Clock: clk, PollInterval: time.Hour, Workers: 1, MaxAge: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	runDispatcher(t, d)
	d.Wake()
	waitRecorded(t, st, 5, webhook.StatusFailed)
	ds, _ := st.ListWebhookDeliveries(ctx, "acme", "wh1", 100)
	for _, dl := range ds {
		if dl.Status != webhook.StatusFailed || dl.Attempts != 1 {
			t.Errorf("after giving up: %+v", dl)
		}
	}
}

// TestBatchWaitFills: with max_wait, a batch that is not full is held (no
// request, no attempt) until its oldest event is max_wait old; events
// arriving meanwhile join it; then one request carries them all.
func TestBatchWaitFills(t *testing.T) {
	t.Parallel()
	st := openBatchStore(t)
	clk := clock.NewFake(time.Now().Truncate(time.Second))
	rcv := newReceiver(t, "sec", clk)
	ctx := context.Background()
	if err := st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: rcv.srv.URL, Secret: "sec",
		BatchMax: 10, BatchWait: 30 * time.Second}); err != nil {
		t.Fatal(err)
	}
	t0 := clk.Now()
	addEvents(t, st, 3, t0)
	d := webhook.New(st, webhook.Options{Clock: clk, PollInterval: time.Hour, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	runDispatcher(t, d)
	d.Wake()
	if n := <-st.held; n != 3 {
		t.Fatalf("held %d, want 3", n)
	}
	clk.Advance(10 * time.Second)
	addEvents(t, st, 2, clk.Now())
	d.Wake()
	if n := <-st.held; n != 5 {
		t.Fatalf("held %d, want the 3 held and the 2 new", n)
	}
	if len(rcv.posts) != 0 {
		t.Fatal("a request before the batch was due")
	}
	ds, _ := st.ListWebhookDeliveries(ctx, "acme", "wh1", 100)
	for _, dl := range ds {
		if dl.Attempts != 0 || dl.Status != webhook.StatusPending || !dl.NextAttempt.Equal(t0.Add(30*time.Second)) {
			t.Errorf("held delivery: %+v, want no attempt, due at %v", dl, t0.Add(30*time.Second))
		}
	}
	clk.Advance(20 * time.Second)
	d.Wake()
	waitRecorded(t, st, 5, webhook.StatusDelivered)
	p := <-rcv.posts
	if len(p.events) != 5 || p.sigErr != nil {
		t.Errorf("request: %d events, %v", len(p.events), p.sigErr)
	}
}

// TestBatchSecretRotation: during a rotation's transition every request
// verifies with either secret; after the previous secret expires (fake
// clock), only with the new one.
func TestBatchSecretRotation(t *testing.T) {
	t.Parallel()
	for _, batch := range []int{1, 10} {
		t.Run("batch"+strconv.Itoa(batch), func(t *testing.T) {
			t.Parallel()
			st := openBatchStore(t)
			clk := clock.NewFake(time.Now().Truncate(time.Second))
			rcv := newReceiver(t, "new", clk)
			ctx := context.Background()
			if err := st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: rcv.srv.URL, Secret: "old", BatchMax: batch}); err != nil {
				t.Fatal(err)
			}
			if _, err := st.RotateWebhookSecret(ctx, "acme", "wh1", "new", clk.Now(), clk.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			d := webhook.New(st, webhook.Options{Clock: clk, PollInterval: time.Hour, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
			runDispatcher(t, d)
			next := func() post {
				t.Helper()
				addEvents(t, st, 1, clk.Now())
				d.Wake()
				select {
				case p := <-rcv.posts:
					return p
				case <-time.After(10 * time.Second):
					t.Fatal("no request")
				}
				return post{}
			}
			during := next()
			for _, secret := range []string{"new", "old"} {
				if err := webhook.Verify(secret, during.sig, during.raw, clk.Now(), time.Minute); err != nil {
					t.Errorf("during the transition, secret %s: %v (header %s)", secret, err, during.sig)
				}
			}
			clk.Advance(time.Hour)
			after := next()
			if err := webhook.Verify("new", after.sig, after.raw, clk.Now(), time.Minute); err != nil {
				t.Errorf("after the transition, new secret: %v", err)
			}
			if err := webhook.Verify("old", after.sig, after.raw, clk.Now(), time.Minute); !errors.Is(err, webhook.ErrSignatureMismatch) {
				t.Errorf("after the transition, old secret: %v, want a mismatch", err)
			}
		})
	}
}
