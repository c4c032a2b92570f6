package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

// request is what the test receiver saw.
type request struct {
	Path   string
	Header http.Header
	Body   []byte
	SigErr error
}

// receiver is a loopback HTTP endpoint that verifies signatures against
// clk and answers with the statuses in codes (the last one repeats).
type receiver struct {
	*httptest.Server
	reqs chan request
}

func newReceiver(t *testing.T, secret string, clk clock.Clock, handler func(n int, w http.ResponseWriter, r *http.Request)) *receiver {
	t.Helper()
	rv := &receiver{reqs: make(chan request, 100)}
	var mu sync.Mutex
	n := 0
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rv.reqs <- request{r.URL.Path, r.Header.Clone(), body, Verify(secret, r.Header.Get(HeaderSignature), body, clk.Now(), time.Minute)}
		mu.Lock()
		n++
		i := n
		mu.Unlock()
		handler(i, w, r)
	}))
	t.Cleanup(rv.Close)
	return rv
}

func statuses(codes ...int) func(int, http.ResponseWriter, *http.Request) {
	return func(n int, w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(codes[min(n, len(codes))-1])
		io.WriteString(w, "receiver says\nhello")
	}
}

func (rv *receiver) next(t *testing.T) request {
	t.Helper()
	select {
	case r := <-rv.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no request within 5s")
		return request{}
	}
}

func testEvent(id int64, at time.Time) store.Event {
	return store.Event{ID: id, Time: at, Type: store.EventDelivered, Account: "acme", MessageID: "Q1",
		Recipient: "bob@example.org", Sender: "alice@acme.example", RemoteMTA: "mx.example.org",
		Reply: "250 2.0.0 OK", Enhanced: "2.0.0", TLS: "TLSv1.3", Attempt: 1,
		Tags: []string{"welcome"}, Metadata: map[string]string{"user": "42"}}
}

// start runs a dispatcher until the test ends.
func start(t *testing.T, s Store, opt Options) *Dispatcher {
	t.Helper()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	d := New(s, opt)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func TestRetryThenDelivered(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	rv := newReceiver(t, "s3cret", clk, statuses(500, 200))
	fs := newFakeStore()
	fs.addHook(store.Webhook{ID: "wh1", Account: "acme", URL: rv.URL + "/hook", Secret: "s3cret"})
	fs.addDelivery(1, "wh1", testEvent(77, t0), t0)
	d := start(t, fs, Options{Clock: clk, PollInterval: time.Hour})

	r1 := rv.next(t)
	a1 := fs.next(t)
	// The status only: nothing the receiver sent is copied (see Do).
	if a1.Status != StatusPending || a1.HTTPStatus != 500 || a1.Err != "HTTP 500" {
		t.Fatalf("first attempt = %+v", a1)
	}
	if lo, hi := t0.Add(9*time.Second), t0.Add(11*time.Second); a1.Next.Before(lo) || a1.Next.After(hi) {
		t.Fatalf("next attempt %v, want within 10s±10%% of %v", a1.Next, t0)
	}
	clk.Advance(a1.Next.Sub(t0))
	d.Wake()
	r2 := rv.next(t)
	a2 := fs.next(t)
	if a2.Status != StatusDelivered || a2.HTTPStatus != 200 || a2.Err != "" || !a2.Next.IsZero() {
		t.Fatalf("second attempt = %+v", a2)
	}
	if got := fs.get(1); got.Attempts != 2 || got.Status != StatusDelivered {
		t.Fatalf("row = %+v", got)
	}

	for _, r := range []request{r1, r2} {
		if r.SigErr != nil {
			t.Errorf("signature: %v", r.SigErr)
		}
		if r.Header.Get(HeaderEventID) != "77" || r.Header.Get(HeaderEventType) != "delivered" ||
			r.Header.Get("User-Agent") != UserAgent || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("headers = %v", r.Header)
		}
	}
	if string(r1.Body) != string(r2.Body) {
		t.Errorf("retried body differs:\n%s\n%s", r1.Body, r2.Body)
	}
	var p map[string]any
	if err := json.Unmarshal(r1.Body, &p); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"id": 77.0, "type": "delivered", "time": "2025-03-01T12:00:00Z", "account": "acme",
		"message_id": "Q1", "recipient": "bob@example.org", "sender": "alice@acme.example",
		"remote_mta": "mx.example.org", "reply": "250 2.0.0 OK", "enhanced_status": "2.0.0", "tls": "TLSv1.3",
		"bounce": "", "attempt": 1.0, "tags": []any{"welcome"}, "metadata": map[string]any{"user": "42"}}
	if len(p) != len(want) {
		t.Errorf("payload has %d fields, want %d: %s", len(p), len(want), r1.Body)
	}
	for k, v := range want {
		if g, _ := json.Marshal(p[k]); string(g) != mustJSON(v) {
			t.Errorf("payload[%q] = %s, want %s", k, g, mustJSON(v))
		}
	}
	select {
	case r := <-rv.reqs:
		t.Fatalf("unexpected extra request %s", r.Body)
	default:
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestTimeoutRetries(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	release := make(chan struct{})
	rv := newReceiver(t, "k", clk, func(n int, w http.ResponseWriter, r *http.Request) {
		select { // never answers in time
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release)
	fs := newFakeStore()
	fs.addHook(store.Webhook{ID: "wh1", Account: "acme", URL: rv.URL, Secret: "k"})
	fs.addDelivery(1, "wh1", testEvent(1, t0), t0)
	start(t, fs, Options{Clock: clk, Timeout: 200 * time.Millisecond, PollInterval: time.Hour, Jitter: -1})
	rv.next(t)
	a := fs.next(t)
	if a.Status != StatusPending || a.HTTPStatus != 0 || !strings.Contains(a.Err, "timeout") || !a.Next.Equal(t0.Add(10*time.Second)) {
		t.Fatalf("attempt = %+v", a)
	}
}

func TestConnectionRefusedRetries(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	clk := clock.NewFake(t0)
	fs := newFakeStore()
	fs.addHook(store.Webhook{ID: "wh1", Account: "acme", URL: url, Secret: "k"})
	ev := testEvent(1, t0.Add(-time.Hour))
	fs.addDelivery(1, "wh1", ev, t0)
	fs.rows[1].d.Attempts = 3 // fourth attempt: backoff 5m
	start(t, fs, Options{Clock: clk, PollInterval: time.Hour, Jitter: -1})
	a := fs.next(t)
	if a.Status != StatusPending || a.HTTPStatus != 0 || !strings.Contains(a.Err, "refused") || !a.Next.Equal(t0.Add(5*time.Minute)) {
		t.Fatalf("attempt = %+v", a)
	}
	if strings.Contains(a.Err, url) {
		t.Errorf("error text leaks the URL: %q", a.Err)
	}
}

func TestGivesUpAfterMaxAge(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	rv := newReceiver(t, "k", clk, statuses(503))
	fs := newFakeStore()
	fs.addHook(store.Webhook{ID: "wh1", Account: "acme", URL: rv.URL, Secret: "k"})
	// The event is 24h minus 5s old: the 10s backoff is cut to the deadline.
	evTime := t0.Add(-24*time.Hour + 5*time.Second)
	fs.addDelivery(1, "wh1", testEvent(1, evTime), t0)
	d := start(t, fs, Options{Clock: clk, PollInterval: time.Hour, Jitter: -1})
	a1 := fs.next(t)
	deadline := evTime.Add(24 * time.Hour)
	if a1.Status != StatusPending || a1.HTTPStatus != 503 || !a1.Next.Equal(deadline) {
		t.Fatalf("first attempt = %+v, want pending until %v", a1, deadline)
	}
	clk.Advance(5 * time.Second)
	d.Wake()
	a2 := fs.next(t)
	if a2.Status != StatusFailed || a2.HTTPStatus != 503 || !a2.Next.IsZero() || !strings.HasPrefix(a2.Err, "HTTP 503") {
		t.Fatalf("second attempt = %+v, want failed", a2)
	}
	if n := len(rv.reqs); n != 2 {
		t.Fatalf("receiver saw %d requests, want 2", n)
	}
	clk.Advance(time.Hour)
	d.Wake()
	if ds, _ := fs.LeaseWebhookDeliveries(context.Background(), clk.Now(), time.Minute, 10); len(ds) != 0 {
		t.Fatalf("failed delivery still due: %+v", ds)
	}
}

func TestDeletedWebhookFails(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		s    func(*fakeStore) Store
	}{
		{"list", func(f *fakeStore) Store { return f }},
		{"get", func(f *fakeStore) Store { return getterStore{f} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fs := newFakeStore()
			fs.addHook(store.Webhook{ID: "other", Account: "acme", URL: "http://127.0.0.1:1/"})
			fs.addDelivery(1, "gone", testEvent(1, t0), t0)
			start(t, tc.s(fs), Options{Clock: clock.NewFake(t0), PollInterval: time.Hour})
			if a := fs.next(t); a.Status != StatusFailed || a.Err != "webhook deleted" {
				t.Fatalf("attempt = %+v", a)
			}
		})
	}
}

func TestGetWebhookUsedWhenAvailable(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	rv := newReceiver(t, "k", clk, statuses(204))
	fs := newFakeStore()
	// The webhook belongs to another account than the event: only a
	// lookup by ID (GetWebhook) finds it.
	fs.addHook(store.Webhook{ID: "wh1", Account: "admin", URL: rv.URL, Secret: "k"})
	fs.addDelivery(1, "wh1", testEvent(1, t0), t0)
	start(t, getterStore{fs}, Options{Clock: clk, PollInterval: time.Hour})
	if a := fs.next(t); a.Status != StatusDelivered || a.HTTPStatus != 204 {
		t.Fatalf("attempt = %+v", a)
	}
	if r := rv.next(t); r.SigErr != nil {
		t.Fatal(r.SigErr)
	}
}

// TestRedirects: a webhook follows no redirect, not even a 307 to another
// path of the same host; the 3xx is a failed attempt recorded without the
// Location the receiver sent.
func TestRedirects(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	other := newReceiver(t, "k", clk, statuses(200))
	var target *receiver
	target = newReceiver(t, "k", clk, func(n int, w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/same":
			http.Redirect(w, r, "/final?secret-location", http.StatusTemporaryRedirect)
		case "/final":
			w.WriteHeader(200)
		case "/elsewhere":
			http.Redirect(w, r, other.URL+"/x", http.StatusPermanentRedirect)
		case "/found":
			http.Redirect(w, r, "/final", http.StatusFound) // would turn the POST into a GET
		}
	})
	fs := newFakeStore()
	for i, p := range []string{"/same", "/elsewhere", "/found"} {
		id := int64(i + 1)
		fs.addHook(store.Webhook{ID: p, Account: "acme", URL: target.URL + p, Secret: "k"})
		fs.addDelivery(id, p, testEvent(id, t0), t0.Add(time.Duration(i)*time.Second))
	}
	// A client following redirects is given: the dispatcher replaces its policy.
	d := start(t, fs, Options{Clock: clk, PollInterval: time.Hour, Workers: 1, Client: &http.Client{}})
	got := map[int64]attempt{}
	for range 3 {
		a := fs.next(t)
		got[a.ID] = a
		clk.Advance(time.Second)
		d.Wake()
	}
	for id, code := range map[int64]int{1: 307, 2: 308, 3: 302} {
		if a := got[id]; a.Status != StatusPending || a.HTTPStatus != code || a.Err != fmt.Sprintf("HTTP %d: redirect not followed", code) {
			t.Errorf("delivery %d: %+v, want pending with %d and no Location", id, a, code)
		}
	}
	var paths []string
	for len(target.reqs) > 0 {
		paths = append(paths, (<-target.reqs).Path)
	}
	slices.Sort(paths)
	if !slices.Equal(paths, []string{"/elsewhere", "/found", "/same"}) {
		t.Errorf("target saw %v, want only the registered URLs", paths)
	}
	if n := len(other.reqs); n != 0 {
		t.Errorf("other host received %d requests", n)
	}
}

func TestWorkersRunConcurrently(t *testing.T) {
	t.Parallel()
	const n = 4
	clk := clock.NewFake(t0)
	var mu sync.Mutex
	inflight := 0
	all := make(chan struct{})
	rv := newReceiver(t, "k", clk, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		inflight++
		if inflight == n {
			close(all)
		}
		mu.Unlock()
		select { // answer only once all n requests are in flight together
		case <-all:
		case <-r.Context().Done():
			return
		}
		w.WriteHeader(200)
	})
	fs := newFakeStore()
	fs.addHook(store.Webhook{ID: "wh1", Account: "acme", URL: rv.URL, Secret: "k"})
	for i := range int64(n + 2) {
		fs.addDelivery(i+1, "wh1", testEvent(i+1, t0), t0)
	}
	start(t, fs, Options{Clock: clk, PollInterval: time.Hour, Workers: n, Timeout: 3 * time.Second})
	var ids []int64
	for range n + 2 {
		a := fs.next(t)
		if a.Status != StatusDelivered {
			t.Fatalf("attempt = %+v", a)
		}
		ids = append(ids, a.ID)
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []int64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("delivered %v", ids)
	}
}

// TestRestartLosesNothing stops a dispatcher while its request hangs: the
// attempt is not recorded, and once the lease expires a new dispatcher
// delivers the event.
func TestRestartLosesNothing(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	hang := true
	var mu sync.Mutex
	rv := newReceiver(t, "k", clk, func(_ int, w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		h := hang
		mu.Unlock()
		if h {
			<-r.Context().Done()
			return
		}
		w.WriteHeader(200)
	})
	fs := newFakeStore()
	fs.addHook(store.Webhook{ID: "wh1", Account: "acme", URL: rv.URL, Secret: "k"})
	fs.addDelivery(1, "wh1", testEvent(1, t0), t0)

	d1 := New(fs, Options{Clock: clk, PollInterval: time.Hour, DrainTimeout: 50 * time.Millisecond, LeaseDuration: time.Minute,
		Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d1.Run(ctx); close(done) }()
	rv.next(t) // the request is in flight
	cancel()
	<-done
	if len(fs.recorded) != 0 {
		t.Fatalf("an abandoned attempt was recorded: %+v", <-fs.recorded)
	}
	mu.Lock()
	hang = false
	mu.Unlock()

	clk.Advance(time.Minute) // d1's lease expired
	start(t, fs, Options{Clock: clk, PollInterval: time.Hour})
	if a := fs.next(t); a.Status != StatusDelivered {
		t.Fatalf("attempt = %+v", a)
	}
	if got := fs.get(1); got.Attempts != 1 {
		t.Fatalf("row = %+v, want 1 recorded attempt", got)
	}
}
