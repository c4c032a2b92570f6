package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/webhook"
)

// hookJSON is a webhook response with the issue 12 properties.
type hookJSON struct {
	ID     string `json:"id"`
	URL    string `json:"url"`
	Secret string `json:"secret"`
	Batch  struct {
		MaxEvents      int `json:"max_events"`
		MaxWaitSeconds int `json:"max_wait_seconds"`
	} `json:"batch"`
	SecretRotatedAt       *time.Time `json:"secret_rotated_at"`
	PreviousSecretExpires *time.Time `json:"previous_secret_expires"`
}

func patchJSON(e *env, path, token, body string) resp {
	return e.do("PATCH", path, token, "application/json", strings.NewReader(body))
}

// TestWebhookBatchSettings: batch settings are validated, stored, shown and
// changed by PATCH; the other properties are kept.
func TestWebhookBatchSettings(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	adm := e.key("acme", store.ScopeAdmin)
	for _, c := range []struct{ body, field string }{
		{`{"url":"https://hooks.example/a","batch":{"max_events":0}}`, "batch.max_events"},
		{`{"url":"https://hooks.example/a","batch":{"max_events":1001}}`, "batch.max_events"},
		{`{"url":"https://hooks.example/a","batch":{"max_wait_seconds":61}}`, "batch.max_wait_seconds"},
		{`{"url":"https://hooks.example/a","batch":{"max_wait_seconds":-1}}`, "batch.max_wait_seconds"},
		{`{"url":"https://hooks.example/a","batch":{"size":5}}`, "size"},
	} {
		r := e.do("POST", "/v1/webhooks", adm, "application/json", strings.NewReader(c.body))
		want(t, r, 400)
		if _, f := r.apiErr(t); f != c.field {
			t.Errorf("%s: field %q, want %q", c.body, f, c.field)
		}
	}
	r := e.post("/v1/webhooks", adm, map[string]any{"url": "https://hooks.example/a"})
	want(t, r, 201)
	var h hookJSON
	r.json(t, &h)
	if h.Batch.MaxEvents != 1 || h.Batch.MaxWaitSeconds != 0 {
		t.Errorf("default batch %+v, want 1 event, no wait", h.Batch)
	}
	r = e.post("/v1/webhooks", adm, map[string]any{"url": "https://hooks.example/b", "event_types": []string{"bounced"},
		"batch": map[string]int{"max_events": 500, "max_wait_seconds": 10}})
	want(t, r, 201)
	r.json(t, &h)
	if h.Batch.MaxEvents != 500 || h.Batch.MaxWaitSeconds != 10 || h.Secret == "" {
		t.Errorf("created %s", r.body)
	}
	if wh, err := e.st.GetWebhook(context.Background(), h.ID); err != nil || wh.BatchMax != 500 || wh.BatchWait != 10*time.Second {
		t.Errorf("stored %+v, %v", wh, err)
	}

	r = patchJSON(e, "/v1/webhooks/"+h.ID, adm, `{"batch":{"max_wait_seconds":0}}`)
	want(t, r, 200)
	var p hookJSON
	r.json(t, &p)
	if p.Batch.MaxEvents != 500 || p.Batch.MaxWaitSeconds != 0 || p.URL != "https://hooks.example/b" || p.Secret != "" {
		t.Errorf("after PATCH batch: %s", r.body)
	}
	r = patchJSON(e, "/v1/webhooks/"+h.ID, adm, `{"url":"https://other.example/x","event_types":[]}`)
	want(t, r, 200)
	if !bytes.Contains(r.body, []byte(`"url":"https://other.example/x"`)) || !bytes.Contains(r.body, []byte(`"event_types":[]`)) ||
		!bytes.Contains(r.body, []byte(`"max_events":500`)) {
		t.Errorf("after PATCH url: %s", r.body)
	}
	for _, c := range []struct{ body, field string }{
		{`{}`, ""},
		{`{"batch":{}}`, ""},
		{`{"url":"https://127.0.0.1/x"}`, "url"},
		{`{"url":"https://localhost/x"}`, "url"},
		{`{"event_types":["exploded"]}`, "event_types[0]"},
		{`{"batch":{"max_events":1001}}`, "batch.max_events"},
		{`{"secret":"mine"}`, "secret"},
	} {
		r := patchJSON(e, "/v1/webhooks/"+h.ID, adm, c.body)
		want(t, r, 400)
		if _, f := r.apiErr(t); f != c.field {
			t.Errorf("PATCH %s: field %q, want %q", c.body, f, c.field)
		}
	}
	if wh, _ := e.st.GetWebhook(context.Background(), h.ID); wh.URL != "https://other.example/x" || wh.BatchMax != 500 {
		t.Errorf("refused PATCHes changed the webhook: %+v", wh)
	}
}

// TestWebhookSecretRotation: rotate-secret returns a new secret once and
// keeps the old one for the transition; GET shows only the times; ending
// the transition forgets the old secret.
func TestWebhookSecretRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	adm := e.key("acme", store.ScopeAdmin)
	rd := e.key("acme", store.ScopeRead)
	r := e.post("/v1/webhooks", adm, map[string]any{"url": "https://hooks.example/a"})
	want(t, r, 201)
	var h hookJSON
	r.json(t, &h)
	old := h.Secret
	path := "/v1/webhooks/" + h.ID

	for _, body := range []string{`{"expires_in":-1}`, `{"expires_in":604801}`, `{"expires_in":"1h"}`} {
		want(t, e.do("POST", path+"/rotate-secret", adm, "application/json", strings.NewReader(body)), 400)
	}
	want(t, e.post(path+"/rotate-secret", rd, map[string]any{}), 403)

	now := e.clock.Now()
	r = e.post(path+"/rotate-secret", adm, map[string]int{"expires_in": 3600})
	want(t, r, 200)
	var rot hookJSON
	r.json(t, &rot)
	if rot.Secret == "" || rot.Secret == old || !strings.HasPrefix(rot.Secret, "whsec_") {
		t.Fatalf("rotation returned secret %q (old %q)", rot.Secret, old)
	}
	if rot.PreviousSecretExpires == nil || !rot.PreviousSecretExpires.Equal(now.Add(time.Hour).Truncate(time.Second)) &&
		!rot.PreviousSecretExpires.Equal(now.Add(time.Hour)) {
		t.Errorf("previous_secret_expires %v, want %v", rot.PreviousSecretExpires, now.Add(time.Hour))
	}
	if rot.SecretRotatedAt == nil || rot.SecretRotatedAt.Sub(now).Abs() > time.Second {
		t.Errorf("secret_rotated_at %v, want %v", rot.SecretRotatedAt, now)
	}
	wh, err := e.st.GetWebhook(ctx, h.ID)
	if err != nil || wh.Secret != rot.Secret || wh.PreviousSecret != old {
		t.Fatalf("stored %+v, %v", wh, err)
	}
	// The signing secrets during the transition: both; after: the new one.
	if got := webhook.ActiveSecrets(wh, now.Add(59*time.Minute)); len(got) != 2 || got[0] != rot.Secret || got[1] != old {
		t.Errorf("active secrets during the transition: %d", len(got))
	}
	if got := webhook.ActiveSecrets(wh, now.Add(time.Hour)); len(got) != 1 || got[0] != rot.Secret {
		t.Errorf("active secrets after the transition: %d", len(got))
	}

	// GET and the list never show a secret.
	for _, p := range []string{path, "/v1/webhooks"} {
		r = e.get(p, rd)
		want(t, r, 200)
		if bytes.Contains(r.body, []byte(rot.Secret)) || bytes.Contains(r.body, []byte(old)) || bytes.Contains(r.body, []byte(`"secret"`)) {
			t.Errorf("GET %s shows a secret: %s", p, r.body)
		}
		if !bytes.Contains(r.body, []byte(`"previous_secret_expires"`)) || !bytes.Contains(r.body, []byte(`"secret_rotated_at"`)) {
			t.Errorf("GET %s does not show the rotation: %s", p, r.body)
		}
	}

	// Without a body: a day of overlap; the oldest secret is dropped.
	r = e.do("POST", path+"/rotate-secret", adm, "", nil)
	want(t, r, 200)
	var rot2 hookJSON
	r.json(t, &rot2)
	if rot2.PreviousSecretExpires == nil || rot2.PreviousSecretExpires.Sub(e.clock.Now().Add(24*time.Hour)).Abs() > time.Second {
		t.Errorf("default overlap: previous_secret_expires %v", rot2.PreviousSecretExpires)
	}
	if wh, _ := e.st.GetWebhook(ctx, h.ID); wh.Secret != rot2.Secret || wh.PreviousSecret != rot.Secret {
		t.Errorf("after the second rotation: secret %v previous %v", wh.Secret == rot2.Secret, wh.PreviousSecret == rot.Secret)
	}

	want(t, e.del(path+"/secrets/old", adm), 204)
	r = e.get(path, rd)
	want(t, r, 200)
	if bytes.Contains(r.body, []byte(`"previous_secret_expires"`)) {
		t.Errorf("after ending the transition: %s", r.body)
	}
	if wh, _ := e.st.GetWebhook(ctx, h.ID); wh.PreviousSecret != "" || wh.Secret != rot2.Secret {
		t.Errorf("after ending the transition the store has previous %q", wh.PreviousSecret)
	}
	want(t, e.del(path+"/secrets/old", adm), 204) // nothing left to end: still fine
}

// TestWebhookAccountScoping: another account's webhook is 404 on every
// webhook endpoint and stays unchanged.
func TestWebhookAccountScoping(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	adm := e.key("acme", store.ScopeAdmin)
	evil := e.key("evil", store.ScopeAdmin)
	r := e.post("/v1/webhooks", adm, map[string]any{"url": "https://hooks.example/a"})
	want(t, r, 201)
	var h hookJSON
	r.json(t, &h)
	path := "/v1/webhooks/" + h.ID
	before, _ := e.st.GetWebhook(ctx, h.ID)
	for _, r := range []resp{
		e.get(path, evil),
		patchJSON(e, path, evil, `{"url":"https://evil.example/steal"}`),
		patchJSON(e, path, evil, `{"batch":{"max_events":1000}}`),
		e.post(path+"/rotate-secret", evil, map[string]int{"expires_in": 3600}),
		e.del(path+"/secrets/old", evil),
		e.get(path+"/deliveries", evil),
		e.del(path, evil),
	} {
		want(t, r, 404)
		if bytes.Contains(r.body, []byte("hooks.example")) || bytes.Contains(r.body, []byte("whsec_")) {
			t.Errorf("the 404 leaks the webhook: %s", r.body)
		}
	}
	after, err := e.st.GetWebhook(ctx, h.ID)
	if err != nil || after.URL != before.URL || after.Secret != before.Secret || after.BatchMax != before.BatchMax ||
		after.PreviousSecret != "" {
		t.Errorf("another account changed the webhook: %+v -> %+v (%v)", before, after, err)
	}
	r = e.get("/v1/webhooks", evil)
	want(t, r, 200)
	if bytes.Contains(r.body, []byte(h.ID)) {
		t.Errorf("another account lists the webhook: %s", r.body)
	}
}

// TestWebhookBatchPayloadDocumented: a batched webhook created through the
// API receives its events from the real dispatcher in one request whose
// body and headers match the document's eventBatch, signed with the
// secret; after a rotation, with both secrets.
func TestWebhookBatchPayloadDocumented(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{WebhookAllowPrivate: true}) // the receiver listens on loopback
	ctx := context.Background()
	adm := e.key("acme", store.ScopeAdmin)
	doc, err := loadAPIDoc()
	if err != nil {
		t.Fatal(err)
	}
	type received struct {
		header http.Header
		body   []byte
	}
	got := make(chan received, 10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- received{r.Header.Clone(), b}
	}))
	defer srv.Close()
	r := e.post("/v1/webhooks", adm, map[string]any{"url": srv.URL + "/hook", "batch": map[string]int{"max_events": 10}})
	want(t, r, http.StatusCreated)
	var hook hookJSON
	r.json(t, &hook)

	now := e.clock.Now()
	evs := []store.Event{
		{Time: now, Type: store.EventBounced, Account: "acme", MessageID: "m1", Recipient: "x@example.org",
			Reply: "550 5.1.1 unknown user", Enhanced: "5.1.1", Tags: []string{"receipt"}, Metadata: map[string]string{"order": "42"}},
		{Time: now, Type: store.EventRejected, Account: "acme"},
		{Time: now, Type: store.EventDelivered, Account: "acme", MessageID: "m2", Recipient: "y@example.org"},
	}
	if err := e.st.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	d := webhook.New(e.st, webhook.Options{Clock: e.clock, PollInterval: time.Hour, Workers: 1, Logger: slog.New(slog.DiscardHandler)})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()
	d.Wake()

	wh, _ := doc.root["webhooks"].(map[string]any)
	post, _ := wh["eventBatch"].(map[string]any)["post"].(map[string]any)
	bodySchema := post["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
	receive := func() received {
		t.Helper()
		select {
		case rc := <-got:
			v, err := decodeJSONValue(rc.body)
			if err != nil {
				t.Fatalf("payload %q: %v", rc.body, err)
			}
			for _, p := range doc.validate(bodySchema, v, "payload") {
				t.Errorf("batch payload differs from the document: %s", p)
			}
			for _, p := range post["parameters"].([]any) {
				pm := p.(map[string]any)
				if pm["in"] == "header" && pm["required"] == true && rc.header.Get(pm["name"].(string)) == "" {
					t.Errorf("documented header %s missing", pm["name"])
				}
			}
			return rc
		case <-time.After(10 * time.Second):
			t.Fatal("no webhook request")
		}
		return received{}
	}
	rc := receive()
	var bp webhook.BatchPayload
	if err := json.Unmarshal(rc.body, &bp); err != nil || len(bp.Events) != 3 || rc.header.Get(webhook.HeaderEventCount) != "3" {
		t.Fatalf("batch: %d events, count header %q, %v", len(bp.Events), rc.header.Get(webhook.HeaderEventCount), err)
	}
	if bp.Events[0].Type != "bounced" || bp.Events[0].EnhancedStatus != "5.1.1" || bp.Events[2].Recipient != "y@example.org" {
		t.Errorf("events %+v", bp.Events)
	}
	if err := webhook.Verify(hook.Secret, rc.header.Get(webhook.HeaderSignature), rc.body, e.clock.Now(), time.Minute); err != nil {
		t.Errorf("signature: %v", err)
	}

	r = e.post("/v1/webhooks/"+hook.ID+"/rotate-secret", adm, map[string]int{"expires_in": 3600})
	want(t, r, 200)
	var rot hookJSON
	r.json(t, &rot)
	if err := e.st.AddEvents(ctx, evs[:1]); err != nil {
		t.Fatal(err)
	}
	d.Wake()
	rc = receive()
	for _, s := range []string{hook.Secret, rot.Secret} {
		if err := webhook.Verify(s, rc.header.Get(webhook.HeaderSignature), rc.body, e.clock.Now(), time.Minute); err != nil {
			t.Errorf("signature during the rotation: %v", err)
		}
	}
	if n := strings.Count(rc.header.Get(webhook.HeaderSignature), "v1="); n != 2 {
		t.Errorf("%d signatures during the rotation, want 2", n)
	}
}
