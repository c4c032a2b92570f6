package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Scheduled messages and batches (store.Batches, issue 12).

var batchTests = []test{
	{"ScheduledEnqueue", testScheduledEnqueue},
	{"BatchCreate", testBatchCreate},
	{"BatchCreateLimited", testBatchCreateLimited},
	{"BatchPauseResume", testBatchPauseResume},
	{"BatchCancel", testBatchCancel},
	{"BatchCheckLeased", testBatchCheckLeased},
}

// batchMessage is a message of account in batch with the recipients.
func batchMessage(account, batch string, rcpts ...string) *store.Message {
	m := NewMessage(base, rcpts...)
	m.Account, m.BatchID = account, batch
	return m
}

func batchLeased(ls []store.Lease) map[string]store.Lease {
	out := make(map[string]store.Lease)
	for _, l := range ls {
		out[l.Message.ID] = l
	}
	return out
}

// testScheduledEnqueue: a message with a SendAt after Received is due then,
// not before, keeps SendAt and its batch, and its lifetime starts then.
func testScheduledEnqueue(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.CreateBatch(ctx, "acme", "b1", base)
	must(t, "CreateBatch", err)
	sendAt := base.Add(2 * time.Hour)
	m := batchMessage("acme", "b1", "a@example.com", "b@example.com")
	m.SendAt = sendAt
	Enqueue(t, s, m, []byte("x"), time.Time{})
	for _, r := range m.Recipients {
		if !r.NextAttempt.Equal(sendAt) {
			t.Errorf("enqueued recipient due at %s, want %s", r.NextAttempt, sendAt)
		}
	}
	// The queue's age counts from the send time (base is in the past of
	// the store's clock, so the time has come).
	qs, err := s.Stats(ctx)
	must(t, "Stats", err)
	aq, err := s.AccountQueue(ctx, "acme")
	must(t, "AccountQueue", err)
	if !qs.Oldest.Equal(sendAt) || !aq.Oldest.Equal(sendAt) {
		t.Errorf("oldest pending %s (account: %s), want the send time %s", qs.Oldest, aq.Oldest, sendAt)
	}
	now := base.Add(time.Minute)
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 0 {
		t.Fatalf("a message scheduled for %s was leased at %s", sendAt, now)
	}
	next, err := s.NextDue(ctx)
	must(t, "NextDue", err)
	if !next.Equal(sendAt) {
		t.Errorf("NextDue = %s, want the send time %s", next, sendAt)
	}
	got, err := s.Get(ctx, m.ID)
	must(t, "Get", err)
	if got.BatchID != "b1" || !got.SendAt.Equal(sendAt) || !got.Start().Equal(sendAt) {
		t.Errorf("stored batch %q, send at %s (start %s); want b1, %s", got.BatchID, got.SendAt, got.Start(), sendAt)
	}
	for _, r := range got.Recipients {
		if r.Status != store.StatusQueued || !r.NextAttempt.Equal(sendAt) {
			t.Errorf("stored recipient %+v, want queued and due at %s", r, sendAt)
		}
	}
	ls := mustLease(t, s, sendAt, time.Minute, 10)
	if len(ls) != 1 || len(ls[0].Message.Recipients) != 2 || ls[0].Message.BatchID != "b1" || !ls[0].Message.SendAt.Equal(sendAt) {
		t.Fatalf("lease at the send time = %+v, want the message with both recipients, its batch and send time", ls)
	}
	b, err := s.GetBatch(ctx, "acme", "b1")
	must(t, "GetBatch", err)
	if b.Messages != 1 || b.Recipients != 2 || b.Pending[store.StatusQueued] != 2 {
		t.Errorf("batch counts %+v, want 1 message, 2 recipients, 2 queued", b)
	}
	// A SendAt not after Received is an ordinary message.
	now2 := NewMessage(base, "c@example.com")
	now2.SendAt = base.Add(-time.Hour)
	Enqueue(t, s, now2, []byte("x"), time.Time{})
	if ls := mustLease(t, s, base, time.Minute, 10); len(ls) != 1 || ls[0].Message.ID != now2.ID {
		t.Errorf("a message with a past send time was not due at once: %+v", ls)
	}
}

// testBatchCreate: creating is idempotent for the account, another
// account can neither create nor see the ID, and IDs are checked.
func testBatchCreate(t *testing.T, s store.Store) {
	ctx := context.Background()
	b, err := s.CreateBatch(ctx, "acme", "batch-1", base)
	must(t, "CreateBatch", err)
	if b.ID != "batch-1" || b.Account != "acme" || b.State != store.BatchActive || !b.Created.Equal(base) {
		t.Errorf("created %+v", b)
	}
	again, err := s.CreateBatch(ctx, "acme", "batch-1", base.Add(time.Hour))
	must(t, "CreateBatch again", err)
	if !again.Created.Equal(base) || again.State != store.BatchActive {
		t.Errorf("created again: %+v, want the first batch unchanged", again)
	}
	if _, err := s.CreateBatch(ctx, "other", "batch-1", base); !errors.Is(err, store.ErrExists) {
		t.Errorf("CreateBatch of another account's ID: err = %v, want ErrExists", err)
	}
	if _, err := s.GetBatch(ctx, "other", "batch-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("GetBatch by another account: err = %v, want ErrNotFound", err)
	}
	for _, f := range []func(context.Context, string, string, time.Time) (store.Batch, error){s.PauseBatch, s.ResumeBatch, s.CancelBatch} {
		if _, err := f(ctx, "other", "batch-1", base); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("changing another account's batch: err = %v, want ErrNotFound", err)
		}
	}
	if b, err := s.GetBatch(ctx, "acme", "batch-1"); err != nil || b.State != store.BatchActive {
		t.Errorf("after another account's attempts: %+v, %v; want active", b, err)
	}
	// Pruning removes idle batches without queued messages only.
	_, err = s.CreateBatch(ctx, "acme", "busy", base)
	must(t, "CreateBatch", err)
	Enqueue(t, s, batchMessage("acme", "busy", "a@example.com"), []byte("x"), time.Time{})
	cutoff := time.Now().Add(24 * time.Hour) // after the time the message joined
	_, err = s.CreateBatch(ctx, "acme", "fresh", cutoff.Add(time.Hour))
	must(t, "CreateBatch", err)
	_, err = s.PruneEvents(ctx, cutoff)
	must(t, "PruneEvents", err)
	if _, err := s.GetBatch(ctx, "acme", "batch-1"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("an idle batch survived the prune: %v", err)
	}
	for _, id := range []string{"busy", "fresh"} {
		if _, err := s.GetBatch(ctx, "acme", id); err != nil {
			t.Errorf("batch %s was pruned: %v", id, err)
		}
	}
	_, err = s.CreateBatch(ctx, "acme", "batch-1", base)
	must(t, "CreateBatch after the prune", err)
	for _, id := range []string{"", "a b", "x/y", string(make([]byte, store.MaxBatchIDLen+1))} {
		if _, err := s.CreateBatch(ctx, "acme", id, base); err == nil {
			t.Errorf("CreateBatch(%q) accepted", id)
		}
	}
	// A message cannot join a batch it does not own or that does not exist.
	for _, m := range []*store.Message{batchMessage("other", "batch-1", "a@example.com"), batchMessage("acme", "nope", "a@example.com")} {
		if _, err := EnqueueErr(s, m, []byte("x"), time.Time{}); !errors.Is(err, store.ErrBatchState) {
			t.Errorf("Enqueue into batch %q as %s: err = %v, want ErrBatchState", m.BatchID, m.Account, err)
		}
		if _, err := s.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("refused message %s was stored", m.ID)
		}
	}
}

// testBatchPauseResume: a pause holds the batch's pending recipients (not
// others') against every Lease, across ReleaseLeases, without showing them
// as delivery leases; resume makes them due at their time again.
func testBatchPauseResume(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.CreateBatch(ctx, "acme", "b1", base)
	must(t, "CreateBatch", err)
	m1 := batchMessage("acme", "b1", "a@example.com", "b@example.com")
	Enqueue(t, s, m1, []byte("x"), time.Time{})
	m2 := batchMessage("acme", "b1", "c@example.com")
	m2.SendAt = base.Add(time.Hour)
	Enqueue(t, s, m2, []byte("x"), time.Time{})
	other := batchMessage("acme", "", "d@example.com")
	Enqueue(t, s, other, []byte("x"), time.Time{})

	b, err := s.PauseBatch(ctx, "acme", "b1", base)
	must(t, "PauseBatch", err)
	if b.State != store.BatchPaused || b.Held != 3 || b.Pending[store.StatusQueued] != 3 {
		t.Errorf("paused batch %+v, want paused with 3 held of 3 queued", b)
	}
	if _, err := s.PauseBatch(ctx, "acme", "b1", base); err != nil {
		t.Errorf("pausing again: %v", err)
	}
	must(t, "ReleaseLeases", s.ReleaseLeases(ctx))
	later := base.Add(2 * time.Hour)
	ls := batchLeased(mustLease(t, s, later, time.Minute, 10))
	if _, ok := ls[other.ID]; !ok || len(ls) != 1 {
		t.Fatalf("leased %v while b1 is paused, want only %s", ls, other.ID)
	}
	if l := messageLeases(t, s, m1.ID); len(l) != 0 {
		t.Errorf("a held recipient shows as a delivery lease: %+v", l)
	}
	got, err := s.Get(ctx, m2.ID)
	must(t, "Get", err)
	if !got.Recipients[0].NextAttempt.Equal(base.Add(time.Hour)) {
		t.Errorf("held recipient due at %s, want its send time kept", got.Recipients[0].NextAttempt)
	}

	b, err = s.ResumeBatch(ctx, "acme", "b1", later)
	must(t, "ResumeBatch", err)
	if b.State != store.BatchActive || b.Held != 0 {
		t.Errorf("resumed batch %+v", b)
	}
	// m1 is due at once, m2 at its send time.
	ls = batchLeased(mustLease(t, s, base.Add(time.Minute), 2*time.Hour, 10))
	if _, ok := ls[m1.ID]; !ok || len(ls) != 1 {
		t.Errorf("after resume, leased %v before m2's send time; want only %s", ls, m1.ID)
	}
	ls = batchLeased(mustLease(t, s, base.Add(time.Hour), time.Minute, 10))
	if _, ok := ls[m2.ID]; !ok || len(ls) != 1 {
		t.Errorf("after resume, leased %v at m2's send time; want %s", ls, m2.ID)
	}
}

// testBatchCancel: cancelling removes the pending recipients not in
// delivery, with a cancelled event (and webhook delivery) each, keeps the
// delivered ones, removes messages left with nothing pending, and closes
// the batch to new messages and to pause and resume.
func testBatchCancel(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: "https://hooks.example/x", Secret: "s", Created: base}))
	_, err := s.CreateBatch(ctx, "acme", "b1", base)
	must(t, "CreateBatch", err)
	a := batchMessage("acme", "b1", "a1@example.com", "a2@example.com")
	a.Tags, a.Metadata = []string{"promo"}, map[string]string{"order": "7"}
	Enqueue(t, s, a, []byte("x"), time.Time{})
	must(t, "Update", s.Update(ctx, a.ID, "", []store.Outcome{{RecipientID: a.Recipients[0].ID, Status: store.StatusDelivered, Reply: "250 ok"}}))
	sched := batchMessage("acme", "b1", "s1@example.com")
	sched.SendAt = base.Add(time.Hour)
	Enqueue(t, s, sched, []byte("x"), time.Time{})
	inflight := batchMessage("acme", "b1", "f1@example.com")
	token := Enqueue(t, s, inflight, []byte("x"), base.Add(time.Minute))

	b, err := s.CancelBatch(ctx, "acme", "b1", base)
	must(t, "CancelBatch", err)
	if b.State != store.BatchCancelled || b.Cancelled != 2 || b.Pending[store.StatusQueued] != 1 {
		t.Errorf("cancelled batch %+v, want cancelled, 2 removed, the leased one still queued", b)
	}
	for _, id := range []string{a.ID, sched.ID} {
		if _, err := s.Get(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("message %s with nothing pending left is still queued (err %v)", id, err)
		}
	}
	if _, err := s.Get(ctx, inflight.ID); err != nil {
		t.Errorf("the message in delivery was removed: %v", err)
	}
	evs, err := s.ListEvents(ctx, store.EventFilter{Account: "acme", Types: []string{store.EventCancelled}, Limit: 10})
	must(t, "ListEvents", err)
	if len(evs) != 2 {
		t.Fatalf("cancelled events %+v, want 2", evs)
	}
	for _, e := range evs {
		if e.Recipient != "a2@example.com" && e.Recipient != "s1@example.com" {
			t.Errorf("cancelled event for %s", e.Recipient)
		}
		if e.Recipient == "a2@example.com" && (e.MessageID != a.ID || len(e.Tags) != 1 || e.Metadata["order"] != "7") {
			t.Errorf("cancelled event %+v lacks the message's ID, tags or metadata", e)
		}
	}
	ds, err := s.ListWebhookDeliveries(ctx, "acme", "wh1", 100)
	must(t, "ListWebhookDeliveries", err)
	cancelled := 0
	for _, d := range ds {
		if d.Event.Type == store.EventCancelled {
			cancelled++
		}
	}
	if cancelled != 2 {
		t.Errorf("webhook deliveries of cancelled events = %d, want 2", cancelled)
	}
	// The delivery in progress finds the batch cancelled before it starts.
	state, err := s.CheckBatch(ctx, inflight.ID, "b1", token)
	must(t, "CheckBatch", err)
	if state != store.BatchCancelled {
		t.Errorf("CheckBatch = %q, want cancelled", state)
	}
	if _, err := s.Get(ctx, inflight.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the checked message is still queued (err %v)", err)
	}
	b, err = s.GetBatch(ctx, "acme", "b1")
	must(t, "GetBatch", err)
	if b.Cancelled != 3 || len(b.Pending) != 0 || b.Messages != 3 || b.Recipients != 4 {
		t.Errorf("batch after the check %+v, want 3 cancelled of 4 recipients in 3 messages, nothing pending", b)
	}
	if _, err := EnqueueErr(s, batchMessage("acme", "b1", "late@example.com"), []byte("x"), time.Time{}); !errors.Is(err, store.ErrBatchState) {
		t.Errorf("Enqueue into a cancelled batch: err = %v, want ErrBatchState", err)
	}
	for _, f := range []func(context.Context, string, string, time.Time) (store.Batch, error){s.PauseBatch, s.ResumeBatch} {
		if _, err := f(ctx, "acme", "b1", base); !errors.Is(err, store.ErrBatchState) {
			t.Errorf("pause/resume of a cancelled batch: err = %v, want ErrBatchState", err)
		}
	}
	if _, err := s.CancelBatch(ctx, "acme", "b1", base); err != nil {
		t.Errorf("cancelling again: %v", err)
	}
}

// testBatchCheckLeased: a message leased (by the hand-off or a Lease)
// whose batch is paused is held by CheckBatch instead of delivered, and an
// active batch's is left to its delivery.
func testBatchCheckLeased(t *testing.T, s store.Store) {
	ctx := context.Background()
	_, err := s.CreateBatch(ctx, "acme", "b1", base)
	must(t, "CreateBatch", err)
	m := batchMessage("acme", "b1", "a@example.com")
	token := Enqueue(t, s, m, []byte("x"), base.Add(time.Minute))
	state, err := s.CheckBatch(ctx, m.ID, "b1", token)
	must(t, "CheckBatch", err)
	if state != store.BatchActive {
		t.Errorf("CheckBatch of an active batch = %q", state)
	}
	if state, err := s.CheckBatch(ctx, m.ID, "unknown", token); err != nil || state != "" {
		t.Errorf("CheckBatch of an unknown batch = %q, %v; want \"\", nil", state, err)
	}
	_, err = s.PauseBatch(ctx, "acme", "b1", base)
	must(t, "PauseBatch", err)
	b, err := s.GetBatch(ctx, "acme", "b1")
	must(t, "GetBatch", err)
	if b.Held != 0 {
		t.Errorf("the pause held a recipient under a live delivery lease: %+v", b)
	}
	state, err = s.CheckBatch(ctx, m.ID, "b1", token)
	must(t, "CheckBatch", err)
	if state != store.BatchPaused {
		t.Errorf("CheckBatch of a paused batch = %q", state)
	}
	if err := s.Renew(ctx, m.ID, token, base.Add(2*time.Minute)); !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("the delivery lease survived the hold: Renew err = %v", err)
	}
	if ls := mustLease(t, s, base.Add(time.Hour), time.Minute, 10); len(ls) != 0 {
		t.Errorf("a held message was leased: %+v", ls)
	}
	_, err = s.ResumeBatch(ctx, "acme", "b1", base)
	must(t, "ResumeBatch", err)
	if ls := mustLease(t, s, base.Add(time.Hour), time.Minute, 10); len(ls) != 1 || ls[0].Message.ID != m.ID {
		t.Errorf("after resume, leased %+v, want %s", ls, m.ID)
	}
}

// testBatchCreateLimited: an account may create max batches a day; more
// are refused with ErrLimit and nothing written, while creating one it
// has again, another account's, and a day later all still work.
func testBatchCreateLimited(t *testing.T, s store.Store) {
	ctx := context.Background()
	for i := range 3 {
		_, err := s.CreateBatchLimited(ctx, "acme", fmt.Sprintf("lim-%d", i), base.Add(time.Duration(i)*time.Minute), 3)
		must(t, "CreateBatchLimited", err)
	}
	if _, err := s.CreateBatchLimited(ctx, "acme", "lim-3", base.Add(time.Hour), 3); !errors.Is(err, store.ErrLimit) {
		t.Errorf("a fourth batch in a day: err = %v, want ErrLimit", err)
	}
	if _, err := s.GetBatch(ctx, "acme", "lim-3"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused batch exists: %v", err)
	}
	if _, err := s.CreateBatchLimited(ctx, "acme", "lim-0", base.Add(time.Hour), 3); err != nil {
		t.Errorf("creating a batch the account has again: %v", err)
	}
	if _, err := s.CreateBatchLimited(ctx, "other", "lim-other", base.Add(time.Hour), 3); err != nil {
		t.Errorf("another account's first batch: %v", err)
	}
	if _, err := s.CreateBatchLimited(ctx, "acme", "lim-4", base.Add(25*time.Hour), 3); err != nil {
		t.Errorf("a batch a day later: %v", err)
	}
}
