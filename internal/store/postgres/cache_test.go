package postgres

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// exec runs SQL on the store's schema behind its back (not through its
// methods, so its caches do not know).
func exec(t *testing.T, s *Store, q string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// readBody returns the body OpenBody gives for id, or its error.
func readBody(s *Store, id string) (string, error) {
	r, err := s.OpenBody(context.Background(), id)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// The worker a message is handed to reads its body from memory (it does
// not go back to the database for what was just written): the body of a
// message enqueued leased is served, header fields first, even once its
// row is gone behind the store's back, until this handle records an
// outcome of the message, deletes it, or the lease ends; so is the body of
// a message this handle leased. Unleased and chunked bodies are read from
// the database.
func TestHandoffBodyServedFromMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openFresh(t, Options{ChunkSize: 1 << 10, InlineMax: 1 << 10})
	enqueue := func(until time.Time, body string) (*store.Message, string) {
		m := storetest.NewMessage(t0, "a@example.com")
		m.Headers = []byte("DKIM-Signature: x\r\n")
		return m, storetest.Enqueue(t, s, m, []byte(body), until)
	}
	gone := func(id string) {
		t.Helper()
		exec(t, s, `DELETE FROM recipients WHERE message_id = $1`, id)
		exec(t, s, `DELETE FROM messages WHERE id = $1`, id)
	}
	wantGone := func(id, why string) {
		t.Helper()
		if got, err := readBody(s, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: OpenBody = %q, %v; want store.ErrNotFound from the database", why, got, err)
		}
	}
	lease := time.Now().Add(time.Hour)
	var err error

	// Served until the outcome is recorded.
	m, token := enqueue(lease, "Subject: one\r\n\r\nbody\r\n")
	gone(m.ID)
	if got, err := readBody(s, m.ID); err != nil || got != "DKIM-Signature: x\r\nSubject: one\r\n\r\nbody\r\n" {
		t.Fatalf("OpenBody of a handed-off message = %q, %v", got, err)
	}
	if got, err := readBody(s, m.ID); err != nil || got == "" {
		t.Fatalf("second OpenBody (another domain's delivery) = %q, %v", got, err)
	}
	err = s.Update(ctx, m.ID, token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered}})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Update of a message deleted meanwhile = %v, want ErrLeaseLost", err)
	}
	wantGone(m.ID, "after Update")

	// Leased messages too: their bodies come with the lease.
	m, _ = enqueue(time.Time{}, "Subject: leased\r\n\r\nbody\r\n")
	ls, err := s.Lease(ctx, time.Now(), time.Hour, 10)
	if err != nil || len(ls) != 1 || ls[0].Message.ID != m.ID {
		t.Fatalf("Lease = %+v, %v", ls, err)
	}
	exec(t, s, `UPDATE messages SET body = 'changed behind its back' WHERE id = $1`, m.ID)
	if got, err := readBody(s, m.ID); err != nil || got != "DKIM-Signature: x\r\nSubject: leased\r\n\r\nbody\r\n" {
		t.Fatalf("OpenBody of a leased message = %q, %v", got, err)
	}
	if err := s.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if got, err := readBody(s, m.ID); err != nil || got != "DKIM-Signature: x\r\nchanged behind its back" {
		t.Errorf("OpenBody after the outcome = %q, %v; want the database's", got, err)
	}

	// Dropped by Delete.
	m, _ = enqueue(lease, "Subject: two\r\n\r\nbody\r\n")
	if err := s.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	wantGone(m.ID, "after Delete")

	// Not after the lease ended, not without a lease, not chunked.
	m, _ = enqueue(time.Now().Add(-time.Second), "Subject: three\r\n\r\nbody\r\n")
	gone(m.ID)
	wantGone(m.ID, "lease over")
	m, _ = enqueue(time.Time{}, "Subject: four\r\n\r\nbody\r\n")
	gone(m.ID)
	wantGone(m.ID, "not leased")
	m, _ = enqueue(lease, string(storetest.Body(4, 3000)))
	if _, ok := s.handoff.Get(m.ID); ok {
		t.Error("a chunked body is held in memory")
	}

	// A restart of the node forgets everything.
	m, _ = enqueue(lease, "Subject: five\r\n\r\nbody\r\n")
	gone(m.ID)
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	wantGone(m.ID, "after ReleaseLeases")
	if s.handoff.Bytes() != 0 {
		t.Errorf("%d bytes still held", s.handoff.Bytes())
	}
}

// Accounts and active DKIM keys are read once per readcache.TTLDuration (each
// message's acceptance reads both): a change behind the handle's back is
// not seen at once, this handle's own changes are, and another node's
// within readcache.TTLDuration.
func TestReadCaches(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := newSchema(t)
	s := openTest(t, dsn, Options{Node: "a"})
	defer s.Close()
	other := openTest(t, dsn, Options{Node: "b"})
	defer other.Close()
	if err := s.AddAccount(ctx, store.Account{ID: "acme", Name: "Acme", Limits: store.AccountLimits{PerMinute: 1}}); err != nil {
		t.Fatal(err)
	}
	limit := func() int {
		t.Helper()
		a, err := s.GetAccount(ctx, "acme")
		if err != nil {
			t.Fatal(err)
		}
		return a.Limits.PerMinute
	}
	start := time.Now()
	if n := limit(); n != 1 {
		t.Fatalf("per minute %d, want 1", n)
	}
	exec(t, s, `UPDATE accounts SET per_minute = 2 WHERE id = 'acme'`)
	if n := limit(); n != 1 && time.Since(start) < readcache.TTLDuration/2 {
		t.Errorf("per minute %d right after a read: the account was read again", n)
	}
	if err := s.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 3}); err != nil {
		t.Fatal(err)
	}
	if n := limit(); n != 3 {
		t.Errorf("per minute %d after this handle's change, want 3", n)
	}
	if err := other.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 4}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "another node's account change", func() bool { return limit() == 4 })

	key := func(sel string) store.DKIMKey {
		return store.DKIMKey{Domain: "example.com", Selector: sel, Algorithm: "ed25519", PrivateKey: []byte("k-" + sel)}
	}
	active := func() string {
		t.Helper()
		keys, err := s.ActiveDKIMKeys(ctx, "Example.COM")
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) != 1 {
			return ""
		}
		return keys[0].Selector
	}
	if err := s.AddDKIMKey(ctx, key("s1")); err != nil {
		t.Fatal(err)
	}
	if sel := active(); sel != "" {
		t.Fatalf("active key %q before activation", sel)
	}
	if err := s.ActivateDKIMKey(ctx, "example.com", "s1"); err != nil {
		t.Fatal(err)
	}
	if sel := active(); sel != "s1" {
		t.Fatalf("active key %q after this handle activated s1", sel)
	}
	keys, _ := s.ActiveDKIMKeys(ctx, "example.com")
	keys[0].PrivateKey[0] = 'X' // the caller's copy
	if again, _ := s.ActiveDKIMKeys(ctx, "example.com"); string(again[0].PrivateKey) != "k-s1" {
		t.Errorf("a caller changed the cached key: %q", again[0].PrivateKey)
	}
	if err := other.AddDKIMKey(ctx, key("s2")); err != nil {
		t.Fatal(err)
	}
	if err := other.ActivateDKIMKey(ctx, "example.com", "s2"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "another node's key rotation", func() bool { return active() == "s2" })
	if err := s.DeactivateDKIMKey(ctx, "example.com", "s2"); err != nil {
		t.Fatal(err)
	}
	if sel := active(); sel != "" {
		t.Errorf("active key %q after this handle deactivated s2", sel)
	}
}

// waitFor polls cond for up to ten readcache.TTLDurations.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * readcache.TTLDuration)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not seen after %s", what, 10*readcache.TTLDuration)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
