package transport_test

import (
	"context"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/local"
	"github.com/heraldmail/herald/internal/local/httproute"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/transport"
)

// Simulator recipients get their fixed outcomes without a DNS query or a
// connection, even with a smarthost that would take every other domain.
func TestSimulatorOutcomesStayInProcess(t *testing.T) {
	e := newEnv(t)
	// A smarthost that counts connections; static routes would go the
	// same way.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	d := testdns.Start(t)
	res, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	client := delivery.New(delivery.Config{HELO: "out.herald.test", Smarthost: ln.Addr().String(),
		Routes: map[string]string{"simulator.herald.invalid": ln.Addr().String()}, ConnectTimeout: time.Second}, res, discard())
	defer client.Close()
	tr := transport.New(e.st, local.NewMaildir(e.mail), client, httproute.New(httproute.Options{}), discard())

	rcpts := []store.Recipient{
		{ID: 1, Address: "delivered@simulator.herald.invalid"},
		{ID: 2, Address: "bounce+x@simulator.herald.invalid"},
		{ID: 3, Address: "softbounce@simulator.herald.invalid"},
		{ID: 4, Address: "softbounce+2@simulator.herald.invalid", Attempts: 1},
		{ID: 5, Address: "Complaint@Simulator.Herald.Invalid"},
		{ID: 6, Address: "nobody@simulator.herald.invalid"},
	}
	body := func() (io.ReadCloser, error) { t.Fatal("the simulator read the body"); return nil, nil }
	got := tr.Deliver(context.Background(), &store.Message{ID: "m1", Sender: "a@example.org"}, "Simulator.Herald.Invalid", rcpts, body)
	want := []struct {
		res        queue.Result
		reply      string
		retryAfter time.Duration
	}{
		{queue.Delivered, "250 2.0.0 simulator: delivered", 0},
		{queue.Permanent, "550 5.1.1 simulator: mailbox does not exist (hard bounce)", 0},
		{queue.Temporary, "451 4.2.0 simulator: mailbox temporarily unavailable (soft bounce; delivered at the retry)", time.Minute},
		{queue.Delivered, "250 2.0.0 simulator: delivered", 0},
		{queue.Delivered, "250 2.0.0 simulator: delivered", 0},
		{queue.Permanent, "550 5.1.1 simulator: no such simulator address (known: delivered, bounce, softbounce, complaint, suppressed)", 0},
	}
	if len(got) != len(want) {
		t.Fatalf("%d attempts for %d recipients", len(got), len(want))
	}
	for i, a := range got {
		w := want[i]
		if a.RecipientID != rcpts[i].ID || a.Result != w.res || a.Reply() != w.reply || a.RetryAfter != w.retryAfter || a.RemoteMTA != "simulator" {
			t.Errorf("%s: %v %q retry %s mta %q; want %v %q retry %s", rcpts[i].Address, a.Result, a.Reply(), a.RetryAfter, a.RemoteMTA, w.res, w.reply, w.retryAfter)
		}
	}
	if n := conns.Load(); n != 0 {
		t.Errorf("%d connections to the smarthost", n)
	}
	if n := d.Queries(); n != 0 {
		t.Errorf("%d DNS queries", n)
	}
}

// complaints records what the simulator hands to feedback processing.
type complaints struct {
	rcpts   []string
	reports [][]byte
}

func (c *complaints) Sender(msgID, sender string) string {
	return "bounces+" + strings.ToLower(msgID) + "@" + sender[strings.LastIndexByte(sender, '@')+1:]
}

func (c *complaints) Consume(_ context.Context, rcpt string, report []byte) error {
	c.rcpts = append(c.rcpts, rcpt)
	c.reports = append(c.reports, report)
	return nil
}

// A delivered complaint@ recipient becomes an ARF report to the message's
// VERP address, parsed by the same parser as a provider's; nothing else
// does.
func TestSimulatorComplaintReport(t *testing.T) {
	e := newEnv(t)
	c := &complaints{}
	e.tr.SetComplaints(c)
	msg := &store.Message{ID: "M1", Sender: "app@acme.test", Recipients: []store.Recipient{
		{ID: 1, Address: "complaint+a@simulator.herald.invalid"},
		{ID: 2, Address: "delivered@simulator.herald.invalid"},
		{ID: 3, Address: "complaint@example.org"},
	}}
	e.tr.Recorded(context.Background(), msg, []queue.Attempt{
		{RecipientID: 1, Result: queue.Delivered}, {RecipientID: 2, Result: queue.Delivered}, {RecipientID: 3, Result: queue.Delivered},
	})
	e.tr.Recorded(context.Background(), msg, []queue.Attempt{{RecipientID: 1, Result: queue.Temporary}})
	if len(c.rcpts) != 1 || c.rcpts[0] != "bounces+m1@acme.test" {
		t.Fatalf("reports to %v; want one, to the message's VERP address", c.rcpts)
	}
	fb, err := dsn.ParseARF(strings.NewReader(string(c.reports[0])))
	if err != nil {
		t.Fatalf("the report does not parse as ARF: %v\n%s", err, c.reports[0])
	}
	if fb.Type != "abuse" || fb.OriginalMailFrom != "bounces+m1@acme.test" || len(fb.OriginalRcptTo) != 1 ||
		fb.OriginalRcptTo[0] != "complaint+a@simulator.herald.invalid" || fb.ReportingMTA != "simulator.herald.invalid" {
		t.Errorf("report %+v", fb)
	}
}

// The throttle never holds back nor backs off the simulator.
func TestSimulatorNotThrottled(t *testing.T) {
	e := newEnv(t)
	rt := &transport.RemoteThrottle{T: nil, Dir: e.st}
	release, _, ok := rt.Acquire("simulator.herald.invalid")
	if !ok {
		t.Fatal("the simulator was throttled")
	}
	release()
}
