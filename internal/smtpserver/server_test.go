package smtpserver

import (
	"context"
	"encoding/base64"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
)

func TestEHLOAdvertisement(t *testing.T) {
	t.Parallel()
	srvTLS, cliTLS := testTLS(t)

	_, addr := startServer(t, Config{MaxMessageBytes: 12345}, newBackend())
	c := dial(t, addr)
	c.expect("220 mx.test ")
	r := c.cmd("EHLO client.test", "250-mx.test")
	for _, want := range []string{"PIPELINING", "8BITMIME", "SMTPUTF8", "SIZE 12345", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"} {
		if !strings.Contains(r, "250-"+want+"\n") && !strings.HasSuffix(r, "250 "+want) {
			t.Errorf("no %s in %q", want, r)
		}
	}
	if strings.Contains(r, "STARTTLS") || strings.Contains(r, "AUTH") {
		t.Errorf("STARTTLS or AUTH offered without TLS config: %q", r)
	}

	_, addr = startServer(t, Config{TLSConfig: srvTLS}, newBackend())
	c = dial(t, addr)
	c.expect("220 ")
	r = c.cmd("EHLO client.test", "250-")
	if !strings.Contains(r, "STARTTLS") || strings.Contains(r, "AUTH") {
		t.Errorf("before TLS want STARTTLS and no AUTH: %q", r)
	}
	c.startTLS(cliTLS)
	r = c.cmd("EHLO client.test", "250-")
	if strings.Contains(r, "STARTTLS") || !strings.Contains(r, "AUTH PLAIN LOGIN") {
		t.Errorf("after TLS want AUTH and no STARTTLS: %q", r)
	}
}

func TestAuthRefusedBeforeTLS(t *testing.T) {
	t.Parallel()
	srvTLS, _ := testTLS(t)
	for _, mode := range []Mode{ModeMX, ModeSubmission} {
		_, addr := startServer(t, Config{Mode: mode, TLSConfig: srvTLS}, newBackend())
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.test", "250")
		c.cmd("AUTH PLAIN "+plainIR("alice", "secret"), "530 5.7.0")
		c.cmd("MAIL FROM:<alice@example.com>", map[Mode]string{ModeMX: "250", ModeSubmission: "530 5.7.0 Authentication required"}[mode])
	}
	// Submission without any TLS config never offers or accepts AUTH.
	_, addr := startServer(t, Config{Mode: ModeSubmission}, newBackend())
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("AUTH LOGIN", "530 5.7.0")
	c.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0")
}

func TestAuthAfterSTARTTLS(t *testing.T) {
	t.Parallel()
	srvTLS, cliTLS := testTLS(t)
	for _, mode := range []Mode{ModeMX, ModeSubmission} {
		b := newBackend()
		_, addr := startServer(t, Config{Mode: mode, TLSConfig: srvTLS}, b)

		// PLAIN with an initial response, wrong then right password.
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.test", "250")
		c.startTLS(cliTLS)
		c.cmd("EHLO client.test", "250")
		c.cmd("AUTH PLAIN "+plainIR("alice", "wrong"), "535 5.7.8")
		c.cmd("AUTH PLAIN "+plainIR("alice", "secret"), "235 2.7.0")
		c.cmd("AUTH PLAIN "+plainIR("alice", "secret"), "503 5.5.1")
		c.cmd("MAIL FROM:<alice@example.com>", "250")
		c.cmd("RCPT TO:<bob@example.org>", "250")
		c.cmd("DATA", "354")
		c.cmd("Subject: hi\r\n\r\nhello\r\n.", "250 2.0.0")
		_, msgs, _ := b.snapshot()
		if len(msgs) != 1 || msgs[0].conn.AuthUser != "alice" || !strings.Contains(msgs[0].body, "with ESMTPSA") {
			t.Fatalf("%s: delivered %+v", mode, msgs)
		}

		// LOGIN with challenges, and PLAIN without initial response.
		c = dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.test", "250")
		c.startTLS(cliTLS)
		c.cmd("EHLO client.test", "250")
		enc := base64.StdEncoding.EncodeToString
		if r := c.cmd("AUTH LOGIN", "334 "); r != "334 "+enc([]byte("Username:")) {
			t.Fatalf("LOGIN challenge %q", r)
		}
		c.cmd(enc([]byte("alice")), "334 "+enc([]byte("Password:")))
		c.cmd(enc([]byte("bad")), "535 5.7.8")
		c.cmd("AUTH PLAIN", "334")
		c.cmd("*", "501")
		c.cmd("AUTH PLAIN", "334")
		c.cmd("!!notbase64", "501 5.5.2")
		c.cmd("AUTH LOGIN "+enc([]byte("alice")), "334")
		c.cmd(enc([]byte("secret")), "235 2.7.0")
	}
}

func TestSubmissionsImplicitTLS(t *testing.T) {
	t.Parallel()
	srvTLS, cliTLS := testTLS(t)
	b := newBackend()
	_, addr := startServer(t, Config{Mode: ModeSubmissions, TLSConfig: srvTLS}, b)
	c := dialTLS(t, addr, cliTLS)
	c.expect("220 mx.test")
	r := c.cmd("EHLO client.test", "250")
	if strings.Contains(r, "STARTTLS") || !strings.Contains(r, "AUTH PLAIN LOGIN") {
		t.Fatalf("EHLO %q", r)
	}
	c.cmd("STARTTLS", "503 5.5.1")
	c.cmd("MAIL FROM:<alice@example.com>", "530 5.7.0 Authentication required")
	c.cmd("AUTH PLAIN "+plainIR("alice", "secret"), "235")
	c.cmd("MAIL FROM:<alice@example.com>", "250")
	c.cmd("RCPT TO:<bob@example.org>", "250")
	c.cmd("DATA", "354")
	c.cmd("Subject: hi\r\n\r\nhello\r\n.", "250")
	_, msgs, _ := b.snapshot()
	if len(msgs) != 1 || msgs[0].conn.TLS == nil || msgs[0].conn.Mode != ModeSubmissions {
		t.Fatalf("delivered %+v", msgs)
	}
	if !regexp.MustCompile(`with ESMTPSA\s+\(tls\s+TLS1\.3\s+TLS_[A-Z0-9_]+\)\s+\(authenticated\s+user\s+alice\)\s+for\s+<bob@example\.org>;`).MatchString(msgs[0].body) {
		t.Fatalf("Received header: %q", msgs[0].body)
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{MaxMessageBytes: 1000, MaxRecipients: 2, MaxLineLength: 100}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	// Declared size.
	c.cmd("MAIL FROM:<a@example.com> SIZE=1001", "552 5.3.4")
	c.cmd("MAIL FROM:<a@example.com> SIZE=99999999999999999999999", "552 5.3.4")
	c.cmd("MAIL FROM:<a@example.com> SIZE=12x", "501 5.5.4")
	// Recipients.
	c.cmd("MAIL FROM:<a@example.com> SIZE=1000", "250")
	c.cmd("RCPT TO:<r1@example.org>", "250")
	c.cmd("RCPT TO:<r2@example.org>", "250")
	c.cmd("RCPT TO:<r3@example.org>", "452 4.5.3")
	// Actual size: 552 after the data, and the session goes on.
	c.cmd("DATA", "354")
	c.cmd(strings.Repeat("0123456789012345678\r\n", 60)+".", "552 5.3.4")
	c.cmd("NOOP", "250")
	// Long command line and NUL: 500 5.5.2, session goes on.
	c.cmd("NOOP "+strings.Repeat("x", 200), "500 5.5.2")
	c.cmd("NOOP\x00", "500 5.5.2")
	c.cmd("NOOP \xff\xfe", "500 5.5.2")
	c.cmd("NOOP", "250")
	// A message within limits still gets through.
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<r1@example.org>", "250")
	c.cmd("DATA", "354")
	c.cmd("Subject: small\r\n\r\nok\r\n.", "250")
	c.cmd("QUIT", "221")
	c.expectClosed()
	st := srv.Stats()
	if st.Rejections[RejectSize] != 3 || st.Rejections[RejectTooManyRcpts] != 1 || st.Rejections[RejectLineTooLong] != 1 || st.MessagesAccepted != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCommandErrors(t *testing.T) {
	t.Parallel()
	b := newBackend()
	b.rejectRcpt["nobody@example.org"] = true
	_, addr := startServer(t, Config{MaxErrors: 50}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("MAIL FROM:<a@example.com>", "503 5.5.1")
	c.cmd("EHLO client.test", "250")
	c.cmd("RCPT TO:<a@example.com>", "503 5.5.1")
	c.cmd("DATA", "503 5.5.1")
	c.cmd("FOO bar", "500 5.5.1")
	c.cmd("MAIL FROM:<not an address>", "501 5.1.3")
	c.cmd("MAIL FROM:<a@@example.com>", "501 5.1.3")
	c.cmd("MAIL FROM:<a@example.com> FOO=bar", "555 5.5.4")
	c.cmd("MAIL FROM:<a@example.com> BODY=8BITMIME SMTPUTF8", "250")
	c.cmd("MAIL FROM:<a@example.com>", "503 5.5.1")
	c.cmd("RCPT TO:<>", "501 5.1.3")
	c.cmd("RCPT TO:<b@example.org> XYZ=1", "555 5.5.4")
	c.cmd("RCPT TO:<nobody@example.org>", "550 5.1.1")
	c.cmd("DATA", "503 5.5.1")
	c.cmd("RSET", "250")
	c.cmd("MAIL FROM:<>", "250")
}

func TestTooManyErrors(t *testing.T) {
	t.Parallel()
	srv, addr := startServer(t, Config{MaxErrors: 3}, newBackend())
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("FOO", "500 5.5.1")
	c.cmd("BAR", "500 5.5.1")
	c.cmd("BAZ", "500 5.5.1")
	c.expect("421 4.7.0")
	c.expectClosed()

	// The command limit closes the same way.
	srv2, addr := startServer(t, Config{MaxJunkCommands: 3}, newBackend())
	c = dial(t, addr)
	c.expect("220 ")
	c.cmd("NOOP", "250")
	c.cmd("NOOP", "250")
	c.cmd("NOOP", "250")
	c.cmd("NOOP", "421 4.7.0")
	c.expectClosed()
	if srv.Stats().Rejections[RejectTooManyErrors] != 1 || srv2.Stats().Rejections[RejectTooManyCmds] != 1 {
		t.Fatal("limits not counted")
	}
}

func TestIdleTimeout(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Config{IdleTimeout: 150 * time.Millisecond}, newBackend())
	c := dial(t, addr)
	start := time.Now()
	c.expect("220 ")
	c.expect("421 4.4.2")
	c.expectClosed()
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("closed after %v", d)
	}

	// During DATA, a timeout is answered with 421 4.4.2 and never with a
	// reply that echoes the envelope.
	_, addr = startServer(t, Config{IdleTimeout: 5 * time.Second, DataTimeout: 150 * time.Millisecond}, newBackend())
	c = dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<secret-sender@example.com>", "250")
	c.cmd("RCPT TO:<secret-rcpt@example.org>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: slow\r\n")
	r := c.expect("421 4.4.2")
	if strings.Contains(r, "secret") {
		t.Fatalf("reply leaks the envelope: %q", r)
	}
	c.expectClosed()
}

func TestDataTimeoutExtendsWhileBytesArrive(t *testing.T) {
	t.Parallel()
	b := newBackend()
	_, addr := startServer(t, Config{DataTimeout: 300 * time.Millisecond}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.cmd("DATA", "354")
	// 6 lines, 100 ms apart: 600 ms in all, twice the data timeout.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; i < 6; i++ {
		<-tick.C
		c.send("line\r\n")
	}
	c.cmd(".", "250")
}

func TestConnectionCaps(t *testing.T) {
	t.Parallel()
	g := &gate{max: 1}
	srv, addr := startServer(t, Config{Conns: g}, newBackend())
	c1 := dial(t, addr)
	c1.expect("220 ")
	c2 := dial(t, addr)
	c2.expect("421 4.7.0 mx.test Too many connections")
	c2.expectClosed()
	c1.cmd("QUIT", "221")
	c1.expectClosed()
	waitFor(t, "slot release", func() bool { return g.used() == 0 })
	c3 := dial(t, addr)
	c3.expect("220 ")
	if srv.Stats().Rejections[RejectConnLimit] != 1 {
		t.Fatalf("stats %+v", srv.Stats())
	}

	// Backend.Connect refusal: its reply, then close.
	b := newBackend()
	b.connectErr = &smtp.Error{Code: 554, Enhanced: smtp.EnhancedCode{5, 7, 1}, Message: "Blocked"}
	_, addr = startServer(t, Config{}, b)
	c := dial(t, addr)
	c.expect("554 5.7.1 Blocked")
	c.expectClosed()
}

func TestSmuggling(t *testing.T) {
	t.Parallel()
	for _, trick := range []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n"} {
		b := newBackend()
		_, addr := startServer(t, Config{}, b)
		c := dial(t, addr)
		c.expect("220 ")
		c.cmd("EHLO client.test", "250")
		c.cmd("MAIL FROM:<a@example.com>", "250")
		c.cmd("RCPT TO:<b@example.org>", "250")
		c.cmd("DATA", "354")
		c.send("Subject: first\r\n\r\nhello" + trick +
			"MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nSubject: smuggled\r\n\r\nsmuggled\r\n")
		c.cmd(".", "550 5.6.0")
		// The session is still in sync: a real message follows.
		c.cmd("MAIL FROM:<a@example.com>", "250")
		c.cmd("RCPT TO:<c@example.org>", "250")
		c.cmd("DATA", "354")
		c.cmd("Subject: second\r\n\r\nfine\r\n.", "250")
		c.cmd("QUIT", "221")
		c.expectClosed()
		delivers, msgs, mails := b.snapshot()
		if delivers != 2 || len(msgs) != 1 || len(mails) != 2 {
			t.Fatalf("%q: %d Deliver calls, %d messages, %d MAIL", trick, delivers, len(msgs), len(mails))
		}
		for _, m := range mails {
			if m.From == "evil@example.com" {
				t.Fatalf("%q: smuggled MAIL executed", trick)
			}
		}
		if !strings.HasSuffix(msgs[0].body, "\r\nSubject: second\r\n\r\nfine\r\n") || strings.Contains(msgs[0].body, "smuggled") {
			t.Fatalf("%q: body %q", trick, msgs[0].body)
		}
	}
}

func TestDataRules(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{MaxReceivedHeaders: 3}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	for _, tc := range []struct{ body, want string }{
		{"Subject: x\r\n\r\na\x00b\r\n.", "550 5.6.0"},
		{"Subject: x\r\n\r\n" + strings.Repeat("y", 999) + "\r\n.", "550 5.6.0"},
		{strings.Repeat("Received: from a by b; date\r\n", 4) + "\r\nbody\r\n.", "554 5.4.6"},
		{strings.Repeat("Received: from a by b; date\r\n", 3) + "\r\nbody \xc3\xa9\xff\r\n..dot\r\n.", "250"},
	} {
		c.cmd("MAIL FROM:<a@example.com>", "250")
		c.cmd("RCPT TO:<b@example.org>", "250")
		c.cmd("DATA", "354")
		c.cmd(tc.body, tc.want)
	}
	_, msgs, _ := b.snapshot()
	if len(msgs) != 1 || !strings.HasSuffix(msgs[0].body, "body \xc3\xa9\xff\r\n.dot\r\n") {
		t.Fatalf("messages %+v", msgs)
	}
	if srv.Stats().Rejections[RejectLoop] != 1 {
		t.Fatalf("stats %+v", srv.Stats())
	}
}

func TestSTARTTLSInjection(t *testing.T) {
	t.Parallel()
	srvTLS, cliTLS := testTLS(t)
	b := newBackend()
	_, addr := startServer(t, Config{TLSConfig: srvTLS}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	// One write: STARTTLS and a command injected in clear text after it.
	c.send("STARTTLS\r\nMAIL FROM:<injected@example.com>\r\n")
	c.expect("220 2.0.0")
	tc := c.upgrade(cliTLS)
	// Inside TLS the injected MAIL must not have run: MAIL needs EHLO first
	// and no transaction is open.
	tc.cmd("RCPT TO:<b@example.org>", "503 5.5.1")
	tc.cmd("EHLO client.test", "250")
	tc.cmd("RCPT TO:<b@example.org>", "503 5.5.1")
	_, _, mails := b.snapshot()
	if len(mails) != 0 {
		t.Fatalf("injected command executed: %+v", mails)
	}
}

func TestBDAT(t *testing.T) {
	t.Parallel()
	b := newBackend()
	_, addr := startServer(t, Config{MaxMessageBytes: 100}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.send("BDAT 14\r\nSubject: x\r\n\r\n")
	c.expect("250 2.0.0")
	c.send("BDAT 7\r\nhello\r\n")
	c.expect("250 2.0.0")
	c.send("BDAT 0 LAST\r\n")
	c.expect("250 2.0.0 OK queued as Q1")
	// A chunk with a bare LF is refused; pipelined chunks after it are
	// consumed and refused; the session stays in sync.
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.send("BDAT 4\r\na\nb\rBDAT 3 LAST\r\nxyz")
	c.expect("550 5.6.0")
	c.expect("503 5.5.1")
	// Over the size limit.
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.send("BDAT 101 LAST\r\n" + strings.Repeat("x", 101))
	c.expect("552 5.3.4")
	c.cmd("NOOP", "250")
	_, msgs, _ := b.snapshot()
	if len(msgs) != 1 || !strings.HasSuffix(msgs[0].body, "\r\nSubject: x\r\n\r\nhello\r\n") || !strings.HasPrefix(msgs[0].body, "Received: ") {
		t.Fatalf("messages %+v", msgs)
	}
}

func TestDSNParams(t *testing.T) {
	t.Parallel()
	b := newBackend()
	_, addr := startServer(t, Config{}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com> RET=hdrs ENVID=abc+2Bdef SIZE=10 BODY=8BITMIME", "250")
	c.cmd("RCPT TO:<b@example.org> NOTIFY=success,FAILURE ORCPT=rfc822;b@example.org", "250")
	c.cmd("RCPT TO:<c@example.org> NOTIFY=NEVER", "250")
	c.cmd("RCPT TO:<d@example.org> NOTIFY=NEVER,SUCCESS", "501 5.5.4")
	c.cmd("DATA", "354")
	c.cmd("Subject: x\r\n\r\ny\r\n.", "250")
	_, msgs, _ := b.snapshot()
	if len(msgs) != 1 {
		t.Fatal("no message")
	}
	env := msgs[0].env
	want := Envelope{From: "a@example.com", Ret: "HDRS", EnvID: "abc+def", Size: 10, Body8Bit: true, Recipients: []Rcpt{
		{Address: "b@example.org", Notify: "SUCCESS,FAILURE", ORCPT: "rfc822;b@example.org"},
		{Address: "c@example.org", Notify: "NEVER"},
	}}
	if env.From != want.From || env.Ret != want.Ret || env.EnvID != want.EnvID || env.Size != want.Size || !env.Body8Bit ||
		len(env.Recipients) != 2 || env.Recipients[0] != want.Recipients[0] || env.Recipients[1] != want.Recipients[1] {
		t.Fatalf("envelope %+v, want %+v", env, want)
	}
	// Two recipients: no "for" clause.
	if strings.Contains(msgs[0].body, " for <") {
		t.Fatalf("for clause with two recipients: %q", msgs[0].body)
	}
}

func TestReceivedHeader(t *testing.T) {
	t.Parallel()
	b := newBackend()
	_, addr := startServer(t, Config{Hostname: "mx.herald.test"}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client(evil).test", "250")
	c.cmd("MAIL FROM:<a@example.com> SMTPUTF8", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.cmd("DATA", "354")
	c.cmd("Subject: x\r\n\r\ny\r\n.", "250")
	_, msgs, _ := b.snapshot()
	body := msgs[0].body
	hdr := body[:strings.Index(body, "Subject:")]
	for _, l := range strings.Split(strings.TrimSuffix(hdr, "\r\n"), "\r\n") {
		if len(l) > 78 {
			t.Errorf("line longer than 78: %q", l)
		}
	}
	unfolded := strings.ReplaceAll(hdr, "\r\n\t", " ")
	re := regexp.MustCompile(`^Received: from client_evil_\.test \(\[127\.0\.0\.1\]\) by mx\.herald\.test \(Herald\) with UTF8SMTP for <b@example\.org>; [A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}\r\n$`)
	if !re.MatchString(unfolded) {
		t.Fatalf("Received header %q", hdr)
	}
	if !strings.Contains(hdr, "\r\n\t") {
		t.Fatalf("long header not folded: %q", hdr)
	}
}

func TestShutdown(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{}, b)
	idle := dial(t, addr)
	idle.expect("220 ")
	busy := dial(t, addr)
	busy.expect("220 ")
	busy.cmd("EHLO client.test", "250")
	busy.cmd("MAIL FROM:<a@example.com>", "250")
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- srv.Shutdown(ctx)
	}()
	// The idle session is closed with 421; the transaction completes.
	idle.expect("421 4.3.2")
	idle.expectClosed()
	busy.cmd("RCPT TO:<b@example.org>", "250")
	busy.cmd("DATA", "354")
	busy.cmd("Subject: x\r\n\r\nlast one\r\n.", "250")
	busy.expect("421 4.3.2")
	busy.expectClosed()
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := dialErr(addr); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
	if _, msgs, _ := b.snapshot(); len(msgs) != 1 {
		t.Fatalf("%d messages", len(msgs))
	}
}

func TestShutdownDeadline(t *testing.T) {
	t.Parallel()
	srv, addr := startServer(t, Config{}, newBackend())
	busy := dial(t, addr)
	busy.expect("220 ")
	busy.cmd("EHLO client.test", "250")
	busy.cmd("MAIL FROM:<a@example.com>", "250")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v", err)
	}
	busy.expectClosed()
	if n := srv.Stats().SessionsActive; n != 0 {
		t.Fatalf("%d sessions active", n)
	}
}

func TestNoGoroutineLeak(t *testing.T) {
	// Not parallel: it counts goroutines.
	srvTLS, _ := testTLS(t)
	srv, addr := startServer(t, Config{TLSConfig: srvTLS, MaxErrors: 3}, newBackend())
	base := runtime.NumGoroutine()
	bad := []string{
		"\x00\x01\x02garbage\r\n",
		"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nhalf a message",
		"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nBDAT 100\r\nshort",
		"EHLO x\r\nSTARTTLS\r\n\x16\x03\x01garbage handshake",
		strings.Repeat("A", 70000),
		"EHLO x\r\nAUTH LOGIN\r\n",
		"FOO\r\nBAR\r\nBAZ\r\nQUX\r\n",
	}
	for i := 0; i < 30; i++ {
		c := dial(t, addr)
		c.expect("220 ") // else the pregreet test refuses most of these
		c.send(bad[i%len(bad)])
		c.conn.Close()
	}
	waitFor(t, "sessions to end", func() bool { return srv.Stats().SessionsActive == 0 })
	waitFor(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= base })
	if srv.Stats().SessionsTotal < 30 {
		t.Fatalf("stats %+v", srv.Stats())
	}
}

func TestPythonSmtplib(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/python3"); err != nil {
		t.Skip("no /usr/bin/python3")
	}
	srvTLS, _ := testTLS(t)
	b := newBackend()
	_, addr := startServer(t, Config{Mode: ModeSubmission, TLSConfig: srvTLS}, b)
	host, port, _ := strings.Cut(addr, ":")
	script := `
import smtplib, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP(sys.argv[1], int(sys.argv[2]), timeout=10)
s.ehlo("python.test")
s.starttls(context=ctx)
s.ehlo("python.test")
assert "auth" in s.esmtp_features, s.esmtp_features
s.login("alice", "secret")
msg = "Subject: from python\r\n\r\n.leading dot\r\nbody\r\n"
s.sendmail("alice@example.com", ["bob@example.org"], msg, mail_options=["BODY=8BITMIME"], rcpt_options=["NOTIFY=FAILURE"])
s.quit()
`
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", script, host, port).CombinedOutput()
	if err != nil {
		t.Fatalf("smtplib: %v\n%s", err, out)
	}
	_, msgs, _ := b.snapshot()
	if len(msgs) != 1 || !strings.HasSuffix(msgs[0].body, "Subject: from python\r\n\r\n.leading dot\r\nbody\r\n") ||
		msgs[0].env.Recipients[0].Notify != "FAILURE" || msgs[0].conn.AuthUser != "alice" {
		t.Fatalf("delivered %+v", msgs)
	}
}

func TestSessionTimeout(t *testing.T) {
	t.Parallel()
	_, addr := startServer(t, Config{IdleTimeout: time.Second, SessionTimeout: 300 * time.Millisecond}, newBackend())
	c := dial(t, addr)
	c.expect("220 ")
	start := time.Now()
	// Busy but never idle: only the session limit can end it.
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		<-tick.C
		c.send("NOOP\r\n")
		r := c.reply()
		if strings.HasPrefix(r, "250") {
			if time.Since(start) > 3*time.Second {
				t.Fatal("session limit not enforced")
			}
			continue
		}
		if !strings.HasPrefix(r, "421 4.4.2") || !strings.Contains(r, "Session time limit") {
			t.Fatalf("got %q", r)
		}
		break
	}
	c.expectClosed()
}

// A message is read through a larger buffer than the commands around it;
// input pipelined across the switches is neither lost nor reordered: the
// body sent in the same write as DATA, and the next transaction, more
// than a small buffer's worth of it, sent in the same write as the end of
// the message.
func TestPipelinedAcrossDataBuffer(t *testing.T) {
	t.Parallel()
	b := newBackend()
	_, addr := startServer(t, Config{}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n", 2000) // 128 KB
	next := "MAIL FROM:<c@example.com>\r\nRCPT TO:<d@example.org>\r\n" + strings.Repeat("NOOP\r\n", 1000) + "DATA\r\n"
	c.send("MAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\nSubject: one\r\n\r\n" + big + ".\r\n" + next)
	c.expect("250 ")
	c.expect("250 ")
	c.expect("354 ")
	c.expect("250 2.0.0 OK queued as")
	c.expect("250 ")
	c.expect("250 ")
	for range 1000 {
		c.expect("250 ")
	}
	c.expect("354 ")
	c.send("Subject: two\r\n\r\nsmall\r\n.\r\n")
	c.expect("250 2.0.0 OK queued as")
	_, msgs, _ := b.snapshot()
	if len(msgs) != 2 || !strings.HasSuffix(string(msgs[0].body), "Subject: one\r\n\r\n"+big) ||
		!strings.HasSuffix(string(msgs[1].body), "Subject: two\r\n\r\nsmall\r\n") {
		t.Fatalf("got %d messages, want the two sent whole", len(msgs))
	}
}

// The STARTTLS injection defence also covers input carried over from the
// message's buffer: more than a small buffer's worth of commands sent in
// clear text after STARTTLS, in the write that ended a message, is
// discarded, not run inside TLS.
func TestSTARTTLSInjectionAfterMessage(t *testing.T) {
	t.Parallel()
	srvTLS, cliTLS := testTLS(t)
	b := newBackend()
	_, addr := startServer(t, Config{TLSConfig: srvTLS}, b)
	c := dial(t, addr)
	c.expect("220 ")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	c.cmd("RCPT TO:<b@example.org>", "250")
	c.cmd("DATA", "354")
	c.send("Subject: x\r\n\r\nbody\r\n.\r\nSTARTTLS\r\n" + strings.Repeat("NOOP\r\n", 1000) + "EHLO injected.test\r\nMAIL FROM:<injected@example.com>\r\n")
	c.expect("250 2.0.0 OK queued as")
	c.expect("220 2.0.0")
	tc := c.upgrade(cliTLS)
	tc.cmd("RCPT TO:<b@example.org>", "503 5.5.1")
	_, _, mails := b.snapshot()
	if len(mails) != 1 {
		t.Fatalf("injected command executed: %d transactions", len(mails))
	}
}
