package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// The lease contract (issue 9): tokens, Renew, token-checked Update, and,
// in nodeTests, several nodes sharing one queue.

// nodeTests is the multi-node part of the suite: two handles on one
// database act as two nodes.
var nodeTests = []nodeTest{
	{"ConcurrentLease", testNodesConcurrentLease},
	{"Takeover", testNodesTakeover},
	{"TakeoverAtomic", testNodesTakeoverAtomic},
	{"ReleaseLeases", testNodesReleaseLeases},
	{"RenewKeeps", testNodesRenewKeeps},
}

func expectLeaseLost(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("%s: err = %v, want ErrLeaseLost", what, err)
	}
}

// statuses returns "address:status" of every recipient of id.
func statuses(t *testing.T, s store.Store, id string) []string {
	t.Helper()
	var out []string
	for _, r := range mustGet(t, s, id).Recipients {
		out = append(out, r.Address+":"+string(r.Status))
	}
	return out
}

// outcomeEvents returns "type:recipient" of the outcome events (not
// accepted) of message id.
func outcomeEvents(t *testing.T, s store.Store, id string) []string {
	t.Helper()
	return eventSummary(listEvents(t, s, store.EventFilter{MessageID: id, Types: []string{
		store.EventDelivered, store.EventBounced, store.EventDeferred, store.EventExpired}}))
}

// testLeaseTokens: every lease has a token of its own; Enqueue returns one
// only when it leases; a token is good for its own message only.
func testLeaseTokens(t *testing.T, s store.Store) {
	ctx := context.Background()
	plain := NewMessage(base, "a@example.com")
	if tok := Enqueue(t, s, plain, []byte("x"), time.Time{}); tok != "" {
		t.Errorf("Enqueue without a lease returned token %q", tok)
	}
	held := NewMessage(base, "b@example.com")
	tokHeld := Enqueue(t, s, held, []byte("x"), base.Add(time.Hour))
	held2 := NewMessage(base, "c@example.com")
	tokHeld2 := Enqueue(t, s, held2, []byte("x"), base.Add(time.Hour))
	if tokHeld == "" || tokHeld == tokHeld2 {
		t.Fatalf("Enqueue with a lease returned tokens %q and %q (want distinct, not empty)", tokHeld, tokHeld2)
	}
	ls := mustLease(t, s, base.Add(time.Second), time.Minute, 10)
	if len(ls) != 1 || ls[0].Message.ID != plain.ID {
		t.Fatalf("Lease = %v, want only %s", leasedIDs(ls), plain.ID)
	}
	if ls[0].Token == tokHeld || ls[0].Token == tokHeld2 {
		t.Fatalf("Lease reused an Enqueue token")
	}
	// A token names one message's lease.
	err := s.Update(ctx, held.ID, ls[0].Token, []store.Outcome{{RecipientID: held.Recipients[0].ID, Status: store.StatusDelivered}})
	expectLeaseLost(t, "Update with another message's token", err)
	err = s.Update(ctx, plain.ID, tokHeld, []store.Outcome{{RecipientID: plain.Recipients[0].ID, Status: store.StatusDelivered}})
	expectLeaseLost(t, "Update with another message's token", err)
	// The Enqueue token records the outcome.
	if err := s.Update(ctx, held.ID, tokHeld, []store.Outcome{{RecipientID: held.Recipients[0].ID, Status: store.StatusDelivered}}); err != nil {
		t.Fatalf("Update with the Enqueue token: %v", err)
	}
	if _, err := s.Get(ctx, held.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("delivered message still queued: %v", err)
	}
	if g := mustGet(t, s, plain.ID); g.Recipients[0].Status != store.StatusQueued {
		t.Errorf("refused Update changed %s: %+v", plain.ID, g.Recipients[0])
	}
}

// testUpdateToken: an Update under a token that does not hold the lease of
// every outcome's recipient writes nothing (no state, no event).
func testUpdateToken(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com", "b@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	ls := mustLease(t, s, base, time.Minute, 10)
	if len(ls) != 1 {
		t.Fatalf("Lease = %v", leasedIDs(ls))
	}
	tok := ls[0].Token
	r0, r1 := m.Recipients[0].ID, m.Recipients[1].ID
	err := s.Update(ctx, m.ID, "not-"+tok, []store.Outcome{{RecipientID: r0, Status: store.StatusDelivered}})
	expectLeaseLost(t, "Update with a wrong token", err)
	if err := s.Update(ctx, m.ID, tok, []store.Outcome{{RecipientID: r0, Status: store.StatusDelivered, Reply: "250 ok"}}); err != nil {
		t.Fatalf("Update r0: %v", err)
	}
	// r0's outcome is recorded and its lease released: the token no longer
	// holds it, and nothing of the batch is written (r1 stays queued).
	err = s.Update(ctx, m.ID, tok, []store.Outcome{
		{RecipientID: r1, Status: store.StatusDelivered},
		{RecipientID: r0, Status: store.StatusFailed},
	})
	expectLeaseLost(t, "Update of an outcome already recorded", err)
	// An unknown recipient is not leased under the token either.
	err = s.Update(ctx, m.ID, tok, []store.Outcome{{RecipientID: r1 + 1000, Status: store.StatusDelivered}})
	expectLeaseLost(t, "Update of an unknown recipient with a token", err)
	if got := statuses(t, s, m.ID); !slices.Equal(got, []string{"a@example.com:delivered", "b@example.com:queued"}) {
		t.Errorf("after refused updates: %v", got)
	}
	if got := outcomeEvents(t, s, m.ID); !slices.Equal(got, []string{"delivered:a@example.com"}) {
		t.Errorf("events = %v, want only r0's delivery", got)
	}
	if err := s.Update(ctx, m.ID, tok, []store.Outcome{{RecipientID: r1, Status: store.StatusDelivered}}); err != nil {
		t.Fatalf("Update r1: %v", err)
	}
	// The message is gone: lost, and not found.
	err = s.Update(ctx, m.ID, tok, []store.Outcome{{RecipientID: r1, Status: store.StatusDelivered}})
	expectLeaseLost(t, "Update of a removed message with a token", err)
	expectNotFound(t, "Update of a removed message with a token", err)
}

// testUpdateAdmin: token "" updates recipients without a live lease only.
func testUpdateAdmin(t *testing.T, s store.Store) {
	ctx := context.Background()
	// The store judges "live" by its own clock: lease around the real now.
	now := time.Now().Truncate(time.Microsecond)
	live := NewMessage(base, "a@example.com")
	Enqueue(t, s, live, []byte("x"), now.Add(time.Hour))
	err := s.Update(ctx, live.ID, "", []store.Outcome{{RecipientID: live.Recipients[0].ID, Status: store.StatusDelivered}})
	expectLeaseLost(t, "administrative Update of a live lease", err)
	if got := statuses(t, s, live.ID); !slices.Equal(got, []string{"a@example.com:queued"}) {
		t.Errorf("refused administrative Update wrote: %v", got)
	}
	if got := outcomeEvents(t, s, live.ID); len(got) != 0 {
		t.Errorf("refused administrative Update wrote events %v", got)
	}

	expired := NewMessage(base, "b@example.com")
	Enqueue(t, s, expired, []byte("x"), time.Time{})
	ls := mustLease(t, s, now.Add(-2*time.Hour), time.Hour, 10)
	if len(ls) != 1 || ls[0].Message.ID != expired.ID {
		t.Fatalf("Lease = %v", leasedIDs(ls))
	}
	err = s.Update(ctx, expired.ID, "", []store.Outcome{{RecipientID: expired.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: base.Add(time.Minute), Reply: "admin"}})
	if err != nil {
		t.Fatalf("administrative Update of an expired lease: %v", err)
	}
	g := mustGet(t, s, expired.ID)
	if g.Recipients[0].Status != store.StatusDeferred || g.Recipients[0].LastReply != "admin" {
		t.Errorf("administrative Update not applied: %+v", g.Recipients[0])
	}
	// It released the lease: the old token holds nothing.
	expectLeaseLost(t, "Renew after an administrative Update", s.Renew(ctx, expired.ID, ls[0].Token, now.Add(time.Hour)))
}

// testRenew: Renew moves Until forward (never back); a lease that expired
// is taken over and its old token is lost.
func testRenew(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	ls := mustLease(t, s, base, time.Minute, 10)
	if len(ls) != 1 {
		t.Fatalf("Lease = %v", leasedIDs(ls))
	}
	tok := ls[0].Token
	if err := s.Renew(ctx, m.ID, tok, base.Add(10*time.Minute)); err != nil {
		t.Fatalf("Renew: %v", err)
	}
	// Renewing to an earlier time keeps the later Until.
	if err := s.Renew(ctx, m.ID, tok, base.Add(2*time.Minute)); err != nil {
		t.Fatalf("Renew to an earlier time: %v", err)
	}
	for _, at := range []time.Duration{2 * time.Minute, 5 * time.Minute, 10 * time.Minute} {
		if l := mustLease(t, s, base.Add(at), time.Minute, 10); len(l) != 0 {
			t.Fatalf("renewed lease (until +10m) taken over at +%v", at)
		}
	}
	// Expired but not taken over: still held, renewable.
	if err := s.Renew(ctx, m.ID, tok, base.Add(20*time.Minute)); err != nil {
		t.Fatalf("Renew of an expired lease nobody took over: %v", err)
	}
	ls = mustLease(t, s, base.Add(20*time.Minute+time.Millisecond), time.Minute, 10)
	if len(ls) != 1 || ls[0].Token == tok {
		t.Fatalf("expired lease not taken over under a new token: %+v", ls)
	}
	expectLeaseLost(t, "Renew after takeover", s.Renew(ctx, m.ID, tok, base.Add(time.Hour)))
	expectLeaseLost(t, "Renew with an empty token", s.Renew(ctx, m.ID, "", base.Add(time.Hour)))
	expectLeaseLost(t, "Renew of an unknown message", s.Renew(ctx, "no-such-id", ls[0].Token, base.Add(time.Hour)))
	if err := s.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: base.Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	expectLeaseLost(t, "Renew after the outcome was recorded", s.Renew(ctx, m.ID, ls[0].Token, base.Add(time.Hour)))
	// A lost Renew leased nothing: the recipient is due at its NextAttempt.
	if l := mustLease(t, s, base.Add(time.Hour), time.Minute, 10); len(l) != 1 {
		t.Errorf("deferred recipient not due after refused Renews: %v", leasedIDs(l))
	}
}

// testNodesConcurrentLease: two nodes leasing the same queue concurrently
// never lease a recipient twice, and every due recipient is leased.
func testNodesConcurrentLease(t *testing.T, s store.Store, open func(string) store.Store) {
	a, b := open("node-a"), open("node-b")
	const n = 30
	for range n {
		Enqueue(t, s, NewMessage(base, "a@example.com", "b@example.com"), []byte("x"), time.Time{})
	}
	now := base.Add(time.Second)
	var mu sync.Mutex
	seen := make(map[int64]int)
	tokens := make(map[string]bool)
	var wg sync.WaitGroup
	for i := range 6 {
		node := []store.Store{a, b}[i%2]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ls, err := node.Lease(context.Background(), now, time.Minute, 2)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					if l.Token == "" || tokens[l.Token] {
						t.Errorf("token %q empty or given twice", l.Token)
					}
					tokens[l.Token] = true
					for _, r := range l.Message.Recipients {
						seen[r.ID]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 2*n {
		t.Errorf("leased %d distinct recipients, want %d", len(seen), 2*n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("recipient %d leased %d times", id, c)
		}
	}
}

// testNodesTakeover: node B takes over node A's expired lease; A's Renew
// and Update with its old token are refused and B's outcome stands.
func testNodesTakeover(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	a, b := open("node-a"), open("node-b")
	m := NewMessage(base, "a@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	la := mustLease(t, a, base, time.Minute, 10)
	if len(la) != 1 {
		t.Fatalf("node A Lease = %v", leasedIDs(la))
	}
	if l := mustLease(t, b, base.Add(30*time.Second), time.Minute, 10); len(l) != 0 {
		t.Fatalf("node B took over a live lease: %v", leasedIDs(l))
	}
	lb := mustLease(t, b, base.Add(time.Minute+time.Millisecond), time.Minute, 10)
	if len(lb) != 1 || lb[0].Message.ID != m.ID || lb[0].Token == la[0].Token {
		t.Fatalf("node B did not take over the expired lease under a new token: %+v", lb)
	}
	rid := m.Recipients[0].ID
	expectLeaseLost(t, "node A Renew after takeover", a.Renew(ctx, m.ID, la[0].Token, base.Add(time.Hour)))
	err := a.Update(ctx, m.ID, la[0].Token, []store.Outcome{{RecipientID: rid, Status: store.StatusFailed, Reply: "550 from A"}})
	expectLeaseLost(t, "node A Update after takeover", err)
	if got := statuses(t, s, m.ID); !slices.Equal(got, []string{"a@example.com:queued"}) {
		t.Errorf("node A's refused Update wrote: %v", got)
	}
	// B still holds it (A's attempts changed nothing) and records its outcome.
	if err := b.Renew(ctx, m.ID, lb[0].Token, base.Add(5*time.Minute)); err != nil {
		t.Fatalf("node B Renew: %v", err)
	}
	if err := b.Update(ctx, m.ID, lb[0].Token, []store.Outcome{{RecipientID: rid, Status: store.StatusDeferred,
		NextAttempt: base.Add(time.Hour), Reply: "451 from B"}}); err != nil {
		t.Fatalf("node B Update: %v", err)
	}
	err = a.Update(ctx, m.ID, la[0].Token, []store.Outcome{{RecipientID: rid, Status: store.StatusDelivered, Reply: "250 from A"}})
	expectLeaseLost(t, "node A Update after B's outcome", err)
	g := mustGet(t, s, m.ID)
	if r := g.Recipients[0]; r.Status != store.StatusDeferred || r.LastReply != "451 from B" || r.Attempts != 1 {
		t.Errorf("recipient = %+v, want B's outcome (deferred, 451 from B, 1 attempt)", r)
	}
	if got := outcomeEvents(t, s, m.ID); !slices.Equal(got, []string{"deferred:a@example.com"}) {
		t.Errorf("events = %v, want only B's deferral", got)
	}
}

// testNodesTakeoverAtomic: when one recipient of A's lease was taken over,
// A's Update writes none of its outcomes, not even the others'.
func testNodesTakeoverAtomic(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	a, b := open("node-a"), open("node-b")
	m := NewMessage(base, "r1@example.com", "r2@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	r1, r2 := m.Recipients[0].ID, m.Recipients[1].ID
	la := mustLease(t, a, base, time.Minute, 10)
	if len(la) != 1 || len(la[0].Message.Recipients) != 2 {
		t.Fatalf("node A Lease = %v", leasedIDs(la))
	}
	// A records r1 as due again at once (a throttled round): r1's lease is
	// released and B leases it while A still works on r2.
	if err := a.Update(ctx, m.ID, la[0].Token, []store.Outcome{{RecipientID: r1, Status: store.StatusQueued, NextAttempt: base}}); err != nil {
		t.Fatal(err)
	}
	lb := mustLease(t, b, base, time.Minute, 10)
	if got := leasedIDs(lb); len(got[m.ID]) != 1 || got[m.ID][0] != r1 {
		t.Fatalf("node B Lease = %v, want only r1", got)
	}
	err := a.Update(ctx, m.ID, la[0].Token, []store.Outcome{
		{RecipientID: r2, Status: store.StatusDelivered, Reply: "250 r2 by A"},
		{RecipientID: r1, Status: store.StatusDelivered, Reply: "250 r1 by A"},
	})
	expectLeaseLost(t, "node A Update including a recipient B holds", err)
	if got := statuses(t, s, m.ID); !slices.Equal(got, []string{"r1@example.com:queued", "r2@example.com:queued"}) {
		t.Errorf("refused Update was partly applied: %v", got)
	}
	if got := outcomeEvents(t, s, m.ID); len(got) != 0 {
		t.Errorf("refused Update wrote events %v", got)
	}
	// Each node records its own recipient.
	if err := a.Update(ctx, m.ID, la[0].Token, []store.Outcome{{RecipientID: r2, Status: store.StatusDelivered}}); err != nil {
		t.Fatalf("node A Update of r2: %v", err)
	}
	if err := b.Update(ctx, m.ID, lb[0].Token, []store.Outcome{{RecipientID: r1, Status: store.StatusDelivered}}); err != nil {
		t.Fatalf("node B Update of r1: %v", err)
	}
	if _, err := s.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("message with every recipient delivered still queued: %v", err)
	}
}

// testNodesReleaseLeases: ReleaseLeases on one node releases its own
// leases only.
func testNodesReleaseLeases(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	a, b := open("node-a"), open("node-b")
	var ma, mb []*store.Message
	var tokB []string
	for i := range 3 {
		m := NewMessage(base, fmt.Sprintf("a%d@example.com", i))
		Enqueue(t, a, m, []byte("x"), base.Add(time.Hour))
		ma = append(ma, m)
		m = NewMessage(base, fmt.Sprintf("b%d@example.com", i))
		tokB = append(tokB, Enqueue(t, b, m, []byte("x"), base.Add(time.Hour)))
		mb = append(mb, m)
	}
	// B also holds a lease taken by Lease (not at Enqueue).
	extra := NewMessage(base, "x@example.com")
	Enqueue(t, s, extra, []byte("x"), time.Time{})
	lb := mustLease(t, b, base, time.Hour, 10)
	if len(lb) != 1 || lb[0].Message.ID != extra.ID {
		t.Fatalf("node B Lease = %v", leasedIDs(lb))
	}
	if err := a.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	got := leasedIDs(mustLease(t, s, base.Add(time.Second), time.Minute, 100))
	if len(got) != len(ma) {
		t.Errorf("after node A's ReleaseLeases, %d messages leasable, want A's %d: %v", len(got), len(ma), got)
	}
	for _, m := range ma {
		if _, ok := got[m.ID]; !ok {
			t.Errorf("node A's message %s not released", m.ID)
		}
	}
	// B's leases are intact: its tokens still record outcomes.
	for i, m := range mb {
		if err := b.Update(ctx, m.ID, tokB[i], []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered}}); err != nil {
			t.Errorf("node B Update after A's ReleaseLeases: %v", err)
		}
	}
	if err := b.Renew(ctx, extra.ID, lb[0].Token, base.Add(2*time.Hour)); err != nil {
		t.Errorf("node B Renew after A's ReleaseLeases: %v", err)
	}
	// And B's own ReleaseLeases frees its remaining lease.
	if err := b.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	expectLeaseLost(t, "Renew after the node's own ReleaseLeases", b.Renew(ctx, extra.ID, lb[0].Token, base.Add(2*time.Hour)))
	if got := leasedIDs(mustLease(t, a, base.Add(time.Second), time.Minute, 100)); len(got) != 1 || got[extra.ID] == nil {
		t.Errorf("after node B's ReleaseLeases, leasable = %v, want only %s", got, extra.ID)
	}
}

// testNodesRenewKeeps: a lease its node renews is not taken over by the
// other node, however long the delivery runs; once renewals stop it is.
func testNodesRenewKeeps(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	a, b := open("node-a"), open("node-b")
	m := NewMessage(base, "a@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	const d = time.Minute
	la := mustLease(t, a, base, d, 10)
	if len(la) != 1 {
		t.Fatalf("node A Lease = %v", leasedIDs(la))
	}
	// A renews every d/3 for 10 lease durations; B keeps trying.
	now := base
	for range 30 {
		now = now.Add(d / 3)
		if err := a.Renew(ctx, m.ID, la[0].Token, now.Add(d)); err != nil {
			t.Fatalf("node A Renew at %v: %v", now, err)
		}
		if l := mustLease(t, b, now.Add(time.Millisecond), d, 10); len(l) != 0 {
			t.Fatalf("node B took over a renewed lease at %v", now)
		}
	}
	// A stops renewing (it died): B takes over after the last Until.
	if l := mustLease(t, b, now.Add(d), d, 10); len(l) != 0 {
		t.Fatal("node B took over at the lease's Until (must be strictly after)")
	}
	lb := mustLease(t, b, now.Add(d+time.Millisecond), d, 10)
	if len(lb) != 1 {
		t.Fatal("node B did not take over the lease A stopped renewing")
	}
	expectLeaseLost(t, "node A Renew after takeover", a.Renew(ctx, m.ID, la[0].Token, now.Add(2*d)))
}
