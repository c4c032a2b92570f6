package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
)

// sandboxFake is a Submitter that also serves sandbox sends.
type sandboxFake struct {
	*fakeSubmitter
	mu      sync.Mutex
	got     []*Submission
	message []byte
	err     error
}

func (f *sandboxFake) Sandbox(_ context.Context, s *Submission) (SandboxResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return SandboxResult{}, f.err
	}
	f.got = append(f.got, s)
	return SandboxResult{ID: "sbx1", Recipients: s.Recipients[:1], Suppressed: s.Recipients[1:], Message: f.message}, nil
}

func withSandbox(f **sandboxFake) func(*Deps) {
	return func(d *Deps) {
		*f = &sandboxFake{fakeSubmitter: d.Submitter.(*fakeSubmitter),
			message: []byte("DKIM-Signature: v=1\r\nFrom: app@acme.test\r\nMessage-ID: <m1@mx.example.net>\r\n\r\nhi\r\n")}
		d.Submitter = *f
	}
}

// "sandbox": true answers 200 with what a real send would have been and
// never calls Submit; idempotency keys are left to real sends.
func TestSandboxSend(t *testing.T) {
	t.Parallel()
	var sb *sandboxFake
	e := newEnvDeps(t, Config{}, withSandbox(&sb))
	tok := e.key("acme", "send")
	req := map[string]any{"from": "App <app@acme.test>", "to": []string{"ok@remote.test", "gone@remote.test"}, "subject": "s",
		"text": "hi", "tags": []string{"t"}, "metadata": map[string]string{"k": "v"}, "sandbox": true}
	r := e.post("/v1/messages", tok, req, "Idempotency-Key", "k1")
	want(t, r, 200)
	var out sandboxResponse
	r.json(t, &out)
	if out.ID != "sbx1" || !out.Sandbox || out.MessageID != "<m1@mx.example.net>" || strings.Join(out.Recipients, ",") != "ok@remote.test" ||
		strings.Join(out.Suppressed, ",") != "gone@remote.test" || out.Size != len(sb.message) {
		t.Errorf("response %+v", out)
	}
	if raw, err := base64.StdEncoding.DecodeString(out.Raw); err != nil || !bytes.Equal(raw, sb.message) {
		t.Errorf("raw %q (%v), want the rendered message", raw, err)
	}
	if e.sub.count() != 0 {
		t.Fatal("a sandbox send was submitted")
	}
	s := sb.got[0]
	if s.Account != "acme" || s.From != "app@acme.test" || len(s.Tags) != 1 || s.Metadata["k"] != "v" || !bytes.Contains(s.Raw, []byte("Subject: s")) {
		t.Errorf("sandboxed submission %+v", s)
	}
	// The same key then sends for real: the sandbox did not take it.
	delete(req, "sandbox")
	r = e.post("/v1/messages", tok, req, "Idempotency-Key", "k1")
	want(t, r, 202)
	if r.header.Get("Idempotent-Replayed") != "" || e.sub.count() != 1 {
		t.Errorf("the real send after a sandbox one was replayed (or not sent)")
	}

	// A large rendered message is described by its size only.
	sb.mu.Lock()
	sb.message = bytes.Repeat([]byte("x"), maxSandboxRaw+1)
	sb.mu.Unlock()
	req["sandbox"] = true
	r = e.post("/v1/messages", tok, req)
	want(t, r, 200)
	out = sandboxResponse{}
	r.json(t, &out)
	if out.Raw != "" || out.Size != maxSandboxRaw+1 || out.MessageID != "" {
		t.Errorf("large message: raw %d bytes, size %d", len(out.Raw), out.Size)
	}

	// Refusals are a real send's.
	sb.mu.Lock()
	sb.err = &ForbiddenError{Message: "the account may not send as acme.test"}
	sb.mu.Unlock()
	want(t, e.post("/v1/messages", tok, req), 403)
	sb.mu.Lock()
	sb.err = &RateLimitError{RetryAfter: 30e9}
	sb.mu.Unlock()
	r = e.post("/v1/messages", tok, req)
	want(t, r, 429)
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}
	// Validation comes first.
	req["from"] = "not an address"
	want(t, e.post("/v1/messages", tok, req), 400)
}

// Without a Submitter that serves them, sandbox sends are refused rather
// than sent.
func TestSandboxUnavailable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := e.key("acme", "send")
	r := e.post("/v1/messages", tok, map[string]any{"from": "app@acme.test", "to": []string{"a@remote.test"}, "text": "x", "sandbox": true})
	want(t, r, 400)
	if code, field := r.apiErr(t); code != "validation_failed" || field != "sandbox" {
		t.Errorf("error %s on %s", code, field)
	}
	if e.sub.count() != 0 {
		t.Fatal("a sandbox send was submitted")
	}
}

// "sandboxed" is an event type for the events API and webhooks.
func TestSandboxedEventType(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{WebhookAllowPrivate: true})
	tok := e.key("acme", "read", "admin")
	want(t, e.get("/v1/events?type=sandboxed", tok), 200)
	want(t, e.post("/v1/webhooks", tok, map[string]any{"url": "https://hooks.example/x", "event_types": []string{"sandboxed"}}), 201)
}

// TestSandboxBatch: a sandbox request with personalizations checks and
// renders every message as a real batch would send it, queues nothing,
// creates no batch, and answers 200 with one entry per message.
func TestSandboxBatch(t *testing.T) {
	t.Parallel()
	var sb *sandboxFake
	e := newEnvDeps(t, Config{}, withSandbox(&sb))
	tok := e.key("acme", "send")
	req := map[string]any{"from": "app@acme.test", "subject": "s", "text": "hi", "sandbox": true,
		"personalizations": []map[string]any{
			{"to": []string{"ann@remote.test"}, "metadata": map[string]string{"n": "1"}},
			{"to": []string{"bob@remote.test", "gone@remote.test"}, "subject": "for bob"},
		}}
	r := e.post("/v1/messages", tok, req)
	want(t, r, 200)
	var out sandboxBatchResponse
	r.json(t, &out)
	if !out.Sandbox || out.BatchID != "" || len(out.Messages) != 2 {
		t.Fatalf("response %s", r.body)
	}
	for i, m := range out.Messages {
		if m.Status != batchSandboxed || m.ID == "" || m.Size != len(sb.message) {
			t.Errorf("message %d: %+v", i, m)
		}
	}
	if strings.Join(out.Messages[1].Suppressed, ",") != "gone@remote.test" {
		t.Errorf("bob's message: suppressed %v", out.Messages[1].Suppressed)
	}
	if e.sub.count() != 0 || len(sb.got) != 2 {
		t.Fatalf("%d submitted, %d sandboxed; want 0 and 2", e.sub.count(), len(sb.got))
	}
	subjects := map[string]bool{}
	for _, s := range sb.got {
		subjects[string(parseSubject(t, s.Raw))] = true
	}
	if !subjects["s"] || !subjects["for bob"] {
		t.Errorf("subjects of the sandboxed messages %v", subjects)
	}

	// Every message refused: the answer is the error.
	sb.mu.Lock()
	sb.err = &ForbiddenError{Message: "not your domain"}
	sb.mu.Unlock()
	r = e.post("/v1/messages", tok, req)
	if code, _ := r.apiErr(t); r.status != 403 || code != "forbidden" {
		t.Errorf("all refused: %d %s", r.status, r.body)
	}
}

func parseSubject(t *testing.T, raw []byte) []byte {
	t.Helper()
	m := parseMessage(t, raw)
	s, _ := m.header.Subject()
	return []byte(s)
}
