package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	gomail "github.com/emersion/go-message/mail"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// parsed is a message read back with go-message.
type parsed struct {
	header gomail.Header
	parts  []parsedPart
}

type parsedPart struct {
	contentType string
	filename    string
	body        []byte
	inline      bool
}

func parseMessage(t testing.TB, raw []byte) parsed {
	t.Helper()
	mr, err := gomail.CreateReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, raw)
	}
	p := parsed{header: mr.Header}
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v\n%s", err, raw)
		}
		body, err := io.ReadAll(part.Body)
		if err != nil {
			t.Fatalf("part body: %v", err)
		}
		pp := parsedPart{body: body}
		switch h := part.Header.(type) {
		case *gomail.InlineHeader:
			pp.inline = true
			pp.contentType, _, _ = h.ContentType()
		case *gomail.AttachmentHeader:
			pp.contentType, _, _ = h.ContentType()
			pp.filename, _ = h.Filename()
		}
		p.parts = append(p.parts, pp)
	}
	return p
}

func checkCRLF(t *testing.T, raw []byte) {
	t.Helper()
	for i, c := range raw {
		if c == '\n' && (i == 0 || raw[i-1] != '\r') {
			t.Fatalf("bare LF at %d", i)
		}
		if c == '\r' && (i+1 == len(raw) || raw[i+1] != '\n') {
			t.Fatalf("bare CR at %d", i)
		}
	}
}

func TestSendBuildsMIME(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	pdf := bytes.Repeat([]byte{0, 1, 2, 0xff, 'x'}, 300)
	req := map[string]any{
		"from":     "Zoë Müller <zoe@example.com>",
		"to":       []string{"Ann <ann@example.org>", "bob@example.org"},
		"cc":       []string{"carol@example.org"},
		"bcc":      []string{"dave@example.org", "BOB@example.org"},
		"reply_to": "support@example.com",
		"subject":  "Grüße — Ihre Rechnung №42",
		"text":     "Hallo Zoë,\nline two\r\nline three " + strings.Repeat("long ", 40),
		"html":     "<p>Hallo <b>Zoë</b></p>",
		"attachments": []map[string]string{
			{"filename": "rechnung-ü.pdf", "content": base64.StdEncoding.EncodeToString(pdf)},
			{"filename": "notes.txt", "content_type": "text/plain; charset=utf-8", "content": base64.StdEncoding.EncodeToString([]byte("plain notes"))},
		},
		"headers":  map[string]string{"X-Campaign": "spring-ü", "List-Unsubscribe": "<mailto:unsub@example.com>"},
		"tags":     []string{"invoice"},
		"metadata": map[string]string{"customer": "42"},
	}
	r := e.post("/v1/messages", tok, req)
	want(t, r, http.StatusAccepted)
	var sr sendResponse
	r.json(t, &sr)
	if sr.ID != "q0001" || r.header.Get("Location") != "/v1/messages/q0001" {
		t.Fatalf("response %s, Location %q", r.body, r.header.Get("Location"))
	}
	s := e.sub.last()
	if s.Account != store.DefaultAccount || s.EnvelopeFrom != "zoe@example.com" || s.From != "zoe@example.com" {
		t.Fatalf("submission envelope %+v", s)
	}
	wantRcpts := []string{"ann@example.org", "bob@example.org", "carol@example.org", "dave@example.org"}
	if !slices.Equal(s.Recipients, wantRcpts) {
		t.Fatalf("recipients %v, want %v (bcc included, duplicates folded)", s.Recipients, wantRcpts)
	}
	if !slices.Equal(s.Tags, []string{"invoice"}) || s.Metadata["customer"] != "42" {
		t.Fatalf("tags %v metadata %v", s.Tags, s.Metadata)
	}
	checkCRLF(t, s.Raw)
	if bytes.Contains(s.Raw, []byte("dave@")) {
		t.Fatal("Bcc address leaked into the message")
	}
	p := parseMessage(t, s.Raw)
	if subj, err := p.header.Subject(); err != nil || subj != "Grüße — Ihre Rechnung №42" {
		t.Fatalf("subject %q, %v", subj, err)
	}
	if raw := p.header.Get("Subject"); !strings.HasPrefix(raw, "=?utf-8?") {
		t.Fatalf("subject not RFC 2047 encoded: %q", raw)
	}
	from, err := p.header.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Name != "Zoë Müller" || from[0].Address != "zoe@example.com" {
		t.Fatalf("From %v, %v", from, err)
	}
	to, _ := p.header.AddressList("To")
	cc, _ := p.header.AddressList("Cc")
	if len(to) != 2 || to[0].Name != "Ann" || len(cc) != 1 || p.header.Get("Bcc") != "" {
		t.Fatalf("To %v Cc %v Bcc %q", to, cc, p.header.Get("Bcc"))
	}
	if v, _ := p.header.Text("X-Campaign"); v != "spring-ü" {
		t.Fatalf("X-Campaign %q", v)
	}
	if p.header.Get("Reply-To") != "<support@example.com>" || p.header.Get("List-Unsubscribe") == "" {
		t.Fatalf("Reply-To %q", p.header.Get("Reply-To"))
	}
	if id, err := p.header.MessageID(); err != nil || !strings.HasSuffix(id, "@mx.example.net") {
		t.Fatalf("Message-ID %q %v", id, err)
	}
	if d, err := p.header.Date(); err != nil || !d.Equal(e.clock.Now().Truncate(time.Second)) {
		t.Fatalf("Date %v %v", d, err)
	}
	if p.header.Get("MIME-Version") != "1.0" {
		t.Fatal("no MIME-Version")
	}
	if mt, _, _ := p.header.ContentType(); mt != "multipart/mixed" {
		t.Fatalf("top-level type %q", mt)
	}
	if !bytes.Contains(s.Raw, []byte("Content-Type: multipart/alternative")) {
		t.Fatal("text and html are not in a multipart/alternative")
	}
	if len(p.parts) != 4 {
		t.Fatalf("%d parts, want text, html and 2 attachments", len(p.parts))
	}
	if pp := p.parts[0]; !pp.inline || pp.contentType != "text/plain" || !strings.Contains(string(pp.body), "Hallo Zoë,\r\nline two\r\nline three long") {
		t.Fatalf("text part %+v %q", pp, pp.body)
	}
	if pp := p.parts[1]; pp.contentType != "text/html" || string(pp.body) != "<p>Hallo <b>Zoë</b></p>" {
		t.Fatalf("html part %q %q", pp.contentType, pp.body)
	}
	if pp := p.parts[2]; pp.inline || pp.filename != "rechnung-ü.pdf" || pp.contentType != "application/pdf" || !bytes.Equal(pp.body, pdf) {
		t.Fatalf("attachment %q %q, %d bytes", pp.filename, pp.contentType, len(pp.body))
	}
	if pp := p.parts[3]; pp.filename != "notes.txt" || string(pp.body) != "plain notes" {
		t.Fatalf("second attachment %+v", pp)
	}
	for _, line := range strings.Split(string(s.Raw), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line of %d octets", len(line))
		}
	}
	if !bytes.Contains(s.Raw, []byte("Content-Transfer-Encoding: quoted-printable")) || !bytes.Contains(s.Raw, []byte("Content-Transfer-Encoding: base64")) {
		t.Fatal("missing transfer encodings")
	}
}

func TestSendShapes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	cases := []struct {
		name, text, html string
		attach           bool
		top              string
		parts            []string
	}{
		{"text only", "hi", "", false, "text/plain", nil},
		{"html only", "", "<p>hi</p>", false, "text/html", nil},
		{"alternative", "hi", "<p>hi</p>", false, "multipart/alternative", []string{"text/plain", "text/html"}},
		{"text with attachment", "hi", "", true, "multipart/mixed", []string{"text/plain", "application/octet-stream"}},
	}
	for _, c := range cases {
		req := MessageRequest{From: "a@example.com", To: []string{"b@example.org"}, Subject: "plain ascii", Text: c.text, HTML: c.html}
		if c.attach {
			req.Attachments = []Attachment{{Filename: "blob", Content: "AAEC"}}
		}
		want(t, e.post("/v1/messages", tok, req), http.StatusAccepted)
		raw := e.sub.last().Raw
		checkCRLF(t, raw)
		p := parseMessage(t, raw)
		if mt, _, _ := p.header.ContentType(); mt != c.top {
			t.Errorf("%s: top-level %q, want %q", c.name, mt, c.top)
		}
		if p.header.Get("Subject") != "plain ascii" {
			t.Errorf("%s: ASCII subject encoded: %q", c.name, p.header.Get("Subject"))
		}
		if c.parts != nil {
			var got []string
			for _, pp := range p.parts {
				got = append(got, pp.contentType)
			}
			if !slices.Equal(got, c.parts) {
				t.Errorf("%s: parts %v, want %v", c.name, got, c.parts)
			}
		}
	}
}

func TestValidationNamesField(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxRecipients: 3})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	base := func() map[string]any {
		return map[string]any{"from": "a@example.com", "to": []string{"b@example.org"}, "text": "hi"}
	}
	cases := []struct {
		name   string
		modify func(m map[string]any)
		status int
		code   string
		field  string
	}{
		{"bad to", func(m map[string]any) { m["to"] = []string{"ok@example.org", "x@y.org", "not an address"} }, 400, "validation_failed", "to[2]"},
		{"bad from", func(m map[string]any) { m["from"] = "nobody" }, 400, "validation_failed", "from"},
		{"missing from", func(m map[string]any) { delete(m, "from") }, 400, "validation_failed", "from"},
		{"bad cc", func(m map[string]any) { m["cc"] = []string{"a@@b"} }, 400, "validation_failed", "cc[0]"},
		{"no recipients", func(m map[string]any) { delete(m, "to") }, 400, "validation_failed", "to"},
		{"too many recipients", func(m map[string]any) { m["bcc"] = []string{"c@x.org", "d@x.org", "e@x.org"} }, 400, "validation_failed", "bcc[2]"},
		{"no body", func(m map[string]any) { delete(m, "text") }, 400, "validation_failed", "text"},
		{"subject with newline", func(m map[string]any) { m["subject"] = "hi\r\nBcc: evil@x.org" }, 400, "validation_failed", "subject"},
		{"name with newline", func(m map[string]any) { m["reply_to"] = "\"Evil\r\nBcc: x@y.org\" <a@b.org>" }, 400, "validation_failed", "reply_to"},
		{"header overriding From", func(m map[string]any) { m["headers"] = map[string]string{"from": "ceo@example.com"} }, 400, "validation_failed", "headers.from"},
		{"header overriding Content-Type", func(m map[string]any) { m["headers"] = map[string]string{"Content-Type": "text/html"} }, 400, "validation_failed", "headers.Content-Type"},
		{"header value with CRLF", func(m map[string]any) { m["headers"] = map[string]string{"X-A": "v\r\nBcc: x@y.org"} }, 400, "validation_failed", "headers.X-A"},
		{"header name with colon", func(m map[string]any) { m["headers"] = map[string]string{"X-A:": "v"} }, 400, "validation_failed", "headers.X-A:"},
		{"bad base64", func(m map[string]any) {
			m["attachments"] = []map[string]string{{"filename": "a.txt", "content": "aGk="}, {"filename": "b.bin", "content": "!!notbase64"}}
		}, 400, "validation_failed", "attachments[1].content"},
		{"attachment without name", func(m map[string]any) { m["attachments"] = []map[string]string{{"content": "aGk="}} }, 400, "validation_failed", "attachments[0].filename"},
		{"bad content type", func(m map[string]any) {
			m["attachments"] = []map[string]string{{"filename": "a", "content_type": "nonsense", "content": "aGk="}}
		}, 400, "validation_failed", "attachments[0].content_type"},
		{"empty tag", func(m map[string]any) { m["tags"] = []string{"ok", ""} }, 400, "validation_failed", "tags[1]"},
		{"unknown field", func(m map[string]any) { m["tracking_pixel"] = true }, 400, "unknown_field", "tracking_pixel"},
		{"wrong type", func(m map[string]any) { m["to"] = "b@example.org" }, 400, "invalid_json", "to"},
	}
	for _, c := range cases {
		m := base()
		c.modify(m)
		r := e.post("/v1/messages", tok, m)
		if r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			continue
		}
		code, field := r.apiErr(t)
		if code != c.code || field != c.field {
			t.Errorf("%s: code %q field %q, want %q %q (%s)", c.name, code, field, c.code, c.field, r.body)
		}
	}
	if n := e.sub.count(); n != 0 {
		t.Fatalf("%d invalid messages were submitted", n)
	}
	// Malformed and trailing JSON, wrong media type.
	for body, code := range map[string]string{`{"from":`: "invalid_json", `{"from":"a@b.c"} {}`: "invalid_json", ``: "invalid_json"} {
		r := e.post("/v1/messages", tok, body)
		if c, _ := r.apiErr(t); r.status != 400 || c != code {
			t.Errorf("body %q: %d %s", body, r.status, r.body)
		}
	}
	r := e.do("POST", "/v1/messages", tok, "text/plain", strings.NewReader("hi"))
	want(t, r, http.StatusUnsupportedMediaType)
}

func TestAuthAndScopes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	send := e.key("acme", store.ScopeSend)
	read := e.key("acme", store.ScopeRead)
	admin := e.key("acme", store.ScopeAdmin)
	op := e.key(store.DefaultAccount, store.ScopeAdmin)
	msg := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "hi"}

	r := e.get("/v1/events", "")
	want(t, r, http.StatusUnauthorized)
	if code, _ := r.apiErr(t); code != "unauthorized" || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") {
		t.Fatalf("401 without WWW-Authenticate: %v %s", r.header, r.body)
	}
	// A malformed token, an unknown ID, and a known ID with a wrong secret.
	_, id, _ := parseTokenMust(t, read)
	wrongSecret := "hk_" + id + "_" + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	unknown, _, _ := NewToken()
	for _, bad := range []string{"garbage", unknown, wrongSecret, read + "x"} {
		want(t, e.get("/v1/events", bad), http.StatusUnauthorized)
	}
	r = e.do("GET", "/v1/events", "", "", nil, "Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("u:p")))
	want(t, r, http.StatusUnauthorized)

	want(t, e.post("/v1/messages", read, msg), http.StatusForbidden)
	want(t, e.get("/v1/events", send), http.StatusForbidden)
	want(t, e.post("/v1/messages", send, msg), http.StatusAccepted)
	want(t, e.get("/v1/events", read), http.StatusOK)
	want(t, e.post("/v1/suppressions", read, map[string]string{"address": "x@example.org"}), http.StatusForbidden)
	want(t, e.get("/v1/keys", read), http.StatusForbidden)
	// admin implies send and read.
	want(t, e.post("/v1/messages", admin, msg), http.StatusAccepted)
	want(t, e.get("/v1/events", admin), http.StatusOK)
	want(t, e.get("/v1/keys", admin), http.StatusOK)
	// A tenant admin is no operator.
	r = e.get("/v1/accounts", admin)
	want(t, r, http.StatusForbidden)
	if code, _ := r.apiErr(t); code != "forbidden" {
		t.Fatal(code)
	}
	want(t, e.post("/v1/accounts", admin, map[string]string{"id": "evil"}), http.StatusForbidden)
	want(t, e.post("/v1/keys", admin, map[string]any{"account": store.DefaultAccount, "scopes": []string{"admin"}}), http.StatusForbidden)
	want(t, e.get("/v1/accounts", op), http.StatusOK)

	// LastUsed is recorded.
	k, err := e.st.GetAPIKey(context.Background(), id)
	if err != nil || k.LastUsed.IsZero() {
		t.Fatalf("LastUsed not recorded: %+v %v", k, err)
	}
}

// parseTokenMust parses a token or fails the test.
func parseTokenMust(t *testing.T, tok string) (string, string, []byte) {
	t.Helper()
	id, secret, err := ParseToken(tok)
	if err != nil {
		t.Fatal(err)
	}
	return tok, id, secret
}

func TestTokens(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for range 200 {
		tok, id, hash := NewToken()
		gid, secret, err := ParseToken(tok)
		if err != nil || gid != id || len(id) != 12 || len(hash) != 32 || len(secret) != 32 {
			t.Fatalf("token %q: %v", tok, err)
		}
		if seen[id] {
			t.Fatal("duplicate key ID")
		}
		seen[id] = true
	}
	tok, _, _ := NewToken()
	for _, bad := range []string{"", "hk_", tok[:len(tok)-1], tok + "A", "xx" + tok[2:], strings.Replace(tok, "_", "-", 2), "hk_ABCDEFGHIJKL" + tok[15:]} {
		if _, _, err := ParseToken(bad); !errors.Is(err, ErrMalformedToken) {
			t.Errorf("ParseToken(%q) = %v", bad, err)
		}
	}
}

func TestTenantIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	a := e.key("alpha", store.ScopeAdmin)
	b := e.key("beta", store.ScopeAdmin)
	if err := e.st.AddEvents(ctx, []store.Event{
		{Type: store.EventAccepted, Account: "alpha", MessageID: "m-alpha", Recipient: "x@example.org", Sender: "s@alpha.example"},
		{Type: store.EventDelivered, Account: "alpha", MessageID: "m-alpha", Recipient: "x@example.org", Reply: "250 ok"},
	}); err != nil {
		t.Fatal(err)
	}
	want(t, e.get("/v1/messages/m-alpha", a), http.StatusOK)
	r := e.get("/v1/messages/m-alpha", b)
	want(t, r, http.StatusNotFound)
	if code, _ := r.apiErr(t); code != "not_found" {
		t.Fatal(code)
	}
	var page eventPage
	e.get("/v1/events", b).json(t, &page)
	if len(page.Events) != 0 {
		t.Fatalf("beta sees alpha's events: %+v", page.Events)
	}
	e.get("/v1/events?message_id=m-alpha", b).json(t, &page)
	if len(page.Events) != 0 {
		t.Fatal("beta sees alpha's events by message ID")
	}
	e.get("/v1/events", a).json(t, &page)
	if len(page.Events) != 2 {
		t.Fatalf("alpha sees %d events", len(page.Events))
	}

	// Suppressions.
	want(t, e.post("/v1/suppressions", a, map[string]string{"address": "Sup@Example.org"}), http.StatusCreated)
	var sp suppressionPage
	e.get("/v1/suppressions", b).json(t, &sp)
	if len(sp.Suppressions) != 0 {
		t.Fatal("beta sees alpha's suppressions")
	}
	want(t, e.del("/v1/suppressions/sup@example.org", b), http.StatusNotFound)
	e.get("/v1/suppressions", a).json(t, &sp)
	if len(sp.Suppressions) != 1 || sp.Suppressions[0].Address != "sup@example.org" || sp.Suppressions[0].Reason != store.SuppressManual {
		t.Fatalf("alpha's suppressions %+v", sp)
	}
	want(t, e.del("/v1/suppressions/SUP%40example.org", a), http.StatusNoContent)

	// Webhooks.
	r = e.post("/v1/webhooks", a, map[string]any{"url": "https://hooks.example/x", "event_types": []string{"bounced"}})
	want(t, r, http.StatusCreated)
	var wh webhookView
	r.json(t, &wh)
	if !strings.HasPrefix(wh.Secret, "whsec_") || len(wh.Secret) < 40 {
		t.Fatalf("webhook secret %q", wh.Secret)
	}
	var whs struct{ Webhooks []webhookView }
	e.get("/v1/webhooks", b).json(t, &whs)
	if len(whs.Webhooks) != 0 {
		t.Fatal("beta sees alpha's webhooks")
	}
	e.get("/v1/webhooks", a).json(t, &whs)
	if len(whs.Webhooks) != 1 || whs.Webhooks[0].Secret != "" || whs.Webhooks[0].URL != "https://hooks.example/x" {
		t.Fatalf("webhook list %+v (the secret is shown once)", whs)
	}
	want(t, e.get("/v1/webhooks/"+wh.ID+"/deliveries", b), http.StatusNotFound)
	want(t, e.get("/v1/webhooks/"+wh.ID+"/deliveries", a), http.StatusOK)
	want(t, e.del("/v1/webhooks/"+wh.ID, b), http.StatusNotFound)
	want(t, e.del("/v1/webhooks/"+wh.ID, a), http.StatusNoContent)

	// Keys of another account are invisible and cannot be revoked.
	_, aid, _ := parseTokenMust(t, a)
	want(t, e.del("/v1/keys/"+aid, b), http.StatusNotFound)
	want(t, e.get("/v1/keys?account=alpha", b), http.StatusForbidden)
	want(t, e.get("/v1/events", a), http.StatusOK)

	// Domains.
	if err := e.st.AddDomain(ctx, "alpha.example"); err != nil {
		t.Fatal(err)
	}
	if err := e.st.SetDomainAccount(ctx, "alpha.example", "alpha"); err != nil {
		t.Fatal(err)
	}
	var ds struct{ Domains []string }
	e.get("/v1/domains", b).json(t, &ds)
	if len(ds.Domains) != 0 {
		t.Fatalf("beta sees domains %v", ds.Domains)
	}
	e.get("/v1/domains", a).json(t, &ds)
	if !slices.Equal(ds.Domains, []string{"alpha.example"}) {
		t.Fatalf("alpha's domains %v", ds.Domains)
	}
}

func TestGetMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	tok := e.key("acme", store.ScopeRead)
	other := e.key("other", store.ScopeRead)
	// A live message in the queue.
	body, err := e.st.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(body, "Subject: x\r\n\r\nhi\r\n")
	m := &store.Message{ID: "live1", Sender: "s@acme.example", Received: e.clock.Now(), Account: "acme", Tags: []string{"t1"},
		Recipients: []store.Recipient{{Address: "r1@example.org", Status: store.StatusQueued, NextAttempt: e.clock.Now()}, {Address: "r2@example.org", Status: store.StatusQueued, NextAttempt: e.clock.Now()}}}
	if _, err := e.st.Enqueue(ctx, m, body, time.Time{}); err != nil {
		t.Fatal(err)
	}
	var v messageView
	r := e.get("/v1/messages/live1", tok)
	want(t, r, http.StatusOK)
	r.json(t, &v)
	if !v.InQueue || len(v.Recipients) != 2 || v.Recipients[0].Status != "queued" || len(v.Events) != 2 || v.Sender != "s@acme.example" {
		t.Fatalf("live view %s", r.body)
	}
	want(t, e.get("/v1/messages/live1", other), http.StatusNotFound)

	// A message that left the queue: state from events.
	t0 := e.clock.Now()
	if err := e.st.AddEvents(ctx, []store.Event{
		{Time: t0, Type: store.EventAccepted, Account: "acme", MessageID: "gone1", Recipient: "a@example.org", Sender: "s@acme.example"},
		{Time: t0, Type: store.EventAccepted, Account: "acme", MessageID: "gone1", Recipient: "b@example.org", Sender: "s@acme.example"},
		{Time: t0.Add(time.Second), Type: store.EventDeferred, Account: "acme", MessageID: "gone1", Recipient: "a@example.org", Attempt: 1, Reply: "451 4.7.1 later"},
		{Time: t0.Add(2 * time.Second), Type: store.EventDelivered, Account: "acme", MessageID: "gone1", Recipient: "a@example.org", Attempt: 2, Reply: "250 ok", RemoteMTA: "mx.example.org"},
		{Time: t0.Add(2 * time.Second), Type: store.EventBounced, Account: "acme", MessageID: "gone1", Recipient: "b@example.org", Attempt: 1, Reply: "550 5.1.1 unknown", Bounce: "hard:mailbox-unknown"},
		{Time: t0.Add(3 * time.Second), Type: store.EventComplained, Account: "acme", MessageID: "gone1", Recipient: "a@example.org"},
	}); err != nil {
		t.Fatal(err)
	}
	r = e.get("/v1/messages/gone1", tok)
	want(t, r, http.StatusOK)
	v = messageView{}
	r.json(t, &v)
	got := map[string]string{}
	for _, rc := range v.Recipients {
		got[rc.Address] = rc.Status + "/" + rc.LastReply
	}
	if v.InQueue || got["a@example.org"] != "delivered/250 ok" || got["b@example.org"] != "failed/550 5.1.1 unknown" || len(v.Events) != 6 {
		t.Fatalf("derived view %s", r.body)
	}
	if v.Events[4].Bounce != "hard:mailbox-unknown" {
		t.Fatalf("bounce class lost: %+v", v.Events[4])
	}
	want(t, e.get("/v1/messages/nope", tok), http.StatusNotFound)
}

func TestIdempotency(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeSend)
	tokB := e.key("other", store.ScopeSend)
	msg := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "hi"}

	r1 := e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-1")
	want(t, r1, http.StatusAccepted)
	r2 := e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-1")
	want(t, r2, http.StatusAccepted)
	var s1, s2 sendResponse
	r1.json(t, &s1)
	r2.json(t, &s2)
	if s1.ID != s2.ID || e.sub.count() != 1 || r2.header.Get("Idempotent-Replayed") != "true" || r1.header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("replay: %s then %s, %d submissions", s1.ID, s2.ID, e.sub.count())
	}
	// Another account's identical key is its own.
	want(t, e.post("/v1/messages", tokB, msg, "Idempotency-Key", "order-1"), http.StatusAccepted)
	if e.sub.count() != 2 {
		t.Fatal("a key of another account replayed")
	}
	// A refused first attempt does not burn the key.
	e.sub.setErr(&RateLimitError{RetryAfter: time.Second})
	want(t, e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-2"), http.StatusTooManyRequests)
	want(t, e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-2"), http.StatusTooManyRequests)
	e.sub.setErr(nil)
	r := e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-2")
	want(t, r, http.StatusAccepted)
	var s3 sendResponse
	r.json(t, &s3)
	r = e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-2")
	var s4 sendResponse
	r.json(t, &s4)
	if e.sub.count() != 3 || s3.ID != s4.ID {
		t.Fatalf("after a refused attempt: %d submissions, ids %s %s", e.sub.count(), s3.ID, s4.ID)
	}
	// After 24 hours the key sends again.
	e.clock.Advance(24*time.Hour + time.Minute)
	r = e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-1")
	want(t, r, http.StatusAccepted)
	var s5 sendResponse
	r.json(t, &s5)
	if e.sub.count() != 4 || s5.ID == s1.ID {
		t.Fatalf("expired key replayed %s", s5.ID)
	}
	// Invalid keys are refused.
	r = e.post("/v1/messages", tok, msg, "Idempotency-Key", "has#hash")
	if _, f := r.apiErr(t); r.status != 400 || f != "Idempotency-Key" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// An Idempotency-Key is bound to its first request: the same request
// replays, a different one is refused with 422 and nothing is sent.
func TestIdempotencyFingerprint(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeSend)
	a := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "hi"}
	b := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "a different text"}

	r := e.post("/v1/messages", tok, a, "Idempotency-Key", "k1")
	want(t, r, http.StatusAccepted)
	var first sendResponse
	r.json(t, &first)
	reused := func(r resp) {
		t.Helper()
		code, field := r.apiErr(t)
		if r.status != http.StatusUnprocessableEntity || code != "idempotency_key_reused" || field != "Idempotency-Key" {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if r.header.Get("Idempotent-Replayed") != "" {
			t.Fatal("a refused request says it was replayed")
		}
	}
	reused(e.post("/v1/messages", tok, b, "Idempotency-Key", "k1"))
	// Same JSON meaning, other bytes: the fingerprint is of the bytes sent.
	reused(e.post("/v1/messages", tok, `{"text":"hi","from":"a@acme.example","to":["b@example.org"]}`, "Idempotency-Key", "k1"))
	// Same body with another Content-Type parameter.
	body, _ := json.Marshal(a)
	reused(e.do("POST", "/v1/messages", tok, "application/json; charset=utf-8", bytes.NewReader(body), "Idempotency-Key", "k1"))
	if e.sub.count() != 1 {
		t.Fatalf("%d submissions, want 1", e.sub.count())
	}
	// The first request itself still replays, also with the media type's
	// case changed (canonical form).
	for _, ct := range []string{"application/json", "Application/JSON"} {
		r = e.do("POST", "/v1/messages", tok, ct, bytes.NewReader(body), "Idempotency-Key", "k1")
		want(t, r, http.StatusAccepted)
		var again sendResponse
		r.json(t, &again)
		if again.ID != first.ID || r.header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("replay with %q: %s", ct, r.body)
		}
	}

	// Raw uploads: the query is part of the request (canonical order).
	raw := "From: a@acme.example\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhi\r\n"
	r = e.do("POST", "/v1/messages?to=x@example.org&tag=t", tok, "message/rfc822", strings.NewReader(raw), "Idempotency-Key", "k2")
	want(t, r, http.StatusAccepted)
	r.json(t, &first)
	r = e.do("POST", "/v1/messages?tag=t&to=x@example.org", tok, "message/rfc822", strings.NewReader(raw), "Idempotency-Key", "k2")
	var again sendResponse
	r.json(t, &again)
	if r.status != http.StatusAccepted || again.ID != first.ID {
		t.Fatalf("raw replay: %d %s", r.status, r.body)
	}
	reused(e.do("POST", "/v1/messages?to=y@example.org&tag=t", tok, "message/rfc822", strings.NewReader(raw), "Idempotency-Key", "k2"))
	// A JSON request under a key first used for a raw upload.
	reused(e.post("/v1/messages", tok, a, "Idempotency-Key", "k2"))
	if e.sub.count() != 2 {
		t.Fatalf("%d submissions, want 2", e.sub.count())
	}

	// A key whose first request was refused sent nothing: another request may use it.
	e.sub.setErr(&ForbiddenError{Message: "sender domain not owned by this account"})
	want(t, e.post("/v1/messages", tok, MessageRequest{From: "a@wrong.example", To: []string{"b@example.org"}, Text: "hi"}, "Idempotency-Key", "k3"), http.StatusForbidden)
	e.sub.setErr(nil)
	want(t, e.post("/v1/messages", tok, a, "Idempotency-Key", "k3"), http.StatusAccepted)
	if e.sub.count() != 3 {
		t.Fatalf("%d submissions, want 3", e.sub.count())
	}
	reused(e.post("/v1/messages", tok, b, "Idempotency-Key", "k3"))

	// Keys recorded before fingerprints were stored replay for any request.
	ctx := context.Background()
	now := e.clock.Now()
	if _, err := e.st.PutIdempotency(ctx, "acme", "legacy", "res:"+fmt.Sprint(now.Unix()), now); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.PutIdempotency(ctx, "acme", "legacy#r", "ok:qOLD", now); err != nil {
		t.Fatal(err)
	}
	r = e.post("/v1/messages", tok, b, "Idempotency-Key", "legacy")
	r.json(t, &again)
	if r.status != http.StatusAccepted || again.ID != "qOLD" || e.sub.count() != 3 {
		t.Fatalf("legacy key: %d %s, %d submissions", r.status, r.body, e.sub.count())
	}
}

func TestIdempotencyConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeSend)
	msg := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "hi"}
	ids := make(chan string, 8)
	for range 8 {
		go func() {
			b, _ := json.Marshal(msg)
			req, _ := http.NewRequest("POST", e.url+"/v1/messages", bytes.NewReader(b))
			req.Header.Set("Authorization", "Bearer "+tok)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Idempotency-Key", "same")
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				ids <- "error: " + err.Error()
				return
			}
			defer res.Body.Close()
			var sr sendResponse
			json.NewDecoder(res.Body).Decode(&sr)
			ids <- fmt.Sprint(res.StatusCode, sr.ID)
		}()
	}
	first := <-ids
	for range 7 {
		if got := <-ids; got != first {
			t.Fatalf("concurrent retries answered %q and %q", first, got)
		}
	}
	if e.sub.count() != 1 {
		t.Fatalf("%d submissions for one key", e.sub.count())
	}
}

func TestSubmitterErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeSend)
	msg := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "hi"}
	cases := []struct {
		err        error
		status     int
		code       string
		retryAfter string
	}{
		{&RateLimitError{RetryAfter: 1500 * time.Millisecond}, 429, "rate_limited", "2"},
		{fmt.Errorf("wrapped: %w", &RateLimitError{RetryAfter: 90 * time.Second}), 429, "rate_limited", "90"},
		{&ForbiddenError{Message: "sender domain not owned by this account"}, 403, "forbidden", ""},
		{smtp.Errorf(550, smtp.EnhancedCode{5, 7, 1}, "Sender address not allowed"), 403, "forbidden", ""},
		{smtp.Errorf(550, smtp.EnhancedCode{5, 1, 1}, "All recipients are suppressed"), 422, "rejected", ""},
		{smtp.Errorf(552, smtp.EnhancedCode{5, 3, 4}, "Message too big"), 413, "payload_too_large", ""},
		{smtp.Errorf(451, smtp.EnhancedCode{4, 3, 0}, "Local error"), 503, "temporarily_unavailable", "30"},
		{errors.New("disk on fire at /var/secret/path"), 500, "internal_error", ""},
	}
	for _, c := range cases {
		e.sub.setErr(c.err)
		r := e.post("/v1/messages", tok, msg)
		code, _ := r.apiErr(t)
		if r.status != c.status || code != c.code || r.header.Get("Retry-After") != c.retryAfter {
			t.Errorf("%v: %d %s Retry-After %q; want %d %s %q", c.err, r.status, code, r.header.Get("Retry-After"), c.status, c.code, c.retryAfter)
		}
		if bytes.Contains(r.body, []byte("secret")) {
			t.Errorf("internal error leaked: %s", r.body)
		}
	}
	if !strings.Contains(e.logs.String(), "disk on fire") {
		t.Error("internal error not logged")
	}
}

func TestEventsPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeRead)
	t0 := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	var evs []store.Event
	for i := range 25 {
		typ := store.EventDelivered
		if i%5 == 0 {
			typ = store.EventBounced
		}
		ev := store.Event{Time: t0.Add(time.Duration(i) * time.Minute), Type: typ, Account: "acme", MessageID: fmt.Sprintf("m%d", i/5), Recipient: fmt.Sprintf("r%d@example.org", i%3)}
		if i%2 == 0 {
			ev.Tags = []string{"even"}
		}
		evs = append(evs, ev)
	}
	if err := e.st.AddEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	var all []eventView
	cursor, pages := "", 0
	for {
		var p eventPage
		r := e.get("/v1/events?limit=10&cursor="+cursor, tok)
		want(t, r, http.StatusOK)
		r.json(t, &p)
		pages++
		all = append(all, p.Events...)
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
	}
	if pages != 3 || len(all) != 25 {
		t.Fatalf("%d pages, %d events", pages, len(all))
	}
	if !sort.SliceIsSorted(all, func(i, j int) bool { return all[i].ID < all[j].ID }) || all[0].ID == all[24].ID {
		t.Fatal("events out of order")
	}
	count := func(q string) int {
		t.Helper()
		var p eventPage
		r := e.get("/v1/events?limit=500&"+q, tok)
		want(t, r, http.StatusOK)
		r.json(t, &p)
		return len(p.Events)
	}
	checks := map[string]int{
		"type=bounced":                5,
		"type=bounced&type=delivered": 25,
		"type=deferred":               0,
		"recipient=R1@example.org":    8,
		"tag=even":                    13,
		"message_id=m2":               5,
		"since=2026-03-01T00:10:00Z":  15,
		"until=2026-03-01T00:10:00Z":  10,
		"since=2026-03-01T00:10:00Z&until=2026-03-01T00:12:00Z&tag=even": 1,
	}
	for q, n := range checks {
		if got := count(q); got != n {
			t.Errorf("%s: %d events, want %d", q, got, n)
		}
	}
	for q, field := range map[string]string{"type=bogus": "type[0]", "since=yesterday": "since", "limit=0": "limit", "limit=501": "limit", "cursor=abc": "cursor", "colour=red": "colour"} {
		r := e.get("/v1/events?"+q, tok)
		if _, f := r.apiErr(t); r.status != 400 || f != field {
			t.Errorf("%s: %d %s", q, r.status, r.body)
		}
	}
}

func TestSuppressionsPagination(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeAdmin)
	for i := range 7 {
		want(t, e.post("/v1/suppressions", tok, map[string]string{"address": fmt.Sprintf("u%d@example.org", i), "reason": "hard_bounce", "detail": "550 5.1.1"}), http.StatusCreated)
	}
	var got []string
	cursor := ""
	for range 5 {
		var p suppressionPage
		e.get("/v1/suppressions?limit=3&cursor="+cursor, tok).json(t, &p)
		for _, s := range p.Suppressions {
			got = append(got, s.Address)
		}
		if cursor = p.NextCursor; cursor == "" {
			break
		}
	}
	if len(got) != 7 || got[0] != "u0@example.org" || got[6] != "u6@example.org" {
		t.Fatalf("paged suppressions %v", got)
	}
	r := e.post("/v1/suppressions", tok, map[string]string{"address": "x@example.org", "reason": "whim"})
	if _, f := r.apiErr(t); f != "reason" {
		t.Fatal(string(r.body))
	}
	r = e.post("/v1/suppressions", tok, map[string]string{"address": "nope"})
	if _, f := r.apiErr(t); f != "address" {
		t.Fatal(string(r.body))
	}
	want(t, e.del("/v1/suppressions/u9@example.org", tok), http.StatusNotFound)
}

func TestWebhookValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeAdmin)
	for body, field := range map[string]string{
		`{"url":"ftp://x.example/"}`:                              "url",
		`{"url":"/relative"}`:                                     "url",
		`{"url":"https://x.example/","event_types":["exploded"]}`: "event_types[0]",
	} {
		r := e.post("/v1/webhooks", tok, body)
		if _, f := r.apiErr(t); r.status != 400 || f != field {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
	// Internal destinations are refused at creation (SSRF), in any notation.
	for _, u := range []string{
		"http://127.0.0.1:9/hook", "http://localhost:8025/v1/keys", "http://2130706433/", "http://0x7f.1/",
		"http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://[fe80::1%25eth0]/", "http://169.254.169.254/latest/meta-data/",
		"http://100.100.100.200/", "http://metadata.google.internal/", "http://metadata/", "http://10.0.0.1/",
		"https://user:pw@hooks.example.com/",
	} {
		r := e.post("/v1/webhooks", tok, map[string]any{"url": u})
		if code, f := r.apiErr(t); r.status != 400 || code != "validation_failed" || f != "url" {
			t.Errorf("%s: %d %s, want 400 naming url", u, r.status, r.body)
		}
	}
	var whs struct{ Webhooks []webhookView }
	e.get("/v1/webhooks", tok).json(t, &whs)
	if len(whs.Webhooks) != 0 {
		t.Fatalf("refused webhooks were stored: %+v", whs)
	}

	// A trusted single operator may allow private receivers.
	p := newEnv(t, Config{WebhookAllowPrivate: true})
	ptok := p.key("acme", store.ScopeAdmin)
	r := p.post("/v1/webhooks", ptok, `{"url":"http://127.0.0.1:9/hook"}`)
	want(t, r, http.StatusCreated)
	var wh webhookView
	r.json(t, &wh)
	if len(wh.EventTypes) != 0 || wh.Secret == "" || wh.URL != "http://127.0.0.1:9/hook" {
		t.Fatalf("%s", r.body)
	}
	r = p.post("/v1/webhooks", ptok, `{"url":"http://u:p@127.0.0.1:9/hook"}`)
	if _, f := r.apiErr(t); r.status != 400 || f != "url" {
		t.Errorf("userinfo with allow-private: %d %s", r.status, r.body)
	}
}

// TestWebhookLimit: an account cannot create more than MaxWebhooks.
func TestWebhookLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxWebhooks: 2})
	a, b := e.key("acme", store.ScopeAdmin), e.key("beta", store.ScopeAdmin)
	var ids []string
	for i := range 2 {
		r := e.post("/v1/webhooks", a, map[string]any{"url": fmt.Sprintf("https://hooks.example.com/%d", i)})
		want(t, r, http.StatusCreated)
		var wh webhookView
		r.json(t, &wh)
		ids = append(ids, wh.ID)
	}
	r := e.post("/v1/webhooks", a, map[string]any{"url": "https://hooks.example.com/3"})
	if code, _ := r.apiErr(t); r.status != http.StatusConflict || code != "limit_reached" || !strings.Contains(string(r.body), "maximum of 2 webhooks") {
		t.Fatalf("third webhook: %d %s", r.status, r.body)
	}
	want(t, e.post("/v1/webhooks", b, map[string]any{"url": "https://hooks.example.com/b"}), http.StatusCreated)
	want(t, e.del("/v1/webhooks/"+ids[0], a), http.StatusNoContent)
	want(t, e.post("/v1/webhooks", a, map[string]any{"url": "https://hooks.example.com/4"}), http.StatusCreated)
}

func TestAccountsAndKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	op := e.key(store.DefaultAccount, store.ScopeAdmin)

	r := e.post("/v1/accounts", op, map[string]any{"id": "shop", "name": "The Shop", "limits": map[string]int{"per_minute": 10}})
	want(t, r, http.StatusCreated)
	want(t, e.post("/v1/accounts", op, map[string]any{"id": "shop"}), http.StatusConflict)
	r = e.post("/v1/accounts", op, map[string]any{"id": "Bad_ID"})
	if _, f := r.apiErr(t); f != "id" {
		t.Fatal(string(r.body))
	}
	r = e.do("PATCH", "/v1/accounts/shop", op, "application/json", strings.NewReader(`{"limits":{"per_hour":100}}`))
	want(t, r, http.StatusOK)
	var ac accountView
	r.json(t, &ac)
	if ac.Limits != (store.AccountLimits{PerMinute: 10, PerHour: 100}) {
		t.Fatalf("limits %+v", ac.Limits)
	}
	r = e.do("PATCH", "/v1/accounts/shop", op, "application/json", strings.NewReader(`{"limits":{"per_day":-1}}`))
	if _, f := r.apiErr(t); f != "limits.per_day" {
		t.Fatal(string(r.body))
	}
	want(t, e.do("PATCH", "/v1/accounts/none", op, "application/json", strings.NewReader(`{"limits":{}}`)), http.StatusNotFound)
	var as struct{ Accounts []accountView }
	e.get("/v1/accounts", op).json(t, &as)
	if len(as.Accounts) < 2 {
		t.Fatalf("accounts %+v", as)
	}

	// Operator assigns a domain and creates a key for the account.
	r = e.post("/v1/domains", op, map[string]string{"domain": "Shop.Example", "account": "shop"})
	if code, f := r.apiErr(t); r.status != 422 || code != "unknown_domain" || f != "domain" {
		t.Fatal(string(r.body))
	}
	if err := e.st.AddDomain(context.Background(), "shop.example"); err != nil {
		t.Fatal(err)
	}
	r = e.post("/v1/domains", op, map[string]string{"domain": "Shop.Example", "account": "shop"})
	want(t, r, http.StatusOK)
	r = e.post("/v1/domains", op, map[string]string{"domain": "x.example", "account": "ghost"})
	if code, f := r.apiErr(t); r.status != 422 || code != "unknown_account" || f != "account" {
		t.Fatal(string(r.body))
	}
	r = e.post("/v1/keys", op, map[string]any{"account": "shop", "name": "ci", "scopes": []string{"send", "read", "send"}})
	want(t, r, http.StatusCreated)
	var kv keyView
	r.json(t, &kv)
	if kv.Account != "shop" || !slices.Equal(kv.Scopes, []string{"send", "read"}) || !strings.HasPrefix(kv.Token, "hk_"+kv.ID+"_") {
		t.Fatalf("key %s", r.body)
	}
	var ds struct{ Domains []string }
	e.get("/v1/domains", kv.Token).json(t, &ds)
	if !slices.Equal(ds.Domains, []string{"shop.example"}) {
		t.Fatalf("domains %v", ds.Domains)
	}
	r = e.post("/v1/keys", op, map[string]any{"scopes": []string{"root"}})
	if _, f := r.apiErr(t); f != "scopes" {
		t.Fatal(string(r.body))
	}
	// Listing never shows secrets.
	r = e.get("/v1/keys?account=shop", op)
	want(t, r, http.StatusOK)
	if bytes.Contains(r.body, []byte(kv.Token[16:])) || bytes.Contains(r.body, []byte(`"token"`)) || bytes.Contains(r.body, []byte("hash")) {
		t.Fatalf("key listing leaks: %s", r.body)
	}
	var ks struct{ Keys []keyView }
	r.json(t, &ks)
	if len(ks.Keys) != 1 || ks.Keys[0].ID != kv.ID || ks.Keys[0].Name != "ci" {
		t.Fatalf("keys %s", r.body)
	}
	// A deleted key stops working.
	want(t, e.del("/v1/keys/"+kv.ID, op), http.StatusNoContent)
	want(t, e.get("/v1/domains", kv.Token), http.StatusUnauthorized)

	// An account owning a domain cannot be deleted; the default never.
	r = e.del("/v1/accounts/shop", op)
	if code, _ := r.apiErr(t); r.status != 409 || code != "account_in_use" {
		t.Fatal(string(r.body))
	}
	want(t, e.del("/v1/accounts/default", op), http.StatusConflict)
	want(t, e.post("/v1/accounts", op, map[string]any{"id": "tmp"}), http.StatusCreated)
	want(t, e.del("/v1/accounts/tmp", op), http.StatusNoContent)
	want(t, e.del("/v1/accounts/tmp", op), http.StatusNotFound)
}

// Deleting an account through the API: refused while it owns a domain and
// has queued mail, forced, and then a new account with the same ID sees
// nothing of the old one.
func TestDeleteAccountCascade(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	op := e.key(store.DefaultAccount, store.ScopeAdmin)
	want(t, e.post("/v1/accounts", op, map[string]any{"id": "shop"}), http.StatusCreated)
	if err := e.st.AddDomain(ctx, "shop.example"); err != nil {
		t.Fatal(err)
	}
	want(t, e.post("/v1/domains", op, map[string]string{"domain": "shop.example", "account": "shop"}), http.StatusOK)
	r := e.post("/v1/keys", op, map[string]any{"account": "shop", "scopes": []string{"admin"}})
	want(t, r, http.StatusCreated)
	var k keyView
	r.json(t, &k)
	tok := k.Token
	want(t, e.post("/v1/webhooks", tok, map[string]any{"url": "https://hooks.example/shop"}), http.StatusCreated)
	want(t, e.post("/v1/suppressions", tok, map[string]string{"address": "gone@example.org"}), http.StatusCreated)
	msg := MessageRequest{From: "a@shop.example", To: []string{"b@example.org"}, Text: "hi"}
	r = e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-1")
	want(t, r, http.StatusAccepted)
	var first sendResponse
	r.json(t, &first)
	queued := &store.Message{ID: "queued1", Sender: "a@shop.example", Received: e.clock.Now(), Account: "shop",
		Recipients: []store.Recipient{{Address: "b@example.org"}}}
	body, err := e.st.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(body, "Subject: x\r\n\r\nhi\r\n")
	if _, err := e.st.Enqueue(ctx, queued, body, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddEvents(ctx, []store.Event{{Type: store.EventDelivered, Account: "shop", MessageID: "gone1", Recipient: "b@example.org"}}); err != nil {
		t.Fatal(err)
	}

	// Refused, saying why and what to do; nothing changes.
	r = e.del("/v1/accounts/shop", op)
	code, _ := r.apiErr(t)
	var eb errorBody
	r.json(t, &eb)
	if r.status != http.StatusConflict || code != "account_in_use" ||
		!strings.Contains(eb.Error.Message, "1 domain, 1 queued message") || !strings.Contains(eb.Error.Message, "force=true") {
		t.Fatalf("delete without force: %d %s", r.status, r.body)
	}
	want(t, e.get("/v1/messages/gone1", tok), http.StatusOK)

	// Forced.
	want(t, e.del("/v1/accounts/shop?force=true", op), http.StatusNoContent)
	want(t, e.get("/v1/events", tok), http.StatusUnauthorized)
	var ds struct{ Domains []string }
	e.get("/v1/domains", op).json(t, &ds)
	if !slices.Contains(ds.Domains, "shop.example") {
		t.Fatalf("the domain did not go back to the default account: %v", ds.Domains)
	}
	if _, err := e.st.Get(ctx, "queued1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("queued message of the deleted account: %v", err)
	}

	// A new account with the same ID starts empty.
	want(t, e.post("/v1/accounts", op, map[string]any{"id": "shop"}), http.StatusCreated)
	r = e.post("/v1/keys", op, map[string]any{"account": "shop", "scopes": []string{"admin"}})
	want(t, r, http.StatusCreated)
	r.json(t, &k)
	tok = k.Token
	var page eventPage
	e.get("/v1/events", tok).json(t, &page)
	if len(page.Events) != 0 {
		t.Errorf("new account sees events: %+v", page.Events)
	}
	for _, id := range []string{"gone1", "queued1", first.ID} {
		want(t, e.get("/v1/messages/"+id, tok), http.StatusNotFound)
	}
	var sp suppressionPage
	e.get("/v1/suppressions", tok).json(t, &sp)
	var whs struct{ Webhooks []webhookView }
	e.get("/v1/webhooks", tok).json(t, &whs)
	var ks struct{ Keys []keyView }
	e.get("/v1/keys", tok).json(t, &ks)
	e.get("/v1/domains", tok).json(t, &ds)
	if len(sp.Suppressions) != 0 || len(whs.Webhooks) != 0 || len(ks.Keys) != 1 || len(ds.Domains) != 0 {
		t.Errorf("new account sees suppressions %v, webhooks %v, keys %v, domains %v", sp.Suppressions, whs.Webhooks, ks.Keys, ds.Domains)
	}
	// The old account's Idempotency-Key does not replay its message.
	r = e.post("/v1/messages", tok, msg, "Idempotency-Key", "order-1")
	want(t, r, http.StatusAccepted)
	var again sendResponse
	r.json(t, &again)
	if again.ID == first.ID || r.header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the new account replayed the old one's message %s", first.ID)
	}
}

func TestRawUpload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", store.ScopeSend)
	raw := "From: Ann <ann@acme.example>\nTo: bob@example.org\nCc: Carol <carol@example.org>\nBcc: dave@example.org\nSubject: raw\n\nhello\nworld\n"
	r := e.do("POST", "/v1/messages?tag=raw", tok, "message/rfc822", strings.NewReader(raw))
	want(t, r, http.StatusAccepted)
	s := e.sub.last()
	checkCRLF(t, s.Raw)
	if !slices.Equal(s.Recipients, []string{"bob@example.org", "carol@example.org", "dave@example.org"}) || s.From != "ann@acme.example" || s.EnvelopeFrom != "ann@acme.example" || !slices.Equal(s.Tags, []string{"raw"}) {
		t.Fatalf("submission %+v", s)
	}
	p := parseMessage(t, s.Raw)
	if p.header.Get("Bcc") != "" || bytes.Contains(s.Raw, []byte("dave@")) {
		t.Fatal("Bcc kept")
	}
	// Date and Message-ID are the acceptance path's to add (e2e
	// TestTrustAliasesAndFixupsFromEverySource); the API leaves them alone.
	if p.header.Get("Message-Id") != "" || p.header.Get("Date") != "" {
		t.Fatal("the API added Message-ID or Date itself")
	}
	if !bytes.HasSuffix(s.Raw, []byte("\r\n\r\nhello\r\nworld\r\n")) {
		t.Fatalf("body changed: %q", s.Raw)
	}
	// The envelope from the query wins; a complete CRLF message is kept byte for byte.
	raw2 := "From: ann@acme.example\r\nTo: bob@example.org\r\nDate: Sun, 1 Mar 2026 12:00:00 +0000\r\nMessage-ID: <x@acme.example>\r\nSubject: raw\r\n\r\nhi\r\n"
	r = e.do("POST", "/v1/messages?from=bounces@acme.example&to=z@example.org&to=y@example.org", tok, "message/rfc822", strings.NewReader(raw2))
	want(t, r, http.StatusAccepted)
	s = e.sub.last()
	if string(s.Raw) != raw2 || s.EnvelopeFrom != "bounces@acme.example" || !slices.Equal(s.Recipients, []string{"z@example.org", "y@example.org"}) {
		t.Fatalf("submission %+v %q", s, s.Raw)
	}
	for q, body := range map[string]string{
		"":             "Subject: no from\r\n\r\nhi\r\n",
		"?to=bad":      raw2,
		"?other=1":     raw2,
		"?x":           raw2,
		"?to=a@b.org#": "From: a@b.org\r\nBad\rCR: x\r\n\r\n",
	} {
		r := e.do("POST", "/v1/messages"+q, tok, "message/rfc822", strings.NewReader(body))
		if r.status != 400 {
			t.Errorf("%q %q: %d %s", q, body, r.status, r.body)
		}
	}
}

func TestSizeLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxMessageBytes: 4096, MaxRequestBytes: 512})
	tok := e.key(store.DefaultAccount, store.ScopeAdmin)
	big := MessageRequest{From: "a@example.com", To: []string{"b@example.org"}, Text: strings.Repeat("x", 5000)}
	r := e.post("/v1/messages", tok, big)
	if code, _ := r.apiErr(t); r.status != 413 || code != "payload_too_large" {
		t.Fatalf("%d %s", r.status, r.body)
	}
	r = e.do("POST", "/v1/messages", tok, "message/rfc822", strings.NewReader("From: a@example.com\r\n\r\n"+strings.Repeat("x", 5000)))
	want(t, r, http.StatusRequestEntityTooLarge)
	r = e.post("/v1/suppressions", tok, map[string]string{"address": "a@example.org", "detail": strings.Repeat("d", 600)})
	want(t, r, http.StatusRequestEntityTooLarge)
	want(t, e.post("/v1/messages", tok, MessageRequest{From: "a@example.com", To: []string{"b@example.org"}, Text: strings.Repeat("x", 3000)}), http.StatusAccepted)
}

func TestNotFoundAndMethod(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeAdmin)
	r := e.get("/v1/nothing", tok)
	if code, _ := r.apiErr(t); r.status != 404 || code != "not_found" {
		t.Fatal(string(r.body))
	}
	r = e.do("PUT", "/v1/messages", tok, "", nil)
	if code, _ := r.apiErr(t); r.status != 405 || code != "method_not_allowed" || r.header.Get("Allow") != "POST" {
		t.Fatalf("%d %v %s", r.status, r.header, r.body)
	}
}

func TestOpenAPICoverage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	r := e.get("/v1/openapi.json", "")
	want(t, r, http.StatusOK)
	var doc struct {
		OpenAPI    string                                `json:"openapi"`
		Paths      map[string]map[string]json.RawMessage `json:"paths"`
		Components struct {
			Schemas   map[string]json.RawMessage `json:"schemas"`
			Responses map[string]json.RawMessage `json:"responses"`
		} `json:"components"`
	}
	r.json(t, &doc)
	if doc.OpenAPI != "3.1.0" {
		t.Fatalf("openapi %q", doc.OpenAPI)
	}
	documented := map[string]bool{}
	for p, ops := range doc.Paths {
		for m := range ops {
			documented[strings.ToUpper(m)+" "+p] = true
		}
	}
	registered := map[string]bool{}
	for _, rt := range routes {
		registered[rt.method+" "+rt.path] = true
		if !documented[rt.method+" "+rt.path] {
			t.Errorf("route %s %s is not in the OpenAPI document", rt.method, rt.path)
		}
	}
	for k := range documented {
		if !registered[k] {
			t.Errorf("the OpenAPI document describes %s, which is not served", k)
		}
	}
	// Every $ref resolves.
	for _, ref := range refs(r.body) {
		name := ref[strings.LastIndexByte(ref, '/')+1:]
		var ok bool
		switch {
		case strings.HasPrefix(ref, "#/components/schemas/"):
			_, ok = doc.Components.Schemas[name]
		case strings.HasPrefix(ref, "#/components/responses/"):
			_, ok = doc.Components.Responses[name]
		}
		if !ok {
			t.Errorf("dangling $ref %s", ref)
		}
	}
	// Every error code the code can return is documented.
	for _, code := range errorCodesInSource(t) {
		if !bytes.Contains(r.body, []byte(`"`+code+`"`)) {
			t.Errorf("error code %q is not in the OpenAPI document", code)
		}
	}
}

func refs(doc []byte) []string {
	var out []string
	s := string(doc)
	for {
		i := strings.Index(s, `"$ref": "`)
		if i < 0 {
			return out
		}
		s = s[i+9:]
		out = append(out, s[:strings.IndexByte(s, '"')])
	}
}
