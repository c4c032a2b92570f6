package spool_test

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// recorder is a processor that upper-cases nothing but records what it saw.
type recorder struct {
	header  []byte
	seen    bytes.Buffer
	rewrite func([]byte) []byte
	prepend string
	reject  error
	aborted bool
}

func (r *recorder) Header(_ context.Context, _ *store.Message, h []byte) ([]byte, error) {
	r.header = append([]byte(nil), h...)
	if r.rewrite != nil {
		return r.rewrite(h), nil
	}
	return h, nil
}
func (r *recorder) Write(p []byte) (int, error) { return r.seen.Write(p) }
func (r *recorder) Finish(context.Context, *store.Message) ([]byte, error) {
	return []byte(r.prepend), r.reject
}
func (r *recorder) Abort() { r.aborted = true }

func open(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func read(t *testing.T, st *sqlite.Store, id string) string {
	t.Helper()
	rc, err := st.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

func msg() *store.Message {
	return &store.Message{Sender: "a@x.test", Recipients: []store.Recipient{{Address: "b@y.test"}}}
}

func TestProcessorsRewriteAndPrepend(t *testing.T) {
	st := open(t)
	sp := spool.New(st, nil, clock.Real{})
	long := "X-Long: " + strings.Repeat("a", 40000) + "\r\n"
	raw := "Subject: hi\r\nAuthentication-Results: forged\r\n" + long + "\r\nbody line\r\n\r\nsecond paragraph\r\n"
	p1 := &recorder{
		rewrite: func(h []byte) []byte { return bytes.Replace(h, []byte("Authentication-Results: forged\r\n"), nil, 1) },
		prepend: "Authentication-Results: mx.test; spf=pass\r\n",
	}
	p2 := &recorder{prepend: "DKIM-Signature: v=1\r\n"}
	m := msg()
	id, err := sp.Accept(context.Background(), m, strings.NewReader(raw), p1, p2)
	if err != nil {
		t.Fatal(err)
	}
	want := "Authentication-Results: mx.test; spf=pass\r\nDKIM-Signature: v=1\r\nSubject: hi\r\n" + long + "\r\nbody line\r\n\r\nsecond paragraph\r\n"
	if got := read(t, st, id); got != want {
		t.Fatalf("stored message differs:\n got %q...\nwant %q...", got[:120], want[:120])
	}
	if !strings.HasSuffix(string(p1.header), long+"\r\n") {
		t.Errorf("header section not passed whole (a 40 KB line must not end it early)")
	}
	if p2.seen.String() != want[len("Authentication-Results: mx.test; spf=pass\r\nDKIM-Signature: v=1\r\n"):] {
		t.Errorf("second processor did not see the stored (rewritten) message")
	}
	if m.Size != int64(len(want)) {
		t.Errorf("Size %d, want %d", m.Size, len(want))
	}
}

func TestProcessorRejects(t *testing.T) {
	st := open(t)
	sp := spool.New(st, nil, clock.Real{})
	reject := &smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 7, 1}, Message: "DMARC says no"}
	p := &recorder{reject: reject}
	_, err := sp.Accept(context.Background(), msg(), strings.NewReader("Subject: x\r\n\r\nbody\r\n"), p)
	if e, ok := smtp.AsError(err); !ok || e.Code != 550 {
		t.Fatalf("err = %v, want the processor's 550", err)
	}
	if !p.aborted {
		t.Error("processor not aborted")
	}
	if s, _ := st.Stats(context.Background()); s.Messages != 0 {
		t.Errorf("a rejected message was stored")
	}
}

func TestHeaderTooLargeAndNoBody(t *testing.T) {
	st := open(t)
	sp := spool.New(st, nil, clock.Real{})
	huge := strings.Repeat("X-Pad: "+strings.Repeat("p", 990)+"\r\n", 1100) // > 1 MiB of header
	_, err := sp.Accept(context.Background(), msg(), strings.NewReader(huge+"\r\nbody\r\n"), &recorder{})
	if e, ok := smtp.AsError(err); !ok || e.Code != 552 {
		t.Fatalf("huge header: %v, want 552 5.3.4", err)
	}
	// A message without a blank line is all header.
	p := &recorder{}
	id, err := sp.Accept(context.Background(), msg(), strings.NewReader("Subject: only header\r\n"), p)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, st, id); got != "Subject: only header\r\n" || string(p.header) != got {
		t.Errorf("stored %q, header %q", got, p.header)
	}
}

// dispatcher records what the spool hands over.
type dispatcher struct {
	free      bool
	submitted []store.Lease
	notified  int
}

func (d *dispatcher) Reserve() bool               { return d.free }
func (d *dispatcher) Unreserve()                  {}
func (d *dispatcher) Submit(l store.Lease)        { d.submitted = append(d.submitted, l) }
func (d *dispatcher) Notify()                     { d.notified++ }
func (d *dispatcher) LeaseTimeout() time.Duration { return time.Minute }

// The direct hand-off passes the worker the token of the lease Enqueue
// took, so the worker can renew it and record the outcome; without a free
// worker the message is stored unleased.
func TestHandOffCarriesLeaseToken(t *testing.T) {
	ctx := context.Background()
	st := open(t)
	clk := clock.NewFake(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	d := &dispatcher{free: true}
	sp := spool.New(st, d, clk)
	msg := &store.Message{Sender: "a@x.test", Recipients: []store.Recipient{{Address: "b@y.test"}}}
	id, err := sp.Accept(ctx, msg, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.submitted) != 1 {
		t.Fatalf("submitted %d leases, want 1", len(d.submitted))
	}
	l := d.submitted[0]
	if l.Token == "" || l.Message.ID != id || !l.Until.Equal(clk.Now().Add(time.Minute)) {
		t.Fatalf("hand-off lease = %+v (token %q)", l, l.Token)
	}
	if ls, err := st.Lease(ctx, clk.Now(), time.Minute, 10); err != nil || len(ls) != 0 {
		t.Fatalf("handed-over message leased again: %d, %v", len(ls), err)
	}
	if err := st.Renew(ctx, id, l.Token, clk.Now().Add(2*time.Minute)); err != nil {
		t.Fatalf("Renew with the hand-off token: %v", err)
	}
	if err := st.Update(ctx, id, l.Token, []store.Outcome{{RecipientID: l.Message.Recipients[0].ID, Status: store.StatusDelivered}}); err != nil {
		t.Fatalf("Update with the hand-off token: %v", err)
	}

	d.free = false
	msg = &store.Message{Sender: "a@x.test", Recipients: []store.Recipient{{Address: "c@y.test"}}}
	id, err = sp.Accept(ctx, msg, strings.NewReader("Subject: t\r\n\r\nhi\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(d.submitted) != 1 || d.notified != 1 {
		t.Fatalf("busy dispatcher: submitted %d, notified %d; want 1, 1", len(d.submitted), d.notified)
	}
	if ls, err := st.Lease(ctx, clk.Now(), time.Minute, 10); err != nil || len(ls) != 1 || ls[0].Message.ID != id {
		t.Fatalf("message stored without a worker is not leasable: %d, %v", len(ls), err)
	}
}
