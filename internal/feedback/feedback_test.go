package feedback_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/feedback"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/verp"
)

type env struct {
	t   *testing.T
	st  *sqlite.Store
	fb  *feedback.Processor
	ctx context.Context
}

func setup(t *testing.T) *env {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	if err := st.AddAccount(ctx, store.Account{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, verp.KeySize)
	key[0] = 7
	return &env{t: t, st: st, fb: feedback.New(st, key, clock.NewFake(time.Unix(1_800_000_000, 0)), nil), ctx: ctx}
}

// enqueue stores a message of acme to rcpts and returns its ID and VERP
// envelope sender.
func (e *env) enqueue(rcpts ...string) (id, sender string) {
	e.t.Helper()
	m := &store.Message{ID: "MSG" + strings.ReplaceAll(rcpts[0], "@", "-"), Account: "acme", Received: time.Now()}
	m.Sender = e.fb.Sender(m.ID, "app@example.test")
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Address: r, Status: store.StatusQueued})
	}
	b, err := e.st.NewBody()
	if err != nil {
		e.t.Fatal(err)
	}
	b.Write([]byte("Subject: x\r\n\r\nbody\r\n"))
	if _, err := e.st.Enqueue(e.ctx, m, b, time.Time{}); err != nil {
		e.t.Fatal(err)
	}
	return m.ID, m.Sender
}

func bounceFor(t *testing.T, to, rcpt string) []byte {
	t.Helper()
	b, err := dsn.Build(&dsn.Report{ReportingMTA: "mx.remote.test", Sender: to, Action: dsn.Failed,
		Recipients: []dsn.RecipientStatus{{Address: rcpt, Status: smtp.EnhancedCode{5, 1, 1}, RemoteMTA: "mx.remote.test",
			Diagnostic: "550 5.1.1 no such user", LastAttempt: time.Now()}}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) suppressed(addr string) bool {
	e.t.Helper()
	ok, err := e.st.IsSuppressed(e.ctx, "acme", addr)
	if err != nil {
		e.t.Fatal(err)
	}
	return ok
}

func (e *env) events(typ string) []store.Event {
	e.t.Helper()
	evs, err := e.st.ListEvents(e.ctx, store.EventFilter{Account: "acme", Types: []string{typ}})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

// A DSN naming a recipient of the message records a bounce and suppresses
// it; a forged DSN naming anyone else changes nothing.
func TestBounceOnlyForRecipientsOfTheMessage(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id, sender := e.enqueue("real@remote.test", "other@remote.test")
	if err := e.fb.Consume(e.ctx, sender, bounceFor(t, sender, "victim@remote.test")); err != nil {
		t.Fatal(err)
	}
	if e.suppressed("victim@remote.test") || len(e.events(store.EventBounced)) != 0 {
		t.Fatal("a forged DSN for a non-recipient suppressed it or recorded an event")
	}
	if err := e.fb.Consume(e.ctx, sender, bounceFor(t, sender, "Real@Remote.test")); err != nil {
		t.Fatal(err)
	}
	evs := e.events(store.EventBounced)
	if !e.suppressed("real@remote.test") || len(evs) != 1 || evs[0].MessageID != id || evs[0].Recipient != "real@remote.test" {
		t.Fatalf("a DSN for a recipient: suppressed %v, events %+v", e.suppressed("real@remote.test"), evs)
	}
	if e.suppressed("other@remote.test") {
		t.Fatal("the other recipient was suppressed")
	}
	// A token that is not ours is ignored altogether.
	if err := e.fb.Consume(e.ctx, "bounces+aaaaaaaaaaaaaaaaaaaaaa@example.test", bounceFor(t, sender, "other@remote.test")); err != nil || e.suppressed("other@remote.test") {
		t.Fatalf("forged token: %v", err)
	}
}

// After the message left the queue, its recipients are known from its
// events; a message known nowhere is dropped.
func TestBounceAfterTheMessageLeftTheQueue(t *testing.T) {
	t.Parallel()
	e := setup(t)
	id, sender := e.enqueue("late@remote.test")
	if err := e.st.Delete(e.ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := e.fb.Consume(e.ctx, sender, bounceFor(t, sender, "late@remote.test")); err != nil {
		t.Fatal(err)
	}
	if !e.suppressed("late@remote.test") {
		t.Fatal("a bounce for a delivered message was not matched through its events")
	}
	unknown := e.fb.Sender("NOSUCHMESSAGE", "app@example.test")
	if err := e.fb.Consume(e.ctx, unknown, bounceFor(t, unknown, "x@remote.test")); err != nil || e.suppressed("x@remote.test") {
		t.Fatalf("bounce for an unknown message: %v", err)
	}
}

func arf(mailFrom string, rcpts ...string) []byte {
	s := "From: fbl@isp.test\r\nTo: fbl@example.test\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/report; report-type=feedback-report; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n" +
		"--b\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: isp/1\r\nVersion: 1\r\n" +
		"Original-Mail-From: <" + mailFrom + ">\r\n"
	for _, r := range rcpts {
		s += "Original-Rcpt-To: <" + r + ">\r\n"
	}
	return []byte(s + "Reporting-MTA: dns; fbl.isp.test\r\n\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: app@example.test\r\n\r\n--b--\r\n")
}

// Complaints suppress only recipients of the message; a report with the
// recipient redacted counts for a message with one recipient.
func TestComplaints(t *testing.T) {
	t.Parallel()
	e := setup(t)
	_, sender := e.enqueue("angry@remote.test")
	e.fb.Complaint(e.ctx, mustARF(t, arf(sender, "bystander@remote.test")))
	if e.suppressed("bystander@remote.test") || len(e.events(store.EventComplained)) != 0 {
		t.Fatal("a complaint naming a non-recipient was acted on")
	}
	e.fb.Complaint(e.ctx, mustARF(t, arf(sender))) // redacted
	if !e.suppressed("angry@remote.test") || len(e.events(store.EventComplained)) != 1 {
		t.Fatal("a redacted complaint about a one-recipient message was not matched")
	}
	_, sender2 := e.enqueue("a@remote.test", "b@remote.test")
	if err := e.fb.Consume(e.ctx, sender2, arf(sender2)); err != nil {
		t.Fatal(err)
	}
	if e.suppressed("a@remote.test") || e.suppressed("b@remote.test") {
		t.Fatal("a redacted complaint about a two-recipient message suppressed someone")
	}
}

func mustARF(t *testing.T, b []byte) *dsn.Feedback {
	t.Helper()
	fb, err := dsn.ParseARF(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

// A synchronous hard bounce suppresses the recipient; a soft one does not.
func TestAttemptDoneSuppressesHardBounces(t *testing.T) {
	t.Parallel()
	e := setup(t)
	msg := &store.Message{ID: "M", Account: "acme", Recipients: []store.Recipient{{ID: 1, Address: "Hard@remote.test"}, {ID: 2, Address: "soft@remote.test"}}}
	e.fb.AttemptDone(msg, queue.Attempt{RecipientID: 1, Result: queue.Permanent, Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 1}, Text: "no such user"}, 0)
	e.fb.AttemptDone(msg, queue.Attempt{RecipientID: 2, Result: queue.Permanent, Code: 552, Enhanced: smtp.EnhancedCode{5, 2, 2}, Text: "mailbox full"}, 0)
	if !e.suppressed("hard@remote.test") {
		t.Error("hard bounce not suppressed")
	}
	if e.suppressed("soft@remote.test") {
		t.Error("a full mailbox was suppressed")
	}
}
