package storetest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

// Behind reaches a backend's database behind a store handle's back, as
// another process or node would (the handle's caches do not know), for
// the tests of its read caches.
type Behind struct {
	// Exec runs one statement; its placeholders are written "?".
	Exec func(t testing.TB, query string, args ...any)
	// Handoff is the handle's hand-off cache.
	Handoff *readcache.Handoff
}

// openBody returns the body OpenBody gives for id, or its error.
func openBody(q store.Queue, id string) (string, error) {
	r, err := q.OpenBody(context.Background(), id)
	if err != nil {
		return "", err
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	return string(b), err
}

// HandoffBody checks the direct hand-off of bodies (readcache.Handoff):
// the body of a message enqueued leased is served from memory, header
// fields first, even once its row is gone behind the handle's back, until
// the handle records an outcome of the message, deletes it, or the lease
// ends; a deferral sends the next attempt back to the database. Unleased
// bodies and bodies too large to be stored inline (a blob file, chunks)
// are read from the database. The store must keep bodies of at most 1 KiB
// inline.
func HandoffBody(t *testing.T, q store.Queue, bb Behind) {
	ctx := context.Background()
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	enqueue := func(until time.Time, body string) (*store.Message, string) {
		m := NewMessage(t0, "a@example.com")
		m.Headers = []byte("DKIM-Signature: x\r\n")
		return m, Enqueue(t, q, m, []byte(body), until)
	}
	gone := func(id string) {
		t.Helper()
		bb.Exec(t, `DELETE FROM recipients WHERE message_id = ?`, id)
		bb.Exec(t, `DELETE FROM messages WHERE id = ?`, id)
	}
	wantGone := func(id, why string) {
		t.Helper()
		if got, err := openBody(q, id); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s: OpenBody = %q, %v; want store.ErrNotFound from the database", why, got, err)
		}
	}
	lease := time.Now().Add(time.Hour)

	// Served until the outcome is recorded.
	m, token := enqueue(lease, "Subject: one\r\n\r\nbody\r\n")
	gone(m.ID)
	if got, err := openBody(q, m.ID); err != nil || got != "DKIM-Signature: x\r\nSubject: one\r\n\r\nbody\r\n" {
		t.Fatalf("OpenBody of a handed-off message = %q, %v", got, err)
	}
	if got, err := openBody(q, m.ID); err != nil || got == "" {
		t.Fatalf("second OpenBody (another domain's delivery) = %q, %v", got, err)
	}
	err := q.Update(ctx, m.ID, token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered}})
	if !errors.Is(err, store.ErrLeaseLost) {
		t.Errorf("Update of a message deleted meanwhile = %v, want ErrLeaseLost", err)
	}
	wantGone(m.ID, "after Update")

	// A deferral drops it too: the next attempt reads the database.
	m, token = enqueue(lease, "Subject: deferred\r\n\r\nbody\r\n")
	bb.Exec(t, `UPDATE messages SET body = ? WHERE id = ?`, []byte("changed behind its back"), m.ID)
	if got, _ := openBody(q, m.ID); !strings.HasSuffix(got, "Subject: deferred\r\n\r\nbody\r\n") {
		t.Fatalf("OpenBody while leased = %q, want the copy in memory", got)
	}
	if err := q.Update(ctx, m.ID, token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if got, err := openBody(q, m.ID); err != nil || got != "DKIM-Signature: x\r\nchanged behind its back" {
		t.Errorf("OpenBody after the outcome = %q, %v; want the database's", got, err)
	}

	// Dropped by Delete.
	m, _ = enqueue(lease, "Subject: two\r\n\r\nbody\r\n")
	if err := q.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	wantGone(m.ID, "after Delete")

	// Not after the lease ended, not without a lease, not a large body.
	m, _ = enqueue(time.Now().Add(-time.Second), "Subject: three\r\n\r\nbody\r\n")
	gone(m.ID)
	wantGone(m.ID, "lease over")
	m, _ = enqueue(time.Time{}, "Subject: four\r\n\r\nbody\r\n")
	gone(m.ID)
	wantGone(m.ID, "not leased")
	m, _ = enqueue(lease, string(Body(4, 3000)))
	if _, held := bb.Handoff.Get(m.ID); held {
		t.Error("a body not stored inline is held in memory")
	}

	// A restart of the node forgets everything.
	m, _ = enqueue(lease, "Subject: five\r\n\r\nbody\r\n")
	gone(m.ID)
	if err := q.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	wantGone(m.ID, "after ReleaseLeases")
	if n := bb.Handoff.Bytes(); n != 0 {
		t.Errorf("%d bytes still held", n)
	}
}

// CachedReads is what the read-cache test uses of a store.
type CachedReads interface {
	store.Platform
	store.DKIMKeys
	store.TrackingSettings
}

// ReadCaches checks that accounts and active DKIM keys are read once per
// readcache.TTLDuration (each message's acceptance reads both): a change
// behind the handle's back is not seen at once but within a few TTLs, the
// handle's own changes at once, and a caller cannot change the cached
// keys through its copy.
func ReadCaches(t *testing.T, s CachedReads, bb Behind) {
	ctx := context.Background()
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
	bb.Exec(t, `UPDATE accounts SET per_minute = 2 WHERE id = 'acme'`)
	if n := limit(); n != 1 && time.Since(start) < readcache.TTLDuration/2 {
		t.Errorf("per minute %d right after a read: the account was read again", n)
	}
	WaitFor(t, "a change behind the handle's back", func() bool { return limit() == 2 })
	if err := s.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 3}); err != nil {
		t.Fatal(err)
	}
	if n := limit(); n != 3 {
		t.Errorf("per minute %d after this handle's change, want 3", n)
	}
	if err := s.UpdateAccountTracking(ctx, "acme", store.AccountTracking{Opens: true}); err != nil {
		t.Fatal(err)
	}
	if a, _ := s.GetAccount(ctx, "acme"); !a.Tracking.Opens {
		t.Error("tracking change of this handle not seen at once")
	}

	key := func(sel string) store.DKIMKey {
		return store.DKIMKey{Domain: "example.com", Selector: sel, Algorithm: "ed25519", PrivateKey: []byte("k-" + sel)}
	}
	active := func() string {
		t.Helper()
		keys, err := s.ActiveDKIMKeys(ctx, "Example.COM")
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) == 0 {
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
	bb.Exec(t, `UPDATE dkim_keys SET active = ? WHERE selector = 's1'`, false)
	WaitFor(t, "a key deactivated behind the handle's back", func() bool { return active() == "" })
	if err := s.ActivateDKIMKey(ctx, "example.com", "s1"); err != nil {
		t.Fatal(err)
	}
	if sel := active(); sel != "s1" {
		t.Errorf("active key %q after this handle activated s1 again", sel)
	}
	if err := s.DeactivateDKIMKey(ctx, "example.com", "s1"); err != nil {
		t.Fatal(err)
	}
	if sel := active(); sel != "" {
		t.Errorf("active key %q after this handle deactivated s1", sel)
	}
}

// WaitFor polls cond for up to ten readcache.TTLDurations.
func WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * readcache.TTLDuration)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s not seen after %s", what, 10*readcache.TTLDuration)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
