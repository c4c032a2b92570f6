package alert_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/submit"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/webhook"
)

const (
	hostname   = "mx.herald.test"
	postmaster = "postmaster@herald.test"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// receiver is a Slack-style incoming webhook on loopback that keeps what
// it was sent; fail makes it answer 500 that many times first.
type receiver struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []alert.Payload
	fail int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(io.LimitReader(req.Body, 1<<20))
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail > 0 {
			r.fail--
			http.Error(w, "no", http.StatusInternalServerError)
			return
		}
		var p alert.Payload
		if req.Header.Get("Content-Type") != "application/json" || json.Unmarshal(body, &p) != nil {
			t.Errorf("webhook got %q (%s)", body, req.Header.Get("Content-Type"))
		}
		r.got = append(r.got, p)
		w.Write([]byte("ok"))
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) payloads() []alert.Payload {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]alert.Payload(nil), r.got...)
}

// node is one Herald node's alert engine over a store, with the real
// acceptance path and spool writing Herald's alert mail into the queue.
type node struct {
	st     store.Store
	engine *alert.Engine
	reg    *metrics.Registry
}

func newNode(t *testing.T, st store.Store, clk *clock.Fake, hook *receiver, rules []alert.Rule) *node {
	t.Helper()
	p := submit.New(submit.Config{Hostname: hostname, MaxMessageSize: 1 << 20, MaxRecipients: 100},
		submit.Deps{Store: st, Spool: spool.New(st, nil, clk), Clock: clk})
	reg := metrics.NewRegistry()
	notifiers := alert.Notifiers{&alert.Mailer{Submit: p, From: postmaster, To: []string{postmaster}, Hostname: hostname}}
	if hook != nil {
		// The operator's own receiver on loopback: the client that may
		// reach private addresses (alerts.webhook_allow_private).
		notifiers = append(notifiers, &alert.Webhook{URL: hook.srv.URL, Client: webhook.NewClient(5 * time.Second), Clock: clk})
	}
	e := alert.New(alert.Options{Rules: rules, Store: st, Clock: clk, Hostname: hostname, Metrics: reg,
		Log:      slog.New(slog.DiscardHandler),
		Signals:  &alert.NodeSignals{Store: st, DataDir: t.TempDir(), Clock: clk},
		Notifier: notifiers})
	return &node{st: st, engine: e, reg: reg}
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func bounceRule() alert.Rule {
	for _, r := range alert.DefaultRules() {
		if r.Kind == alert.KindBounceRate {
			return r
		}
	}
	panic("no bounce_rate rule")
}

// events adds n events of type typ for recipients at domain, at.
func events(t *testing.T, st store.Store, at time.Time, typ, domain string, n int) {
	t.Helper()
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Time: at, Type: typ, Account: store.DefaultAccount, Recipient: "r@" + domain}
	}
	if err := st.AddEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}

// alertMail returns the alert messages in the queue: recipients and the
// body of each.
func alertMail(t *testing.T, st store.Store) (rcpts [][]string, bodies []string) {
	t.Helper()
	ctx := context.Background()
	msgs, err := st.List(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if m.Source != alert.SourceAlert {
			continue
		}
		if m.Sender != "" {
			t.Errorf("alert mail %s from <%s>, want the null sender", m.ID, m.Sender)
		}
		var to []string
		for _, r := range m.Recipients {
			to = append(to, r.Address)
		}
		rc, err := st.OpenBody(ctx, m.ID)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(rc)
		rc.Close()
		rcpts, bodies = append(rcpts, to), append(bodies, string(b))
	}
	return rcpts, bodies
}

func subjectOf(body string) string {
	for line := range strings.SplitSeq(body, "\r\n") {
		if s, ok := strings.CutPrefix(line, "Subject: "); ok {
			return s
		}
		if line == "" {
			break
		}
	}
	return ""
}

func evaluate(t *testing.T, n *node) {
	t.Helper()
	if err := n.engine.Evaluate(context.Background()); err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
}

func metricsText(n *node) string {
	var b strings.Builder
	n.reg.Write(&b)
	return b.String()
}

// A bounce spike fires once, notifies by mail (into the queue, to the
// postmaster) and by webhook, stays firing without repeating itself, and
// resolves once with notifications.
func TestBounceSpikeFiresOnceAndResolves(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	hook := newReceiver(t)
	n := newNode(t, st, clk, hook, []alert.Rule{bounceRule()})

	// Healthy traffic, and a small window where 1 of 2 bounced: no alert.
	events(t, st, clk.Now(), store.EventDelivered, "a.test", 300)
	evaluate(t, n)
	clk.Advance(2 * time.Hour)
	events(t, st, clk.Now(), store.EventDelivered, "a.test", 1)
	events(t, st, clk.Now(), store.EventBounced, "a.test", 1)
	evaluate(t, n)
	if r, _ := alertMail(t, st); len(r) != 0 || len(hook.payloads()) != 0 {
		t.Fatalf("notified without a spike: %d mails, %d posts", len(r), len(hook.payloads()))
	}

	// The spike: 40 bounces of 240 sent within the hour (16.7 % > 5 %).
	clk.Advance(time.Minute)
	events(t, st, clk.Now(), store.EventDelivered, "a.test", 200)
	events(t, st, clk.Now(), store.EventBounced, "b.test", 40)
	evaluate(t, n)
	rcpts, bodies := alertMail(t, st)
	if len(rcpts) != 1 || len(rcpts[0]) != 1 || rcpts[0][0] != postmaster {
		t.Fatalf("alert mail recipients = %v, want one message to %s", rcpts, postmaster)
	}
	if s := subjectOf(bodies[0]); s != "[Herald] FIRING: bounce_rate on "+hostname {
		t.Errorf("subject = %q", s)
	}
	if !strings.Contains(bodies[0], "41 bounced of 242 sent") {
		t.Errorf("body does not give the measure:\n%s", bodies[0])
	}
	posts := hook.payloads()
	if len(posts) != 1 || posts[0].Herald.State != "firing" || posts[0].Herald.Rule != "bounce_rate" ||
		!strings.HasPrefix(posts[0].Text, "[Herald] FIRING: bounce_rate") || posts[0].Herald.Threshold != 0.05 {
		t.Fatalf("webhook posts = %+v", posts)
	}
	if !strings.Contains(metricsText(n), `herald_alert_firing{rule="bounce_rate"} 1`) {
		t.Errorf("/metrics does not show the alert firing:\n%s", metricsText(n))
	}

	// Still bouncing: no repeat.
	for range 3 {
		clk.Advance(time.Minute)
		events(t, st, clk.Now(), store.EventBounced, "b.test", 5)
		evaluate(t, n)
	}
	if r, _ := alertMail(t, st); len(r) != 1 || len(hook.payloads()) != 1 {
		t.Fatalf("repeated while firing: %d mails, %d posts", len(r), len(hook.payloads()))
	}

	// The window passes with clean traffic: resolved, once.
	clk.Advance(61 * time.Minute)
	events(t, st, clk.Now(), store.EventDelivered, "a.test", 150)
	evaluate(t, n)
	evaluate(t, n)
	rcpts, bodies = alertMail(t, st)
	if len(rcpts) != 2 {
		t.Fatalf("%d alert mails after the resolve, want 2", len(rcpts))
	}
	var resolved string
	for _, b := range bodies {
		if strings.Contains(subjectOf(b), "RESOLVED") {
			resolved = b
		}
	}
	if subjectOf(resolved) != "[Herald] RESOLVED: bounce_rate on "+hostname || !strings.Contains(resolved, "It had fired at 2026-12-01T14:01:00Z") {
		t.Errorf("resolve mail:\n%s", resolved)
	}
	posts = hook.payloads()
	if len(posts) != 2 || posts[1].Herald.State != "resolved" {
		t.Fatalf("webhook posts after the resolve = %+v", posts)
	}
	h, err := st.AlertHistory(context.Background(), "bounce_rate", 10)
	if err != nil || len(h) != 2 || !h[1].Firing || h[0].Firing {
		t.Fatalf("history = %+v, %v", h, err)
	}
	m := metricsText(n)
	for _, want := range []string{`herald_alert_firing{rule="bounce_rate"} 0`,
		`herald_alert_transitions_total{rule="bounce_rate",state="firing"} 1`,
		`herald_alert_transitions_total{rule="bounce_rate",state="resolved"} 1`,
		`herald_alert_notifications_total{result="sent"} 2`} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, m)
		}
	}
}

// A silenced rule records its transitions but notifies nobody.
func TestSilenceSuppressesNotifications(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	hook := newReceiver(t)
	n := newNode(t, st, clk, hook, []alert.Rule{bounceRule()})
	ctx := context.Background()
	if err := st.SilenceAlert(ctx, store.AlertSilence{Rule: "bounce_rate", Until: t0.Add(2 * time.Hour), Created: t0}); err != nil {
		t.Fatal(err)
	}
	events(t, st, clk.Now(), store.EventBounced, "b.test", 150)
	evaluate(t, n)
	if r, _ := alertMail(t, st); len(r) != 0 || len(hook.payloads()) != 0 {
		t.Fatalf("silenced rule notified: %d mails, %d posts", len(r), len(hook.payloads()))
	}
	if sts, _ := st.AlertStates(ctx); len(sts) != 1 || !sts[0].Firing {
		t.Fatalf("silenced alert not recorded as firing: %+v", sts)
	}
	// The silence ends; the alert resolves later and that is notified.
	clk.Advance(3 * time.Hour)
	events(t, st, clk.Now(), store.EventDelivered, "a.test", 150)
	evaluate(t, n)
	if r, _ := alertMail(t, st); len(r) != 1 || len(hook.payloads()) != 1 || hook.payloads()[0].Herald.State != "resolved" {
		t.Fatalf("after the silence: %d mails, posts %+v", len(r), hook.payloads())
	}
	if !strings.Contains(metricsText(n), `herald_alert_notifications_total{result="silenced"} 1`) {
		t.Errorf("silenced notification not counted:\n%s", metricsText(n))
	}
}

// Two nodes on one PostgreSQL store evaluate the same spike: one
// notification in total for the fire, one for the resolve.
func TestTwoNodesNotifyOnce(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.NewSchema(t)
	open := func(name string) store.Store {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Node: name, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	a, b := open("a"), open("b")
	clk := clock.NewFake(t0)
	hook := newReceiver(t)
	nodes := []*node{newNode(t, a, clk, hook, []alert.Rule{bounceRule()}), newNode(t, b, clk, hook, []alert.Rule{bounceRule()})}
	round := func() {
		var wg sync.WaitGroup
		for _, n := range nodes {
			wg.Go(func() {
				if err := n.engine.Evaluate(context.Background()); err != nil {
					t.Errorf("Evaluate: %v", err)
				}
			})
		}
		wg.Wait()
	}
	events(t, a, clk.Now(), store.EventBounced, "b.test", 100)
	events(t, b, clk.Now(), store.EventDelivered, "a.test", 100)
	for range 3 {
		round()
	}
	if r, _ := alertMail(t, a); len(r) != 1 || len(hook.payloads()) != 1 {
		t.Fatalf("two nodes sent %d mails and %d posts for one fire, want 1 and 1", len(r), len(hook.payloads()))
	}
	clk.Advance(2 * time.Hour)
	events(t, a, clk.Now(), store.EventDelivered, "a.test", 200)
	for range 3 {
		round()
	}
	if r, _ := alertMail(t, b); len(r) != 2 || len(hook.payloads()) != 2 {
		t.Fatalf("after the resolve: %d mails and %d posts, want 2 and 2", len(r), len(hook.payloads()))
	}
	h, err := a.AlertHistory(context.Background(), "", 10)
	if err != nil || len(h) != 2 {
		t.Fatalf("history = %+v, %v", h, err)
	}
	// Both nodes show the alert's state (resolved) in /metrics.
	for i, n := range nodes {
		if !strings.Contains(metricsText(n), `herald_alert_firing{rule="bounce_rate"} 0`) {
			t.Errorf("node %d /metrics:\n%s", i, metricsText(n))
		}
	}
}

// Run evaluates on the clock's ticks: advancing the fake clock by the
// interval runs the next evaluation.
func TestRunTicks(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	hook := newReceiver(t)
	n := newNode(t, st, clk, hook, []alert.Rule{bounceRule()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { n.engine.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	events(t, st, clk.Now(), store.EventBounced, "b.test", 150)
	if err := clk.WaitTimers(ctx, 1); err != nil { // waiting for the first tick
		t.Fatal(err)
	}
	if posts := hook.payloads(); len(posts) != 0 {
		t.Fatalf("evaluated before the first tick: %+v", posts)
	}
	clk.Advance(alert.DefaultInterval)
	// Advance removed the fired timer; the next one is set once the
	// evaluation has finished.
	if err := clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	if posts := hook.payloads(); len(posts) != 1 || posts[0].Herald.State != "firing" {
		t.Fatalf("after one tick: posts %+v", posts)
	}
}

// The webhook retries a failing receiver a bounded number of times, with
// back-off on the clock; the public-only client refuses a loopback URL.
func TestWebhookRetriesAndSSRFGuard(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	hook := newReceiver(t)
	hook.fail = 2
	w := &alert.Webhook{URL: hook.srv.URL, Client: webhook.NewClient(5 * time.Second), Clock: clk, Attempts: 3, Backoff: time.Second}
	n := alert.Notification{Rule: bounceRule(), Key: "bounce_rate", Firing: true, At: t0, Hostname: hostname, Detail: "x <!channel> & co"}
	ctx := context.Background()
	errc := make(chan error, 1)
	go func() { errc <- w.Notify(ctx, n) }()
	for _, d := range []time.Duration{time.Second, 2 * time.Second} {
		if err := clk.WaitTimers(ctx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(d)
	}
	if err := <-errc; err != nil || len(hook.payloads()) != 1 {
		t.Fatalf("Notify after two failures = %v, %d posts", err, len(hook.payloads()))
	}
	if p := hook.payloads()[0]; !strings.HasSuffix(p.Text, "x &lt;!channel&gt; &amp; co") || p.Herald.Detail != "x <!channel> & co" {
		t.Errorf("Slack text not escaped (or the structured detail is): %q, %q", p.Text, p.Herald.Detail)
	}
	hook.mu.Lock()
	hook.fail = 10
	hook.mu.Unlock()
	w.Attempts = 2
	go func() { errc <- w.Notify(ctx, n) }()
	if err := clk.WaitTimers(ctx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Second)
	if err := <-errc; err == nil || !strings.Contains(err.Error(), "failed 2 times, last: HTTP 500") {
		t.Fatalf("Notify to a failing receiver = %v", err)
	}
	pub := &alert.Webhook{URL: hook.srv.URL, Client: webhook.NewPublicClient(5 * time.Second), Clock: clk, Attempts: 1}
	if err := pub.Notify(ctx, n); err == nil || !strings.Contains(err.Error(), "not a public address") {
		t.Fatalf("public client to loopback = %v", err)
	}
}
