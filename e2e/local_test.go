package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// Mail for local domains lands in Maildir, through aliases and catch-alls,
// and an alias to an external address is relayed.
func TestLocalDeliveryAliasesAndForward(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	h.addUser("bob@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})
	ctx := context.Background()
	st := h.app.Store()
	must(t, st.AddAlias(ctx, store.Alias{Address: "team@example.com", Targets: []string{"alice@example.com", "bob@example.com"}}))
	must(t, st.AddAlias(ctx, store.Alias{Address: "fwd@example.com", Targets: []string{"outside@remote.test"}}))

	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO sender.test")
	if code, _ := c.send("x@sender.test", []string{"alice@example.com"}, testBody("direct")); code != 250 {
		t.Fatalf("direct: %d", code)
	}
	if code, _ := c.send("x@sender.test", []string{"team@example.com"}, testBody("alias")); code != 250 {
		t.Fatalf("alias: %d", code)
	}
	if code, _ := c.send("x@sender.test", []string{"fwd@example.com"}, testBody("forward")); code != 250 {
		t.Fatalf("forward: %d", code)
	}
	// Unknown address is refused until a catch-all exists; the change takes
	// effect without a restart.
	c.ok(250, "MAIL FROM:<x@sender.test>")
	if code, _ := c.cmd("RCPT TO:<random@example.com>"); code != 550 {
		t.Fatalf("unknown recipient accepted: %d", code)
	}
	c.ok(250, "RSET")
	must(t, st.AddAlias(ctx, store.Alias{Address: "@example.com", Targets: []string{"bob@example.com"}}))
	if code, _ := c.send("x@sender.test", []string{"random@example.com"}, testBody("catchall")); code != 250 {
		t.Fatalf("catch-all: %d", code)
	}

	alice := h.waitMaildir("alice@example.com", 2)
	bob := h.waitMaildir("bob@example.com", 2)
	joined := strings.Join(alice, "\n") + strings.Join(bob, "\n")
	for _, subj := range []string{"Subject: direct", "Subject: alias", "Subject: catchall"} {
		if !strings.Contains(joined, subj) {
			t.Errorf("missing %q in mailboxes", subj)
		}
	}
	if !strings.Contains(alice[0], "Received: from sender.test") {
		t.Errorf("no Received header in the local copy:\n%s", headerBlock(alice[0]))
	}
	got := mx.WaitMessages(t, 1, 10*time.Second)
	if got[0].Rcpts[0] != "outside@remote.test" || !strings.Contains(string(got[0].Body), "Subject: forward") {
		t.Fatalf("forward delivered %v", got[0].Rcpts)
	}
}

// Smuggling attempts: bare LF or CR dot sequences never end DATA and never
// produce a second message.
func TestSmugglingNeverMakesASecondMessage(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	tricks := map[string]string{
		"LF.LF":   "\n.\n",
		"CR.CR":   "\r.\r",
		"LF.CRLF": "\n.\r\n",
		"CRLF.LF": "\r\n.\n",
		"CR.CRLF": "\r.\r\n",
	}
	accepted := 0
	for name, seq := range tricks {
		c := dial(t, h.addr("smtp"))
		c.ok(250, "EHLO attacker.test")
		c.ok(250, "MAIL FROM:<a@attacker.test>")
		c.ok(250, "RCPT TO:<alice@example.com>")
		c.ok(354, "DATA")
		c.raw("Subject: " + name + "\r\n\r\nfirst" + seq +
			"MAIL FROM:<evil@attacker.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n")
		// Whatever the verdict, the session sees the real end of data once
		// and answers exactly one reply for it.
		code, msg := c.reply()
		switch code {
		case 250:
			accepted++
		case 550:
		default:
			t.Errorf("%s: end of data answered %d %s", name, code, msg)
		}
		// QUIT must be answered as QUIT (221): the smuggled commands were
		// not executed as commands.
		if code, msg := c.cmd("QUIT"); code != 221 {
			t.Errorf("%s: after data, QUIT answered %d %s", name, code, msg)
		}
	}
	h.waitQueueEmpty()
	msgs := h.maildir("alice@example.com")
	if len(msgs) != accepted {
		t.Errorf("%d messages delivered for %d accepted transactions", len(msgs), accepted)
	}
	for _, m := range msgs {
		if strings.Contains(headerBlock(m), "Subject: smuggled") {
			t.Errorf("a smuggled message was delivered as its own message:\n%s", m)
		}
		if strings.Contains(strings.ReplaceAll(m, "\r\n", ""), "\n") || strings.Contains(strings.ReplaceAll(m, "\r\n", ""), "\r") {
			t.Errorf("delivered message contains a bare LF or CR:\n%q", m)
		}
	}
}

// An independent client: swaks submits over STARTTLS with AUTH LOGIN, and
// Python's smtplib sends on port 25.
func TestIndependentClients(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	h.addUser("bob@example.com")
	mx := h.remoteMX("remote.test", testmx.Config{})

	if _, err := exec.LookPath("swaks"); err != nil {
		t.Skip("swaks not installed (apt-get install swaks)")
	}
	out, err := exec.Command("swaks", "--server", h.addr("submission"), "--tls", "--auth", "LOGIN",
		"--auth-user", "alice@example.com", "--auth-password", pw,
		"--from", "alice@example.com", "--to", "dave@remote.test", "--header", "Subject: via swaks",
		"--timeout", "10").CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	got := mx.WaitMessages(t, 1, 10*time.Second)
	if !strings.Contains(string(got[0].Body), "Subject: via swaks") {
		t.Fatalf("swaks message body: %q", got[0].Body)
	}

	py := `
import smtplib, sys
host, port = sys.argv[1].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), timeout=10)
s.ehlo("python.test")
s.sendmail("p@python.test", ["bob@example.com"], "Subject: via smtplib\r\n\r\nhello from python\r\n")
s.quit()
`
	out, err = exec.Command("/usr/bin/python3", "-c", py, h.addr("smtp")).CombinedOutput()
	if err != nil {
		t.Fatalf("python smtplib: %v\n%s", err, out)
	}
	if m := h.waitMaildir("bob@example.com", 1)[0]; !strings.Contains(m, "hello from python") {
		t.Fatalf("smtplib message: %q", m)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
