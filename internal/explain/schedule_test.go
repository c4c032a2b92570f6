package explain

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// A message sent with send_at says it is scheduled and when it leaves; its
// lifetime and delay notice count from then.
func TestScheduledSendAt(t *testing.T) { both(t, testScheduledSendAt) }

func testScheduledSendAt(t *testing.T, e *env) {
	ctx := context.Background()
	if _, err := e.st.CreateBatch(ctx, "acme", "b1", e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	at := e.clk.Now().Add(26 * time.Hour)
	m := storetest.NewMessage(e.clk.Now(), "bob@example.org")
	m.Account, m.SendAt, m.BatchID = "acme", at, "b1"
	storetest.Enqueue(t, e.st, m, []byte("Subject: x\r\n\r\nhi\r\n"), time.Time{})
	x := e.explain(m.ID, "acme")
	if x.State != StateScheduled || x.ScheduledAt == nil || !x.ScheduledAt.Equal(at) {
		t.Fatalf("state %q scheduled_at %v, want scheduled at %s", x.State, x.ScheduledAt, at)
	}
	if x.Batch == nil || x.Batch.ID != "b1" || x.Batch.State != store.BatchActive {
		t.Errorf("batch %+v, want b1 active", x.Batch)
	}
	if want := at.Add(72 * time.Hour); x.ExpiresAt == nil || !x.ExpiresAt.Equal(want) {
		t.Errorf("expires_at %v, want %v (the lifetime counts from send_at)", x.ExpiresAt, want)
	}
	says(t, x.Summary, "scheduled to be sent at "+clockTime(at), "in 26 h")
	says(t, x.Recipients[0].Sentences, "bob@example.org: scheduled to be sent at "+clockTime(at))

	// Once the time has come it is an ordinary queued message.
	e.clk.Advance(27 * time.Hour)
	x = e.explain(m.ID, "acme")
	if x.State != StateQueued || !x.Recipients[0].Due {
		t.Errorf("after send_at: state %q, recipient %+v; want queued and due", x.State, x.Recipients[0])
	}
}

// A message of a paused batch says it is held and why; once the batch is
// cancelled, its recipients say so from the events.
func TestPausedBatch(t *testing.T) { both(t, testPausedBatch) }

func testPausedBatch(t *testing.T, e *env) {
	ctx := context.Background()
	now := e.clk.Now()
	if _, err := e.st.CreateBatch(ctx, "acme", "b2", now); err != nil {
		t.Fatal(err)
	}
	m := storetest.NewMessage(now, "bob@example.org")
	m.Account, m.BatchID = "acme", "b2"
	storetest.Enqueue(t, e.st, m, []byte("Subject: x\r\n\r\nhi\r\n"), time.Time{})
	if _, err := e.st.PauseBatch(ctx, "acme", "b2", now); err != nil {
		t.Fatal(err)
	}
	x := e.explain(m.ID, "acme")
	r := x.Recipients[0]
	if x.State != StatePaused || !r.Held || r.Lease != nil || x.Batch == nil || x.Batch.State != store.BatchPaused {
		t.Fatalf("state %q batch %+v recipient %+v, want paused, held, no delivery lease", x.State, x.Batch, r)
	}
	says(t, x.Summary, "batch b2 is paused")
	says(t, r.Sentences, "bob@example.org: held: batch b2 is paused")

	if _, err := e.st.CancelBatch(ctx, "acme", "b2", now); err != nil {
		t.Fatal(err)
	}
	x = e.explain(m.ID, "acme")
	if x.InQueue || x.State != store.EventCancelled || x.Recipients[0].Status != store.EventCancelled {
		t.Fatalf("after cancel: in_queue %v state %q recipients %+v", x.InQueue, x.State, x.Recipients)
	}
	says(t, x.Summary, "its batch was cancelled")
}
