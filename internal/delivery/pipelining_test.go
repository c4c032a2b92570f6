package delivery_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// scriptClient returns a Client that routes domain to the script server.
func scriptClient(t testing.TB, domain string, s *testmx.Script) *delivery.Client {
	t.Helper()
	d := testdns.Start(t)
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := delivery.New(delivery.Config{
		HELO:           "out.herald.test",
		ConnectTimeout: time.Second,
		CommandTimeout: 2 * time.Second,
		DataTimeout:    2 * time.Second,
		Routes:         map[string]string{domain: s.Addr()},
	}, r, nil)
	t.Cleanup(c.Close)
	return c
}

// verbs returns the commands' verbs (with the RCPT address), in order.
func verbs(cmds []testmx.ScriptCommand) []string {
	var v []string
	for _, c := range cmds {
		f, _, _ := strings.Cut(c.Line, " FROM:")
		f, _, _ = strings.Cut(f, ">")
		v = append(v, f)
	}
	return v
}

// envelopeBurst finds MAIL and checks that it, the RCPTs and DATA after it
// came in one read, each RCPT and DATA before MAIL's reply was sent.
func envelopeBurst(t *testing.T, cmds []testmx.ScriptCommand, from, rcpts int) {
	t.Helper()
	mail := cmds[from]
	if !strings.HasPrefix(mail.Line, "MAIL FROM:") {
		t.Fatalf("command %d = %q, want MAIL", from, mail.Line)
	}
	for k := 1; k <= rcpts+1; k++ {
		c := cmds[from+k]
		want := "RCPT TO:"
		if k == rcpts+1 {
			want = "DATA"
		}
		if !strings.HasPrefix(c.Line, want) || c.Burst != mail.Burst || !c.Early {
			t.Fatalf("command %d = %+v, want %s in MAIL's burst %d, sent before MAIL's reply", from+k, c, want, mail.Burst)
		}
	}
}

func TestPipeliningMixedRecipients(t *testing.T) {
	t.Parallel()
	s := testmx.StartScript(t, "127.0.0.1:0", testmx.ScriptConfig{
		Pipelining: true,
		RcptReplies: map[string]string{
			"b@pipe.test": "550 5.1.1 no such user",
			"c@pipe.test": "450 4.2.1 mailbox busy",
		},
	})
	c := scriptClient(t, "pipe.test", s)
	res := deliver(t, c, request("pipe.test", "a@pipe.test", "b@pipe.test", "c@pipe.test", "d@pipe.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	expect(t, res[1], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	expect(t, res[2], delivery.Temporary, 450, smtp.EnhancedCode{4, 2, 1})
	expect(t, res[3], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if res[1].Text != "no such user" || res[2].Text != "mailbox busy" {
		t.Fatalf("texts %q, %q", res[1].Text, res[2].Text)
	}
	cmds := s.Commands()
	envelopeBurst(t, cmds, 1, 4)
	if b := s.Bodies(); len(b) != 1 || string(b[0]) != body {
		t.Fatalf("bodies = %q", b)
	}
	// The next message reuses the connection (after an RSET that checks
	// it is alive) and pipelines its envelope again.
	res = deliver(t, c, request("pipe.test", "e@pipe.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	cmds = s.Commands()
	if got := strings.Join(verbs(cmds), ","); got != "EHLO out.herald.test,MAIL,RCPT TO:<a@pipe.test,RCPT TO:<b@pipe.test,"+
		"RCPT TO:<c@pipe.test,RCPT TO:<d@pipe.test,DATA,RSET,MAIL,RCPT TO:<e@pipe.test,DATA" {
		t.Fatalf("commands = %s", got)
	}
	envelopeBurst(t, cmds, 8, 1)
	if cmds[7].Burst != cmds[8].Burst || cmds[7].Early {
		t.Fatalf("RSET %+v, want it first in the envelope's burst %d", cmds[7], cmds[8].Burst)
	}
}

// A pooled connection the remote has closed does not answer the RSET
// pipelined ahead of the envelope: the message goes over a new
// connection, and nothing is recorded from the dead one.
func TestPipeliningStalePooledConnection(t *testing.T) {
	t.Parallel()
	s := testmx.StartScript(t, "127.0.0.1:0", testmx.ScriptConfig{Pipelining: true})
	c := scriptClient(t, "pipe.test", s)
	deliver(t, c, request("pipe.test", "a@pipe.test"))
	s.DropConnections()
	res := deliver(t, c, request("pipe.test", "b@pipe.test", "<bad>@pipe.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	expect(t, res[1], delivery.Permanent, 501, smtp.EnhancedCode{5, 1, 3})
	got := strings.Join(verbs(s.Commands()), ",")
	if !strings.HasSuffix(got, "DATA,EHLO out.herald.test,MAIL,RCPT TO:<b@pipe.test,DATA") {
		t.Fatalf("commands = %s", got)
	}
	if b := s.Bodies(); len(b) != 2 {
		t.Fatalf("%d bodies, want 2", len(b))
	}
}

// When every RCPT is refused the pipelined DATA is refused too: no body
// is sent, the transaction is reset and the connection stays usable.
func TestPipeliningAllRecipientsRefused(t *testing.T) {
	t.Parallel()
	for _, dataReply := range []string{"", "354 go ahead anyway"} {
		t.Run(fmt.Sprintf("DATA %q", dataReply), func(t *testing.T) {
			t.Parallel()
			s := testmx.StartScript(t, "127.0.0.1:0", testmx.ScriptConfig{
				Pipelining:      true,
				DataReplyNoRcpt: dataReply,
				RcptReplies: map[string]string{
					"a@pipe.test": "550 5.1.1 no such user",
					"b@pipe.test": "451 4.3.0 try later",
				},
			})
			c := scriptClient(t, "pipe.test", s)
			res := deliver(t, c, request("pipe.test", "a@pipe.test", "b@pipe.test"))
			expect(t, res[0], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
			expect(t, res[1], delivery.Temporary, 451, smtp.EnhancedCode{4, 3, 0})
			bodies := s.Bodies()
			switch {
			case dataReply == "" && len(bodies) != 0:
				t.Fatalf("body sent after DATA was refused: %q", bodies)
			case dataReply != "" && (len(bodies) != 1 || len(bodies[0]) != 0):
				t.Fatalf("after 354 with no recipient, want an empty message ended at once, got %q", bodies)
			}
			res = deliver(t, c, request("pipe.test", "c@pipe.test"))
			expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
			cmds := s.Commands()
			if got := strings.Join(verbs(cmds), ","); got != "EHLO out.herald.test,MAIL,RCPT TO:<a@pipe.test,RCPT TO:<b@pipe.test,"+
				"DATA,RSET,RSET,MAIL,RCPT TO:<c@pipe.test,DATA" {
				t.Fatalf("commands = %s", got)
			}
			envelopeBurst(t, cmds, 1, 2)
			if b := s.Bodies(); string(b[len(b)-1]) != body {
				t.Fatalf("bodies = %q", b)
			}
		})
	}
}

// A refused MAIL fails every recipient with its reply; the RCPT and DATA
// replies that follow are consumed, so the connection stays in step: the
// next transaction on it reads its own replies.
func TestPipeliningMailRefused(t *testing.T) {
	t.Parallel()
	s := testmx.StartScript(t, "127.0.0.1:0", testmx.ScriptConfig{
		Pipelining: true,
		MailReply:  "553 5.7.1 sender refused",
	})
	c := scriptClient(t, "pipe.test", s)
	for range 2 {
		res := deliver(t, c, request("pipe.test", "a@pipe.test", "b@pipe.test"))
		for _, r := range res {
			expect(t, r, delivery.Permanent, 553, smtp.EnhancedCode{5, 7, 1})
			if r.Text != "sender refused" {
				t.Fatalf("text %q", r.Text)
			}
		}
	}
	cmds := s.Commands()
	if got := strings.Join(verbs(cmds), ","); got != "EHLO out.herald.test,MAIL,RCPT TO:<a@pipe.test,RCPT TO:<b@pipe.test,DATA,RSET,"+
		"RSET,MAIL,RCPT TO:<a@pipe.test,RCPT TO:<b@pipe.test,DATA,RSET" {
		t.Fatalf("commands = %s", got)
	}
	envelopeBurst(t, cmds, 1, 2)
	envelopeBurst(t, cmds, 7, 2)
	if len(s.Bodies()) != 0 {
		t.Fatal("body sent after MAIL was refused")
	}
}

// A 421 in the middle of the pipelined replies ends the transaction: what
// was refused before stays refused, the rest is deferred with the 421,
// and the connection is not reused.
func TestPipelining421(t *testing.T) {
	t.Parallel()
	s := testmx.StartScript(t, "127.0.0.1:0", testmx.ScriptConfig{
		Pipelining: true,
		RcptReplies: map[string]string{
			"b@pipe.test": "550 5.1.1 no such user",
			"c@pipe.test": "421 4.3.2 shutting down",
		},
	})
	c := scriptClient(t, "pipe.test", s)
	res := deliver(t, c, request("pipe.test", "a@pipe.test", "b@pipe.test", "c@pipe.test", "d@pipe.test"))
	expect(t, res[0], delivery.Temporary, 421, smtp.EnhancedCode{4, 3, 2})
	expect(t, res[1], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	expect(t, res[2], delivery.Temporary, 421, smtp.EnhancedCode{4, 3, 2})
	expect(t, res[3], delivery.Temporary, 421, smtp.EnhancedCode{4, 3, 2})
	res = deliver(t, c, request("pipe.test", "e@pipe.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if n := strings.Count(strings.Join(verbs(s.Commands()), ","), "EHLO"); n != 2 {
		t.Fatalf("%d EHLOs, want a new connection after the 421", n)
	}
	if len(s.Bodies()) != 1 {
		t.Fatalf("bodies = %q", s.Bodies())
	}
}

// A server that does not offer PIPELINING gets one command at a time:
// each command arrives after the reply to the one before it was sent.
func TestLockStepWithoutPipelining(t *testing.T) {
	t.Parallel()
	s := testmx.StartScript(t, "127.0.0.1:0", testmx.ScriptConfig{
		RcptReplies: map[string]string{"b@pipe.test": "550 5.1.1 no such user"},
	})
	c := scriptClient(t, "pipe.test", s)
	res := deliver(t, c, request("pipe.test", "a@pipe.test", "b@pipe.test", "c@pipe.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	expect(t, res[1], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	expect(t, res[2], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	cmds := s.Commands()
	if got := strings.Join(verbs(cmds), ","); got != "EHLO out.herald.test,MAIL,RCPT TO:<a@pipe.test,RCPT TO:<b@pipe.test,RCPT TO:<c@pipe.test,DATA" {
		t.Fatalf("commands = %s", got)
	}
	for i, c := range cmds {
		if c.Early || (i > 0 && c.Burst == cmds[i-1].Burst) {
			t.Fatalf("command %d %+v arrived before the reply to %+v", i, c, cmds[i-1])
		}
	}
	if b := s.Bodies(); len(b) != 1 || string(b[0]) != body {
		t.Fatalf("bodies = %q", b)
	}
}

// BenchmarkPipelining delivers messages of 5 recipients to a sink that
// answers every command 20 ms after it arrived (a distant MX), with
// PIPELINING and in lock-step: one sender over one reused connection
// (ms/msg is the per-message latency), and 10 senders over up to 10.
func BenchmarkPipelining(b *testing.B) {
	const rcpts = 5
	for _, senders := range []int{1, 10} {
		for _, on := range []bool{false, true} {
			name := fmt.Sprintf("lockstep/senders=%d", senders)
			if on {
				name = fmt.Sprintf("pipelined/senders=%d", senders)
			}
			b.Run(name, func(b *testing.B) {
				s := testmx.StartScript(b, "127.0.0.1:0", testmx.ScriptConfig{Pipelining: true, Delay: 20 * time.Millisecond})
				c := scriptClient(b, "far.test", s)
				delivery.SetPipelining(c, on)
				var to []string
				for i := range rcpts {
					to = append(to, fmt.Sprintf("r%d@far.test", i))
				}
				ctx := context.Background()
				deliverOne := func() error {
					for _, r := range c.Deliver(ctx, request("far.test", to...)) {
						if r.Status != delivery.Delivered {
							return fmt.Errorf("result %+v", r)
						}
					}
					return nil
				}
				// Open the connections first: connect and EHLO are not
				// part of the per-message cost.
				warm := make(chan error, senders)
				for range senders {
					go func() { warm <- deliverOne() }()
				}
				for range senders {
					if err := <-warm; err != nil {
						b.Fatal(err)
					}
				}
				work := make(chan struct{}, b.N)
				for range b.N {
					work <- struct{}{}
				}
				close(work)
				errs := make(chan error, senders)
				b.ResetTimer()
				start := time.Now()
				for range senders {
					go func() {
						var err error
						for range work {
							if e := deliverOne(); e != nil && err == nil {
								err = e
							}
						}
						errs <- err
					}()
				}
				for range senders {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				el := time.Since(start)
				b.ReportMetric(float64(b.N)/el.Seconds(), "msgs/s")
				b.ReportMetric(el.Seconds()*1000*float64(senders)/float64(b.N), "ms/msg")
			})
		}
	}
}
