package e2e

import (
	"bytes"
	"net/netip"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// The review's finding: a remote reply with one non-ASCII byte made the
// DSN need SMTPUTF8; the sender's MX lacked it, and the bounce was refused
// (550 5.6.7) and dropped. Now the DSN for a non-SMTPUTF8 message is pure
// ASCII and reaches an MX without SMTPUTF8.
func TestDSNWithUTF8ReplyReachesNonSMTPUTF8Sender(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.Relay.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	rcptMX := h.remoteMX("remote.test", testmx.Config{})
	rcptMX.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "Empfänger unbekannt \xff\xfe größe")
	senderMX := h.remoteMX("sender.test", testmx.Config{SMTPUTF8: false})

	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO client.test")
	c.ok(250, "MAIL FROM:<app@sender.test>")
	c.ok(250, "RCPT TO:<gone@remote.test>")
	c.ok(354, "DATA")
	c.raw(testBody("utf8reply") + ".\r\n")
	c.expect(250)

	got := senderMX.WaitMessages(t, 1, 20*time.Second)
	if len(got) != 1 || got[0].From != "" || len(got[0].Rcpts) != 1 || got[0].Rcpts[0] != "app@sender.test" {
		t.Fatalf("sender's MX got %+v", got)
	}
	body := got[0].Body
	for i, b := range body {
		if b >= 0x80 {
			t.Fatalf("DSN byte %#x at %d is not ASCII:\n%s", b, i, body)
		}
	}
	p, err := dsn.Parse(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("DSN does not parse: %v\n%s", err, body)
	}
	if len(p.Recipients) != 1 || p.Recipients[0].FinalRecipient != "gone@remote.test" ||
		p.Recipients[0].Action != dsn.Failed || p.Recipients[0].Diagnostic != "550 5.1.1 Empf?nger unbekannt ?? gr??e" {
		t.Fatalf("parsed DSN %+v", p.Recipients)
	}
	h.waitQueueEmpty()
}
