package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
	"github.com/heraldmail/herald/internal/webhook"
)

// receiver is a test HTTP endpoint that answers 500 to the first n
// requests, then 200, and keeps what it received.
type receiver struct {
	mu      sync.Mutex
	fail    int
	calls   int
	bodies  [][]byte
	headers []http.Header
	got     chan struct{}
}

func newReceiver(t *testing.T, fail int) (*receiver, string) {
	r := &receiver{fail: fail, got: make(chan struct{}, 100)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.calls++
		failing := r.calls <= r.fail
		if !failing {
			r.bodies = append(r.bodies, b)
			r.headers = append(r.headers, req.Header.Clone())
		}
		r.mu.Unlock()
		if failing {
			w.WriteHeader(500)
			return
		}
		w.WriteHeader(200)
		r.got <- struct{}{}
	}))
	t.Cleanup(srv.Close)
	return r, srv.URL
}

func (r *receiver) wait(t *testing.T) {
	t.Helper()
	select {
	case <-r.got:
	case <-time.After(10 * time.Second):
		t.Fatal("nothing arrived at the test receiver")
	}
}

// Webhooks arrive signed at a test receiver and are retried after it
// answers 500; each attempt is recorded.
func TestWebhooksSignedAndRetried(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	h.remoteMX("remote.test", testmx.Config{})
	rcv, url := newReceiver(t, 1)
	var wh struct {
		ID     string `json:"id"`
		Secret string `json:"secret"`
	}
	if code := h.api(tok, "POST", "/v1/webhooks", map[string]any{"url": url, "event_types": []string{"delivered"}}, &wh); code != 201 && code != 200 {
		t.Fatalf("create webhook: %d", code)
	}
	if wh.Secret == "" {
		t.Fatal("webhook secret not returned at creation")
	}
	h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "bob@remote.test", "hooked"), nil)
	rcv.wait(t)
	rcv.mu.Lock()
	body, hdr, calls := rcv.bodies[0], rcv.headers[0], rcv.calls
	rcv.mu.Unlock()
	if calls < 2 {
		t.Errorf("receiver saw %d requests; the first answered 500 so a retry was due", calls)
	}
	if err := webhook.Verify(wh.Secret, hdr.Get("Herald-Signature"), body, time.Now(), 5*time.Minute); err != nil {
		t.Fatalf("signature does not verify: %v (header %q)", err, hdr.Get("Herald-Signature"))
	}
	if err := webhook.Verify("wrong-secret", hdr.Get("Herald-Signature"), body, time.Now(), 5*time.Minute); err == nil {
		t.Fatal("signature verifies with the wrong secret")
	}
	var ev map[string]any
	if err := json.Unmarshal(body, &ev); err != nil {
		t.Fatal(err)
	}
	if ev["type"] != "delivered" || ev["recipient"] != "bob@remote.test" {
		t.Errorf("webhook payload %v", ev)
	}
	var dels struct {
		Deliveries []map[string]any `json:"deliveries"`
	}
	h.api(tok, "GET", "/v1/webhooks/"+wh.ID+"/deliveries", nil, &dels)
	if len(dels.Deliveries) == 0 {
		t.Errorf("no webhook delivery recorded")
	}
}

// Mail for an address with an HTTP route is POSTed to the endpoint as
// JSON with its parsed parts.
func TestInboundHTTPRoute(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.tenant("acme", "acme.test", "send")
	rcv, url := newReceiver(t, 0)
	must(t, h.app.Store().AddRoute(context.Background(), store.Route{Address: "inbound@acme.test", Account: "acme", Action: "http", URL: url, Secret: "s3cret"}))
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO sender.test")
	msg := "From: <x@sender.test>\r\nTo: <inbound@acme.test>\r\nSubject: routed\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/alternative; boundary=\"a\"\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\nplain part\r\n" +
		"--a\r\nContent-Type: text/html\r\n\r\n<p>html part</p>\r\n--a--\r\n"
	if code, m := c.send("x@sender.test", []string{"inbound@acme.test"}, msg); code != 250 {
		t.Fatalf("routed address refused: %d %s", code, m)
	}
	rcv.wait(t)
	rcv.mu.Lock()
	body, hdr := rcv.bodies[0], rcv.headers[0]
	rcv.mu.Unlock()
	if err := webhook.Verify("s3cret", hdr.Get("Herald-Signature"), body, time.Now(), 5*time.Minute); err != nil {
		t.Errorf("route POST signature: %v", err)
	}
	var p map[string]any
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	if p["subject"] != "routed" || !strings.Contains(p["text"].(string), "plain part") || !strings.Contains(p["html"].(string), "html part") {
		t.Errorf("route payload %v", p)
	}
}

// By default a webhook cannot make Herald call a loopback or private
// address (SSRF): the API refuses such a URL at creation, and a webhook
// that reaches one anyway (a public name resolving to it, or a row written
// before the check existed) is refused by the dialer: the attempt is
// recorded with a fixed text, nothing arrives.
func TestWebhookToPrivateAddressRefused(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) { c.Platform.WebhookAllowPrivate = false })
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	h.remoteMX("remote.test", testmx.Config{})
	rcv, url := newReceiver(t, 0)

	for _, u := range []string{url, "http://localhost:8025/v1/keys", "http://2130706433/", "http://100.100.100.200/"} {
		var e struct {
			Error struct{ Code, Field string }
		}
		if code := h.api(tok, "POST", "/v1/webhooks", map[string]any{"url": u}, &e); code != 400 || e.Error.Field != "url" {
			t.Errorf("creating a webhook to %s: %d %+v, want 400 naming url", u, code, e)
		}
	}

	if err := h.app.Store().AddWebhook(context.Background(), store.Webhook{ID: "wh_legacy", Account: "acme", URL: url,
		EventTypes: []string{store.EventAccepted}, Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "bob@remote.test", "ssrf"), nil)
	deadline := time.Now().Add(10 * time.Second)
	for {
		var dels struct {
			Deliveries []struct {
				LastError string `json:"last_error"`
				Attempts  int    `json:"attempts"`
			} `json:"deliveries"`
		}
		h.api(tok, "GET", "/v1/webhooks/wh_legacy/deliveries", nil, &dels)
		if len(dels.Deliveries) > 0 && dels.Deliveries[0].Attempts > 0 {
			if got := dels.Deliveries[0].LastError; got != "refused: the destination is not a public address (private, loopback or special-purpose)" {
				t.Errorf("attempt error %q, want the fixed refusal text", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no webhook attempt recorded")
		}
		time.Sleep(10 * time.Millisecond)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.calls != 0 {
		t.Errorf("the loopback receiver was called %d times", rcv.calls)
	}
}
