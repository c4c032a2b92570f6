package notify_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/notify"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
)

type bodies map[string]string

func (b bodies) OpenBody(_ context.Context, id string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(b[id])), nil
}

// recorder stands in for the acceptance path and keeps what it accepted;
// refuse, if set, may refuse a request instead.
type recorder struct {
	reqs   []*submit.Request
	refuse func(to string) error
}

func (r *recorder) Submit(_ context.Context, req *submit.Request) (submit.Result, error) {
	if r.refuse != nil {
		if err := r.refuse(req.Recipients[0].Address); err != nil {
			return submit.Result{}, err
		}
	}
	r.reqs = append(r.reqs, req)
	return submit.Result{ID: "DSN1", Queued: 1}, nil
}

func failed(addr string) []queue.BouncedRecipient {
	return []queue.BouncedRecipient{{Recipient: store.Recipient{ID: 1, Address: addr},
		Attempt: queue.Attempt{RecipientID: 1, Result: queue.Permanent, Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 1}, Text: "no such user", RemoteMTA: "mx.remote.test"}}}
}

func TestNotificationsAndDoubleBounces(t *testing.T) {
	t.Parallel()
	reg := metrics.NewRegistry()
	rec := &recorder{}
	n := &notify.Notifier{Hostname: "mx.herald.test", Postmaster: "postmaster@herald.test",
		Bodies: bodies{"ORIG": "From: a@b.test\r\nSubject: hi\r\n\r\nbody\r\n", "DSN0": "From: MAILER-DAEMON@mx.herald.test\r\n\r\nbounce\r\n"},
		Submit: rec, Log: slog.New(slog.DiscardHandler), Counter: reg.NewCounterVec("dsn", "", "action")}
	ctx := context.Background()

	// An ordinary failure: a DSN to the sender, as Herald's own mail.
	if err := n.Bounce(ctx, &store.Message{ID: "ORIG", Sender: "a@b.test", Received: time.Now()}, queue.BounceFailed, failed("x@remote.test")); err != nil {
		t.Fatal(err)
	}
	// The DSN itself failed: the postmaster gets it.
	if err := n.Bounce(ctx, &store.Message{ID: "DSN0", Sender: "", Source: notify.SourceDSN}, queue.BounceFailed, failed("a@b.test")); err != nil {
		t.Fatal(err)
	}
	// A delay of a null-sender message: nothing.
	if err := n.Bounce(ctx, &store.Message{ID: "DSN0", Sender: "", Source: notify.SourceDSN}, queue.BounceDelayed, failed("a@b.test")); err != nil {
		t.Fatal(err)
	}
	// The copy to the postmaster failed too: dropped, counted, not looped.
	if err := n.Bounce(ctx, &store.Message{ID: "DSN0", Sender: "", Source: notify.SourceDoubleBounce}, queue.BounceFailed, failed("postmaster@herald.test")); err != nil {
		t.Fatal(err)
	}
	if len(rec.reqs) != 2 {
		t.Fatalf("%d notifications submitted, want 2", len(rec.reqs))
	}
	for i, want := range []struct{ to, source string }{{"a@b.test", notify.SourceDSN}, {"postmaster@herald.test", notify.SourceDoubleBounce}} {
		r := rec.reqs[i]
		if r.Identity.Kind != submit.System || r.Identity.Source != want.source || r.From != "" ||
			len(r.Recipients) != 1 || r.Recipients[0].Address != want.to || r.Recipients[0].Notify != "NEVER" {
			t.Errorf("notification %d: %+v", i, r)
		}
		body, _ := io.ReadAll(r.Body)
		rep, err := dsn.Parse(strings.NewReader(string(body)))
		if err != nil || len(rep.Recipients) != 1 || rep.Recipients[0].Action != dsn.Failed {
			t.Errorf("notification %d is not a failure DSN: %v %+v", i, err, rep)
		}
	}
	if v := n.Counter.Value("double-bounce"); v != 1 {
		t.Errorf("double-bounce counted %d times, want 1", v)
	}
	if v := n.Counter.Value("dropped"); v != 1 {
		t.Errorf("dropped counted %d times, want 1", v)
	}
}

// A notification the acceptance path refuses for good (an unknown local
// sender) goes to the postmaster; refused there too it is dropped rather
// than retried forever; a temporary refusal is the queue's to retry.
func TestRefusedNotifications(t *testing.T) {
	t.Parallel()
	rec := &recorder{}
	n := &notify.Notifier{Hostname: "mx.herald.test", Postmaster: "postmaster@herald.test", Bodies: bodies{"M": "Subject: x\r\n\r\nx\r\n"},
		Submit: rec, Log: slog.New(slog.DiscardHandler), Counter: metrics.NewRegistry().NewCounterVec("dsn", "", "action")}
	msg := &store.Message{ID: "M", Sender: "nobody@herald.test", Account: "acme"}
	ctx := context.Background()
	unknown := smtp.Errorf(550, smtp.EnhancedCode{5, 1, 1}, "No such user here")
	rec.refuse = func(to string) error {
		if to == "nobody@herald.test" {
			return unknown
		}
		return nil
	}
	if err := n.Bounce(ctx, msg, queue.BounceFailed, failed("x@remote.test")); err != nil {
		t.Fatal(err)
	}
	if len(rec.reqs) != 1 || rec.reqs[0].Recipients[0].Address != "postmaster@herald.test" || rec.reqs[0].Identity.Account != "acme" {
		t.Fatalf("refused DSN: %+v, want a copy to the postmaster in the message's account", rec.reqs)
	}
	rec.refuse = func(string) error { return unknown }
	if err := n.Bounce(ctx, msg, queue.BounceFailed, failed("x@remote.test")); err != nil {
		t.Fatalf("refused everywhere: %v, want nil (dropped, not retried)", err)
	}
	if n.Counter.Value("dropped") != 1 {
		t.Error("the dropped notification was not counted")
	}
	rec.refuse = func(string) error { return smtp.Errorf(452, smtp.EnhancedCode{4, 3, 1}, "disk full") }
	if err := n.Bounce(ctx, msg, queue.BounceFailed, failed("x@remote.test")); err == nil {
		t.Fatal("a temporary refusal was swallowed; the queue must retry the notification")
	}
}
