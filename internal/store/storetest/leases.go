package storetest

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// The read of the queue's leases (store.QueueLeases), used to explain
// where a message is.

var leaseReadNodeTests = []nodeTest{
	{"MessageLeases", testNodesMessageLeases},
}

func queueLeases(t *testing.T, s store.Store) store.QueueLeases {
	t.Helper()
	ql, ok := s.(store.QueueLeases)
	if !ok {
		t.Fatalf("%T does not implement store.QueueLeases", s)
	}
	return ql
}

func messageLeases(t *testing.T, s store.Store, id string) []store.RecipientLease {
	t.Helper()
	ls, err := queueLeases(t, s).MessageLeases(context.Background(), id)
	if err != nil {
		t.Fatalf("MessageLeases %s: %v", id, err)
	}
	return ls
}

// testNodesMessageLeases: a lease taken by one node is seen, with its
// owner and end, from another; recording an outcome releases it; an
// unknown message has none.
func testNodesMessageLeases(t *testing.T, s store.Store, open func(node string) store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com", "b@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	if ls := messageLeases(t, s, m.ID); len(ls) != 0 {
		t.Fatalf("leases of a message nobody leased = %+v, want none", ls)
	}
	n2 := open("n2")
	until := base.Add(time.Minute)
	ls := mustLease(t, n2, base, time.Minute, 10)
	if len(ls) != 1 {
		t.Fatalf("Lease returned %d messages, want 1", len(ls))
	}
	got := messageLeases(t, s, m.ID)
	if len(got) != 2 {
		t.Fatalf("leases = %+v, want both recipients", got)
	}
	for i, l := range got {
		if l.RecipientID != m.Recipients[i].ID || l.Owner != "n2" || !l.Until.Equal(until) {
			t.Errorf("lease %d = %+v, want recipient %d held by n2 until %s", i, l, m.Recipients[i].ID, until)
		}
	}
	err := n2.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: base.Add(time.Hour), Reply: "421 4.7.0 later"}})
	if err != nil {
		t.Fatal(err)
	}
	got = messageLeases(t, s, m.ID)
	if len(got) != 1 || got[0].RecipientID != m.Recipients[1].ID {
		t.Errorf("after the first outcome, leases = %+v, want only recipient %d", got, m.Recipients[1].ID)
	}
	if ls := messageLeases(t, s, "NOSUCHMESSAGE000"); len(ls) != 0 {
		t.Errorf("leases of an unknown message = %+v, want none", ls)
	}
}
