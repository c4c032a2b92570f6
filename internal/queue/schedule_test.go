package queue_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/store"
)

// acceptScheduled spools a message to rcpt due at sendAt, in batch (""
// for none).
func acceptScheduled(t *testing.T, n *node, rcpt, batch string, sendAt time.Time) *store.Message {
	t.Helper()
	msg := &store.Message{Sender: "a@x.test", Account: "acme", SendAt: sendAt, BatchID: batch,
		Recipients: []store.Recipient{{Address: rcpt}}}
	if _, err := n.spool.Accept(context.Background(), msg, strings.NewReader("Subject: t\r\n\r\nhello\r\n")); err != nil {
		t.Fatal(err)
	}
	return msg
}

// calls is how many attempts the transport made for rcpt.
func calls(tr *scriptTransport, rcpt string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.calls[rcpt]
}

// A scheduled message survives restarts and leaves at its send_at, not
// before: the spool does not hand it to a worker, the schedulers of two
// runs before the time (each proven alive by an ordinary message it
// delivers) do not lease it, and the third run delivers it once the fake
// clock reaches send_at.
func TestScheduledSurvivesRestartAndLeavesOnTime(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	dir := t.TempDir()
	tr := newScript(nil)
	cfg := queue.Config{PollInterval: 5 * time.Millisecond, Workers: 4}
	log := slog.New(slog.DiscardHandler)
	sendAt := t0.Add(2 * time.Hour)

	n := startNode(t, dir, "mx1", cfg, tr, &recBouncer{}, clk, log)
	msg := acceptScheduled(t, n, "later@y.test", "", sendAt)
	n.submit(t, "now1@y.test")
	if got := recv(t, tr.done, "the first run's delivery"); got != "now1@y.test" {
		t.Fatalf("first run attempted %s, want now1@y.test", got)
	}
	n.stop()
	n.st.Close()
	if c := calls(tr, "later@y.test"); c != 0 {
		t.Fatalf("the scheduled message was attempted %d times before its time", c)
	}

	// Second run, an hour before send_at.
	clk.Advance(time.Hour)
	n = startNode(t, dir, "mx1", cfg, tr, &recBouncer{}, clk, log)
	if err := n.st.ReleaseLeases(context.Background()); err != nil {
		t.Fatal(err)
	}
	got, err := n.st.Get(context.Background(), msg.ID)
	if err != nil {
		t.Fatalf("the scheduled message did not survive the restart: %v", err)
	}
	if !got.SendAt.Equal(sendAt) || got.Recipients[0].Status != store.StatusQueued || !got.Recipients[0].NextAttempt.Equal(sendAt) {
		t.Fatalf("after the restart: send_at %s, recipient %+v; want queued, due at %s", got.SendAt, got.Recipients[0], sendAt)
	}
	n.submit(t, "now2@y.test")
	if got := recv(t, tr.done, "the second run's delivery"); got != "now2@y.test" {
		t.Fatalf("second run attempted %s before send_at, want now2@y.test", got)
	}
	n.stop()
	n.st.Close()
	if c := calls(tr, "later@y.test"); c != 0 {
		t.Fatalf("the scheduled message was attempted %d times an hour before its time", c)
	}

	// Third run: the clock reaches send_at and the poll leases it.
	n = startNode(t, dir, "mx1", cfg, tr, &recBouncer{}, clk, log)
	clk.Advance(time.Hour)
	if got := recv(t, tr.done, "the scheduled delivery"); got != "later@y.test" {
		t.Fatalf("at send_at the transport saw %s, want later@y.test", got)
	}
	n.stop()
	if _, err := n.st.Get(context.Background(), msg.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the delivered scheduled message is still queued (err %v)", err)
	}
	if c := calls(tr, "later@y.test"); c != 1 {
		t.Errorf("the scheduled message was attempted %d times, want once", c)
	}
}

// A message handed straight to a worker whose batch is paused is held, not
// delivered, and is delivered once the batch resumes; a cancelled batch
// takes no message.
func TestPausedBatchHoldsHandedOffMessage(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	dir := t.TempDir()
	tr := newScript(nil)
	cfg := queue.Config{PollInterval: 5 * time.Millisecond, Workers: 4}
	n := startNode(t, dir, "mx1", cfg, tr, &recBouncer{}, clk, slog.New(slog.DiscardHandler))
	ctx := context.Background()
	for _, b := range []string{"paused", "gone"} {
		if _, err := n.st.CreateBatch(ctx, "acme", b, t0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := n.st.PauseBatch(ctx, "acme", "paused", t0); err != nil {
		t.Fatal(err)
	}
	if _, err := n.st.CancelBatch(ctx, "acme", "gone", t0); err != nil {
		t.Fatal(err)
	}
	late := &store.Message{Sender: "a@x.test", Account: "acme", BatchID: "gone", Recipients: []store.Recipient{{Address: "late@y.test"}}}
	if _, err := n.spool.Accept(ctx, late, strings.NewReader("Subject: t\r\n\r\nhello\r\n")); err == nil {
		t.Error("a message joined a cancelled batch")
	}
	held := acceptScheduled(t, n, "held@y.test", "paused", time.Time{})
	n.submit(t, "free@y.test")
	if got := recv(t, tr.done, "the unbatched delivery"); got != "free@y.test" {
		t.Fatalf("attempted %s, want free@y.test (held@y.test's batch is paused)", got)
	}
	n.stop()
	if c := calls(tr, "held@y.test"); c != 0 {
		t.Fatalf("a message of a paused batch was attempted %d times", c)
	}
	b, err := n.st.GetBatch(ctx, "acme", "paused")
	if err != nil || b.Held != 1 {
		t.Fatalf("batch %+v (err %v), want its recipient held", b, err)
	}
	if _, err := n.st.ResumeBatch(ctx, "acme", "paused", t0); err != nil {
		t.Fatal(err)
	}
	n.st.Close()
	n = startNode(t, dir, "mx1", cfg, tr, &recBouncer{}, clk, slog.New(slog.DiscardHandler))
	if got := recv(t, tr.done, "the resumed delivery"); got != "held@y.test" {
		t.Fatalf("after resume attempted %s, want held@y.test", got)
	}
	n.stop()
	if _, err := n.st.Get(ctx, held.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the resumed message is still queued (err %v)", err)
	}
}
