package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	gomail "github.com/emersion/go-message/mail"

	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// htmlPart returns the decoded text/html part of a delivered message.
func htmlPart(t *testing.T, raw []byte) string {
	t.Helper()
	mr, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			t.Fatal("no text/html part")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h, ok := p.Header.(*gomail.InlineHeader); ok {
			if ct, _, _ := h.ContentType(); ct == "text/html" {
				b, err := io.ReadAll(p.Body)
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
		}
	}
}

// A message sent with open and click tracking arrives at the remote MX
// with its links and a pixel pointing at Herald, DKIM-signed over the
// rewritten HTML. Fetching the pixel and following a link through the
// real HTTP listener records opened and clicked events, with the
// message's tags and metadata, seen by GET /v1/events and by a webhook;
// the link redirects to exactly the URL of the message, and a changed
// token gets 404 without a redirect.
func TestTrackingOpensAndClicks(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	h.addDKIMKey("acme.test", "t2026", "ed25519")
	mx := h.remoteMX("remote.test", testmx.Config{})
	rcv, hookURL := newReceiver(t, 0)
	if code := h.api(tok, "POST", "/v1/webhooks", map[string]any{"url": hookURL, "event_types": []string{"opened", "clicked"}}, nil); code != 201 {
		t.Fatalf("create webhook: %d", code)
	}

	dest := "https://shop.example.com/item?id=7&ref=mail"
	req := sendReq("App <app@acme.test>", "bob@remote.test", "tracked")
	req["html"] = `<html><body><p>Hello</p><a href="https://shop.example.com/item?id=7&amp;ref=mail">Buy</a> <a href="mailto:help@acme.test">help</a></body></html>`
	req["tracking"] = map[string]bool{"opens": true, "clicks": true}
	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", req, &sent); code != 202 {
		t.Fatalf("POST /v1/messages: %d", code)
	}
	got := mx.WaitMessages(t, 1, 10*time.Second)[0].Body

	// Signed after the rewriting: the signature verifies.
	res, err := resolve.New(h.dns.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	results, err := dkim.Verify(context.Background(), bytes.NewReader(got), res.LookupTXT)
	if err != nil || len(results) != 1 || results[0].Result != dkim.ResultPass {
		t.Fatalf("DKIM of the tracked message: %+v %v", results, err)
	}
	html := htmlPart(t, got)
	base := regexp.QuoteMeta("https://" + h.cfg.Server.Hostname)
	click := regexp.MustCompile(`href="` + base + `(/t/c/[A-Za-z0-9_-]+)"`).FindStringSubmatch(html)
	pixel := regexp.MustCompile(`<img src="` + base + `(/t/o/[A-Za-z0-9_-]+)"`).FindStringSubmatch(html)
	if click == nil || pixel == nil || !strings.Contains(html, `<a href="mailto:help@acme.test">`) || !strings.Contains(html, "<p>Hello</p>") {
		t.Fatalf("delivered HTML:\n%s", html)
	}

	web := "http://" + h.addr("http")
	noRedirect := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := noRedirect.Get(web + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(pixel[1]); resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/gif" || !strings.Contains(resp.Header.Get("Cache-Control"), "no-store") {
		t.Errorf("pixel: %d %v", resp.StatusCode, resp.Header)
	}
	if resp := get(click[1]); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != dest {
		t.Errorf("click: %d Location %q, want 302 to %s", resp.StatusCode, resp.Header.Get("Location"), dest)
	}
	// A changed token (its last character) leads nowhere.
	changed := click[1][:len(click[1])-1] + map[bool]string{true: "B", false: "A"}[strings.HasSuffix(click[1], "A")]
	if resp := get(changed); resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
		t.Errorf("changed token: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}

	h.waitEvent(tok, "opened", "bob@remote.test")
	h.waitEvent(tok, "clicked", "bob@remote.test")
	var evs struct {
		Events []struct {
			Type      string            `json:"type"`
			MessageID string            `json:"message_id"`
			Reply     string            `json:"reply"`
			Tags      []string          `json:"tags"`
			Metadata  map[string]string `json:"metadata"`
		} `json:"events"`
	}
	h.api(tok, "GET", "/v1/events?type=opened&type=clicked&message_id="+sent.ID, nil, &evs)
	if len(evs.Events) != 2 {
		t.Fatalf("tracking events %+v", evs.Events)
	}
	for _, ev := range evs.Events {
		if ev.MessageID != sent.ID || len(ev.Tags) != 1 || ev.Tags[0] != "e2e" || ev.Metadata["order"] != "42" {
			t.Errorf("%s event %+v", ev.Type, ev)
		}
		if ev.Type == "clicked" && ev.Reply != dest {
			t.Errorf("clicked event's URL %q, want %q", ev.Reply, dest)
		}
	}

	// The webhook gets both.
	types := map[string]bool{}
	for range 2 {
		rcv.wait(t)
	}
	rcv.mu.Lock()
	for _, b := range rcv.bodies {
		var p struct {
			Type      string            `json:"type"`
			Recipient string            `json:"recipient"`
			Metadata  map[string]string `json:"metadata"`
		}
		if err := json.Unmarshal(b, &p); err != nil {
			t.Fatal(err)
		}
		if p.Recipient != "bob@remote.test" || p.Metadata["order"] != "42" {
			t.Errorf("webhook payload %s", b)
		}
		types[p.Type] = true
	}
	rcv.mu.Unlock()
	if !types["opened"] || !types["clicked"] {
		t.Errorf("webhook event types %v, want opened and clicked", types)
	}
}
