package main

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/store"
)

// The operator commands keep the console's operators in the store, with
// argon2id hashes; a password change and a deletion end their sessions.
func TestOperatorCommands(t *testing.T) {
	c := newCLI(t, "")
	c.ok("operator password one\n", "operator", "add", "Admin")
	c.fails(65, "empty password", "operator", "add", "bob")
	c.fails(1, "invalid operator name", "operator", "add", "no spaces")
	if code, _, errs := c.run("another password 2\n", "operator", "add", "admin"); code == 0 || !strings.Contains(errs, "exists already") {
		t.Fatalf("second add: %d %q", code, errs)
	}
	if out := c.ok("", "operator", "list"); !strings.HasPrefix(out, "admin ") {
		t.Errorf("operator list = %q", out)
	}
	st := c.store()
	ctx := context.Background()
	op, err := st.GetOperator(ctx, "admin")
	if err != nil || !strings.HasPrefix(op.PasswordHash, "$argon2id$") {
		t.Fatalf("stored operator %+v, %v", op, err)
	}
	if ok, _ := auth.CheckPassword(op.PasswordHash, "operator password one"); !ok {
		t.Fatal("stored hash does not check the password")
	}
	now := time.Now()
	session := func(id string) []byte {
		h := []byte(id + "-------------------------------")[:32]
		if err := st.AddSession(ctx, store.Session{IDHash: h, Kind: store.SessionOperator, Subject: "admin",
			Created: now, LastSeen: now, Expires: now.Add(time.Hour)}); err != nil {
			t.Fatal(err)
		}
		return h
	}
	s1 := session("one")
	st.Close()
	c.ok("operator password two\n", "operator", "passwd", "admin")
	st = c.store()
	if _, err := st.GetSession(ctx, s1); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session survived the password change: %v", err)
	}
	op, _ = st.GetOperator(ctx, "admin")
	if ok, _ := auth.CheckPassword(op.PasswordHash, "operator password two"); !ok {
		t.Error("new password not set")
	}
	s2 := session("two")
	st.Close()
	c.ok("", "operator", "del", "admin")
	c.fails(1, "not found", "operator", "del", "admin")
	st = c.store()
	defer st.Close()
	if _, err := st.GetSession(ctx, s2); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("session survived the deletion: %v", err)
	}
	if ops, _ := st.ListOperators(ctx); len(ops) != 0 {
		t.Errorf("operators after delete: %+v", ops)
	}
}

// A user's new password ends the user's console logins.
func TestUserPasswdEndsConsoleSessions(t *testing.T) {
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	c.ok("first user password\n", "user", "add", "ann@example.com")
	st := c.store()
	now := time.Now()
	id := []byte("0123456789abcdef0123456789abcdef")
	if err := st.AddSession(context.Background(), store.Session{IDHash: id, Kind: store.SessionUser, Subject: "ann@example.com",
		Account: store.DefaultAccount, Created: now, LastSeen: now, Expires: now.Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	c.ok("second user password\n", "user", "passwd", "ann@example.com")
	st = c.store()
	defer st.Close()
	if _, err := st.GetSession(context.Background(), id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("console session survived the password change: %v", err)
	}
}
