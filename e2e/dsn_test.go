package e2e

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// DSN parameters given at submission are stored and honoured: NOTIFY
// (FAILURE, NEVER, SUCCESS), RET=HDRS, ENVID and ORCPT.
func TestDSNParametersHonoured(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	h.addUser("bob@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})
	mx.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "no such mailbox")
	mx.SetRcptReply("quiet@remote.test", 550, [3]int{5, 1, 1}, "no such mailbox")

	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	if code, _ := c.authPlain("alice@example.com", pw); code != 235 {
		t.Fatal("auth")
	}
	c.ok(250, "MAIL FROM:<alice@example.com> RET=HDRS ENVID=env+2B42")
	c.ok(250, "RCPT TO:<gone@remote.test> NOTIFY=FAILURE ORCPT=rfc822;orig+2Bgone@remote.test")
	c.ok(250, "RCPT TO:<quiet@remote.test> NOTIFY=NEVER")
	c.ok(250, "RCPT TO:<bob@example.com> NOTIFY=SUCCESS,FAILURE")
	c.ok(354, "DATA")
	c.raw(testBody("dsnparams") + "SECRET-BODY-LINE\r\n.\r\n")
	c.expect(250)

	dsns := h.waitMaildir("alice@example.com", 2)
	var failed, delivered string
	for _, d := range dsns {
		switch {
		case strings.Contains(d, "Action: failed"):
			failed = d
		case strings.Contains(d, "Action: delivered"):
			delivered = d
		}
	}
	if failed == "" || delivered == "" {
		t.Fatalf("want one failure and one success DSN, got:\n%s", strings.Join(dsns, "\n=====\n"))
	}
	for _, want := range []string{"Original-Envelope-Id: env+42", "Final-Recipient: rfc822; gone@remote.test",
		"Original-Recipient: rfc822; orig+gone@remote.test", "text/rfc822-headers", "Subject: dsnparams"} {
		if !strings.Contains(failed, want) {
			t.Errorf("failure DSN lacks %q:\n%s", want, failed)
		}
	}
	if strings.Contains(failed, "SECRET-BODY-LINE") {
		t.Error("RET=HDRS but the failure DSN returned the body")
	}
	if strings.Contains(failed, "quiet@remote.test") {
		t.Error("NOTIFY=NEVER recipient reported in a DSN")
	}
	if !strings.Contains(delivered, "Final-Recipient: rfc822; bob@example.com") {
		t.Errorf("success DSN:\n%s", delivered)
	}
	// Only two notices: nothing for quiet@ (NEVER).
	h.waitQueueEmpty()
	if n := len(h.maildir("alice@example.com")); n != 2 {
		t.Errorf("alice has %d DSNs, want 2", n)
	}
}

// /metrics exposes the counters an operator graphs.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO client.test")
	c.ok(250, "MAIL FROM:<x@sender.test>")
	c.cmd("RCPT TO:<victim@elsewhere.test>")
	c.ok(250, "RCPT TO:<alice@example.com>")
	c.ok(354, "DATA")
	c.raw(testBody("metrics") + ".\r\n")
	c.expect(250)
	h.waitMaildir("alice@example.com", 1)
	h.waitQueueEmpty()

	resp, err := http.Get("http://" + h.addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{
		`herald_messages_accepted_total{listener="smtp"} 1`,
		`herald_rejections_total{reason="relay_denied"} 1`,
		`herald_delivery_attempts_total{result="delivered"} 1`,
		`herald_smtp_sessions_total{listener="smtp"} 1`,
		"herald_queue_messages 0",
		"herald_smtp_panics_total 0",
		`herald_delivery_latency_seconds_count{result="delivered"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// Repeated AUTH failures from one address are slowed and then locked out,
// even with the right password.
func TestAuthLockout(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	for i := range h.cfg.Auth.MaxFailures {
		if code, _ := c.authPlain("alice@example.com", "guess"+strconv.Itoa(i)); code != 535 {
			t.Fatalf("failure %d answered %d", i, code)
		}
	}
	start := time.Now()
	code, msg := c.authPlain("alice@example.com", pw)
	if code == 235 {
		t.Fatal("locked-out address authenticated")
	}
	if code != 454 && code != 421 {
		t.Errorf("lockout answered %d %s, want 454 4.7.0", code, msg)
	}
	if time.Since(start) > 5*time.Second {
		t.Error("lockout reply took too long")
	}
}
