package e2e

import (
	"context"
	"encoding/json"
	"net/mail"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// curlUnsubscribe POSTs the RFC 8058 one-click body to link with the real
// curl binary, as a mail provider does (no cookie, no credentials), and
// returns the HTTP status.
func curlUnsubscribe(t *testing.T, link string, method string) string {
	t.Helper()
	args := []string{"-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", link}
	if method == "POST" {
		args = append([]string{"-X", "POST", "-d", "List-Unsubscribe=One-Click"}, args...)
	}
	out, err := exec.Command("curl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("curl %s %s: %v: %s", method, link, err, out)
	}
	return string(out)
}

// unsubscribeLink returns the message's List-Unsubscribe URL, pointed at
// the test's HTTP listener (the configured public URL names a host the
// test cannot resolve), after checking both one-click fields are there
// and covered by a valid DKIM signature of the From domain.
func (h *herald) unsubscribeLink(t *testing.T, raw []byte, base string) string {
	t.Helper()
	msg, err := mail.ReadMessage(strings.NewReader(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	lu, post := msg.Header.Get("List-Unsubscribe"), msg.Header.Get("List-Unsubscribe-Post")
	if post != "List-Unsubscribe=One-Click" || !strings.HasPrefix(lu, "<"+base+"/unsubscribe/") || !strings.HasSuffix(lu, ">") {
		t.Fatalf("List-Unsubscribe %q, List-Unsubscribe-Post %q", lu, post)
	}
	res, err := resolve.New(h.dns.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	results, err := dkim.Verify(context.Background(), strings.NewReader(string(raw)), res.LookupTXT)
	if err != nil || len(results) != 1 || results[0].Result != dkim.ResultPass {
		t.Fatalf("DKIM: %+v %v", results, err)
	}
	var signed []string
	for _, tag := range strings.Split(strings.Join(strings.Fields(msg.Header.Get("DKIM-Signature")), ""), ";") {
		if v, ok := strings.CutPrefix(tag, "h="); ok {
			signed = strings.Split(strings.ToLower(v), ":")
		}
	}
	for _, f := range []string{"list-unsubscribe", "list-unsubscribe-post"} {
		// Present once and oversigned: listed twice.
		if n := countOf(signed, f); n != 2 {
			t.Errorf("h= lists %s %d times, want 2 (signed and oversigned): %v", f, n, signed)
		}
	}
	return "http://" + h.addr("http") + strings.TrimPrefix(strings.Trim(lu, "<>"), base)
}

func countOf(l []string, s string) int {
	n := 0
	for _, x := range l {
		if x == s {
			n++
		}
	}
	return n
}

// One-click unsubscribe (RFC 8058) end to end: a message sent through the
// API in an unsubscribe group carries DKIM-signed List-Unsubscribe and
// List-Unsubscribe-Post fields; curl POSTing the one-click body to the link
// suppresses the recipient in that group (event, webhook), GET does not;
// the next message of the group to it is suppressed while another group's
// still goes out; a link without a group unsubscribes from everything.
func TestOneClickUnsubscribe(t *testing.T) {
	t.Parallel()
	const base = "http://links.herald.test"
	h := startHerald(t, func(c *config.Config) { c.Platform.PublicURL = base })
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	h.addDKIMKey("acme.test", "s2026", "ed25519")
	mx := h.remoteMX("remote.test", testmx.Config{})
	rcv, hookURL := newReceiver(t, 0)
	if code := h.api(tok, "POST", "/v1/webhooks", map[string]any{"url": hookURL, "event_types": []string{"unsubscribed"}}, nil); code != 201 {
		t.Fatalf("create webhook: %d", code)
	}
	for _, g := range []string{"news", "alerts"} {
		if code := h.api(tok, "POST", "/v1/unsubscribe-groups", map[string]any{"id": g, "name": g}, nil); code != 201 {
			t.Fatalf("create group %s: %d", g, code)
		}
	}
	send := func(to, group string, global bool) string {
		t.Helper()
		req := sendReq("App <app@acme.test>", to, group)
		if group != "" {
			req["unsubscribe_group"] = group
		}
		if global {
			req["list_unsubscribe"] = true
		}
		var sent struct{ ID string }
		if code := h.api(tok, "POST", "/v1/messages", req, &sent); code != 202 {
			t.Fatalf("send to %s in %q: %d", to, group, code)
		}
		return sent.ID
	}
	countEvents := func(typ, rcpt string) int {
		var evs eventList
		h.api(tok, "GET", "/v1/events?type="+typ+"&recipient="+rcpt, nil, &evs)
		return len(evs.Events)
	}

	// A message of group news, with its link.
	id := send("bob@remote.test", "news", false)
	got := mx.WaitMessages(t, 1, 10*time.Second)[0]
	link := h.unsubscribeLink(t, got.Body, base)

	// GET (a link scanner) shows the page and unsubscribes nobody.
	if code := curlUnsubscribe(t, link, "GET"); code != "200" {
		t.Fatalf("GET link: %s", code)
	}
	var sups struct {
		Suppressions []struct{ Address, Kind, Group string } `json:"suppressions"`
	}
	h.api(tok, "GET", "/v1/suppressions", nil, &sups)
	if len(sups.Suppressions) != 0 {
		t.Fatalf("GET unsubscribed: %+v", sups)
	}
	// A forged link is refused and changes nothing.
	if code := curlUnsubscribe(t, link[:len(link)-3]+"AAA", "POST"); code != "404" {
		t.Errorf("forged link: %s, want 404", code)
	}

	// The one-click POST, twice: one suppression, one event, one webhook.
	for i := 0; i < 2; i++ {
		if code := curlUnsubscribe(t, link, "POST"); code != "200" {
			t.Fatalf("POST link (%d): %s", i, code)
		}
	}
	h.waitEvent(tok, "unsubscribed", "bob@remote.test")
	rcv.wait(t)
	rcv.mu.Lock()
	var ev struct {
		Type      string            `json:"type"`
		Recipient string            `json:"recipient"`
		MessageID string            `json:"message_id"`
		Tags      []string          `json:"tags"`
		Metadata  map[string]string `json:"metadata"`
	}
	if err := json.Unmarshal(rcv.bodies[0], &ev); err != nil {
		t.Fatal(err)
	}
	rcv.mu.Unlock()
	if ev.Type != "unsubscribed" || ev.Recipient != "bob@remote.test" || ev.MessageID != id || !slices.Contains(ev.Tags, "e2e") || ev.Metadata["order"] != "42" {
		t.Errorf("webhook event %+v", ev)
	}
	if n := countEvents("unsubscribed", "bob@remote.test"); n != 1 {
		t.Errorf("%d unsubscribed events after two POSTs, want 1", n)
	}
	h.api(tok, "GET", "/v1/suppressions?group=news", nil, &sups)
	if len(sups.Suppressions) != 1 || sups.Suppressions[0].Address != "bob@remote.test" || sups.Suppressions[0].Kind != "unsubscribe" {
		t.Fatalf("group suppressions %+v", sups)
	}

	// The next news message to bob is suppressed; an alerts one is sent.
	send("bob@remote.test", "news", false)
	h.waitEvent(tok, "suppressed", "bob@remote.test")
	send("bob@remote.test", "alerts", false)
	mx.WaitMessages(t, 2, 10*time.Second)

	// A link without a group unsubscribes carol from every group.
	send("carol@remote.test", "", true)
	msgs := mx.WaitMessages(t, 3, 10*time.Second)
	glink := h.unsubscribeLink(t, msgs[2].Body, base)
	if code := curlUnsubscribe(t, glink, "POST"); code != "200" {
		t.Fatalf("POST global link: %s", code)
	}
	h.waitEvent(tok, "unsubscribed", "carol@remote.test")
	send("carol@remote.test", "news", false)
	send("carol@remote.test", "alerts", false)
	send("carol@remote.test", "", false)
	h.waitQueueEmpty()
	if n := countEvents("suppressed", "carol@remote.test"); n != 3 {
		t.Errorf("%d suppressed events for carol, want 3 (news, alerts, no group)", n)
	}
	if n := len(mx.Messages()); n != 3 {
		t.Errorf("%d messages reached the MX, want 3", n)
	}
}
