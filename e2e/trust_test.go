package e2e

// Regression tests of issue 8 ("one acceptance path"): each hole an
// independent review found, tried again through the real listeners.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// apiRaw uploads a raw message (message/rfc822) and returns the status,
// the response headers and the body.
func (h *herald) apiRaw(token, query, msg string) (int, http.Header, string) {
	h.t.Helper()
	req, _ := http.NewRequest("POST", "http://"+h.addr("http")+"/v1/messages"+query, strings.NewReader(msg))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "message/rfc822")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// dataReply runs MAIL, RCPT and DATA and returns the final reply.
func dataReply(c *client, from, to, msg string) (int, string) {
	c.t.Helper()
	code, text := c.send(from, []string{to}, msg)
	return code, text
}

func (h *herald) queued() int {
	h.t.Helper()
	s, err := h.app.Store().Stats(context.Background())
	if err != nil {
		h.t.Fatal(err)
	}
	return s.Messages
}

// Point 2: a tenant's user cannot get mail signed with another tenant's
// key, by SMTP or by the API; its own mail is signed with its own key.
func TestTrustNoCrossTenantSigning(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, pw := h.tenant("acme", "acme.test", "send", "read")
	h.tenant("bank", "bank.test", "send")
	h.addDKIMKey("acme.test", "a1", "ed25519")
	h.addDKIMKey("bank.test", "b1", "ed25519")
	mx := h.remoteMX("remote.test", testmx.Config{})

	c := h.login("app@acme.test", pw)
	if code, msg := dataReply(c, "app@acme.test", "x@remote.test", "From: CEO <ceo@bank.test>\r\nSubject: wire\r\n\r\npay\r\n"); code != 550 || !strings.Contains(msg, "5.7.1") {
		t.Fatalf("SMTP user of acme with From: ceo@bank.test: %d %s, want 550 5.7.1", code, msg)
	}
	if code, _, body := h.apiRaw(tok, "", "From: ceo@bank.test\r\nTo: x@remote.test\r\nSubject: wire\r\n\r\npay\r\n"); code != 403 {
		t.Fatalf("API key of acme with From: ceo@bank.test: %d %s, want 403", code, body)
	}
	if code, msg := dataReply(c, "app@acme.test", "x@remote.test", "From: App <app@acme.test>\r\nSubject: fine\r\n\r\nok\r\n"); code != 250 {
		t.Fatalf("own From refused: %d %s", code, msg)
	}
	got := mx.WaitMessages(t, 1, 10*time.Second)
	hdr := headerBlock(string(got[0].Body))
	if !strings.Contains(hdr, "d=acme.test") || strings.Contains(hdr, "d=bank.test") {
		t.Fatalf("own mail not signed with its own key only:\n%s", hdr)
	}
	if n := len(mx.Messages()); n != 1 {
		t.Fatalf("%d messages reached the remote, want only the legitimate one", n)
	}
}

// Point 3: every address of every From: and Sender: field of a raw upload
// must belong to the account; a second From: field is a 400.
func TestTrustAPIRawUploadSpoofing(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send")
	h.tenant("bank", "bank.test", "send")
	h.remoteMX("remote.test", testmx.Config{})
	for _, c := range []struct {
		name, header string
		want         int
	}{
		{"second mailbox", "From: mine@acme.test, ceo@bank.test\r\n", 403},
		{"second field", "From: mine@acme.test\r\nFrom: ceo@bank.test\r\n", 400},
		{"sender field", "From: mine@acme.test\r\nSender: ceo@bank.test\r\n", 403},
		{"group", "From: team: mine@acme.test, ceo@bank.test;\r\n", 403},
		{"envelope only", "From: mine@acme.test\r\n", 403}, // with ?from=ceo@bank.test below
	} {
		q := "?to=x@remote.test"
		if c.name == "envelope only" {
			q += "&from=ceo@bank.test"
		}
		code, _, body := h.apiRaw(tok, q, c.header+"Subject: "+c.name+"\r\n\r\nhello\r\n")
		if code != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, code, body, c.want)
		}
	}
	if n := h.queued(); n != 0 {
		t.Fatalf("%d spoofed messages queued", n)
	}
}

// dsnFor is a DSN from a remote MX reporting rcpt as failed.
func dsnFor(verpAddr, rcpt string) string {
	return "From: MAILER-DAEMON@remote.test\r\nTo: " + verpAddr + "\r\nSubject: Undelivered Mail\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.remote.test\r\n\r\n" +
		"Final-Recipient: rfc822; " + rcpt + "\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable\r\n\r\n--b1--\r\n"
}

// Point 4: a forged DSN naming an address that never received the
// message does not suppress it nor make an event or webhook; the real
// recipient's bounce does.
func TestTrustForgedBounceIgnored(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read")
	mx := h.remoteMX("remote.test", testmx.Config{})
	if code := h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "real@remote.test", "x"), nil); code != 202 {
		t.Fatalf("send: %d", code)
	}
	verpAddr := mx.WaitMessages(t, 1, 10*time.Second)[0].From
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO attacker.test")
	if code, msg := c.send("", []string{verpAddr}, dsnFor(verpAddr, "victim@remote.test")); code != 250 {
		t.Fatalf("forged DSN: %d %s", code, msg)
	}
	if code, msg := c.send("", []string{verpAddr}, dsnFor(verpAddr, "real@remote.test")); code != 250 {
		t.Fatalf("real DSN: %d %s", code, msg)
	}
	h.waitEvent(tok, "bounced", "real@remote.test")
	ctx := context.Background()
	if ok, _ := h.app.Store().IsSuppressed(ctx, "acme", "victim@remote.test"); ok {
		t.Error("a forged DSN suppressed an address that never got the message")
	}
	var evs eventList
	h.api(tok, "GET", "/v1/events?recipient=victim@remote.test", nil, &evs)
	if len(evs.Events) != 0 {
		t.Errorf("a forged DSN made events: %+v", evs.Events)
	}
	if ok, _ := h.app.Store().IsSuppressed(ctx, "acme", "real@remote.test"); !ok {
		t.Error("the real bounce did not suppress its recipient")
	}
}

// Point 5: the DSN of a bounced API message goes to its VERP address and
// is consumed there: it is neither delivered nor bounced, and the default
// account gains no event and no suppression of the VERP address.
func TestTrustBounceOfAPIMailStaysInItsAccount(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, _ := h.tenant("acme", "acme.test", "send", "read")
	op, _ := h.tenant(store.DefaultAccount, "herald.test", "read", "admin")
	mx := h.remoteMX("remote.test", testmx.Config{})
	mx.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "user unknown")
	if code := h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "gone@remote.test", "x"), nil); code != 202 {
		t.Fatalf("send: %d", code)
	}
	h.waitEvent(tok, "bounced", "gone@remote.test")
	h.waitQueueEmpty()
	var evs eventList
	h.api(op, "GET", "/v1/events", nil, &evs)
	for _, e := range evs.Events {
		if e.Type != "accepted" && e.Type != "delivered" || strings.HasPrefix(e.Recipient, "bounces+") {
			t.Errorf("the default account got an event about acme's bounce: %+v", e)
		}
	}
	sups, err := h.app.Store().ListSuppressions(context.Background(), store.DefaultAccount, "", 100)
	if err != nil || len(sups) != 0 {
		t.Errorf("default account suppressions: %+v %v", sups, err)
	}
	if got := h.maildir("app@acme.test"); len(got) != 0 {
		t.Errorf("the DSN was delivered to a mailbox: %q", got)
	}
}

// Point 7: the SMTP size and recipient limits hold for the API, and
// account rate limits count recipients, with X-RateLimit headers.
func TestTrustAPILimits(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.Limits.MaxMessageSize = 64 << 10
		c.Limits.MaxRecipients = 5
	})
	tok, pw := h.tenant("acme", "acme.test", "send", "read")
	h.remoteMX("remote.test", testmx.Config{})
	big := "From: app@acme.test\r\nTo: x@remote.test\r\nSubject: big\r\n\r\n" + strings.Repeat("0123456789abcdef\r\n", 6000)
	if code, _, body := h.apiRaw(tok, "", big); code != 413 {
		t.Errorf("108 KB raw upload over a 64 KiB limit: %d %s, want 413", code, body)
	}
	att := map[string]any{"from": "app@acme.test", "to": []string{"x@remote.test"}, "subject": "att", "text": "see attachment",
		"attachments": []map[string]string{{"filename": "a.bin", "content_type": "application/octet-stream",
			"content": strings.Repeat("QUFB", 30000)}}} // 90 KB decoded
	if code := h.api(tok, "POST", "/v1/messages", att, nil); code != 413 {
		t.Errorf("JSON message with a 90 KB attachment: %d, want 413", code)
	}
	six := map[string]any{"from": "app@acme.test", "to": []string{"a@remote.test", "b@remote.test", "c@remote.test",
		"d@remote.test", "e@remote.test", "f@remote.test"}, "subject": "many", "text": "x"}
	if code := h.api(tok, "POST", "/v1/messages", six, nil); code != 400 {
		t.Errorf("6 recipients over max_recipients 5: %d, want 400", code)
	}
	if n := h.queued(); n != 0 {
		t.Fatalf("%d refused messages queued", n)
	}

	must(t, h.app.Store().UpdateAccountLimits(context.Background(), "acme", store.AccountLimits{PerMinute: 3}))
	two := func(subject string) map[string]any {
		return map[string]any{"from": "app@acme.test", "to": []string{"a@remote.test", "b@remote.test"}, "subject": subject, "text": "x"}
	}
	code, hdr := h.apiWithHeaders(tok, two("first"))
	if code != 202 || hdr.Get("X-RateLimit-Limit") != "3" || hdr.Get("X-RateLimit-Remaining") != "1" || hdr.Get("X-RateLimit-Reset") == "" {
		t.Fatalf("first send: %d, limit %q remaining %q reset %q", code, hdr.Get("X-RateLimit-Limit"), hdr.Get("X-RateLimit-Remaining"), hdr.Get("X-RateLimit-Reset"))
	}
	code, hdr = h.apiWithHeaders(tok, two("second"))
	if code != 429 || hdr.Get("Retry-After") == "" || hdr.Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("2 more recipients with 1 left: %d (Retry-After %q, remaining %q), want 429", code, hdr.Get("Retry-After"), hdr.Get("X-RateLimit-Remaining"))
	}
	// The account's SMTP user shares the limit, counted in recipients.
	c := h.login("app@acme.test", pw)
	c.ok(250, "MAIL FROM:<app@acme.test>")
	c.ok(250, "RCPT TO:<a@remote.test>")
	c.ok(250, "RCPT TO:<b@remote.test>")
	c.ok(354, "DATA")
	c.raw("Subject: smtp\r\n\r\nx\r\n.\r\n")
	if code, msg := c.reply(); code != 451 || !strings.Contains(msg, "4.7.1") {
		t.Fatalf("SMTP message with 2 recipients and 1 left: %d %s, want 451 4.7.1", code, msg)
	}
}

// apiWithHeaders posts a JSON send and returns the status and headers.
func (h *herald) apiWithHeaders(token string, body map[string]any) (int, http.Header) {
	h.t.Helper()
	b := mustJSON(h.t, body)
	req, _ := http.NewRequest("POST", "http://"+h.addr("http")+"/v1/messages", strings.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header
}

// Point 10: a user sends as itself and the aliases that deliver to it;
// domain-wide rights only when granted.
func TestTrustSenderPolicy(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	h.addUser("bob@example.com")
	pwBoss := h.addUser("boss@example.com", "@example.com")
	must(t, h.app.Store().AddAlias(context.Background(), store.Alias{Address: "team@example.com", Targets: []string{"alice@example.com", "bob@example.com"}}))
	must(t, h.app.Store().AddAlias(context.Background(), store.Alias{Address: "bobby@example.com", Targets: []string{"bob@example.com"}}))
	h.remoteMX("remote.test", testmx.Config{})
	c := h.login("alice@example.com", pw)
	for _, s := range []struct {
		from string
		want int
	}{{"alice@example.com", 250}, {"team@example.com", 250}, {"ceo@example.com", 550}, {"bob@example.com", 550}, {"bobby@example.com", 550}} {
		code, msg := c.cmd("MAIL FROM:<%s>", s.from)
		if code != s.want {
			t.Errorf("alice MAIL FROM:<%s>: %d %s, want %d", s.from, code, msg, s.want)
		}
		c.cmd("RSET")
	}
	// The same rule for the header.
	if code, msg := dataReply(c, "alice@example.com", "x@remote.test", "From: ceo@example.com\r\n\r\nx\r\n"); code != 550 {
		t.Errorf("alice with From: ceo@example.com: %d %s", code, msg)
	}
	boss := h.login("boss@example.com", pwBoss)
	if code, msg := dataReply(boss, "ceo@example.com", "x@remote.test", "From: ceo@example.com\r\n\r\nx\r\n"); code != 250 {
		t.Errorf("boss with the domain granted: %d %s", code, msg)
	}
}

// Point 13: a DSN that cannot be delivered goes to the postmaster.
func TestTrustDoubleBounceReachesPostmaster(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) { c.Server.Postmaster = "postmaster@example.com" })
	h.addDomain("example.com")
	h.addUser("postmaster@example.com")
	pw := h.addUser("relay@example.com", "@far.test") // sends for a domain hosted elsewhere
	mx := h.remoteMX("remote.test", testmx.Config{})
	mx.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "Empfänger unbekannt") // UTF-8 in the reply
	far := h.remoteMX("far.test", testmx.Config{})
	far.SetRcptReply("app@far.test", 550, [3]int{5, 1, 1}, "no bounces accepted here")
	h.submit("relay@example.com", pw, "app@far.test", []string{"gone@remote.test"}, "From: app@far.test\r\nSubject: x\r\n\r\nx\r\n")
	got := h.waitMaildir("postmaster@example.com", 1)
	if !strings.Contains(got[0], "multipart/report") || !strings.Contains(got[0], "app@far.test") {
		t.Fatalf("the postmaster got something else:\n%s", got[0])
	}
	h.waitQueueEmpty()
}

// Points 15 and 17: aliases apply to mail from the API and from sendmail;
// submissions get Date and Message-ID; sendmail qualifies bare addresses
// and prints nothing.
func TestTrustAliasesAndFixupsFromEverySource(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	tok, pw := h.tenant("acme", "acme.test", "send")
	h.addUser("alice@acme.test")
	must(t, h.app.Store().AddAlias(context.Background(), store.Alias{Address: "team@acme.test", Targets: []string{"alice@acme.test"}}))

	if code, _, body := h.apiRaw(tok, "", "From: app@acme.test\r\nTo: team@acme.test\r\nSubject: api\r\n\r\nvia the API\r\n"); code != 202 {
		t.Fatalf("API send to an alias: %d %s", code, body)
	}
	c := h.login("app@acme.test", pw)
	if code, msg := dataReply(c, "app@acme.test", "team@acme.test", "From: app@acme.test\r\nSubject: smtp\r\n\r\nvia SMTP\r\n"); code != 250 {
		t.Fatalf("SMTP: %d %s", code, msg)
	}
	cfgPath := filepath.Join(t.TempDir(), "herald.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf("[server]\nhostname = %q\ndata_dir = %q\n", h.cfg.Server.Hostname, h.dataDir)), 0o644))
	cmd := exec.Command(heraldBinary(t), "sendmail", "--config", cfgPath, "team@acme.test")
	cmd.Stdin = strings.NewReader("From: root\nSubject: cron\n\nvia sendmail\n")
	out, err := cmd.CombinedOutput()
	if err != nil || len(out) != 0 {
		t.Fatalf("sendmail: %v, output %q (want none)", err, out)
	}
	got := h.waitMaildir("alice@acme.test", 3)
	for _, m := range got {
		hdr := headerBlock(m)
		for _, want := range []string{"Return-Path: <", "Delivered-To: alice@acme.test", "\r\ndate: ", "\r\nmessage-id: <"} {
			if !strings.Contains(strings.ToLower(hdr), strings.ToLower(want)) {
				t.Errorf("delivered message lacks %q:\n%s", want, hdr)
			}
		}
		if !strings.HasPrefix(m, "Return-Path: <") {
			t.Errorf("Return-Path is not the first field:\n%s", hdr)
		}
		if strings.Contains(m, "via sendmail") && !strings.Contains(hdr, "From: root@"+h.cfg.Server.Hostname) {
			t.Errorf("sendmail did not qualify From: root:\n%s", hdr)
		}
	}
}

// Point 16: a message that comes back to a mailbox it was delivered to
// (Delivered-To names it) is refused as a loop, not delivered again.
func TestTrustForwardingLoopStopped(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	sender := h.remoteMX("remote.test", testmx.Config{})
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO mx.remote.test")
	if code, msg := c.send("bob@remote.test", []string{"alice@example.com"}, "Delivered-To: alice@example.com\r\nFrom: bob@remote.test\r\nSubject: again\r\n\r\nloop\r\n"); code != 250 {
		t.Fatalf("%d %s", code, msg)
	}
	dsn := sender.WaitMessages(t, 1, 10*time.Second)[0]
	if !strings.Contains(string(dsn.Body), "5.4.6") {
		t.Fatalf("the sender was not told of the loop:\n%s", dsn.Body)
	}
	if got := h.maildir("alice@example.com"); len(got) != 0 {
		t.Fatalf("a looping message was delivered again")
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
