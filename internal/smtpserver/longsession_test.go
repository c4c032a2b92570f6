package smtpserver

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// RFC 5321 §4.5.3.1.10: a 452 for recipients over the limit leaves the
// transaction usable. A client pipelining 150 recipients gets 100 × 250 and
// 50 × 452, and its DATA then delivers to the first 100.
func TestExcessRecipientsLeaveTransactionUsable(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{}, b) // MaxRecipients 100, MaxErrors 10
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<list@example.com>", "250 2.1.0")
	var batch strings.Builder
	for i := range 150 {
		fmt.Fprintf(&batch, "RCPT TO:<r%d@example.org>\r\n", i)
	}
	c.send(batch.String()) // one write
	for i := range 150 {
		want := "250 2.1.5"
		if i >= 100 {
			want = "452 4.5.3 Too many recipients"
		}
		if r := c.reply(); !strings.HasPrefix(r, want) {
			t.Fatalf("RCPT %d: got %q, want %q", i, r, want)
		}
	}
	c.cmd("DATA", "354")
	c.cmd("Subject: list\r\n\r\nhello\r\n.", "250 2.0.0 OK queued as Q1")
	c.cmd("QUIT", "221")
	c.expectClosed()
	_, msgs, _ := b.snapshot()
	if len(msgs) != 1 || len(msgs[0].env.Recipients) != 100 {
		t.Fatalf("delivered %d messages, recipients %d; want 1 with 100", len(msgs), len(msgs[0].env.Recipients))
	}
	for i, r := range msgs[0].env.Recipients {
		if want := fmt.Sprintf("r%d@example.org", i); r.Address != want {
			t.Fatalf("recipient %d is %s, want %s", i, r.Address, want)
		}
	}
	st := srv.Stats()
	if st.Rejections[RejectTooManyRcpts] != 50 || st.Rejections[RejectTooManyErrors] != 0 || st.MessagesAccepted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// Recipients refused for other reasons are still errors, and excess
// recipients are still bounded (as junk commands).
func TestRecipientErrorsAndExcessBound(t *testing.T) {
	t.Parallel()
	b := newBackend()
	b.rejectRcpt["nobody1@example.org"] = true
	b.rejectRcpt["nobody2@example.org"] = true
	srv, addr := startServer(t, Config{MaxRecipients: 2, MaxErrors: 3}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<nobody1@example.org>", "550 5.1.1") // error 1
	c.cmd("RCPT TO:<nobody2@example.org>", "550 5.1.1") // error 2
	c.cmd("RCPT TO:<a@example.org>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	for i := range 20 { // not errors: the session survives them
		c.cmd(fmt.Sprintf("RCPT TO:<x%d@example.org>", i), "452 4.5.3")
	}
	c.cmd("FOO", "500 5.5.1") // error 3
	c.expect("421 4.7.0 mx.test Too many errors")
	c.expectClosed()
	if st := srv.Stats(); st.Rejections[RejectTooManyErrors] != 1 || st.Rejections[RejectRcpt] != 2 || st.Rejections[RejectTooManyRcpts] != 20 {
		t.Fatalf("stats %+v", st)
	}

	// Thousands of recipients over the limit: cut off at the junk limit.
	srv, addr = startServer(t, Config{MaxRecipients: 2, MaxJunkCommands: 20}, newBackend())
	c = dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	var batch strings.Builder
	for i := range 2 + 21 {
		fmt.Fprintf(&batch, "RCPT TO:<r%d@example.org>\r\n", i)
	}
	c.send(batch.String())
	c.expect("250")
	c.expect("250")
	for range 20 {
		c.expect("452 4.5.3")
	}
	c.expect("421 4.7.0")
	c.expectClosed()
	if st := srv.Stats(); st.Rejections[RejectTooManyCmds] != 1 || st.Rejections[RejectTooManyRcpts] != 20 {
		t.Fatalf("stats %+v", st)
	}
}

// A relay reusing one connection for hundreds of messages is never cut:
// MAIL/RCPT/DATA are not counted, and an accepted message forgives earlier
// junk commands and errors (a few unknown recipients over a long session).
func TestLongSessionManyMessages(t *testing.T) {
	t.Parallel()
	b := newBackend()
	b.rejectRcpt["gone@example.org"] = true
	srv, addr := startServer(t, Config{}, b) // MaxJunkCommands 1000, MaxErrors 10
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO relay.test", "250")
	const n = 400
	for i := range n {
		if i%3 == 0 {
			c.cmd("RSET", "250 2.0.0")
		}
		if i%7 == 0 {
			c.cmd("NOOP", "250 2.0.0")
		}
		c.send(fmt.Sprintf("MAIL FROM:<relay@example.com>\r\nRCPT TO:<u%d@example.org>\r\n", i))
		c.expect("250 2.1.0")
		c.expect("250 2.1.5")
		if i%20 == 0 { // 20 unknown recipients in all: twice MaxErrors
			c.cmd("RCPT TO:<gone@example.org>", "550 5.1.1")
		}
		c.cmd("DATA", "354")
		c.cmd(fmt.Sprintf("Subject: message %d\r\n\r\nbody\r\n.", i), fmt.Sprintf("250 2.0.0 OK queued as Q%d", i+1))
	}
	c.cmd("QUIT", "221")
	c.expectClosed()
	_, msgs, _ := b.snapshot()
	if len(msgs) != n {
		t.Fatalf("%d messages delivered, want %d", len(msgs), n)
	}
	st := srv.Stats()
	if st.MessagesAccepted != n || st.Rejections[RejectTooManyCmds] != 0 || st.Rejections[RejectTooManyErrors] != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// A session that only sends junk is closed at the junk limit: 1,000 NOOPs
// pass, the 1,001st is answered 421 4.7.0. An accepted message restarts
// the count.
func TestJunkCommandLimit(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.send(strings.Repeat("NOOP\r\n", 999))
	for range 999 {
		c.expect("250 2.0.0")
	}
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.cmd("DATA", "354")
	c.cmd("Subject: x\r\n\r\ny\r\n.", "250 2.0.0 OK queued")
	c.send(strings.Repeat("NOOP\r\n", 1001)) // one write
	for i := range 1000 {
		if r := c.reply(); !strings.HasPrefix(r, "250 2.0.0") {
			t.Fatalf("NOOP %d: %q", i+1, r)
		}
	}
	c.expect("421 4.7.0 mx.test Too many commands")
	c.expectClosed()
	if st := srv.Stats(); st.Rejections[RejectTooManyCmds] != 1 || st.MessagesAccepted != 1 {
		t.Fatalf("stats %+v", st)
	}

	// What counts: RSET, VRFY, HELP, unimplemented and unknown commands, and
	// a repeated HELO/EHLO; the first EHLO and QUIT do not.
	_, addr = startServer(t, Config{MaxJunkCommands: 7, MaxErrors: 50}, newBackend())
	c = dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("EHLO client.test", "250") // 1
	c.cmd("HELO client.test", "250") // 2
	c.cmd("RSET", "250")             // 3
	c.cmd("VRFY postmaster", "252")  // 4
	c.cmd("HELP", "214")             // 5
	c.cmd("EXPN list", "502 5.5.1")  // 6
	c.cmd("XYZZY", "500 5.5.1")      // 7
	c.cmd("NOOP", "421 4.7.0")
	c.expectClosed()
}

// The session limit does not cut a transaction in progress: the message
// completes and the session is closed between transactions.
func TestSessionLimitSparesTransaction(t *testing.T) {
	t.Parallel()
	b := newBackend()
	_, addr := startServer(t, Config{SessionTimeout: time.Second}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.cmd("DATA", "354")
	// 12 lines, 100 ms apart: the transfer goes on past the session limit
	// (and ends well before twice the limit).
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for range 12 {
		<-tick.C
		c.send("line\r\n")
	}
	c.cmd(".", "250 2.0.0 OK queued")
	c.expect("421 4.4.2 mx.test Session time limit exceeded")
	c.expectClosed()
	if _, msgs, _ := b.snapshot(); len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
}
