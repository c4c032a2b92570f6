package main

import (
	"context"
	"crypto/sha256"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/store/storetest"
)

func TestAccountAndAPIKeyCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "account", "add", "shop", "--name", "The Shop")
	c.fails(1, "already exists", "account", "add", "shop")
	c.fails(1, "invalid account ID", "account", "add", "Bad_ID")
	c.fails(2, "usage", "account", "add")

	out := c.ok("", "account", "limits", "shop", "--per-minute", "5", "--per-day", "1000")
	if !strings.Contains(out, "per minute 5, per hour unlimited, per day 1000") {
		t.Fatalf("limits: %q", out)
	}
	out = c.ok("", "account", "limits", "shop", "--per-hour", "60")
	if !strings.Contains(out, "per minute 5, per hour 60, per day 1000") {
		t.Fatalf("limits kept: %q", out)
	}
	c.fails(1, "not found", "account", "limits", "ghost", "--per-hour", "1")

	c.ok("", "domain", "add", "shop.example")
	c.fails(1, "unknown", "domain", "assign", "other.example", "shop")
	out = c.ok("", "domain", "assign", "Shop.Example", "shop")
	if !strings.Contains(out, "shop.example: assigned to account shop") {
		t.Fatalf("assign: %q", out)
	}
	out = c.ok("", "account", "list")
	if !strings.Contains(out, "shop") || !strings.Contains(out, "The Shop") || !strings.Contains(out, "shop.example") {
		t.Fatalf("list: %q", out)
	}
	c.fails(1, "still owns 1 domain and 0 users and has 0 queued messages", "account", "del", "shop")

	code, token, errs := c.run("", "apikey", "add", "shop", "--scope", "send,read", "--name", "ci")
	if code != 0 || !strings.Contains(errs, "shown only now") {
		t.Fatalf("apikey add: %d %q %q", code, token, errs)
	}
	token = strings.TrimSpace(token)
	id, secret, err := httpapi.ParseToken(token)
	if err != nil {
		t.Fatalf("printed token %q: %v", token, err)
	}
	st, err := sqlite.Open(c.dataDir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	k, err := st.GetAPIKey(context.Background(), id)
	st.Close()
	sum := sha256.Sum256(secret)
	if err != nil || k.Account != "shop" || string(k.SecretHash) != string(sum[:]) || strings.Join(k.Scopes, ",") != "send,read" || k.Name != "ci" {
		t.Fatalf("stored key %+v %v", k, err)
	}
	out = c.ok("", "apikey", "list", "shop")
	if !strings.Contains(out, id) || !strings.Contains(out, "send,read") || strings.Contains(out, token[16:]) {
		t.Fatalf("apikey list: %q", out)
	}
	c.fails(2, "unknown scope", "apikey", "add", "shop", "--scope", "send,root")
	c.fails(2, "--scope", "apikey", "add", "shop")
	c.fails(1, "not found", "apikey", "add", "ghost", "--scope", "send")
	c.fails(1, "not found", "apikey", "del", store.DefaultAccount, id)
	c.ok("", "apikey", "del", "shop", id)
	if out := c.ok("", "apikey", "list", "shop"); strings.Contains(out, id) {
		t.Fatalf("deleted key listed: %q", out)
	}

	c.ok("", "account", "add", "tmp")
	if out := c.ok("", "account", "del", "tmp"); !strings.Contains(out, "account tmp: deleted (0 events)") {
		t.Fatalf("del: %q", out)
	}
	c.fails(1, "not found", "account", "del", "tmp")
	c.fails(1, "cannot be deleted", "account", "del", store.DefaultAccount, "--force")
	c.fails(2, "usage", "account", "frobnicate")

	// --force hands the domain back to the default account and deletes the
	// account's queued mail and events; a new account of that ID starts empty.
	st, err = sqlite.Open(c.dataDir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := storetest.NewMessage(time.Now(), "bob@example.org")
	m.Account = "shop"
	storetest.Enqueue(t, st, m, []byte("Subject: x\r\n\r\nhi\r\n"), time.Time{})
	st.Close()
	c.fails(1, "has 1 queued message:", "account", "del", "shop")
	out = c.ok("", "account", "del", "shop", "--force")
	if !strings.Contains(out, "account shop: deleted (1 event, 1 queued message; 1 domain and 0 users back to default)") {
		t.Fatalf("del --force: %q", out)
	}
	st, err = sqlite.Open(c.dataDir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if a, err := st.DomainAccount(ctx, "shop.example"); err != nil || a != store.DefaultAccount {
		t.Errorf("domain after --force: %q, %v", a, err)
	}
	if _, err := st.Get(ctx, m.ID); err == nil {
		t.Error("queued message of the deleted account still queued")
	}
	c.ok("", "account", "add", "shop")
	if evs, err := st.ListEvents(ctx, store.EventFilter{Account: "shop"}); err != nil || len(evs) != 0 {
		t.Errorf("new account shop sees %d events (%v)", len(evs), err)
	}
}
