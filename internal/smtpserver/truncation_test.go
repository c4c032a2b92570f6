package smtpserver

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/message"
)

// A client that announces a chunk (or starts DATA) and disconnects before
// sending all of it must not get a message queued: Deliver has to see an
// error, never a clean end of the body, and the client gets no 250.
func TestTruncatedTransferQueuesNothing(t *testing.T) {
	t.Parallel()
	tx := "EHLO client.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n"
	for _, tc := range []struct {
		name    string
		replies []string // after the greeting, for the commands in tx and the first chunks
		send    string   // then this, then the client half-closes
	}{
		{"BDAT LAST short", []string{"250", "250 2.1.0", "250 2.1.5"},
			"BDAT 4000 LAST\r\n" + strings.Repeat("x", 200)},
		{"BDAT short, not LAST", []string{"250", "250 2.1.0", "250 2.1.5"},
			"BDAT 4000\r\n" + strings.Repeat("x", 200)},
		{"second chunk LAST short", []string{"250", "250 2.1.0", "250 2.1.5", "250 2.0.0 14 octets"},
			"BDAT 1000 LAST\r\n" + strings.Repeat("y", 100)},
		{"third chunk short", []string{"250", "250 2.1.0", "250 2.1.5", "250 2.0.0 14 octets", "250 2.0.0 7 octets"},
			"BDAT 1000\r\n" + strings.Repeat("z", 999)},
		{"BDAT LAST header only", []string{"250", "250 2.1.0", "250 2.1.5"},
			"BDAT 10 LAST\r\n"},
		{"DATA without end marker", []string{"250", "250 2.1.0", "250 2.1.5", "354"},
			"Subject: cut\r\n\r\nhalf a message\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend()
			srv, addr := startServer(t, Config{}, b)
			c := dial(t, addr)
			c.expect("220 ")
			c.send(tx)
			if strings.HasPrefix(tc.name, "DATA") {
				c.send("DATA\r\n")
			}
			if len(tc.replies) > 3 && !strings.HasPrefix(tc.name, "DATA") {
				c.send("BDAT 14\r\nSubject: x\r\n\r\n")
			}
			if len(tc.replies) > 4 {
				c.send("BDAT 7\r\nhello\r\n")
			}
			for _, want := range tc.replies {
				c.expect(want)
			}
			c.send(tc.send)
			if err := c.conn.(*net.TCPConn).CloseWrite(); err != nil {
				t.Fatal(err)
			}
			// Nothing more: no "250 ... queued", no reply at all.
			rest, err := io.ReadAll(c.r)
			if len(rest) != 0 {
				t.Fatalf("server answered a cut-off transfer with %q (%v)", rest, err)
			}
			waitFor(t, "session end", func() bool { return srv.Stats().SessionsActive == 0 })
			delivers, msgs, _ := b.snapshot()
			if len(msgs) != 0 {
				t.Fatalf("a cut-off message was stored: %q", msgs[0].body)
			}
			if delivers != 1 {
				t.Fatalf("%d Deliver calls, want 1", delivers)
			}
			fails := b.failed()
			if len(fails) != 1 || !errors.Is(fails[0], message.ErrConnection) {
				t.Fatalf("Deliver saw %v, want message.ErrConnection", fails)
			}
			if st := srv.Stats(); st.MessagesAccepted != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}
