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
	"strings"
	"sync"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// pickySubmitter refuses the messages whose first recipient it names and
// passes the others to the fakeSubmitter.
type pickySubmitter struct {
	*fakeSubmitter
	mu     sync.Mutex
	refuse map[string]error
}

func (p *pickySubmitter) Submit(ctx context.Context, s *Submission) (string, error) {
	p.mu.Lock()
	err := p.refuse[s.Recipients[0]]
	p.mu.Unlock()
	if err != nil {
		return "", err
	}
	return p.fakeSubmitter.Submit(ctx, s)
}

func (p *pickySubmitter) set(rcpt string, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.refuse == nil {
		p.refuse = make(map[string]error)
	}
	p.refuse[rcpt] = err
}

// newPickyEnv is an API whose Submitter refuses chosen recipients.
func newPickyEnv(t *testing.T, cfg Config) (*env, *pickySubmitter) {
	var ps *pickySubmitter
	e := newEnvDeps(t, cfg, func(d *Deps) {
		ps = &pickySubmitter{fakeSubmitter: d.Submitter.(*fakeSubmitter)}
		d.Submitter = ps
	})
	return e, ps
}

// byRecipient returns the submissions by their first recipient.
func (f *fakeSubmitter) byRecipient() map[string]*Submission {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[string]*Submission)
	for _, s := range f.subs {
		m[s.Recipients[0]] = s
	}
	return m
}

// A batch becomes one message per personalization, each with the
// personalization's fields applied over the top level, and the response
// lists them in request order with one batch ID.
func TestBatchPersonalizations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	req := map[string]any{
		"from":     "Shop <shop@example.com>",
		"bcc":      []string{"archive@example.com"},
		"subject":  "Your order",
		"text":     "hello",
		"headers":  map[string]string{"X-Campaign": "spring", "X-Shared": "top"},
		"tags":     []string{"orders"},
		"metadata": map[string]string{"campaign": "spring", "order": "none"},
		"personalizations": []map[string]any{
			{"to": []string{"Ann <ann@example.org>"}, "metadata": map[string]string{"order": "1"}},
			{"to": []string{"bob@example.org"}, "cc": []string{"carol@example.org"}, "subject": "Bob's order",
				"headers": map[string]string{"X-Shared": "bob"}, "tags": []string{"vip", "orders"}, "metadata": map[string]string{"order": "2"}},
			{"to": []string{"dan@example.org"}, "bcc": []string{}, "metadata": map[string]string{"order": "3"}},
		},
	}
	r := e.post("/v1/messages", tok, req)
	want(t, r, http.StatusAccepted)
	var br batchResponse
	r.json(t, &br)
	if br.BatchID == "" || len(br.Messages) != 3 || r.header.Get("Location") != "" {
		t.Fatalf("batch response %s (Location %q)", r.body, r.header.Get("Location"))
	}
	ids := map[string]bool{}
	for i, m := range br.Messages {
		if m.Status != batchQueued || m.ID == "" || !strings.HasPrefix(m.MessageID, "<") || m.Error != nil || ids[m.ID] {
			t.Fatalf("message %d: %+v", i, m)
		}
		ids[m.ID] = true
	}
	if !slices.Equal(br.Messages[0].To, []string{"ann@example.org"}) || !slices.Equal(br.Messages[1].To, []string{"bob@example.org"}) {
		t.Fatalf("to of the messages: %+v", br.Messages)
	}
	if e.sub.count() != 3 {
		t.Fatalf("%d submissions, want 3", e.sub.count())
	}
	subs := e.sub.byRecipient()
	ann, bob, dan := subs["ann@example.org"], subs["bob@example.org"], subs["dan@example.org"]
	if ann == nil || bob == nil || dan == nil {
		t.Fatalf("submissions by recipient %v", subs)
	}
	for _, s := range []*Submission{ann, bob, dan} {
		if s.BatchID != br.BatchID || s.From != "shop@example.com" {
			t.Errorf("submission %v: batch %q from %q", s.Recipients, s.BatchID, s.From)
		}
	}
	// to, cc, bcc and subject replace the top level's when given.
	if !slices.Equal(ann.Recipients, []string{"ann@example.org", "archive@example.com"}) ||
		!slices.Equal(bob.Recipients, []string{"bob@example.org", "carol@example.org", "archive@example.com"}) ||
		!slices.Equal(dan.Recipients, []string{"dan@example.org"}) {
		t.Errorf("recipients %v / %v / %v", ann.Recipients, bob.Recipients, dan.Recipients)
	}
	// metadata and headers merge key by key; tags add up.
	if ann.Metadata["order"] != "1" || ann.Metadata["campaign"] != "spring" || bob.Metadata["order"] != "2" || dan.Metadata["order"] != "3" {
		t.Errorf("metadata %v / %v / %v", ann.Metadata, bob.Metadata, dan.Metadata)
	}
	if !slices.Equal(ann.Tags, []string{"orders"}) || !slices.Equal(bob.Tags, []string{"orders", "vip"}) {
		t.Errorf("tags %v / %v", ann.Tags, bob.Tags)
	}
	pa, pb := parseMessage(t, ann.Raw), parseMessage(t, bob.Raw)
	if s, _ := pa.header.Subject(); s != "Your order" {
		t.Errorf("ann's subject %q", s)
	}
	if s, _ := pb.header.Subject(); s != "Bob's order" {
		t.Errorf("bob's subject %q", s)
	}
	if pa.header.Get("X-Shared") != "top" || pb.header.Get("X-Shared") != "bob" || pb.header.Get("X-Campaign") != "spring" {
		t.Errorf("headers: ann X-Shared %q, bob X-Shared %q X-Campaign %q", pa.header.Get("X-Shared"), pb.header.Get("X-Shared"), pb.header.Get("X-Campaign"))
	}
	if to := pa.header.Get("To"); to != `"Ann" <ann@example.org>` && to != "Ann <ann@example.org>" {
		t.Errorf("ann's To %q", to)
	}
	if bytes.Contains(ann.Raw, []byte("bob@")) || bytes.Contains(bob.Raw, []byte("ann@")) || bytes.Contains(ann.Raw, []byte("archive@")) {
		t.Error("a message shows another personalization's or a Bcc address")
	}
	for i, m := range br.Messages {
		s := subs[br.Messages[i].To[0]]
		pm := parseMessage(t, s.Raw)
		if id, _ := pm.header.MessageID(); "<"+id+">" != m.MessageID {
			t.Errorf("message %d: response message_id %q, header %q", i, m.MessageID, id)
		}
	}
	// The top level's maps were not changed by the merge.
	if len(br.Messages) == 3 && ann.Metadata["order"] == dan.Metadata["order"] {
		t.Error("personalizations share a metadata map")
	}
}

// Validation reports every problem at once with its field path; the
// first is also field/message, and nothing is sent.
func TestValidationAllErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxRecipients: 2})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	req := map[string]any{
		"from":    "nobody",
		"to":      []string{"ok@example.org", "bad address"},
		"subject": "line\r\nbreak",
		"headers": map[string]string{"From": "x@y.org"},
		"tags":    []string{""},
		"attachments": []map[string]string{
			{"filename": "a.png", "content": "!!", "disposition": "inline", "content_id": "a b"},
		},
		"text":          "hi",
		"reply_to_list": []string{"r1@example.com", "oops"},
	}
	r := e.post("/v1/messages", tok, req)
	want(t, r, http.StatusBadRequest)
	var body errorBody
	r.json(t, &body)
	got := map[string]bool{}
	for _, fe := range body.Error.Errors {
		got[fe.Field] = true
		if fe.Message == "" {
			t.Errorf("%s: no message", fe.Field)
		}
	}
	for _, f := range []string{"from", "to[1]", "subject", "headers.From", "tags[0]", "reply_to_list[1]",
		"attachments[0].content", "attachments[0].content_id", "attachments[0].disposition"} {
		if !got[f] {
			t.Errorf("no error for %s in %s", f, r.body)
		}
	}
	if body.Error.Code != "validation_failed" || body.Error.Field != "from" || body.Error.Message != body.Error.Errors[0].Message {
		t.Errorf("first error %+v", body.Error)
	}

	// In a batch, a personalization's problems carry its index; a
	// top-level problem is named once, not once per personalization.
	req = map[string]any{
		"from": "shop@example.com",
		"cc":   []string{"bad cc"},
		"personalizations": []map[string]any{
			{"to": []string{"ann@example.org"}},
			{"to": []string{"a@example.org", "b@example.org", "c@example.org"}},
			{"to": []string{"not an address"}, "metadata": map[string]string{"k": "v\n"}},
			{"cc": []string{}},
		},
	}
	r = e.post("/v1/messages", tok, req)
	want(t, r, http.StatusBadRequest)
	body = errorBody{}
	r.json(t, &body)
	var fields []string
	for _, fe := range body.Error.Errors {
		fields = append(fields, fe.Field)
	}
	wantFields := []string{"cc[0]", "text", "personalizations[1].to[2]", "personalizations[2].to[0]", "personalizations[2].metadata.k", "personalizations[3].to"}
	for _, f := range wantFields {
		if !slices.Contains(fields, f) {
			t.Errorf("no error for %s: %v", f, fields)
		}
	}
	for _, f := range []string{"cc[0]", "text"} {
		if n := slices.Index(fields, f); n < 0 || slices.Contains(fields[n+1:], f) {
			t.Errorf("the top level's %s not named once: %v", f, fields)
		}
	}
	if e.sub.count() != 0 {
		t.Fatalf("%d messages were sent from invalid requests", e.sub.count())
	}

	// Too many errors: the list is bounded.
	many := make([]string, 500)
	for i := range many {
		many[i] = fmt.Sprintf("bad%d", i)
	}
	r = e.post("/v1/messages", tok, map[string]any{"from": "a@example.com", "to": many, "text": "x"})
	want(t, r, http.StatusBadRequest)
	body = errorBody{}
	r.json(t, &body)
	if len(body.Error.Errors) != maxFieldErrors || body.Error.Field != "to[0]" {
		t.Errorf("%d errors listed, first %q", len(body.Error.Errors), body.Error.Field)
	}
}

// Batch limits: personalizations, recipients and the size a batch may
// multiply its body into.
func TestBatchLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxBatchRecipients: 10, MaxBatchBytes: 100 << 10})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	ps := func(n, rcpts int) []Personalization {
		out := make([]Personalization, n)
		for i := range out {
			for j := range rcpts {
				out[i].To = append(out[i].To, fmt.Sprintf("u%d-%d@example.org", i, j))
			}
		}
		return out
	}
	cases := []struct {
		name string
		req  MessageRequest
	}{
		{"too many personalizations", MessageRequest{Personalizations: ps(maxPersonalizations+1, 0)}},
		{"too many recipients", MessageRequest{Personalizations: ps(4, 3)}},
		{"too large", MessageRequest{Text: strings.Repeat("x", 30<<10), Personalizations: ps(5, 1)}},
	}
	for _, c := range cases {
		c.req.From = "a@example.com"
		if c.req.Text == "" {
			c.req.Text = "hi"
		}
		r := e.post("/v1/messages", tok, c.req)
		if code, field := r.apiErr(t); r.status != 400 || code != "validation_failed" || field != "personalizations" {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	r := e.post("/v1/messages", tok, `{"from":"a@example.com","to":["b@example.org"],"text":"x","personalizations":[]}`)
	if code, field := r.apiErr(t); code != "validation_failed" || field != "personalizations" {
		t.Errorf("empty personalizations: %s", r.body)
	}
	if e.sub.count() != 0 {
		t.Fatal("a refused batch sent messages")
	}
	// Just within the limits.
	want(t, e.post("/v1/messages", tok, MessageRequest{From: "a@example.com", Text: "hi", Personalizations: ps(5, 2)}), http.StatusAccepted)
	if e.sub.count() != 5 {
		t.Fatalf("%d messages, want 5", e.sub.count())
	}
}

// A message the Submitter refuses does not stop the others: the 202 lists
// it as refused with the error a single send would have got. When every
// message is refused the answer is that error, listing each.
func TestBatchPartialRefusal(t *testing.T) {
	t.Parallel()
	e, ps := newPickyEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	ps.set("gone@example.org", smtp.Errorf(550, smtp.EnhancedCode{5, 1, 1}, "All recipients are suppressed"))
	ps.set("slow@example.org", &RateLimitError{RetryAfter: time.Minute})
	batch := MessageRequest{From: "a@example.com", Text: "hi", Personalizations: []Personalization{
		{To: []string{"ann@example.org"}}, {To: []string{"gone@example.org"}}, {To: []string{"bob@example.org"}}, {To: []string{"slow@example.org"}},
	}}
	r := e.post("/v1/messages", tok, batch)
	want(t, r, http.StatusAccepted)
	var br batchResponse
	r.json(t, &br)
	st := func(i int) string { return br.Messages[i].Status }
	if len(br.Messages) != 4 || st(0) != batchQueued || st(1) != batchRefused || st(2) != batchQueued || st(3) != batchRefused {
		t.Fatalf("statuses %s", r.body)
	}
	if e := br.Messages[1].Error; e == nil || e.Status != 422 || e.Code != "rejected" || !strings.Contains(e.Message, "suppressed") || br.Messages[1].ID != "" {
		t.Errorf("suppressed message %+v", br.Messages[1])
	}
	if e := br.Messages[3].Error; e == nil || e.Status != 429 || e.Code != "rate_limited" {
		t.Errorf("rate-limited message %+v", br.Messages[3])
	}
	if e.sub.count() != 2 {
		t.Fatalf("%d messages queued, want 2", e.sub.count())
	}

	// Every message refused: the first refusal's error, each listed.
	all := MessageRequest{From: "a@example.com", Text: "hi", Personalizations: []Personalization{
		{To: []string{"slow@example.org"}}, {To: []string{"gone@example.org"}},
	}}
	r = e.post("/v1/messages", tok, all)
	want(t, r, http.StatusTooManyRequests)
	var body errorBody
	r.json(t, &body)
	if body.Error.Code != "rate_limited" || body.Error.Field != "personalizations[0]" || len(body.Error.Errors) != 2 ||
		body.Error.Errors[1].Field != "personalizations[1]" || !strings.Contains(body.Error.Errors[1].Message, "suppressed") {
		t.Errorf("all refused: %s", r.body)
	}
	if r.header.Get("Retry-After") == "" {
		t.Error("no Retry-After")
	}
}

// fixedRates reports a sending limit the test sets.
type fixedRates struct {
	mu sync.Mutex
	st RateStatus
}

func (f *fixedRates) RateStatus(context.Context, string) (RateStatus, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.st, true
}

func (f *fixedRates) set(st RateStatus) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.st = st
}

// A batch that does not fit the account's remaining sending limit is
// refused whole before anything is sent.
func TestBatchRateCheck(t *testing.T) {
	t.Parallel()
	rates := &fixedRates{st: RateStatus{Limit: 5, Remaining: 3, Reset: 40 * time.Second}}
	e := newEnvDeps(t, Config{}, func(d *Deps) { d.Limits = rates })
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	batch := func(n int) MessageRequest {
		req := MessageRequest{From: "a@example.com", Text: "hi"}
		for i := range n {
			req.Personalizations = append(req.Personalizations, Personalization{To: []string{fmt.Sprintf("u%d@example.org", i)}})
		}
		return req
	}
	r := e.post("/v1/messages", tok, batch(4))
	want(t, r, http.StatusTooManyRequests)
	if r.header.Get("Retry-After") != "40" || r.header.Get("X-RateLimit-Remaining") != "3" {
		t.Errorf("headers %v", r.header)
	}
	r = e.post("/v1/messages", tok, batch(6))
	want(t, r, http.StatusUnprocessableEntity)
	if e.sub.count() != 0 {
		t.Fatal("a batch over the limit sent messages")
	}
	first := e.post("/v1/messages", tok, batch(3), "Idempotency-Key", "fits")
	want(t, first, http.StatusAccepted)
	if e.sub.count() != 3 {
		t.Fatalf("%d sent, want 3", e.sub.count())
	}
	// The batch used up the limit; its retry is a replay, not a 429.
	rates.set(RateStatus{Limit: 5, Remaining: 0, Reset: 40 * time.Second})
	again := e.post("/v1/messages", tok, batch(3), "Idempotency-Key", "fits")
	want(t, again, http.StatusAccepted)
	if !bytes.Equal(first.body, again.body) || e.sub.count() != 3 {
		t.Fatalf("retry: %s, %d sent", again.body, e.sub.count())
	}
}

// A batch retried with its Idempotency-Key gets the first response again,
// partial refusals included, and nothing is sent twice; a batch refused
// whole frees the key.
func TestBatchIdempotency(t *testing.T) {
	t.Parallel()
	e, ps := newPickyEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	ps.set("gone@example.org", smtp.Errorf(550, smtp.EnhancedCode{5, 1, 1}, "All recipients are suppressed"))
	batch := MessageRequest{From: "a@example.com", Text: "hi", Personalizations: []Personalization{
		{To: []string{"ann@example.org"}}, {To: []string{"gone@example.org"}},
	}}
	first := e.post("/v1/messages", tok, batch, "Idempotency-Key", "batch-1")
	want(t, first, http.StatusAccepted)
	again := e.post("/v1/messages", tok, batch, "Idempotency-Key", "batch-1")
	want(t, again, http.StatusAccepted)
	if !bytes.Equal(first.body, again.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("replay %s, first %s", again.body, first.body)
	}
	if e.sub.count() != 1 {
		t.Fatalf("%d messages sent, want 1", e.sub.count())
	}
	other := batch
	other.Subject = "changed"
	if r := e.post("/v1/messages", tok, other, "Idempotency-Key", "batch-1"); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("another batch with the key: %d", r.status)
	}

	// Refused whole: the key is free for the retry, which sends.
	ps.set("slow@example.org", &RateLimitError{RetryAfter: time.Second})
	slow := MessageRequest{From: "a@example.com", Text: "hi", Personalizations: []Personalization{{To: []string{"slow@example.org"}}}}
	want(t, e.post("/v1/messages", tok, slow, "Idempotency-Key", "batch-2"), http.StatusTooManyRequests)
	ps.set("slow@example.org", nil)
	r := e.post("/v1/messages", tok, slow, "Idempotency-Key", "batch-2")
	want(t, r, http.StatusAccepted)
	if r.header.Get("Idempotent-Replayed") != "" || e.sub.count() != 2 {
		t.Fatalf("retry after a refusal: replayed %q, %d sent", r.header.Get("Idempotent-Replayed"), e.sub.count())
	}

	// A single send replays its message_id too.
	single := MessageRequest{From: "a@example.com", To: []string{"x@example.org"}, Text: "hi"}
	s1 := e.post("/v1/messages", tok, single, "Idempotency-Key", "one")
	s2 := e.post("/v1/messages", tok, single, "Idempotency-Key", "one")
	var a, b sendResponse
	s1.json(t, &a)
	s2.json(t, &b)
	if a.MessageID == "" || a != b || s2.header.Get("Location") != "/v1/messages/"+a.ID {
		t.Fatalf("single replay %+v / %+v, Location %q", a, b, s2.header.Get("Location"))
	}
	// A key recorded by an older version ("ok:ID") still replays the ID.
	now := e.clock.Now()
	ctx := context.Background()
	for k, v := range map[string]string{"old": "res:" + fmt.Sprint(now.Unix()), "old#r": "ok:q0999"} {
		if _, err := e.st.PutIdempotency(ctx, store.DefaultAccount, k, v, now); err != nil {
			t.Fatal(err)
		}
	}
	r = e.post("/v1/messages", tok, single, "Idempotency-Key", "old")
	want(t, r, http.StatusAccepted)
	var old sendResponse
	r.json(t, &old)
	if old.ID != "q0999" || r.header.Get("Location") != "/v1/messages/q0999" {
		t.Fatalf("legacy replay %s", r.body)
	}
}

// mimeNode is a MIME entity read back: its header, body and children.
type mimeNode struct {
	h    gomessage.Header
	body []byte
	kids []*mimeNode
}

func readTree(t *testing.T, e *gomessage.Entity) *mimeNode {
	t.Helper()
	n := &mimeNode{h: e.Header}
	if mr := e.MultipartReader(); mr != nil {
		for {
			p, err := mr.NextPart()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			n.kids = append(n.kids, readTree(t, p))
		}
		return n
	}
	b, err := io.ReadAll(e.Body)
	if err != nil {
		t.Fatal(err)
	}
	n.body = b
	return n
}

func (n *mimeNode) ctype() string {
	mt, _, _ := n.h.ContentType()
	return mt
}

// Inline images go with the HTML in a multipart/related, each with its
// Content-ID; attachments stay in the multipart/mixed around it. Several
// Reply-To addresses make one header field; the response's message_id is
// the message's Message-ID.
func TestInlineImagesAndReplyToList(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	png := []byte("\x89PNG\r\n\x1a\nfake image")
	req := MessageRequest{
		From: "a@example.com", To: []string{"b@example.org"}, Subject: "pics",
		ReplyToList: []string{"Support <support@example.com>", "sales@example.com"},
		Text:        "see the logo",
		HTML:        `<p><img src="cid:logo@example.com"></p>`,
		Attachments: []Attachment{
			{Filename: "logo.png", Content: base64.StdEncoding.EncodeToString(png), Disposition: "inline", ContentID: "<logo@example.com>"},
			{Filename: "terms.pdf", Content: "AAEC"},
		},
	}
	r := e.post("/v1/messages", tok, req)
	want(t, r, http.StatusAccepted)
	var sr sendResponse
	r.json(t, &sr)
	raw := e.sub.last().Raw
	checkCRLF(t, raw)
	ent, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	root := readTree(t, ent)
	if got := root.h.Get("Message-Id"); got != sr.MessageID || sr.MessageID == "" {
		t.Errorf("Message-ID %q, response message_id %q", got, sr.MessageID)
	}
	p := parseMessage(t, raw)
	rt, err := p.header.AddressList("Reply-To")
	if err != nil || len(rt) != 2 || rt[0].Address != "support@example.com" || rt[0].Name != "Support" || rt[1].Address != "sales@example.com" {
		t.Errorf("Reply-To %v (%v): %q", rt, err, p.header.Get("Reply-To"))
	}
	if root.ctype() != "multipart/mixed" || len(root.kids) != 2 {
		t.Fatalf("top %q with %d parts", root.ctype(), len(root.kids))
	}
	rel := root.kids[0]
	_, params, _ := rel.h.ContentType()
	if rel.ctype() != "multipart/related" || params["type"] != "multipart/alternative" || len(rel.kids) != 2 {
		t.Fatalf("first part %q %v with %d parts", rel.ctype(), params, len(rel.kids))
	}
	if alt := rel.kids[0]; alt.ctype() != "multipart/alternative" || len(alt.kids) != 2 || alt.kids[1].ctype() != "text/html" {
		t.Fatalf("related root %q", alt.ctype())
	}
	img := rel.kids[1]
	disp, dparams, _ := img.h.ContentDisposition()
	if img.ctype() != "image/png" || img.h.Get("Content-Id") != "<logo@example.com>" || disp != "inline" || dparams["filename"] != "logo.png" || !bytes.Equal(img.body, png) {
		t.Errorf("inline image %q Content-ID %q %s %v, %d bytes", img.ctype(), img.h.Get("Content-Id"), disp, dparams, len(img.body))
	}
	if att := root.kids[1]; att.ctype() != "application/pdf" {
		t.Errorf("attachment %q", att.ctype())
	} else if d, _, _ := att.h.ContentDisposition(); d != "attachment" {
		t.Errorf("attachment disposition %q", d)
	}

	// HTML only, no attachments: the related part is the message.
	req.Text, req.Attachments = "", req.Attachments[:1]
	req.ReplyToList = nil
	want(t, e.post("/v1/messages", tok, req), http.StatusAccepted)
	ent, err = gomessage.Read(bytes.NewReader(e.sub.last().Raw))
	if err != nil {
		t.Fatal(err)
	}
	root = readTree(t, ent)
	_, params, _ = root.h.ContentType()
	if root.ctype() != "multipart/related" || params["type"] != "text/html" || len(root.kids) != 2 || root.kids[0].ctype() != "text/html" {
		t.Fatalf("html with an inline image: %q %v", root.ctype(), params)
	}
	if e.sub.last().Raw != nil && root.h.Get("Reply-To") != "" {
		t.Error("Reply-To without reply_to")
	}

	// Content IDs that would break the header or the cid: URL, and
	// inline files without HTML, are refused.
	for _, c := range []struct {
		name string
		at   Attachment
		html string
	}{
		{"CRLF", Attachment{Filename: "a.png", Content: "AA", Disposition: "inline", ContentID: "a\r\nBcc: x@y.org"}, "<p>x</p>"},
		{"space", Attachment{Filename: "a.png", Content: "AA", Disposition: "inline", ContentID: "a b"}, "<p>x</p>"},
		{"angle", Attachment{Filename: "a.png", Content: "AA", Disposition: "inline", ContentID: "a>b"}, "<p>x</p>"},
		{"missing", Attachment{Filename: "a.png", Content: "AA", Disposition: "inline"}, "<p>x</p>"},
		{"too long", Attachment{Filename: "a.png", Content: "AA", Disposition: "inline", ContentID: strings.Repeat("a", maxContentIDLen+1)}, "<p>x</p>"},
		{"not inline", Attachment{Filename: "a.png", Content: "AA", ContentID: "a"}, "<p>x</p>"},
		{"no html", Attachment{Filename: "a.png", Content: "AA", Disposition: "inline", ContentID: "a"}, ""},
		{"bad disposition", Attachment{Filename: "a.png", Content: "AA", Disposition: "form-data"}, "<p>x</p>"},
	} {
		req := MessageRequest{From: "a@example.com", To: []string{"b@example.org"}, Text: "t", HTML: c.html, Attachments: []Attachment{c.at}}
		r := e.post("/v1/messages", tok, req)
		if code, field := r.apiErr(t); r.status != 400 || code != "validation_failed" || !strings.HasPrefix(field, "attachments[0].") {
			t.Errorf("%s: %d %s", c.name, r.status, r.body)
		}
	}
	two := []Attachment{{Filename: "a.png", Content: "AA", Disposition: "inline", ContentID: "x"}, {Filename: "b.png", Content: "AA", Disposition: "inline", ContentID: "x"}}
	if r := e.post("/v1/messages", tok, MessageRequest{From: "a@example.com", To: []string{"b@example.org"}, HTML: "<p>x</p>", Attachments: two}); r.status != 400 {
		t.Errorf("duplicate content_id: %d", r.status)
	}
	for _, bad := range []MessageRequest{
		{From: "a@example.com", To: []string{"b@example.org"}, Text: "t", ReplyTo: "r@example.com", ReplyToList: []string{"s@example.com"}},
		{From: "a@example.com", To: []string{"b@example.org"}, Text: "t", ReplyToList: make([]string, maxReplyTo+1)},
	} {
		if code, field := e.post("/v1/messages", tok, bad).apiErr(t); code != "validation_failed" || !strings.HasPrefix(field, "reply_to_list") {
			t.Errorf("reply_to_list: %s %s", code, field)
		}
	}
}

// Twenty long Reply-To addresses still make lines of at most 998 octets.
func TestReplyToListFolds(t *testing.T) {
	t.Parallel()
	var list []string
	for i := range maxReplyTo {
		list = append(list, fmt.Sprintf("%q <%s%d@example.com>", strings.Repeat("Name ", 20), strings.Repeat("r", 60), i))
	}
	b, err := buildMessage(&MessageRequest{From: "a@example.com", To: []string{"b@example.org"}, Text: "t", ReplyToList: list}, "mx.example.net", time.Unix(1700000000, 0), 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b.raw), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line of %d octets", len(line))
		}
	}
	pm := parseMessage(t, b.raw)
	rt, err := pm.header.AddressList("Reply-To")
	if err != nil || len(rt) != maxReplyTo {
		t.Fatalf("Reply-To: %d addresses, %v", len(rt), err)
	}
}

// A raw upload's response carries its Message-ID when it has one.
func TestRawUploadMessageID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	r := e.do("POST", "/v1/messages", tok, "message/rfc822", strings.NewReader("From: a@example.com\nTo: b@example.org\nMessage-ID: <raw.1@example.com>\n\nhi\n"))
	want(t, r, http.StatusAccepted)
	var sr sendResponse
	r.json(t, &sr)
	if sr.MessageID != "<raw.1@example.com>" || sr.ID == "" {
		t.Errorf("raw upload with a Message-ID: %s", r.body)
	}
	r = e.do("POST", "/v1/messages", tok, "message/rfc822", strings.NewReader("From: a@example.com\nTo: b@example.org\n\nhi\n"))
	want(t, r, http.StatusAccepted)
	sr = sendResponse{}
	r.json(t, &sr)
	if sr.MessageID != "" || sr.ID == "" {
		t.Errorf("raw upload without a Message-ID: %s", r.body)
	}
}

// FuzzBatchRequest decodes random JSON as a request with
// personalizations: checking never panics, a refusal is a validation
// error with its problems listed (at most maxFieldErrors), and every
// message of an accepted batch builds.
func FuzzBatchRequest(f *testing.F) {
	f.Add(`{"from":"a@example.com","text":"t","personalizations":[{"to":["b@example.org"],"subject":"s","metadata":{"k":"v"}}]}`)
	f.Add(`{"from":"a@example.com","html":"<img src=cid:x>","attachments":[{"filename":"x.png","content":"AA","disposition":"inline","content_id":"<x>"}],"bcc":["c@example.org"],"personalizations":[{"cc":[]},{"to":["b@example.org"],"tags":["t"],"headers":{"X-A":"1"}}]}`)
	f.Add(`{"from":"a@example.com","text":"t","reply_to_list":["r@example.com","s@example.com"],"personalizations":[{"to":["bad"]},{}]}`)
	f.Fuzz(func(t *testing.T, body string) {
		var req MessageRequest
		if json.Unmarshal([]byte(body), &req) != nil {
			return
		}
		var ec fieldErrors
		ct := checkRequest(&req, requestLimits{maxRcpts: 5, maxBatchRcpts: 20, maxBatchBytes: 1 << 20}, &ec)
		if err := ec.err(); err != nil {
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != 400 || len(ae.Errors) == 0 || len(ae.Errors) > maxFieldErrors || ae.Message != ae.Errors[0].Message {
				t.Fatalf("refusal is not a listed validation error: %#v", err)
			}
			return
		}
		msgs := []*MessageRequest{&req}
		if req.Personalizations != nil {
			msgs = msgs[:0]
			for i := range req.Personalizations {
				msgs = append(msgs, personalize(&req, &req.Personalizations[i]))
			}
		}
		for i, m := range msgs {
			b, err := writeMessage(m, ct, "mx.example.net", time.Unix(1700000000, 0), 5)
			if err != nil {
				t.Fatalf("message %d of an accepted request does not build: %v", i, err)
			}
			if len(b.recipients) == 0 || len(b.recipients) > 5 || b.messageID == "" {
				t.Fatalf("message %d: recipients %v, Message-ID %q", i, b.recipients, b.messageID)
			}
			parseMessage(t, b.raw)
		}
	})
}

// TestBatchScheduleAndBatchID: the messages of a request with
// personalizations join a batch the caller can pause or cancel (one created
// for the request, or the one it names) and all take its send_at.
func TestBatchScheduleAndBatchID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	at := e.clock.Now().Add(2 * time.Hour).UTC().Truncate(time.Second)
	req := map[string]any{"from": "shop@example.com", "text": "hi", "send_at": at.Format(time.RFC3339),
		"personalizations": []map[string]any{{"to": []string{"ann@example.org"}}, {"to": []string{"bob@example.org"}}}}
	r := e.post("/v1/messages", tok, req)
	want(t, r, http.StatusAccepted)
	var br batchResponse
	r.json(t, &br)
	want(t, e.get("/v1/batches/"+br.BatchID, e.key(store.DefaultAccount, store.ScopeRead)), http.StatusOK)
	for addr, s := range e.sub.byRecipient() {
		if s.BatchID != br.BatchID || !s.SendAt.Equal(at) {
			t.Errorf("%s: batch %q send_at %v, want %q %v", addr, s.BatchID, s.SendAt, br.BatchID, at)
		}
	}

	// A batch the caller created and names.
	r = e.post("/v1/batches", tok, nil)
	want(t, r, http.StatusCreated)
	var bv batchView
	r.json(t, &bv)
	delete(req, "send_at")
	req["batch_id"] = bv.ID
	r = e.post("/v1/messages", tok, req)
	want(t, r, http.StatusAccepted)
	r.json(t, &br)
	if br.BatchID != bv.ID {
		t.Errorf("batch %q, want the named %q", br.BatchID, bv.ID)
	}
	// Another account's batch is unknown.
	other := e.key("acme", store.ScopeSend)
	req["from"] = "app@acme.example"
	r = e.post("/v1/messages", other, req)
	if _, field := r.apiErr(t); r.status != http.StatusBadRequest || field != "batch_id" {
		t.Errorf("another account's batch: %d %s", r.status, r.body)
	}
}

// TestPersonalizationSendAt: a personalization's send_at replaces the
// request's for its message; a bad one is named with its path.
func TestPersonalizationSendAt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	top := e.clock.Now().Add(time.Hour).UTC().Truncate(time.Second)
	own := top.Add(3 * time.Hour)
	req := map[string]any{"from": "shop@example.com", "text": "hi", "send_at": top.Format(time.RFC3339),
		"personalizations": []map[string]any{
			{"to": []string{"ann@example.org"}},
			{"to": []string{"bob@example.org"}, "send_at": own.Unix()},
		}}
	want(t, e.post("/v1/messages", tok, req), http.StatusAccepted)
	subs := e.sub.byRecipient()
	if got := subs["ann@example.org"].SendAt; !got.Equal(top) {
		t.Errorf("ann's send_at %v, want the request's %v", got, top)
	}
	if got := subs["bob@example.org"].SendAt; !got.Equal(own) {
		t.Errorf("bob's send_at %v, want his own %v", got, own)
	}
	req["personalizations"] = []map[string]any{
		{"to": []string{"ann@example.org"}, "send_at": "tomorrow"},
		{"to": []string{"bob@example.org"}, "send_at": e.clock.Now().Add(100 * time.Hour).Unix()},
	}
	r := e.post("/v1/messages", tok, req)
	want(t, r, http.StatusBadRequest)
	if got := fields(r.apiErrors(t)); !slices.Equal(got, []string{"personalizations[0].send_at", "personalizations[1].send_at"}) {
		t.Errorf("errors %v: %s", got, r.body)
	}
}
