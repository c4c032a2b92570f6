package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
	"github.com/heraldmail/herald/internal/webhook"
)

// hookSink is a webhook receiver that keeps every event POSTed to it
// (one event per request, or a batch as a JSON array).
type hookSink struct {
	mu     sync.Mutex
	events []map[string]any
	got    chan struct{}
}

func newHookSink(t *testing.T) (*hookSink, string) {
	s := &hookSink{got: make(chan struct{}, 1)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var evs []map[string]any
		if err := json.Unmarshal(b, &evs); err != nil {
			var ev map[string]any
			if err := json.Unmarshal(b, &ev); err != nil {
				w.WriteHeader(400)
				return
			}
			evs = []map[string]any{ev}
		}
		s.mu.Lock()
		s.events = append(s.events, evs...)
		s.mu.Unlock()
		select {
		case s.got <- struct{}{}:
		default:
		}
		w.WriteHeader(200)
	}))
	t.Cleanup(srv.Close)
	return s, srv.URL
}

// seen returns "type recipient" of every event received, sorted.
func (s *hookSink) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, ev := range s.events {
		out = append(out, ev["type"].(string)+" "+ev["recipient"].(string))
	}
	sort.Strings(out)
	return out
}

// waitFor waits until every one of want was received.
func (s *hookSink) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		got := s.seen()
		missing := 0
		for _, w := range want {
			if !slices.Contains(got, w) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		select {
		case <-s.got:
		case <-deadline:
			t.Fatalf("webhooks received %q; want at least %q", got, want)
		}
	}
}

// event returns the first received event of typ for rcpt.
func (s *hookSink) event(typ, rcpt string) map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ev := range s.events {
		if ev["type"] == typ && ev["recipient"] == rcpt {
			return ev
		}
	}
	return nil
}

func (h *herald) hook(tok, url string, types ...string) {
	h.t.Helper()
	body := map[string]any{"url": url}
	if len(types) > 0 {
		body["event_types"] = types
	}
	if code := h.api(tok, "POST", "/v1/webhooks", body, nil); code != 201 {
		h.t.Fatalf("create webhook: %d", code)
	}
}

// messageEvents returns "type recipient" of a message's events in order.
func (h *herald) messageEvents(tok, id string) []string {
	h.t.Helper()
	var evs eventList
	h.api(tok, "GET", "/v1/events?message_id="+id+"&limit=100", nil, &evs)
	var out []string
	for _, e := range evs.Events {
		out = append(out, e.Type+" "+e.Recipient)
	}
	return out
}

const sim = "@simulator.herald.invalid"

// Each mailbox simulator address, sent to through the API and through
// SMTP submission, produces its documented events, webhooks and
// suppressions through the real queue, and nothing leaves Herald.
func TestMailboxSimulator(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, pw := h.tenant("acme", "acme.test", "send", "read", "admin")
	sink, url := newHookSink(t)
	h.hook(tok, url)

	req := map[string]any{"from": "App <app@acme.test>", "subject": "simulated", "text": "hello",
		"to":   []string{"delivered" + sim, "bounce+1" + sim, "softbounce" + sim, "complaint" + sim, "suppressed" + sim},
		"tags": []string{"sim"}, "metadata": map[string]string{"order": "42"}}
	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", req, &sent); code != 202 || sent.ID == "" {
		t.Fatalf("POST /v1/messages: %d %+v", code, sent)
	}
	sink.waitFor(t,
		"accepted delivered"+sim, "delivered delivered"+sim,
		"accepted bounce+1"+sim, "bounced bounce+1"+sim,
		"accepted softbounce"+sim, "deferred softbounce"+sim, "delivered softbounce"+sim,
		"accepted complaint"+sim, "delivered complaint"+sim, "complained complaint"+sim,
		"suppressed suppressed"+sim)
	h.waitQueueEmpty()

	// The event log, in order, per recipient.
	byRcpt := map[string][]string{}
	for _, e := range h.messageEvents(tok, sent.ID) {
		typ, rcpt, _ := strings.Cut(e, " ")
		byRcpt[rcpt] = append(byRcpt[rcpt], typ)
	}
	for rcpt, want := range map[string]string{
		"delivered" + sim:  "accepted delivered",
		"bounce+1" + sim:   "accepted bounced",
		"softbounce" + sim: "accepted deferred delivered",
		"complaint" + sim:  "accepted delivered complained",
		"suppressed" + sim: "suppressed",
	} {
		if got := strings.Join(byRcpt[rcpt], " "); got != want {
			t.Errorf("%s: events %q, want %q", rcpt, got, want)
		}
	}
	// What the webhooks carry.
	b := sink.event("bounced", "bounce+1"+sim)
	if b["reply"] != "550 5.1.1 simulator: mailbox does not exist (hard bounce)" || b["enhanced_status"] != "5.1.1" ||
		!strings.HasPrefix(b["bounce"].(string), "hard") || b["remote_mta"] != "simulator" || b["message_id"] != sent.ID {
		t.Errorf("bounced webhook %v", b)
	}
	d := sink.event("deferred", "softbounce"+sim)
	if !strings.HasPrefix(d["reply"].(string), "451 4.2.0 ") || !strings.HasPrefix(d["bounce"].(string), "soft") {
		t.Errorf("deferred webhook %v", d)
	}
	c := sink.event("complained", "complaint"+sim)
	if c["reply"] != "complaint: abuse" || c["message_id"] != sent.ID {
		t.Errorf("complained webhook %v", c)
	}
	for _, ev := range []map[string]any{b, d, c, sink.event("suppressed", "suppressed"+sim)} {
		tags, _ := ev["tags"].([]any)
		meta, _ := ev["metadata"].(map[string]any)
		if len(tags) != 1 || tags[0] != "sim" || meta["order"] != "42" {
			t.Errorf("%s webhook without the message's tags and metadata: %v", ev["type"], ev)
		}
	}

	// The hard bounce and the complaint are on the suppression list, as
	// real ones are; the next send to them is skipped.
	var sups struct {
		Suppressions []struct {
			Address string `json:"address"`
			Reason  string `json:"reason"`
		} `json:"suppressions"`
	}
	h.api(tok, "GET", "/v1/suppressions", nil, &sups)
	reasons := map[string]string{}
	for _, s := range sups.Suppressions {
		reasons[s.Address] = s.Reason
	}
	if reasons["bounce+1"+sim] != store.SuppressHardBounce || reasons["complaint"+sim] != store.SuppressComplaint || len(reasons) != 2 {
		t.Errorf("suppressions %v", reasons)
	}
	var again struct{ ID string }
	h.api(tok, "POST", "/v1/messages", map[string]any{"from": "app@acme.test", "to": []string{"bounce+1" + sim}, "text": "x"}, &again)
	sink.waitFor(t, "suppressed bounce+1"+sim)

	// SMTP submission: the same addresses, refusals at RCPT.
	c2 := h.login("app@acme.test", pw)
	c2.ok(250, "MAIL FROM:<app@acme.test>")
	if code, _ := c2.cmd("RCPT TO:<suppressed+smtp%s>", sim); code != 550 {
		t.Errorf("RCPT suppressed@: %d, want 550", code)
	}
	if code, msg := c2.cmd("RCPT TO:<typo%s>", sim); code != 550 || !strings.Contains(msg, "not a mailbox simulator address") {
		t.Errorf("RCPT typo@: %d %s, want 550", code, msg)
	}
	c2.ok(250, "RCPT TO:<delivered+smtp%s>", sim)
	c2.ok(354, "DATA")
	c2.raw("From: app@acme.test\r\nSubject: smtp\r\n\r\nhi\r\n.\r\n")
	c2.expect(250)
	c2.cmd("QUIT")
	sink.waitFor(t, "delivered delivered+smtp"+sim, "suppressed suppressed+smtp"+sim)

	// A peer from outside may not use the simulator.
	mx := dial(t, h.addr("smtp"))
	mx.ok(250, "EHLO peer.test")
	mx.ok(250, "MAIL FROM:<x@peer.test>")
	if code, _ := mx.cmd("RCPT TO:<delivered%s>", sim); code/100 != 5 {
		t.Errorf("anonymous RCPT to the simulator: %d, want refused", code)
	}
}

// A sandbox send is checked and rendered, records a sandboxed event per
// recipient (webhooks follow) and queues and sends nothing.
func TestSandboxSend(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	mx := h.remoteMX("remote.test", testmx.Config{})
	h.addDKIMKey("acme.test", "s1", store.DKIMAlgorithmEd25519)
	sink, url := newHookSink(t)
	h.hook(tok, url, "sandboxed", "delivered")

	req := map[string]any{"from": "App <app@acme.test>", "to": []string{"bob@remote.test", "delivered" + sim, "suppressed" + sim},
		"subject": "sandboxed", "html": "<p>hi</p>", "tags": []string{"sbx"}, "metadata": map[string]string{"k": "v"}, "sandbox": true}
	var out struct {
		ID         string   `json:"id"`
		Sandbox    bool     `json:"sandbox"`
		MessageID  string   `json:"message_id"`
		Recipients []string `json:"recipients"`
		Suppressed []string `json:"suppressed"`
		Size       int      `json:"size"`
		Raw        []byte   `json:"raw"`
	}
	if code := h.api(tok, "POST", "/v1/messages", req, &out); code != 200 {
		t.Fatalf("sandbox send: %d", code)
	}
	st, err := h.app.Store().Stats(context.Background())
	if err != nil || st.Messages != 0 {
		t.Fatalf("queue after a sandbox send: %+v %v", st, err)
	}
	if !out.Sandbox || out.ID == "" || strings.Join(out.Recipients, ",") != "bob@remote.test,delivered"+sim ||
		strings.Join(out.Suppressed, ",") != "suppressed"+sim || out.Size != len(out.Raw) || !strings.HasPrefix(out.MessageID, "<") {
		t.Errorf("sandbox response %+v", out)
	}
	if !bytes.HasPrefix(out.Raw, []byte("DKIM-Signature: ")) || !bytes.Contains(out.Raw, []byte("d=acme.test")) {
		t.Errorf("the rendered message is not DKIM-signed as it would be sent:\n%s", out.Raw)
	}
	if !bytes.Contains(out.Raw, []byte("Subject: sandboxed")) || !bytes.Contains(out.Raw, []byte("<p>hi</p>")) ||
		!bytes.Contains(bytes.ToLower(out.Raw), []byte(strings.ToLower("Message-ID: "+out.MessageID))) {
		t.Errorf("rendered message:\n%s", out.Raw)
	}
	sink.waitFor(t, "sandboxed bob@remote.test", "sandboxed delivered"+sim, "sandboxed suppressed"+sim)
	ev := sink.event("sandboxed", "bob@remote.test")
	tags, _ := ev["tags"].([]any)
	if ev["message_id"] != out.ID || len(tags) != 1 || tags[0] != "sbx" || ev["metadata"].(map[string]any)["k"] != "v" {
		t.Errorf("sandboxed webhook %v", ev)
	}
	if got := h.messageEvents(tok, out.ID); len(got) != 3 {
		t.Errorf("events of the sandbox message: %q", got)
	}
	// One-click unsubscribe headers are rendered (and signed) as for a
	// real send.
	var one struct {
		Raw []byte `json:"raw"`
	}
	if code := h.api(tok, "POST", "/v1/messages", map[string]any{"from": "app@acme.test", "to": []string{"delivered" + sim}, "text": "x",
		"list_unsubscribe": true, "sandbox": true}, &one); code != 200 {
		t.Fatalf("sandbox send with list_unsubscribe: %d", code)
	}
	if !bytes.Contains(one.Raw, []byte("List-Unsubscribe-Post: List-Unsubscribe=One-Click")) || !bytes.HasPrefix(one.Raw, []byte("DKIM-Signature: ")) {
		t.Errorf("the rendered message lacks the signed one-click unsubscribe headers:\n%s", one.Raw)
	}
	// A sandbox send is refused where a real one would be.
	if code := h.api(tok, "POST", "/v1/messages", map[string]any{"from": "x@other.test", "to": []string{"bob@remote.test"}, "text": "x", "sandbox": true}, nil); code != 403 {
		t.Errorf("sandbox send from a domain of no account: %d, want 403", code)
	}
	// A real send afterwards reaches the MX: it is the only message there.
	delete(req, "sandbox")
	req["to"] = []string{"bob@remote.test"}
	if code := h.api(tok, "POST", "/v1/messages", req, nil); code != 202 {
		t.Fatalf("real send: %d", code)
	}
	sink.waitFor(t, "delivered bob@remote.test")
	if n := len(mx.Messages()); n != 1 {
		t.Errorf("the MX received %d messages; want only the real one", n)
	}
	for _, s := range sink.seen() {
		if strings.HasPrefix(s, "delivered ") && s != "delivered bob@remote.test" {
			t.Errorf("webhook %q after a sandbox send", s)
		}
	}
}

// softbounce@ is deferred, due again one minute later on the node's clock
// (not the retry schedule, 5 minutes here), and delivered then.
func TestSimulatorSoftBounceRetriesAfterAMinute(t *testing.T) {
	t.Parallel()
	// Ahead of the wall clock: the store makes webhook deliveries due at
	// the wall-clock time of the event, and they must be due on clk.
	clk := clock.NewFake(time.Now().Add(time.Hour).Truncate(time.Second))
	h := startHeraldClock(t, clk)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	sink, url := newHookSink(t)
	h.hook(tok, url)
	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", map[string]any{"from": "app@acme.test", "to": []string{"softbounce+fake" + sim}, "text": "x"}, &sent); code != 202 {
		t.Fatalf("send: %d", code)
	}
	sink.waitFor(t, "deferred softbounce+fake"+sim)
	var msg struct {
		Recipients []struct {
			Status      string    `json:"status"`
			NextAttempt time.Time `json:"next_attempt"`
		} `json:"recipients"`
	}
	h.api(tok, "GET", "/v1/messages/"+sent.ID, nil, &msg)
	if len(msg.Recipients) != 1 || msg.Recipients[0].Status != "deferred" || !msg.Recipients[0].NextAttempt.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("after the soft bounce: %+v; want deferred, due at %s", msg, clk.Now().Add(time.Minute))
	}
	clk.Advance(time.Minute)
	sink.waitFor(t, "delivered softbounce+fake"+sim)
	if got := strings.Join(h.messageEvents(tok, sent.ID), ","); got != "accepted softbounce+fake"+sim+",deferred softbounce+fake"+sim+",delivered softbounce+fake"+sim {
		t.Errorf("events %q", got)
	}
}

// startHeraldClock starts a node like startHerald, on clk and with the
// default retry schedule (first retry after 5 minutes).
func startHeraldClock(t *testing.T, clk clock.Clock) *herald {
	t.Helper()
	dns := testdns.Start(t)
	cfg := config.Default()
	cfg.Server.Hostname = "mx.herald.test"
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.ShutdownTimeout = 2 * time.Second
	for _, l := range []*config.ListenConfig{&cfg.SMTP, &cfg.Submission, &cfg.Submissions, &cfg.HTTP.ListenConfig} {
		l.Listen = []string{"127.0.0.1:0"}
	}
	cfg.DNS.Resolver = dns.Addr()
	cfg.DNS.Timeout = time.Second
	cfg.Queue.PollInterval = 10 * time.Millisecond
	cfg.Limits.QueueMinFree = 1 << 20
	cfg.Platform.WebhookAllowPrivate = true
	cfg.Alerts.Enabled = false
	logFile := filepath.Join(t.TempDir(), "herald.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, app.Options{Clock: clk, Logger: slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Webhook: func(w *webhook.Options) { w.PollInterval = 20 * time.Millisecond }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h := &herald{t: t, app: a, cfg: cfg, addrs: a.Addrs(), dns: dns, dataDir: cfg.Server.DataDir}
	h.stop = func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("herald stopped with error: %v", err)
		}
		f.Close()
		if t.Failed() {
			if b, err := os.ReadFile(logFile); err == nil {
				t.Logf("herald log:\n%s", b)
			}
		}
	}
	t.Cleanup(h.stop)
	return h
}
