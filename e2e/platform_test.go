package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// tenant creates an account owning domain (a local domain too, so bounces
// come back), an SMTP user and an API key with the given scopes.
func (h *herald) tenant(account, domain string, scopes ...string) (token, userPW string) {
	h.t.Helper()
	ctx := context.Background()
	st := h.app.Store()
	if account != store.DefaultAccount {
		must(h.t, st.AddAccount(ctx, store.Account{ID: account, Name: account}))
	}
	h.addDomain(domain)
	must(h.t, st.SetDomainAccount(ctx, domain, account))
	userPW = h.addUser("app@" + domain)
	must(h.t, st.SetUserAccount(ctx, "app@"+domain, account))
	tok, id, hash := httpapi.NewToken()
	must(h.t, st.AddAPIKey(ctx, store.APIKey{ID: id, Account: account, Name: "test", Scopes: scopes, SecretHash: hash}))
	return tok, userPW
}

// api calls the HTTP API and decodes the JSON answer into out (if not nil).
func (h *herald) api(token, method, path string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+h.addr("http")+path, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if out != nil && len(b) > 0 {
		if err := json.Unmarshal(b, out); err != nil {
			h.t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, b, err)
		}
	}
	return resp.StatusCode
}

type eventList struct {
	Events []struct {
		Type      string `json:"type"`
		Recipient string `json:"recipient"`
		MessageID string `json:"message_id"`
		Reply     string `json:"reply"`
		Bounce    string `json:"bounce"`
		TLS       string `json:"tls"`
	} `json:"events"`
}

// waitEvent polls the events API until an event of type for rcpt shows.
func (h *herald) waitEvent(token, typ, rcpt string) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var evs eventList
		h.api(token, "GET", "/v1/events?type="+typ+"&recipient="+rcpt, nil, &evs)
		if len(evs.Events) > 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("no %s event for %s", typ, rcpt)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func sendReq(from, to, subject string) map[string]any {
	return map[string]any{"from": from, "to": []string{to}, "subject": subject, "text": "hello " + subject,
		"tags": []string{"e2e"}, "metadata": map[string]string{"order": "42"}}
}

// Send by API and by SMTP, then follow each message to "delivered" in
// the events API; a 5xx recipient becomes a hard bounce and is
// suppressed, and the next send to it is refused on both paths.
func TestPlatformSendTrackBounceSuppress(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, pw := h.tenant("acme", "acme.test", "send", "read", "admin")
	mx := h.remoteMX("remote.test", testmx.Config{})
	mx.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "user unknown")

	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", sendReq("App <app@acme.test>", "bob@remote.test", "api"), &sent); code != 202 {
		t.Fatalf("POST /v1/messages: %d", code)
	}
	got := mx.WaitMessages(t, 1, 10*time.Second)[0]
	if !strings.HasPrefix(got.From, "bounces+") || !strings.HasSuffix(got.From, "@acme.test") {
		t.Errorf("API mail envelope sender %q, want a VERP address", got.From)
	}
	h.waitEvent(tok, "delivered", "bob@remote.test")
	var msg struct {
		ID         string `json:"id"`
		Recipients []struct {
			Address string `json:"address"`
			Status  string `json:"status"`
		} `json:"recipients"`
		Events []struct {
			Type string `json:"type"`
		} `json:"events"`
	}
	if code := h.api(tok, "GET", "/v1/messages/"+sent.ID, nil, &msg); code != 200 {
		t.Fatalf("GET message: %d", code)
	}
	if len(msg.Events) < 2 || msg.Events[0].Type != "accepted" || msg.Events[len(msg.Events)-1].Type != "delivered" {
		t.Errorf("message timeline %+v", msg.Events)
	}

	// SMTP submission by the account's user is tracked the same way.
	h.submit("app@acme.test", pw, "app@acme.test", []string{"carol@remote.test"}, testBody("smtp"))
	h.waitEvent(tok, "delivered", "carol@remote.test")

	// A hard bounce is recorded with its class and suppresses.
	h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "gone@remote.test", "gone"), nil)
	h.waitEvent(tok, "bounced", "gone@remote.test")
	var evs eventList
	h.api(tok, "GET", "/v1/events?type=bounced&recipient=gone@remote.test", nil, &evs)
	if evs.Events[0].Bounce != "hard:mailbox-unknown" {
		t.Errorf("bounce class %q", evs.Events[0].Bounce)
	}
	var sups struct {
		Suppressions []struct{ Address, Reason string } `json:"suppressions"`
	}
	h.api(tok, "GET", "/v1/suppressions", nil, &sups)
	if len(sups.Suppressions) != 1 || sups.Suppressions[0].Address != "gone@remote.test" || sups.Suppressions[0].Reason != "hard_bounce" {
		t.Fatalf("suppressions %+v", sups)
	}
	// Next send to it: a "suppressed" event by API, 550 by SMTP.
	before := len(mx.Messages())
	h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "gone@remote.test", "again"), nil)
	h.waitEvent(tok, "suppressed", "gone@remote.test")
	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	c.authPlain("app@acme.test", pw)
	c.ok(250, "MAIL FROM:<app@acme.test>")
	if code, msg := c.cmd("RCPT TO:<gone@remote.test>"); code != 550 || !strings.HasPrefix(msg, "5.1.1") {
		t.Errorf("SMTP send to a suppressed address: %d %s, want 550 5.1.1", code, msg)
	}
	h.waitQueueEmpty()
	if n := len(mx.Messages()); n != before {
		t.Errorf("a suppressed recipient was sent to")
	}
}

// An asynchronous DSN arriving on port 25 for a VERP sender is matched to
// its message and recipient; a feedback-loop complaint likewise.
func TestPlatformAsyncBounceAndComplaint(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read", "admin")
	h.addUser("fbl@acme.test")
	mx := h.remoteMX("remote.test", testmx.Config{})
	var sent struct{ ID string }
	h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "late@remote.test", "async"), &sent)
	h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "angry@remote.test", "complaint"), nil)
	got := mx.WaitMessages(t, 2, 10*time.Second)
	// The two deliveries may arrive in either order.
	senderOf := map[string]string{}
	for _, m := range got {
		senderOf[m.Rcpts[0]] = m.From
	}
	verpAddr := senderOf["late@remote.test"]

	// The remote accepted, then bounces later: a DSN to the VERP sender.
	dsn := "From: MAILER-DAEMON@remote.test\r\nTo: " + verpAddr + "\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nIt bounced.\r\n" +
		"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.test\r\n\r\n" +
		"Final-Recipient: rfc822; late@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <late@remote.test>: mailbox unavailable\r\n\r\n--b1--\r\n"
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO mx.remote.test")
	if code, m := c.send("", []string{verpAddr}, dsn); code != 250 {
		t.Fatalf("DSN to VERP address refused: %d %s", code, m)
	}
	h.waitEvent(tok, "bounced", "late@remote.test")
	var evs eventList
	h.api(tok, "GET", "/v1/events?recipient=late@remote.test&type=bounced", nil, &evs)
	if evs.Events[0].MessageID != sent.ID {
		t.Errorf("async bounce matched to %q, want %q", evs.Events[0].MessageID, sent.ID)
	}
	// A forged VERP token is refused at RCPT.
	c.ok(250, "MAIL FROM:<>")
	if code, _ := c.cmd("RCPT TO:<bounces+aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@acme.test>"); code != 550 {
		t.Errorf("forged VERP address accepted: %d", code)
	}
	c.cmd("RSET")

	// A feedback-loop complaint (ARF) sent to the registered FBL mailbox.
	arf := "From: fbl@isp.test\r\nTo: fbl@acme.test\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"f1\"\r\n\r\n" +
		"--f1\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n" +
		"--f1\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: ISP-FBL/1.0\r\nVersion: 1\r\n" +
		"Original-Mail-From: <" + senderOf["angry@remote.test"] + ">\r\nOriginal-Rcpt-To: <angry@remote.test>\r\nReporting-MTA: dns; fbl.isp.test\r\n\r\n" +
		"--f1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: app@acme.test\r\nSubject: complaint\r\n\r\n--f1--\r\n"
	if code, m := c.send("fbl@isp.test", []string{"fbl@acme.test"}, arf); code != 250 {
		t.Fatalf("ARF report refused: %d %s", code, m)
	}
	h.waitEvent(tok, "complained", "angry@remote.test")
	if ok, _ := h.app.Store().IsSuppressed(context.Background(), "acme", "angry@remote.test"); !ok {
		t.Error("the complaining recipient was not suppressed")
	}
}

// A DSN that arrives after its account was deleted (force: queued mail
// dropped, domains back to the default account) is dropped: it must not
// become a bounce and a suppression of the default account.
func TestPlatformLateBounceAfterAccountDelete(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read")
	op, _ := h.tenant(store.DefaultAccount, "herald.test", "admin")
	mx := h.remoteMX("remote.test", testmx.Config{})
	if code := h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "late@remote.test", "async"), nil); code != 202 {
		t.Fatalf("send: %d", code)
	}
	verpAddr := mx.WaitMessages(t, 1, 10*time.Second)[0].From
	h.waitQueueEmpty()
	if code := h.api(op, "DELETE", "/v1/accounts/acme", nil, nil); code != 409 {
		t.Fatalf("delete without force: %d, want 409 (the account owns acme.test)", code)
	}
	if code := h.api(op, "DELETE", "/v1/accounts/acme?force=true", nil, nil); code != 204 {
		t.Fatalf("delete with force: %d", code)
	}
	dsn := dsnFor(verpAddr, "late@remote.test")
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO mx.remote.test")
	if code, m := c.send("", []string{verpAddr}, dsn); code != 250 {
		t.Fatalf("DSN to the VERP address: %d %s", code, m)
	}
	h.waitQueueEmpty() // consumed
	var evs eventList
	h.api(op, "GET", "/v1/events?recipient=late@remote.test", nil, &evs)
	if len(evs.Events) != 0 {
		t.Errorf("the default account got the deleted account's events: %+v", evs.Events)
	}
	if ok, _ := h.app.Store().IsSuppressed(context.Background(), store.DefaultAccount, "late@remote.test"); ok {
		t.Error("the deleted account's bounce suppressed the address for the default account")
	}
}

// One account cannot read another's messages or send as its domain.
func TestPlatformTenantIsolation(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tokA, _ := h.tenant("alpha", "alpha.test", "send", "read", "admin")
	tokB, pwB := h.tenant("beta", "beta.test", "send", "read", "admin")
	h.remoteMX("remote.test", testmx.Config{})
	var sent struct{ ID string }
	if code := h.api(tokA, "POST", "/v1/messages", sendReq("app@alpha.test", "x@remote.test", "mine"), &sent); code != 202 {
		t.Fatalf("send: %d", code)
	}
	if code := h.api(tokB, "GET", "/v1/messages/"+sent.ID, nil, nil); code != 404 {
		t.Errorf("account beta read alpha's message: %d", code)
	}
	var evs eventList
	h.api(tokB, "GET", "/v1/events?recipient=x@remote.test", nil, &evs)
	if len(evs.Events) != 0 {
		t.Errorf("account beta sees alpha's events: %+v", evs)
	}
	if code := h.api(tokB, "POST", "/v1/messages", sendReq("ceo@alpha.test", "x@remote.test", "spoof"), nil); code != 403 {
		t.Errorf("beta sending as alpha.test: %d, want 403", code)
	}
	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	c.authPlain("app@beta.test", pwB)
	if code, _ := c.cmd("MAIL FROM:<ceo@alpha.test>"); code != 550 {
		t.Errorf("beta's SMTP user sending as alpha.test: %d, want 550", code)
	}
}

// Rate limits: an SMTP user over its limit gets 451 4.7.1, an account over
// its limit gets 429 with Retry-After from the API.
func TestPlatformRateLimits(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) { c.Platform.UserPerMinute = 2 })
	tok, pw := h.tenant("acme", "acme.test", "send", "read", "admin")
	h.remoteMX("remote.test", testmx.Config{})
	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	c.authPlain("app@acme.test", pw)
	for i := range 2 {
		if code, _ := c.send("app@acme.test", []string{"x@remote.test"}, testBody(fmt.Sprint("rl", i))); code != 250 {
			t.Fatalf("message %d under the limit refused", i)
		}
	}
	if code, msg := c.cmd("MAIL FROM:<app@acme.test>"); code != 451 || !strings.HasPrefix(msg, "4.7.1") {
		t.Errorf("third message in a minute: %d %s, want 451 4.7.1", code, msg)
	}
	must(t, h.app.Store().UpdateAccountLimits(context.Background(), "acme", store.AccountLimits{PerHour: 1}))
	post := func() *http.Response {
		req, _ := http.NewRequest("POST", "http://"+h.addr("http")+"/v1/messages", strings.NewReader(`{"from":"app@acme.test","to":["y@remote.test"],"subject":"x","text":"y"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := post(); resp.StatusCode != 202 {
		t.Fatalf("first message under the account limit: %d", resp.StatusCode)
	}
	if resp := post(); resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("over the account limit: %d Retry-After=%q, want 429 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// The per-destination limits hold under a burst, counted at the sink:
// Gmail's built-in table allows 60 messages a minute, so of a burst of 80
// the rest waits in the queue (held back, no attempt counted) instead of
// being sent and refused.
func TestPlatformDestinationLimitUnderBurst(t *testing.T) {
	t.Parallel()
	ip := nextMXIP()
	sink := testmx.Start(t, ip+":25", testmx.Config{})
	h := startHerald(t, func(c *config.Config) {
		c.Delivery.Routes = map[string]string{"gmail.com": ip + ":25"}
	})
	tok, _ := h.tenant("acme", "acme.test", "send", "read")
	for i := range 80 {
		if code := h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", fmt.Sprintf("user%d@gmail.com", i), "burst"), nil); code != 202 {
			t.Fatalf("message %d: %d", i, code)
		}
	}
	sink.WaitMessages(t, 60, 20*time.Second)
	st, err := h.app.Store().Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// One more token per second refills the bucket; the burst took well
	// under that many seconds to be accepted.
	if got := len(sink.Messages()); got > 65 || st.Recipients < 15 {
		t.Fatalf("%d messages reached the sink and %d wait in the queue: the 60/min limit did not hold", got, st.Recipients)
	}
	t.Logf("%d of 80 reached the sink at once, %d held back", len(sink.Messages()), st.Recipients)
}

// The DNS doctor's findings are on the API for the account's domains.
func TestDNSCheckOnAPI(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "read")
	tokB, _ := h.tenant("beta", "beta.test", "read")
	h.dns.AddMX("acme.test", "mx.herald.test", 10)
	h.dns.AddA("mx.herald.test", "127.0.0.1")
	h.dns.AddTXT("acme.test", "v=spf1 mx -all")
	var rep struct {
		Domain   string
		Findings []struct{ Check, Level, Message, Fix string }
	}
	if code := h.api(tok, "GET", "/v1/domains/acme.test/dns", nil, &rep); code != 200 {
		t.Fatalf("dns check: %d", code)
	}
	levels := map[string]string{}
	for _, f := range rep.Findings {
		if levels[f.Check] != "ERROR" {
			levels[f.Check] = f.Level
		}
	}
	if levels["spf"] != "OK" || levels["dmarc"] != "ERROR" {
		t.Errorf("findings by check %v", levels)
	}
	if code := h.api(tokB, "GET", "/v1/domains/acme.test/dns", nil, nil); code != 404 {
		t.Errorf("another account's domain: %d, want 404", code)
	}
}
