package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// GET /v1/messages/{id}/explain on the running server: a recipient the
// remote MX defers is explained with its reply, its next attempt and the
// message's expiry; once delivered the message is explained from its
// events; another account's key gets 404.
func TestExplainDeferredThenDelivered(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		// Slow retries: the deferred state stays put while it is explained.
		c.Queue.RetryInitial, c.Queue.RetryMax = time.Hour, time.Hour
	})
	tok, _ := h.tenant("acme", "acme.test", "send", "read")
	other, _ := h.tenant("beta", "beta.test", "read")
	mx := h.remoteMX("remote.test", testmx.Config{})
	mx.SetRcptReply("bob@remote.test", 451, [3]int{4, 7, 0}, "Try again later")

	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "bob@remote.test", "explain"), &sent); code != 202 {
		t.Fatalf("POST /v1/messages: %d", code)
	}
	h.waitEvent(tok, "deferred", "bob@remote.test")
	var x explain.Explanation
	if code := h.api(tok, "GET", "/v1/messages/"+sent.ID+"/explain", nil, &x); code != 200 {
		t.Fatalf("explain: %d", code)
	}
	if x.State != explain.StateDeferred || !x.InQueue || x.ExpiresAt == nil || len(x.Recipients) != 1 {
		t.Fatalf("explanation %+v, want deferred in the queue with an expiry", x)
	}
	r := x.Recipients[0]
	if r.Attempts != 1 || r.NextAttempt == nil || r.Enhanced != "4.7.0" || !strings.Contains(r.LastReply, "Try again later") || r.Destination != "remote.test" {
		t.Errorf("recipient %+v", r)
	}
	all := strings.Join(x.Summary, "\n")
	for _, want := range []string{"bob@remote.test: waiting for remote.test", "Try again later", "next attempt at", "The message expires on"} {
		if !strings.Contains(all, want) {
			t.Errorf("the summary does not say %q:\n%s", want, all)
		}
	}
	if code := h.api(other, "GET", "/v1/messages/"+sent.ID+"/explain", nil, nil); code != 404 {
		t.Errorf("another account's explain: %d, want 404", code)
	}

	// The MX takes it now; after a retry the message is explained from
	// its events.
	mx.SetRcptReply("bob@remote.test", 0, [3]int{}, "")
	must(t, h.app.Store().Retry(context.Background(), sent.ID, time.Now()))
	h.waitEvent(tok, "delivered", "bob@remote.test")
	// The delivered event and the message's removal are one transaction.
	x = explain.Explanation{}
	if code := h.api(tok, "GET", "/v1/messages/"+sent.ID+"/explain", nil, &x); code != 200 {
		t.Fatalf("explain after delivery: %d", code)
	}
	if x.State != explain.StateDelivered || x.InQueue || !strings.Contains(strings.Join(x.Summary, "\n"), "bob@remote.test: delivered") {
		t.Errorf("after delivery: %+v", x)
	}
}
