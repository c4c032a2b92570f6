package webhook_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/webhook"
)

var _ webhook.Store = (*sqlite.Store)(nil)

// recordingStore signals every recorded attempt of the real store.
type recordingStore struct {
	*sqlite.Store
	recorded chan string
}

func (r recordingStore) RecordWebhookAttempt(ctx context.Context, id int64, status string, next time.Time, errText string, httpStatus int) error {
	err := r.Store.RecordWebhookAttempt(ctx, id, status, next, errText, httpStatus)
	r.recorded <- status
	return err
}

// TestSQLiteStore runs the dispatcher against the real store: an event
// fanned out by AddEvents is retried after a 500 and delivered.
func TestSQLiteStore(t *testing.T) {
	t.Parallel()
	quiet := slog.New(slog.DiscardHandler)
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	clk := clock.NewFake(time.Now().Truncate(time.Second))

	type req struct {
		id     string
		sigErr error
	}
	reqs := make(chan req, 10)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		reqs <- req{r.Header.Get(webhook.HeaderEventID), webhook.Verify("sec", r.Header.Get(webhook.HeaderSignature), body, clk.Now(), time.Minute)}
		if n.Add(1) == 1 {
			w.WriteHeader(500)
		}
	}))
	defer srv.Close()

	if err := st.AddAccount(ctx, store.Account{ID: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: srv.URL, Secret: "sec"}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddEvents(ctx, []store.Event{{Type: store.EventBounced, Account: "acme", Time: clk.Now(), Recipient: "x@example.org"}}); err != nil {
		t.Fatal(err)
	}
	evs, err := st.ListEvents(ctx, store.EventFilter{Account: "acme"})
	if err != nil || len(evs) != 1 {
		t.Fatalf("events %v, %v", evs, err)
	}

	rs := recordingStore{st, make(chan string, 10)}
	d := webhook.New(rs, webhook.Options{Clock: clk, PollInterval: time.Hour, Logger: quiet})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()

	wait := func(want string) {
		t.Helper()
		select {
		case got := <-rs.recorded:
			if got != want {
				t.Fatalf("recorded %q, want %q", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no attempt recorded")
		}
	}
	wait(webhook.StatusPending)
	clk.Advance(12 * time.Second)
	d.Wake()
	wait(webhook.StatusDelivered)
	for range 2 {
		r := <-reqs
		if r.sigErr != nil || r.id != strconv.FormatInt(evs[0].ID, 10) {
			t.Fatalf("request %+v", r)
		}
	}
	ds, err := st.ListWebhookDeliveries(ctx, "acme", "wh1", 10)
	if err != nil || len(ds) != 1 || ds[0].Status != webhook.StatusDelivered || ds[0].Attempts != 2 {
		t.Fatalf("deliveries %+v, %v", ds, err)
	}
}
