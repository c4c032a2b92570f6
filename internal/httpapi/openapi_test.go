package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/webhook"
)

// TestSchemaChecker makes sure the checker the OpenAPI tests rely on finds
// what it must: each bad value below is refused by the document's own
// schema, each good one accepted.
func TestSchemaChecker(t *testing.T) {
	t.Parallel()
	doc, err := loadAPIDoc()
	if err != nil {
		t.Fatal(err)
	}
	schema := func(name string) any { return map[string]any{"$ref": "#/components/schemas/" + name} }
	cases := []struct {
		schema string
		value  string
		bad    string // expected in the problem; "" means valid
	}{
		{"Event", `{"id":1,"time":"2026-01-02T03:04:05Z","type":"bounced","enhanced_status":"5.1.1"}`, ""},
		{"Event", `{"id":1,"time":"2026-01-02T03:04:05Z","type":"bounced","enhanced":"5.1.1"}`, `property "enhanced" is not in the document`},
		{"Event", `{"id":1,"type":"bounced"}`, `required property "time" is missing`},
		{"Event", `{"id":1.5,"time":"2026-01-02T03:04:05Z","type":"bounced"}`, "is not of type integer"},
		{"Event", `{"id":1,"time":"yesterday","type":"bounced"}`, "not an RFC 3339 date-time"},
		{"Event", `{"id":1,"time":"2026-01-02T03:04:05Z","type":"exploded"}`, "is not one of"},
		{"Event", `{"id":1,"time":"2026-01-02T03:04:05Z","type":"bounced","tags":null}`, "is not of type array"},
		{"Event", `{"id":1,"time":"2026-01-02T03:04:05Z","type":"bounced","metadata":{"k":1}}`, "body.metadata.k: 1 is not of type string"},
		{"DNSReport", `{"domain":"d","hostname":"h","sending_ips":null,"findings":[]}`, "body.sending_ips: null is not of type array"},
		{"DNSReport", `{"Domain":"d","Hostname":"h","SendingIPs":[],"Findings":[]}`, `required property "domain" is missing`},
		{"DNSReport", `{"domain":"d","hostname":"h","sending_ips":["192.0.2.1"],"findings":[{"check":"mx","level":"OK","message":"m"}]}`, ""},
		{"Webhook", `{"id":"w","url":"relative/path","event_types":[]}`, "not an absolute URI"},
		{"APIKey", `{"id":"k","account":"a","scopes":[]}`, ""},
		{"APIKey", `{"id":"k","account":"a","scopes":["root"]}`, "is not one of"},
		{"WebhookEvent", `{"id":1}`, `required property "enhanced_status" is missing`},
		{"Limits", `{"per_minute":-1}`, "violates minimum"},
		{"Error", `{"error":{"code":"teapot","message":"m"}}`, "is not one of"},
	}
	for _, c := range cases {
		v, err := decodeJSONValue([]byte(c.value))
		if err != nil {
			t.Fatal(err)
		}
		problems := strings.Join(doc.validate(schema(c.schema), v, "body"), "; ")
		if c.bad == "" && problems != "" {
			t.Errorf("%s %s: unexpected problems %s", c.schema, c.value, problems)
		}
		if c.bad != "" && !strings.Contains(problems, c.bad) {
			t.Errorf("%s %s: problems %q, want one with %q", c.schema, c.value, problems, c.bad)
		}
	}
	// Unknown keywords and formats fail instead of passing silently.
	for _, s := range []string{`{"type":"string","format":"email"}`, `{"type":"string","uniqueItems":true}`} {
		sch, _ := decodeJSONValue([]byte(s))
		if p := doc.validate(sch, "x", "v"); len(p) == 0 {
			t.Errorf("schema %s accepted without the checker knowing it", s)
		}
	}
	// An undocumented status is a problem, an unknown path is not checked.
	if _, p, ok := doc.checkResponse("GET", "/v1/events", 418, http.Header{}, nil); !ok || len(p) != 1 || !strings.Contains(p[0], "status not documented") {
		t.Errorf("status 418 of GET /v1/events: %v %v", ok, p)
	}
	if _, _, ok := doc.checkResponse("GET", "/v1/nothing", 404, http.Header{}, nil); ok {
		t.Error("an unknown path matched an operation")
	}
	if tpl, _, ok := doc.checkResponse("DELETE", "/v1/suppressions/a@example.org", 204, http.Header{}, nil); !ok || tpl != "/v1/suppressions/{address}" {
		t.Errorf("template %q", tpl)
	}
}

// loopbackDoctor runs the real DNS doctor against a DNS server on
// loopback, as internal/app's dnsDoctor does against the configured
// resolver. The server's hostname is "mx." + the domain.
type loopbackDoctor struct {
	res  resolve.Resolver
	keys dnscheck.KeySource
}

func (d loopbackDoctor) CheckDomain(ctx context.Context, domain string) (any, error) {
	return dnscheck.Check(ctx, d.res, d.keys, dnscheck.Options{
		Domain: domain, Hostname: "mx." + domain,
		HTTPGet: func(context.Context, string) ([]byte, error) { return nil, errors.New("404 Not Found") },
	}), nil
}

// storeAlerts is internal/app's view of the alerts: the built-in rules
// and their state in the store.
type storeAlerts struct {
	st    store.Alerts
	clock clock.Clock
}

func (a storeAlerts) Alerts(ctx context.Context, history int) (any, error) {
	return alert.Overview(ctx, a.st, alert.DefaultRules(), a.clock.Now(), history)
}

// newDocEnv is an API whose DNS doctor asks a loopback DNS server: mail for
// acme.example is set up (its hostname resolves), beta.example has nothing
// (no sending address known, the report's sending_ips is empty).
func newDocEnv(t *testing.T, cfg Config) *env {
	dns := testdns.Start(t)
	dns.AddMX("acme.example", "mx.acme.example", 10)
	dns.AddA("mx.acme.example", "192.0.2.10")
	dns.AddTXT("acme.example", "v=spf1 mx -all")
	res, err := resolve.New(dns.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var e *env
	e = newEnvDeps(t, cfg, func(d *Deps) {
		d.DNS = loopbackDoctor{res: res, keys: d.Platform.(dnscheck.KeySource)}
		d.Alerts = storeAlerts{st: d.Platform.(store.Alerts), clock: d.Clock}
	})
	return e
}

// TestOpenAPIResponses calls every endpoint for its successes and its
// errors; env.do validates each response against the OpenAPI document
// (status documented, body of the documented schema, no undocumented
// property, arrays never null). At the end every route must have had a
// success and, unless public, an error validated.
func TestOpenAPIResponses(t *testing.T) {
	t.Parallel()
	e := newDocEnv(t, Config{MaxMessageBytes: 64 << 10, MaxRequestBytes: 8 << 10})
	ctx := context.Background()
	op := e.key(store.DefaultAccount, store.ScopeAdmin)
	adm := e.key("acme", store.ScopeAdmin)
	snd := e.key("acme", store.ScopeSend)
	rd := e.key("acme", store.ScopeRead)
	for _, d := range []string{"acme.example", "beta.example"} {
		if err := e.st.AddDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	msg := MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "hi"}
	status := func(r resp, code int) resp {
		t.Helper()
		want(t, r, code)
		return r
	}

	// meta
	status(e.get("/v1/openapi.json", ""), 200)

	// messages
	status(e.post("/v1/messages", snd, msg, "Idempotency-Key", "k1"), 202)
	status(e.post("/v1/messages", snd, msg, "Idempotency-Key", "k1"), 202) // replay
	status(e.do("POST", "/v1/messages?tag=raw", snd, "message/rfc822", strings.NewReader("From: a@acme.example\nTo: b@example.org\n\nhi\n")), 202)
	status(e.post("/v1/messages", snd, MessageRequest{To: []string{"b@example.org"}, Text: "hi"}), 400)
	status(e.post("/v1/messages", snd, `{"from":"a@acme.example","bogus":1}`), 400)
	status(e.do("POST", "/v1/messages", snd, "text/plain", strings.NewReader("hi")), 415)
	status(e.post("/v1/messages", snd, MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: strings.Repeat("x", 70<<10)}), 413)
	status(e.post("/v1/messages", "", msg), 401)
	status(e.post("/v1/messages", rd, msg), 403)
	status(e.post("/v1/messages", snd, MessageRequest{From: "a@acme.example", To: []string{"b@example.org"}, Text: "other"}, "Idempotency-Key", "k1"), 422)
	now := e.clock.Now()
	if _, err := e.st.PutIdempotency(ctx, "acme", "busy", "res:"+strconv.FormatInt(now.Unix(), 10), now); err != nil {
		t.Fatal(err)
	}
	status(e.post("/v1/messages", snd, msg, "Idempotency-Key", "busy"), 409)
	for _, c := range []struct {
		err  error
		code int
	}{
		{&ForbiddenError{Message: "not your domain"}, 403},
		{smtp.Errorf(550, smtp.EnhancedCode{5, 1, 1}, "All recipients are suppressed"), 422},
		{&RateLimitError{RetryAfter: time.Minute}, 429},
		{smtp.Errorf(451, smtp.EnhancedCode{4, 3, 0}, "Local error"), 503},
		{errors.New("disk on fire"), 500},
	} {
		e.sub.setErr(c.err)
		status(e.post("/v1/messages", snd, msg), c.code)
	}
	e.sub.setErr(nil)

	// A message in the queue and one that left it, with every event field.
	body, err := e.st.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(body, "Subject: x\r\n\r\nhi\r\n")
	live := &store.Message{ID: "live1", Sender: "s@acme.example", Received: now, Account: "acme", Tags: []string{"t"}, Metadata: map[string]string{"k": "v"},
		Recipients: []store.Recipient{{Address: "r1@example.org"}}}
	if _, err := e.st.Enqueue(ctx, live, body, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.Update(ctx, "live1", "", []store.Outcome{{RecipientID: live.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: now.Add(time.Hour), Reply: "451 4.7.1 later", RemoteMTA: "mx.example.org", Enhanced: "4.7.1", TLS: "TLSv1.3"}}); err != nil {
		t.Fatal(err)
	}
	r := status(e.post("/v1/webhooks", adm, map[string]any{"url": "https://hooks.example/mail"}), 201)
	var hook webhookView
	r.json(t, &hook)
	full := store.Event{Time: now, Type: store.EventBounced, Account: "acme", MessageID: "gone1", Recipient: "x@example.org",
		Sender: "bounces@acme.example", RemoteMTA: "mx.example.org", Reply: "550 5.1.1 unknown user", Enhanced: "5.1.1",
		TLS: "TLSv1.3", Bounce: "hard:mailbox-unknown", Attempt: 2, Tags: []string{"receipt"}, Metadata: map[string]string{"order": "42"}}
	if err := e.st.AddEvents(ctx, []store.Event{
		{Time: now, Type: store.EventAccepted, Account: "acme", MessageID: "gone1", Recipient: "x@example.org"},
		full,
		{Time: now, Type: store.EventComplained, Account: "acme", MessageID: "gone1", Recipient: "x@example.org"},
	}); err != nil {
		t.Fatal(err)
	}
	ds, err := e.st.LeaseWebhookDeliveries(ctx, now.Add(time.Hour), time.Minute, 100)
	if err != nil || len(ds) < 2 {
		t.Fatalf("deliveries %v, %v", ds, err)
	}
	if err := e.st.RecordWebhookAttempt(ctx, ds[0].ID, "delivered", time.Time{}, "", 200); err != nil {
		t.Fatal(err)
	}
	if err := e.st.RecordWebhookAttempt(ctx, ds[1].ID, "pending", now.Add(time.Minute), "HTTP 500", 500); err != nil {
		t.Fatal(err)
	}
	status(e.get("/v1/messages/live1", rd), 200)
	status(e.get("/v1/messages/live1/explain", rd), 200)
	status(e.get("/v1/messages/gone1/explain", rd), 200)
	status(e.get("/v1/messages/nope/explain", rd), 404)
	status(e.get("/v1/messages/live1/explain?verbose=1", rd), 400)
	status(e.get("/v1/messages/live1/explain", ""), 401)
	status(e.get("/v1/messages/live1/explain", snd), 403)
	r = status(e.get("/v1/messages/gone1", rd), 200)
	if !bytes.Contains(r.body, []byte(`"enhanced_status":"5.1.1"`)) {
		t.Errorf("the event view does not say enhanced_status: %s", r.body)
	}
	status(e.get("/v1/messages/nope", rd), 404)

	// events
	r = status(e.get("/v1/events?limit=2", rd), 200)
	var page eventPage
	r.json(t, &page)
	if page.NextCursor == "" {
		t.Fatalf("no next_cursor: %s", r.body)
	}
	status(e.get("/v1/events?cursor="+page.NextCursor+"&type=bounced&tag=receipt", rd), 200)
	status(e.get("/v1/events?type=exploded", rd), 400)
	status(e.get("/v1/events", snd), 403)

	// suppressions
	status(e.post("/v1/suppressions", adm, map[string]string{"address": "s1@example.org", "detail": "by hand"}), 201)
	status(e.post("/v1/suppressions", adm, map[string]string{"address": "s2@example.org", "reason": "complaint"}), 201)
	status(e.post("/v1/suppressions", adm, map[string]string{"address": "not an address"}), 400)
	status(e.do("POST", "/v1/suppressions", adm, "text/plain", strings.NewReader("x")), 415)
	status(e.post("/v1/suppressions", adm, map[string]string{"address": "s3@example.org", "detail": strings.Repeat("d", 9000)}), 413)
	status(e.post("/v1/suppressions", rd, map[string]string{"address": "s3@example.org"}), 403)
	status(e.get("/v1/suppressions?limit=1", rd), 200)
	status(e.get("/v1/suppressions?bogus=1", rd), 400)
	status(e.del("/v1/suppressions/s1@example.org", adm), 204)
	status(e.del("/v1/suppressions/s1@example.org", adm), 404)
	status(e.del("/v1/suppressions/nonsense", adm), 400)

	// unsubscribe groups (unsubscribe_test.go covers them in depth)
	status(e.post("/v1/unsubscribe-groups", adm, map[string]string{"id": "news", "name": "News", "description": "weekly"}), 201)
	status(e.post("/v1/unsubscribe-groups", adm, map[string]string{"id": "news", "name": "Again"}), 409)
	status(e.get("/v1/unsubscribe-groups", rd), 200)
	status(e.get("/v1/unsubscribe-groups", ""), 401)
	status(e.get("/v1/unsubscribe-groups/news", rd), 200)
	status(e.get("/v1/unsubscribe-groups/none", rd), 404)
	status(e.do("PATCH", "/v1/unsubscribe-groups/news", adm, "application/json", strings.NewReader(`{"name":"Newsletter"}`)), 200)
	status(e.do("PATCH", "/v1/unsubscribe-groups/news", adm, "application/json", strings.NewReader(`{"name":""}`)), 400)
	status(e.post("/v1/suppressions", adm, map[string]string{"address": "g1@example.org", "group": "news", "reason": "unsubscribe"}), 201)
	status(e.get("/v1/suppressions?group=news&kind=unsubscribe", rd), 200)
	status(e.get("/v1/suppressions?kind=weird", rd), 400)
	status(e.del("/v1/suppressions/g1@example.org?group=news", adm), 204)
	status(e.del("/v1/unsubscribe-groups/news", adm), 204)
	status(e.del("/v1/unsubscribe-groups/news", adm), 404)

	// webhooks
	status(e.get("/v1/webhooks", rd), 200)
	status(e.get("/v1/webhooks?all=1", rd), 400)
	status(e.post("/v1/webhooks", adm, map[string]any{"url": "ftp://x/"}), 400)
	status(e.get("/v1/webhooks/"+hook.ID+"/deliveries", rd), 200)
	status(e.get("/v1/webhooks/"+hook.ID+"/deliveries?limit=0", rd), 400)
	status(e.get("/v1/webhooks/wh_none/deliveries", rd), 404)
	status(e.del("/v1/webhooks/wh_none", adm), 404)
	status(e.get("/v1/webhooks/"+hook.ID, rd), 200)
	status(e.get("/v1/webhooks/wh_none", rd), 404)
	status(e.do("PATCH", "/v1/webhooks/"+hook.ID, adm, "application/json", strings.NewReader(`{"batch":{"max_events":100,"max_wait_seconds":5}}`)), 200)
	status(e.do("PATCH", "/v1/webhooks/"+hook.ID, adm, "application/json", strings.NewReader(`{"batch":{"max_events":1001}}`)), 400)
	status(e.post("/v1/webhooks/"+hook.ID+"/rotate-secret", adm, map[string]int{"expires_in": 3600}), 200)
	status(e.post("/v1/webhooks/"+hook.ID+"/rotate-secret", rd, map[string]int{}), 403)
	status(e.get("/v1/webhooks/"+hook.ID, rd), 200) // with the rotation's times
	status(e.del("/v1/webhooks/"+hook.ID+"/secrets/old", adm), 204)
	status(e.del("/v1/webhooks/wh_none/secrets/old", adm), 404)

	// domains
	status(e.post("/v1/domains", op, map[string]string{"domain": "acme.example", "account": "acme"}), 200)
	status(e.post("/v1/domains", op, map[string]string{"domain": "beta.example", "account": "acme"}), 200)
	status(e.post("/v1/domains", op, map[string]string{"domain": "unknown.example", "account": "acme"}), 422)
	status(e.post("/v1/domains", op, map[string]string{"domain": "acme.example"}), 400)
	status(e.post("/v1/domains", adm, map[string]string{"domain": "acme.example", "account": "acme"}), 403)
	status(e.get("/v1/domains", rd), 200)
	status(e.get("/v1/domains", snd), 403)
	r = status(e.get("/v1/domains/acme.example/dns", rd), 200)
	var rep struct {
		SendingIPs []string `json:"sending_ips"`
		Findings   []struct{ Check, Level string }
	}
	r.json(t, &rep)
	if !slices.Equal(rep.SendingIPs, []string{"192.0.2.10"}) || len(rep.Findings) == 0 {
		t.Errorf("DNS report %s", r.body)
	}
	r = status(e.get("/v1/domains/beta.example/dns", rd), 200)
	if !bytes.Contains(r.body, []byte(`"sending_ips":[]`)) {
		t.Errorf("DNS report without a sending address: %s", r.body)
	}
	status(e.get("/v1/domains/other.example/dns", rd), 404)
	status(e.get("/v1/domains/bad_domain!/dns", rd), 400)

	// accounts
	status(e.get("/v1/accounts", op), 200)
	status(e.get("/v1/accounts", adm), 403)
	status(e.post("/v1/accounts", op, map[string]any{"id": "shop", "name": "Shop", "limits": map[string]int{"per_day": 10}}), 201)
	status(e.post("/v1/accounts", op, map[string]any{"id": "shop"}), 409)
	status(e.post("/v1/accounts", op, map[string]any{"id": "Bad_ID"}), 400)
	status(e.do("PATCH", "/v1/accounts/shop", op, "application/json", strings.NewReader(`{"limits":{"per_hour":5}}`)), 200)
	status(e.do("PATCH", "/v1/accounts/none", op, "application/json", strings.NewReader(`{"limits":{"per_hour":5}}`)), 404)
	status(e.do("PATCH", "/v1/accounts/shop", op, "application/json", strings.NewReader(`{}`)), 400)
	status(e.del("/v1/accounts/acme", op), 409)
	status(e.del("/v1/accounts/shop?force=maybe", op), 400)
	status(e.del("/v1/accounts/shop", op), 204)
	status(e.del("/v1/accounts/shop", op), 404)

	// alerts: one firing for a destination, one resolved, one rule silenced
	for _, tr := range []struct {
		st   store.AlertState
		from int64
	}{
		{store.AlertState{Key: "deferral_rate/gmail.com", Rule: "deferral_rate", Firing: true, Since: now, Value: 0.4, Detail: "40 deferred of 100"}, 0},
		{store.AlertState{Key: "disk_free", Rule: "disk_free", Firing: true, Since: now, Value: 0.05, Detail: "5 % free"}, 0},
		{store.AlertState{Key: "disk_free", Rule: "disk_free", Firing: false, Since: now, Value: 0.5, Detail: "50 % free"}, 1},
	} {
		if _, ok, err := e.st.TransitionAlert(ctx, tr.st, tr.from); err != nil || !ok {
			t.Fatal(ok, err)
		}
	}
	if err := e.st.SilenceAlert(ctx, store.AlertSilence{Rule: "disk_free", Until: now.Add(time.Hour), Reason: "new disk", Created: now}); err != nil {
		t.Fatal(err)
	}
	r = status(e.get("/v1/alerts?history=2", op), 200)
	var av alert.View
	r.json(t, &av)
	if len(av.History) != 2 || av.History[0].State != "resolved" || len(av.Rules) != len(alert.DefaultRules()) {
		t.Errorf("alerts view: %s", r.body)
	}
	status(e.get("/v1/alerts", op), 200)
	status(e.get("/v1/alerts?history=5000", op), 400)
	status(e.get("/v1/alerts", adm), 403)

	// keys
	status(e.get("/v1/keys", adm), 200)
	status(e.get("/v1/keys?account=acme", op), 200)
	status(e.get("/v1/keys?account=ghost", op), 422)
	status(e.get("/v1/keys?account=default", adm), 403)
	r = status(e.post("/v1/keys", adm, map[string]any{"name": "ci", "scopes": []string{"read"}}), 201)
	var k keyView
	r.json(t, &k)
	status(e.post("/v1/keys", adm, map[string]any{"scopes": []string{"root"}}), 400)
	status(e.post("/v1/keys", op, map[string]any{"account": "ghost", "scopes": []string{"read"}}), 422)
	status(e.del("/v1/keys/"+k.ID, adm), 204)
	status(e.del("/v1/keys/"+k.ID, adm), 404)

	// batches and scheduled sends
	r = status(e.post("/v1/batches", snd, nil), 201)
	var bv batchView
	r.json(t, &bv)
	status(e.post("/v1/batches", rd, nil), 403)
	status(e.post("/v1/messages", snd, map[string]any{"from": "a@acme.example", "to": []string{"b@example.org"}, "text": "hi",
		"send_at": now.Add(time.Hour).Format(time.RFC3339), "batch_id": bv.ID}), 202)
	status(e.post("/v1/messages", snd, map[string]any{"from": "a@acme.example", "to": []string{"b@example.org"}, "text": "hi",
		"send_at": now.Add(73 * time.Hour).Unix()}), 400)
	status(e.post("/v1/messages", snd, map[string]any{"from": "a@acme.example", "to": []string{"b@example.org"}, "text": "hi", "batch_id": "nope"}), 400)
	status(e.do("POST", "/v1/messages?batch_id="+bv.ID+"&send_at="+strconv.FormatInt(now.Add(time.Hour).Unix(), 10), snd, "message/rfc822",
		strings.NewReader("From: a@acme.example\nTo: b@example.org\n\nhi\n")), 202)
	status(e.get("/v1/batches/"+bv.ID, rd), 200)
	status(e.get("/v1/batches/nope", rd), 404)
	status(e.post("/v1/batches/"+bv.ID+"/pause", snd, nil), 200)
	status(e.post("/v1/batches/nope/pause", snd, nil), 404)
	status(e.post("/v1/batches/"+bv.ID+"/resume", snd, nil), 200)
	status(e.post("/v1/batches/"+bv.ID+"/resume", rd, nil), 403)
	status(e.post("/v1/batches/"+bv.ID+"/cancel", snd, nil), 200)
	status(e.post("/v1/batches/nope/cancel", snd, nil), 404)
	status(e.post("/v1/batches/"+bv.ID+"/pause", snd, nil), 409)

	// webhooks, last: deleting one
	status(e.del("/v1/webhooks/"+hook.ID, adm), 204)

	exerciseTemplates(t, e, adm, rd, snd) // templates.go's routes (templates_test.go)

	// Every route had a success and, unless public, an error validated.
	for _, rt := range routes {
		sts := e.statuses(rt.method, rt.path)
		ok2, ok4 := false, rt.access == public
		for _, s := range sts {
			ok2 = ok2 || s/100 == 2
			ok4 = ok4 || s/100 == 4
		}
		if !ok2 || !ok4 {
			t.Errorf("%s %s: validated statuses %v; want a 2xx and a 4xx", rt.method, rt.path, sts)
		}
	}
}

// TestOpenAPIScopes checks each operation's x-required-scope and
// x-operator against the router: the route table's requirement, and what
// keys of each scope really get. The query parameters are compared too:
// the document's and the route table's are the same, and any other is
// refused.
func TestOpenAPIScopes(t *testing.T) {
	t.Parallel()
	e := newDocEnv(t, Config{})
	doc, err := loadAPIDoc()
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string]string{
		"send":     e.key("acme", store.ScopeSend),
		"read":     e.key("acme", store.ScopeRead),
		"admin":    e.key("acme", store.ScopeAdmin),
		"operator": e.key(store.DefaultAccount, store.ScopeAdmin),
	}
	// Which kinds of key each documented requirement admits.
	admits := map[string][]string{
		"send":     {"send", "admin", "operator"},
		"read":     {"read", "admin", "operator"},
		"admin":    {"admin", "operator"},
		"operator": {"operator"},
	}
	scopeOf := map[access]string{needSend: "send", needRead: "read", needAdmin: "admin", operator: "operator"}
	scopeMessages := []string{
		"this API key lacks the scope this endpoint needs",
		"this endpoint needs an operator key (admin scope of the default account)",
	}
	for _, rt := range routes {
		name := rt.method + " " + rt.path
		o, tpl, ok := doc.operation(rt.method, rt.path)
		if !ok || tpl != rt.path {
			t.Errorf("%s: not in the document", name)
			continue
		}
		documented, hasScope := o["x-required-scope"].(string)
		if opFlag, _ := o["x-operator"].(bool); opFlag {
			documented = "operator"
		}
		sec, hasSec := o["security"].([]any)
		if rt.access == public {
			if hasScope || !hasSec || len(sec) != 0 {
				t.Errorf("%s is public, but the document says scope %q, security %v", name, documented, o["security"])
			}
			continue
		}
		if documented != scopeOf[rt.access] {
			t.Errorf("%s: the document says %q, the router requires %q", name, documented, scopeOf[rt.access])
		}
		if sum, _ := o["summary"].(string); !strings.Contains(sum, "(scope "+documented) && !strings.Contains(sum, "(operator") {
			t.Errorf("%s: the summary does not name the scope: %q", name, sum)
		}
		var params []string
		ps, _ := o["parameters"].([]any)
		for _, p := range ps {
			if pm, _ := p.(map[string]any); pm["in"] == "query" {
				params = append(params, pm["name"].(string))
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(params)), slices.Sorted(slices.Values(rt.params))) {
			t.Errorf("%s: query parameters documented %v, taken %v", name, params, rt.params)
		}
		// The router's real behaviour, with a request that passes no
		// other check: path parameters filled in, no body.
		path := strings.NewReplacer("{id}", "x", "{address}", "a@example.org", "{domain}", "acme.example", "{version}", "1").Replace(rt.path)
		r := e.do(rt.method, path+"?bogus=1", keys["operator"], "", nil)
		if code, field := r.apiErr(t); r.status != http.StatusBadRequest || code != "validation_failed" || field != "bogus" {
			t.Errorf("%s with an unknown query parameter: %d %s", name, r.status, r.body)
		}
		if r := e.do(rt.method, path, "", "", nil); r.status != http.StatusUnauthorized {
			t.Errorf("%s without a key: %d", name, r.status)
		}
		for kind, tok := range keys {
			r := e.do(rt.method, path, tok, "", nil)
			var b errorBody
			json.Unmarshal(r.body, &b)
			refused := r.status == http.StatusForbidden && slices.Contains(scopeMessages, b.Error.Message)
			if allowed := slices.Contains(admits[documented], kind); refused == allowed {
				t.Errorf("%s with a %s key: %d %s; documented scope %q", name, kind, r.status, r.body, documented)
			}
		}
	}
}

// TestOpenAPIWebhookPayload runs the real webhook dispatcher over the
// API's store and validates what a receiver gets against the document's
// webhooks section: the body against WebhookEvent, the headers, the
// signature with the secret the API returned. The event view of the same
// event uses the same name for the enhanced status code.
func TestOpenAPIWebhookPayload(t *testing.T) {
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
	r := e.post("/v1/webhooks", adm, map[string]any{"url": srv.URL + "/hook"})
	want(t, r, http.StatusCreated)
	var hook webhookView
	r.json(t, &hook)

	now := time.Now().UTC().Truncate(time.Second)
	evs := []store.Event{
		{Time: now, Type: store.EventBounced, Account: "acme", MessageID: "m1", Recipient: "x@example.org",
			Sender: "bounces@acme.example", RemoteMTA: "mx.example.org", Reply: "550 5.1.1 unknown user", Enhanced: "5.1.1",
			TLS: "TLSv1.3", Bounce: "hard:mailbox-unknown", Attempt: 2, Tags: []string{"receipt"}, Metadata: map[string]string{"order": "42"}},
		{Time: now, Type: store.EventRejected, Account: "acme"}, // every optional field empty
	}
	if err := e.st.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	d := webhook.New(e.st, webhook.Options{PollInterval: time.Hour, Logger: slog.New(slog.DiscardHandler)})
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { d.Run(runCtx); close(done) }()
	defer func() { cancel(); <-done }()

	wh, _ := doc.root["webhooks"].(map[string]any)
	post, _ := wh["event"].(map[string]any)["post"].(map[string]any)
	bodySchema := post["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["schema"]
	var payloads []map[string]any
	for range evs {
		var rc received
		select {
		case rc = <-got:
		case <-time.After(10 * time.Second):
			t.Fatal("no webhook request")
		}
		v, err := decodeJSONValue(rc.body)
		if err != nil {
			t.Fatalf("payload %q: %v", rc.body, err)
		}
		for _, p := range doc.validate(bodySchema, v, "payload") {
			t.Errorf("webhook payload differs from the document: %s", p)
		}
		for _, p := range post["parameters"].([]any) {
			pm := p.(map[string]any)
			if pm["in"] == "header" && pm["required"] == true && rc.header.Get(pm["name"].(string)) == "" {
				t.Errorf("documented header %s missing", pm["name"])
			}
		}
		if err := webhook.Verify(hook.Secret, rc.header.Get(webhook.HeaderSignature), rc.body, time.Now(), time.Minute); err != nil {
			t.Errorf("signature: %v", err)
		}
		if rc.header.Get("Content-Type") != "application/json" {
			t.Errorf("Content-Type %q", rc.header.Get("Content-Type"))
		}
		payloads = append(payloads, v.(map[string]any))
	}
	// The same event through the API names the enhanced code alike.
	var page struct {
		Events []map[string]any `json:"events"`
	}
	e.get("/v1/events?type=bounced", adm).json(t, &page)
	if len(page.Events) != 1 || page.Events[0]["enhanced_status"] != "5.1.1" {
		t.Fatalf("event view %+v", page.Events)
	}
	for _, p := range payloads {
		if p["type"] == "bounced" && p["enhanced_status"] != "5.1.1" {
			t.Errorf("payload %+v", p)
		}
		for k := range page.Events[0] {
			if _, ok := p[k]; !ok && p["type"] == "bounced" {
				t.Errorf("the event view has %q, the webhook payload does not", k)
			}
		}
	}
}
