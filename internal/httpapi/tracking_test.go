package httpapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	gomail "github.com/emersion/go-message/mail"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/tracking"
)

const trackBase = "https://track.example.net"

var trackKey = bytes.Repeat([]byte{1}, 32)

// newTracker is a tracker signing with trackKey.
func newTracker(t *testing.T, deps tracking.Deps) *tracking.Tracker {
	t.Helper()
	tr, err := tracking.New(tracking.Config{BaseURL: trackBase}, trackKey, deps)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// newTrackingEnv is an API with a real tracker.
func newTrackingEnv(t *testing.T) *env {
	t.Helper()
	tr := newTracker(t, tracking.Deps{})
	return newEnvDeps(t, Config{}, func(d *Deps) { d.Tracker = tr })
}

// serveGet answers a GET of path by h.
func serveGet(h http.Handler, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	return rec
}

// parts returns the decoded text/plain and text/html parts of raw.
func parts(t *testing.T, raw []byte) (text, html string) {
	t.Helper()
	mr, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(p.Body)
		if h, ok := p.Header.(*gomail.InlineHeader); ok {
			ct, _, _ := h.ContentType()
			switch ct {
			case "text/plain":
				text = string(b)
			case "text/html":
				html = string(b)
			}
		}
	}
	return text, html
}

var (
	clickRE = regexp.MustCompile(`href="` + regexp.QuoteMeta(trackBase) + `/t/c/([A-Za-z0-9_-]+)"`)
	openRE  = regexp.MustCompile(`<img src="` + regexp.QuoteMeta(trackBase) + `/t/o/([A-Za-z0-9_-]+)"`)
)

func TestSendWithTracking(t *testing.T) {
	t.Parallel()
	e := newTrackingEnv(t)
	tok := e.key("acme", store.ScopeSend)
	html := `<html><body><a href="https://shop.example.com/x?a=1&amp;b=2">shop</a> <a href="mailto:help@acme.example">help</a></body></html>`
	msg := map[string]any{"from": "a@acme.example", "to": []string{"Bob <bob@example.org>"}, "subject": "s",
		"text": "see https://shop.example.com/x", "html": html, "tracking": map[string]bool{"opens": true, "clicks": true}}
	want(t, e.post("/v1/messages", tok, msg), http.StatusAccepted)
	sub := e.sub.last()
	if sub.ID == "" {
		t.Fatal("the API chose no queue ID")
	}
	text, gotHTML := parts(t, sub.Raw)
	if text != "see https://shop.example.com/x" {
		t.Errorf("text part changed: %q", text)
	}
	m := clickRE.FindAllStringSubmatch(gotHTML, -1)
	if len(m) != 1 || !openRE.MatchString(gotHTML) || !strings.Contains(gotHTML, `<a href="mailto:help@acme.example">`) {
		t.Fatalf("html part %s", gotHTML)
	}
	// The tokens name the queue ID the message was submitted with and its
	// only recipient, and lead to the link's URL: served by the tracker.
	fs := &eventSink{}
	srvTr := newTracker(t, tracking.Deps{Events: fs})
	rec := serveGet(srvTr.Handler(), "/t/c/"+m[0][1])
	if rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://shop.example.com/x?a=1&b=2" {
		t.Errorf("click: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	if len(fs.evs) != 1 || fs.evs[0].MessageID != sub.ID || fs.evs[0].Recipient != "bob@example.org" || fs.evs[0].Account != "acme" {
		t.Errorf("click event %+v, want message %s", fs.evs, sub.ID)
	}

	// Off for this message (the account default is off too): untouched.
	msg["tracking"] = map[string]bool{"opens": false}
	want(t, e.post("/v1/messages", tok, msg), http.StatusAccepted)
	if _, h := parts(t, e.sub.last().Raw); h != html {
		t.Errorf("untracked html changed: %s", h)
	}
	// Several recipients: the tokens name none.
	msg["tracking"] = map[string]bool{"clicks": true}
	msg["cc"] = []string{"carol@example.org"}
	want(t, e.post("/v1/messages", tok, msg), http.StatusAccepted)
	_, h := parts(t, e.sub.last().Raw)
	if m := clickRE.FindAllStringSubmatch(h, -1); len(m) != 1 || openRE.MatchString(h) {
		t.Fatalf("clicks only: %s", h)
	} else {
		fs.evs = nil
		serveGet(srvTr.Handler(), "/t/c/"+m[0][1])
		if len(fs.evs) != 1 || fs.evs[0].Recipient != "" {
			t.Errorf("several recipients: event %+v", fs.evs)
		}
	}
}

func TestAccountTrackingDefault(t *testing.T) {
	t.Parallel()
	e := newTrackingEnv(t)
	op := e.key(store.DefaultAccount, store.ScopeAdmin)
	snd := e.key("acme", store.ScopeSend)
	msg := map[string]any{"from": "a@acme.example", "to": []string{"bob@example.org"},
		"html": `<body><a href="https://x.example/">x</a></body>`}

	want(t, e.post("/v1/messages", snd, msg), http.StatusAccepted)
	if _, h := parts(t, e.sub.last().Raw); openRE.MatchString(h) || clickRE.MatchString(h) {
		t.Fatalf("tracked by default: %s", h)
	}
	r := e.do("PATCH", "/v1/accounts/acme", op, "application/json", strings.NewReader(`{"tracking":{"opens":true}}`))
	want(t, r, http.StatusOK)
	var av accountView
	r.json(t, &av)
	if av.Tracking != (store.AccountTracking{Opens: true}) {
		t.Errorf("PATCH answered %s", r.body)
	}
	// Limits and tracking apart: each changes only itself.
	r = e.do("PATCH", "/v1/accounts/acme", op, "application/json", strings.NewReader(`{"limits":{"per_hour":5}}`))
	want(t, r, http.StatusOK)
	r.json(t, &av)
	if av.Tracking != (store.AccountTracking{Opens: true}) || av.Limits.PerHour != 5 {
		t.Errorf("limits PATCH: %s", r.body)
	}
	// A refused PATCH changes nothing.
	want(t, e.do("PATCH", "/v1/accounts/acme", op, "application/json", strings.NewReader(`{"limits":{"per_hour":-1},"tracking":{"clicks":true}}`)), http.StatusBadRequest)
	want(t, e.do("PATCH", "/v1/accounts/acme", op, "application/json", strings.NewReader(`{"tracking":{"opens":"yes"}}`)), http.StatusBadRequest)
	want(t, e.do("PATCH", "/v1/accounts/ghost", op, "application/json", strings.NewReader(`{"tracking":{"opens":true}}`)), http.StatusNotFound)
	r = e.get("/v1/accounts", op)
	var list struct{ Accounts []accountView }
	r.json(t, &list)
	for _, a := range list.Accounts {
		if a.ID == "acme" && a.Tracking != (store.AccountTracking{Opens: true}) {
			t.Errorf("listed %+v", a)
		}
	}

	want(t, e.post("/v1/messages", snd, msg), http.StatusAccepted)
	if _, h := parts(t, e.sub.last().Raw); !openRE.MatchString(h) || clickRE.MatchString(h) {
		t.Errorf("account default opens: %s", h)
	}
	// The message overrides the default, field by field.
	msg["tracking"] = map[string]bool{"clicks": true}
	want(t, e.post("/v1/messages", snd, msg), http.StatusAccepted)
	if _, h := parts(t, e.sub.last().Raw); !openRE.MatchString(h) || !clickRE.MatchString(h) {
		t.Errorf("default opens + message clicks: %s", h)
	}
	msg["tracking"] = map[string]bool{"opens": false}
	want(t, e.post("/v1/messages", snd, msg), http.StatusAccepted)
	if _, h := parts(t, e.sub.last().Raw); openRE.MatchString(h) || clickRE.MatchString(h) {
		t.Errorf("message opens off: %s", h)
	}
	// A new account can be created with tracking on.
	r = e.post("/v1/accounts", op, map[string]any{"id": "beta", "tracking": map[string]bool{"clicks": true}})
	want(t, r, http.StatusCreated)
	if ac, err := e.st.GetAccount(t.Context(), "beta"); err != nil || ac.Tracking != (store.AccountTracking{Clicks: true}) {
		t.Errorf("created: %+v %v", ac, err)
	}
	// Only operators set it.
	adm := e.key("acme", store.ScopeAdmin)
	want(t, e.do("PATCH", "/v1/accounts/acme", adm, "application/json", strings.NewReader(`{"tracking":{"opens":false}}`)), http.StatusForbidden)
}

// Without a tracker, asking for tracking is refused; the account default
// is ignored.
func TestTrackingUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	snd := e.key("acme", store.ScopeSend)
	msg := map[string]any{"from": "a@acme.example", "to": []string{"bob@example.org"}, "html": "<p>x</p>", "tracking": map[string]bool{"opens": true}}
	r := e.post("/v1/messages", snd, msg)
	if code, field := r.apiErr(t); r.status != http.StatusBadRequest || code != "validation_failed" || field != "tracking" {
		t.Errorf("tracking without a tracker: %d %s", r.status, r.body)
	}
	if err := e.st.UpdateAccountTracking(t.Context(), "acme", store.AccountTracking{Opens: true, Clicks: true}); err != nil {
		t.Fatal(err)
	}
	delete(msg, "tracking")
	want(t, e.post("/v1/messages", snd, msg), http.StatusAccepted)
	if _, h := parts(t, e.sub.last().Raw); h != "<p>x</p>" {
		t.Errorf("html changed without a tracker: %s", h)
	}
}

type eventSink struct{ evs []store.Event }

func (s *eventSink) AddEvents(_ context.Context, evs []store.Event) error {
	s.evs = append(s.evs, evs...)
	return nil
}

// Opens and clicks are listed with the message's events but say nothing
// of its delivery: the recipient stays delivered, its last reply the
// SMTP one. The events API filters them by type.
func TestTrackingEventsInMessageView(t *testing.T) {
	t.Parallel()
	e := newTrackingEnv(t)
	rd := e.key("acme", store.ScopeRead)
	now := e.clock.Now()
	evs := []store.Event{
		{Time: now, Type: store.EventAccepted, Account: "acme", MessageID: "m1", Recipient: "bob@example.org", Tags: []string{"t"}},
		{Time: now, Type: store.EventDelivered, Account: "acme", MessageID: "m1", Recipient: "bob@example.org", Reply: "250 2.0.0 ok", Attempt: 1},
		{Time: now, Type: store.EventOpened, Account: "acme", MessageID: "m1", Recipient: "bob@example.org"},
		{Time: now, Type: store.EventClicked, Account: "acme", MessageID: "m1", Recipient: "bob@example.org", Reply: "https://shop.example.com/"},
	}
	if err := e.st.AddEvents(t.Context(), evs); err != nil {
		t.Fatal(err)
	}
	r := e.get("/v1/messages/m1", rd)
	want(t, r, http.StatusOK)
	var v messageView
	r.json(t, &v)
	if len(v.Events) != 4 || len(v.Recipients) != 1 || v.Recipients[0].Status != "delivered" || v.Recipients[0].LastReply != "250 2.0.0 ok" {
		t.Errorf("message view %s", r.body)
	}
	r = e.get("/v1/events?type=clicked", rd)
	want(t, r, http.StatusOK)
	var page eventPage
	r.json(t, &page)
	if len(page.Events) != 1 || page.Events[0].Reply != "https://shop.example.com/" {
		t.Errorf("clicked events %s", r.body)
	}
	want(t, e.get("/v1/events?type=opened", rd), http.StatusOK)
}
