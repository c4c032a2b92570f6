package httpapi

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/store"
)

// GET /v1/messages/{id}/explain through the real server: a deferred
// message to a backed-off destination, explained to its account and to an
// operator, not found for another account.
func TestExplainMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	rd := e.key("acme", store.ScopeRead)
	other := e.key("beta", store.ScopeRead)
	op := e.key(store.DefaultAccount, store.ScopeAdmin)
	now := e.clock.Now()
	body, err := e.st.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(body, "Subject: x\r\n\r\nhi\r\n")
	m := &store.Message{ID: "expl1", Sender: "s@acme.example", Received: now, Account: "acme",
		Recipients: []store.Recipient{{Address: "ann@gmail.com"}}}
	if _, err := e.st.Enqueue(ctx, m, body, time.Time{}); err != nil {
		t.Fatal(err)
	}
	next := now.Add(15 * time.Minute)
	if err := e.st.Update(ctx, m.ID, "", []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: next, Reply: "421 4.7.0 Try again later", RemoteMTA: "gmail-smtp-in.l.google.com", Enhanced: "4.7.0"}}); err != nil {
		t.Fatal(err)
	}
	if ok, err := e.st.SetDestinationState(ctx, "gmail.com", 0, store.DestinationState{Factor: 0.5, Strikes: 1, LastChange: now.Add(-time.Minute)}); err != nil || !ok {
		t.Fatalf("SetDestinationState: %v %v", ok, err)
	}
	e.clock.Advance(6 * time.Minute)

	var x explain.Explanation
	r := e.get("/v1/messages/expl1/explain", rd)
	want(t, r, 200)
	r.json(t, &x)
	if x.State != explain.StateDeferred || len(x.Recipients) != 1 || x.ExpiresAt == nil || !x.ExpiresAt.Equal(now.Add(120*time.Hour)) {
		t.Fatalf("explanation %s", r.body)
	}
	rc := x.Recipients[0]
	if rc.NextAttempt == nil || !rc.NextAttempt.Equal(next) || rc.Enhanced != "4.7.0" || rc.Throttle == nil || rc.Throttle.Factor != 0.5 {
		t.Errorf("recipient %s", r.body)
	}
	all := strings.Join(x.Summary, "\n")
	for _, s := range []string{`waiting for gmail.com: the last attempt at`, `got "421 4.7.0 Try again later" from gmail-smtp-in.l.google.com`,
		"(in 9 min)", "gmail.com is backed off to 50 %", "The message expires on"} {
		if !strings.Contains(all, s) {
			t.Errorf("the summary does not say %q:\n%s", s, all)
		}
	}
	// Another account: 404, as for an unknown message; an operator sees it.
	r = e.get("/v1/messages/expl1/explain", other)
	want(t, r, 404)
	if code, _ := r.apiErr(t); code != "not_found" {
		t.Errorf("code %q", code)
	}
	want(t, e.get("/v1/messages/expl2/explain", rd), 404)
	r = e.get("/v1/messages/expl1/explain", op)
	want(t, r, 200)
	r.json(t, &x)
	if x.Account != "acme" {
		t.Errorf("operator sees account %q", x.Account)
	}
}
