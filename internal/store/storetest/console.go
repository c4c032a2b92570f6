package storetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// consoleTests is the part of the suite for store.ConsoleAccess.
var consoleTests = []test{
	{"Operators", testOperators},
	{"Sessions", testSessions},
	{"OperatorChangeEndsSessions", testOperatorChangeEndsSessions},
}

// consoleNodeTests check that a login on one node is seen by another.
var consoleNodeTests = []nodeTest{
	{"SessionsShared", testSessionsShared},
}

func sessionHash(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func testOperators(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.GetOperator(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetOperator of nobody: %v, want ErrNotFound", err)
	}
	created := time.Unix(1_800_000_000, 0).UTC()
	if err := s.AddOperator(ctx, store.Operator{Name: "Alice", PasswordHash: "h1", Created: created}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOperator(ctx, store.Operator{Name: "alice", PasswordHash: "h2"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second AddOperator: %v, want ErrExists", err)
	}
	if err := s.AddOperator(ctx, store.Operator{Name: "bob", PasswordHash: "h3"}); err != nil {
		t.Fatal(err)
	}
	o, err := s.GetOperator(ctx, "ALICE")
	if err != nil || o.Name != "alice" || o.PasswordHash != "h1" || !o.Created.Equal(created) {
		t.Fatalf("GetOperator = %+v, %v", o, err)
	}
	if err := s.SetOperatorPassword(ctx, "alice", "h4"); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.GetOperator(ctx, "alice"); o.PasswordHash != "h4" {
		t.Errorf("hash after SetOperatorPassword = %q", o.PasswordHash)
	}
	if err := s.SetOperatorPassword(ctx, "carol", "x"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("SetOperatorPassword of nobody: %v", err)
	}
	l, err := s.ListOperators(ctx)
	if err != nil || len(l) != 2 || l[0].Name != "alice" || l[1].Name != "bob" {
		t.Fatalf("ListOperators = %+v, %v", l, err)
	}
	if err := s.DeleteOperator(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteOperator(ctx, "alice"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("second DeleteOperator: %v", err)
	}
	if l, _ := s.ListOperators(ctx); len(l) != 1 || l[0].Name != "bob" {
		t.Errorf("ListOperators after delete = %+v", l)
	}
}

func testSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0).UTC()
	a := store.Session{IDHash: sessionHash("a"), Kind: store.SessionUser, Subject: "u@example.com", Account: "acme",
		CSRF: "tok", Created: now, LastSeen: now, Expires: now.Add(12 * time.Hour)}
	if err := s.AddSession(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSession(ctx, a); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate AddSession: %v", err)
	}
	got, err := s.GetSession(ctx, sessionHash("a"))
	if err != nil || !bytes.Equal(got.IDHash, a.IDHash) || got.Kind != a.Kind || got.Subject != a.Subject ||
		got.Account != "acme" || got.CSRF != "tok" || !got.Created.Equal(now) || !got.Expires.Equal(a.Expires) {
		t.Fatalf("GetSession = %+v, %v", got, err)
	}
	if _, err := s.GetSession(ctx, sessionHash("b")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetSession of unknown: %v", err)
	}
	if err := s.TouchSession(ctx, a.IDHash, now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := s.TouchSession(ctx, a.IDHash, now.Add(time.Second)); err != nil { // never backwards
		t.Fatal(err)
	}
	if got, _ := s.GetSession(ctx, a.IDHash); !got.LastSeen.Equal(now.Add(time.Minute)) {
		t.Errorf("LastSeen = %v, want %v", got.LastSeen, now.Add(time.Minute))
	}
	if err := s.TouchSession(ctx, sessionHash("b"), now); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("TouchSession of unknown: %v", err)
	}
	// Pruning: c expired (absolute), d idle, a alive.
	c := a
	c.IDHash, c.Expires = sessionHash("c"), now.Add(-time.Second)
	d := a
	d.IDHash, d.LastSeen = sessionHash("d"), now.Add(-2*time.Hour)
	for _, x := range []store.Session{c, d} {
		if err := s.AddSession(ctx, x); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.PruneSessions(ctx, now, now.Add(-time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("PruneSessions = %d, %v; want 2", n, err)
	}
	if _, err := s.GetSession(ctx, a.IDHash); err != nil {
		t.Errorf("live session pruned: %v", err)
	}
	for _, x := range []store.Session{c, d} {
		if _, err := s.GetSession(ctx, x.IDHash); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("pruned session still there: %v", err)
		}
	}
	if err := s.DeleteSession(ctx, a.IDHash); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSession(ctx, a.IDHash); err != nil {
		t.Errorf("DeleteSession of a gone session: %v", err)
	}
	if _, err := s.GetSession(ctx, a.IDHash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted session still there: %v", err)
	}
	// DeleteSessionsOf ends only that subject's sessions of that kind.
	for i, x := range []struct{ kind, subj string }{{store.SessionUser, "u@x"}, {store.SessionUser, "u@x"},
		{store.SessionAPIKey, "u@x"}, {store.SessionUser, "v@x"}} {
		se := a
		se.IDHash, se.Kind, se.Subject = sessionHash(string(rune('k'+i))), x.kind, x.subj
		if err := s.AddSession(ctx, se); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := s.DeleteSessionsOf(ctx, store.SessionUser, "u@x"); err != nil || n != 2 {
		t.Fatalf("DeleteSessionsOf = %d, %v; want 2", n, err)
	}
	for i, want := range []bool{false, false, true, true} {
		_, err := s.GetSession(ctx, sessionHash(string(rune('k'+i))))
		if (err == nil) != want {
			t.Errorf("session %d: present=%v, want %v", i, err == nil, want)
		}
	}
}

func testOperatorChangeEndsSessions(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now()
	for _, name := range []string{"alice", "bob"} {
		if err := s.AddOperator(ctx, store.Operator{Name: name, PasswordHash: "h"}); err != nil {
			t.Fatal(err)
		}
		if err := s.AddSession(ctx, store.Session{IDHash: sessionHash(name), Kind: store.SessionOperator, Subject: name,
			Created: now, LastSeen: now, Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.SetOperatorPassword(ctx, "alice", "h2"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, sessionHash("alice")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("alice's session survived a password change: %v", err)
	}
	if _, err := s.GetSession(ctx, sessionHash("bob")); err != nil {
		t.Errorf("bob's session ended by alice's password change: %v", err)
	}
	if err := s.DeleteOperator(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, sessionHash("bob")); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("bob's session survived his deletion: %v", err)
	}
}

func testSessionsShared(t *testing.T, s store.Store, open func(node string) store.Store) {
	ctx := context.Background()
	other := open("node-b")
	now := time.Now()
	if err := s.AddOperator(ctx, store.Operator{Name: "alice", PasswordHash: "h"}); err != nil {
		t.Fatal(err)
	}
	if _, err := other.GetOperator(ctx, "alice"); err != nil {
		t.Fatalf("operator added on one node unknown on another: %v", err)
	}
	se := store.Session{IDHash: sessionHash("x"), Kind: store.SessionOperator, Subject: "alice", CSRF: "t",
		Created: now, LastSeen: now, Expires: now.Add(time.Hour)}
	if err := s.AddSession(ctx, se); err != nil {
		t.Fatal(err)
	}
	if got, err := other.GetSession(ctx, se.IDHash); err != nil || got.Subject != "alice" {
		t.Fatalf("session from another node: %+v, %v", got, err)
	}
	if err := other.DeleteSession(ctx, se.IDHash); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSession(ctx, se.IDHash); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("logout on another node did not end the session: %v", err)
	}
}
