package e2e

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// Submission with STARTTLS + AUTH to a remote domain reaches the remote MX
// found by an MX lookup, with a Received header naming TLS and the user.
func TestSubmissionToRemoteByMX(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{STARTTLS: true})

	id := h.submit("alice@example.com", pw, "alice@example.com", []string{"bob@remote.test"}, testBody("by-mx"))
	if id == "" {
		t.Fatal("no queue ID in the 250 reply")
	}
	msgs := mx.WaitMessages(t, 1, 10*time.Second)
	m := msgs[0]
	if m.From != "alice@example.com" || len(m.Rcpts) != 1 || m.Rcpts[0] != "bob@remote.test" {
		t.Fatalf("envelope %q -> %v", m.From, m.Rcpts)
	}
	if !m.TLS {
		t.Error("outbound delivery did not use the offered STARTTLS")
	}
	if m.Helo != "mx.herald.test" {
		t.Errorf("HELO %q, want the configured hostname", m.Helo)
	}
	hdr := headerBlock(string(m.Body))
	if !strings.Contains(hdr, "Received: from client.test") || !strings.Contains(hdr, "by mx.herald.test") ||
		!strings.Contains(hdr, "ESMTPSA") || !strings.Contains(hdr, "TLS1.3") {
		t.Errorf("Received header lacks TLS/auth details:\n%s", hdr)
	}
	if !strings.Contains(string(m.Body), "Hello from the e2e test.") {
		t.Errorf("body lost: %q", m.Body)
	}
}

// The implicit-TLS listener (465 style) with BDAT.
func TestImplicitTLSWithBDAT(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})

	c := dialTLS(t, h.addr("submissions"))
	ehlo := c.ok(250, "EHLO client.test")
	for _, ext := range []string{"CHUNKING", "AUTH PLAIN LOGIN", "DSN", "SMTPUTF8", "PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES"} {
		if !strings.Contains(ehlo, ext) {
			t.Errorf("EHLO over TLS lacks %s:\n%s", ext, ehlo)
		}
	}
	if code, msg := c.authPlain("alice@example.com", pw); code != 235 {
		t.Fatalf("AUTH: %d %s", code, msg)
	}
	c.ok(250, "MAIL FROM:<alice@example.com>")
	c.ok(250, "RCPT TO:<carol@remote.test>")
	body := "From: Alice <alice@example.com>\r\n" + testBody("bdat")
	half := len(body) / 2
	c.raw("BDAT " + strconv.Itoa(half) + "\r\n" + body[:half])
	c.expect(250)
	c.raw("BDAT " + strconv.Itoa(len(body)-half) + " LAST\r\n" + body[half:])
	c.expect(250)
	got := mx.WaitMessages(t, 1, 10*time.Second)
	// Submission adds the missing Date field; the rest arrives intact.
	hdr, text, _ := strings.Cut(body, "\r\n\r\n")
	for _, want := range append(strings.Split(hdr, "\r\n"), "\r\nDate: ", "\r\n\r\n"+text) {
		if !strings.Contains(string(got[0].Body), want) {
			t.Fatalf("BDAT message lacks %q:\n%q", want, got[0].Body)
		}
	}
}

// No open relay: port 25 refuses remote recipients without AUTH; AUTH is
// refused before TLS; an authenticated user cannot spoof another domain.
func TestAccessControl(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addDomain("other.org")
	pw := h.addUser("alice@example.com")
	h.addUser("bob@other.org")

	c := dial(t, h.addr("smtp"))
	ehlo := c.ok(250, "EHLO client.test")
	if strings.Contains(ehlo, "AUTH") {
		t.Errorf("AUTH advertised before TLS:\n%s", ehlo)
	}
	c.ok(250, "MAIL FROM:<someone@elsewhere.test>")
	if code, msg := c.cmd("RCPT TO:<victim@remote.test>"); code != 550 || !strings.HasPrefix(msg, "5.7.1") {
		t.Errorf("relay attempt: %d %s, want 550 5.7.1", code, msg)
	}
	if code, msg := c.cmd("RCPT TO:<nobody@example.com>"); code != 550 || !strings.HasPrefix(msg, "5.1.1") {
		t.Errorf("unknown local user: %d %s, want 550 5.1.1", code, msg)
	}
	c.ok(250, "RCPT TO:<alice@example.com>")

	s := dial(t, h.addr("submission"))
	s.ok(250, "EHLO client.test")
	if code, _ := s.authPlain("alice@example.com", pw); code != 530 && code != 538 {
		t.Errorf("AUTH before TLS answered %d, want 530", code)
	}
	if code, _ := s.cmd("MAIL FROM:<alice@example.com>"); code != 530 {
		t.Errorf("MAIL without AUTH on submission answered %d, want 530", code)
	}
	s.startTLS()
	s.ok(250, "EHLO client.test")
	if code, _ := s.authPlain("alice@example.com", "wrong"); code != 535 {
		t.Errorf("bad password answered %d, want 535", code)
	}
	if code, msg := s.authPlain("alice@example.com", pw); code != 235 {
		t.Fatalf("AUTH: %d %s", code, msg)
	}
	if code, msg := s.cmd("MAIL FROM:<bob@other.org>"); code != 550 || !strings.HasPrefix(msg, "5.7.1") {
		t.Errorf("spoofed sender: %d %s, want 550 5.7.1", code, msg)
	}
	s.ok(250, "MAIL FROM:<alice@example.com>")
	s.ok(250, "RCPT TO:<anyone@remote.test>")
}

// A remote 4xx is retried and then delivered.
func TestTemporaryFailureRetried(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})
	mx.SetRcptReply("bob@remote.test", 451, [3]int{4, 2, 0}, "greylisted, come back later")

	id := h.submit("alice@example.com", pw, "alice@example.com", []string{"bob@remote.test"}, testBody("retry"))
	mx.WaitConnections(t, 1, 10*time.Second)
	waitStatus(t, h, id, "deferred")
	mx.SetRcptReply("bob@remote.test", 0, [3]int{}, "")
	got := mx.WaitMessages(t, 1, 10*time.Second)
	if got[0].Rcpts[0] != "bob@remote.test" {
		t.Fatalf("rcpts %v", got[0].Rcpts)
	}
}

// A 5xx bounces: the sender gets an RFC 3464 DSN in its mailbox, and mixed
// per-recipient results in one transaction are handled one by one.
func TestPermanentFailureBouncesAndMixedResults(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{DSN: true})
	mx.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "no such mailbox")
	mx.SetRcptReply("later@remote.test", 451, [3]int{4, 3, 0}, "try later")

	h.submit("alice@example.com", pw, "alice@example.com",
		[]string{"ok@remote.test", "gone@remote.test", "later@remote.test"}, testBody("mixed"))
	got := mx.WaitMessages(t, 1, 10*time.Second)
	if len(got[0].Rcpts) != 1 || got[0].Rcpts[0] != "ok@remote.test" {
		t.Fatalf("first transaction recipients %v, want only ok@", got[0].Rcpts)
	}
	dsns := h.waitMaildir("alice@example.com", 1)
	d := dsns[0]
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; gone@remote.test",
		"Action: failed", "Status: 5.1.1", "no such mailbox", "Subject: mixed"} {
		if !strings.Contains(d, want) {
			t.Errorf("DSN lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "later@remote.test") || strings.Contains(d, "Final-Recipient: rfc822; ok@") {
		t.Errorf("DSN reports recipients that did not fail:\n%s", d)
	}
	if !strings.Contains(headerBlock(d), "From: ") || !strings.Contains(d, "MAILER-DAEMON@mx.herald.test") {
		t.Errorf("DSN not from the mailer daemon:\n%s", headerBlock(d))
	}
	// The deferred recipient goes through once the remote accepts it.
	mx.SetRcptReply("later@remote.test", 0, [3]int{}, "")
	got = mx.WaitMessages(t, 2, 10*time.Second)
	if got[1].Rcpts[0] != "later@remote.test" {
		t.Fatalf("retry delivered to %v", got[1].Rcpts)
	}
}

// A null MX fails at once with a DSN; a domain with only an A record gets
// mail at that address.
func TestNullMXAndImplicitMX(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	h.dns.SetNullMX("nomail.test")
	ip := nextMXIP()
	amx := testmx.Start(t, ip+":25", testmx.Config{})
	h.dns.AddA("aonly.test", ip)

	h.submit("alice@example.com", pw, "alice@example.com", []string{"x@nomail.test", "y@aonly.test"}, testBody("nullmx"))
	got := amx.WaitMessages(t, 1, 10*time.Second)
	if got[0].Rcpts[0] != "y@aonly.test" {
		t.Fatalf("implicit MX got %v", got[0].Rcpts)
	}
	d := h.waitMaildir("alice@example.com", 1)[0]
	if !strings.Contains(d, "x@nomail.test") || !strings.Contains(d, "5.1.10") {
		t.Errorf("null MX DSN:\n%s", d)
	}
}

// waitStatus polls the queue until every pending recipient of id has the
// given status.
func waitStatus(t *testing.T, h *herald, id, status string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := h.app.Store().Get(t.Context(), id)
		if err == nil && len(m.Recipients) > 0 && string(m.Recipients[0].Status) == status {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("message %s never reached %s (%v, %+v)", id, status, err, m)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Several listeners per kind, IPv4 and IPv6.
func TestIPv4AndIPv6Listeners(t *testing.T) {
	t.Parallel()
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skip("no IPv6 loopback")
	} else {
		l.Close()
	}
	h := startHerald(t, func(c *config.Config) { c.SMTP.Listen = []string{"127.0.0.1:0", "[::1]:0"} })
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	if n := len(h.addrs["smtp"]); n != 2 {
		t.Fatalf("%d SMTP listeners, want 2", n)
	}
	for _, addr := range h.addrs["smtp"] {
		c := dial(t, addr)
		c.ok(250, "EHLO dual.test")
		if code, _ := c.send("x@dual.test", []string{"alice@example.com"}, testBody("via-"+addr)); code != 250 {
			t.Fatalf("%s: send failed", addr)
		}
	}
	msgs := h.waitMaildir("alice@example.com", 2)
	if !strings.Contains(strings.Join(msgs, ""), "[::1]") {
		t.Errorf("no message records the IPv6 client address in Received")
	}
}
