package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// A webhook added through another handle (as by the CLI, another process)
// must be seen by this handle's writer, which caches the accounts that
// have webhooks; and one deleted there must no longer get deliveries.
func TestWebhookCacheSeesOtherHandle(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	a := openTest(t, dir, Options{})
	defer a.Close()
	b := openTest(t, dir, Options{})
	defer b.Close()

	enqueue := func(rcpt string) {
		t.Helper()
		storetest.Enqueue(t, a, storetest.NewMessage(t0, rcpt), []byte("x\r\n"), time.Time{})
	}
	pending := func() []string {
		t.Helper()
		ds, err := a.LeaseWebhookDeliveries(ctx, time.Now().Add(time.Hour), time.Minute, 100)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, d := range ds {
			out = append(out, d.WebhookID+":"+d.Event.Recipient)
		}
		return out
	}
	enqueue("before@example.com") // loads the cache: no webhooks
	if err := b.AddWebhook(ctx, store.Webhook{ID: "h", URL: "https://h.example/"}); err != nil {
		t.Fatal(err)
	}
	enqueue("after@example.com")
	if got := pending(); !slices.Equal(got, []string{"h:after@example.com"}) {
		t.Errorf("deliveries = %v, want [h:after@example.com]", got)
	}
	if err := b.DeleteWebhook(ctx, store.DefaultAccount, "h"); err != nil {
		t.Fatal(err)
	}
	enqueue("deleted@example.com")
	if got := pending(); len(got) != 0 {
		t.Errorf("deliveries after delete = %v", got)
	}
}

// A version 3 database (before accounts and events) migrates, keeping its
// queue: messages get the default account.
func TestMigrateFromV3(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	stmts := append([]string{`CREATE TABLE schema_version (version INTEGER NOT NULL)`, `INSERT INTO schema_version VALUES (3)`},
		schema[:3]...)
	stmts = append(stmts,
		`INSERT INTO messages (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, blob, body, headers)
			VALUES ('M1', 's@example.org', 1, 3, '', '', '', '', '', 'smtp', 0, 0, x'616263', x'')`,
		`INSERT INTO recipients (message_id, address, notify, orcpt, status, attempts, next_attempt, lease_until, last_reply, remote_mta, delay_warned, updated_at)
			VALUES ('M1', 'r@example.com', '', '', 'queued', 0, 1, 0, '', '', 0, 1)`,
		`INSERT INTO domains (name) VALUES ('example.com')`)
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s := openTest(t, dir, Options{})
	defer s.Close()
	m, err := s.Get(ctx, "M1")
	if err != nil {
		t.Fatal(err)
	}
	if m.Account != store.DefaultAccount || m.Sender != "s@example.org" || len(m.Recipients) != 1 {
		t.Errorf("migrated message = %+v", m)
	}
	if body := storetest.ReadBody(t, s, "M1"); string(body) != "abc" {
		t.Errorf("migrated body = %q", body)
	}
	if acc, err := s.DomainAccount(ctx, "example.com"); err != nil || acc != store.DefaultAccount {
		t.Errorf("migrated domain account = %q, %v", acc, err)
	}
	if a, err := s.GetAccount(ctx, store.DefaultAccount); err != nil || a.Created.IsZero() {
		t.Errorf("default account = %+v, %v", a, err)
	}
}

// cancelAfter is a context whose Err reports cancellation after its first
// n calls: DeleteAccount's first transaction runs, its purge is cut short.
type cancelAfter struct {
	context.Context
	mu sync.Mutex
	n  int
}

func (c *cancelAfter) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n <= 0 {
		return context.Canceled
	}
	c.n--
	return nil
}

// A purge cut short leaves the account deleted, its ID reserved (a new
// account cannot inherit the old rows) and is finished by PruneEvents.
func TestDeleteAccountPurgeResumes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t, t.TempDir(), Options{})
	defer s.Close()
	if err := s.AddAccount(ctx, store.Account{ID: "acme"}); err != nil {
		t.Fatal(err)
	}
	evs := make([]store.Event, 3*purgeChunk)
	for i := range evs {
		evs[i] = store.Event{Type: store.EventDelivered, Account: "acme"}
	}
	if err := s.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEvents(ctx, []store.Event{{Type: store.EventRejected, Account: "other"}}); err != nil {
		t.Fatal(err)
	}
	del, err := s.DeleteAccount(&cancelAfter{Context: ctx, n: 2}, "acme", false)
	if err != nil {
		t.Fatal(err)
	}
	if !del.Pending || del.Events != purgeChunk {
		t.Fatalf("AccountDeletion = %+v, want pending after one chunk", del)
	}
	if _, err := s.GetAccount(ctx, "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("GetAccount during the purge: %v", err)
	}
	if err := s.AddAccount(ctx, store.Account{ID: "acme"}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("AddAccount during the purge: %v, want ErrExists", err)
	}
	if _, err := s.PruneEvents(ctx, time.Unix(0, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAccount(ctx, store.Account{ID: "acme"}); err != nil {
		t.Fatalf("AddAccount after the purge: %v", err)
	}
	left, err := s.ListEvents(ctx, store.EventFilter{Account: "acme"})
	if err != nil || len(left) != 0 {
		t.Fatalf("%d events of the old account left, %v", len(left), err)
	}
	if all, _ := s.ListEvents(ctx, store.EventFilter{}); len(all) != 1 || all[0].Account != "other" {
		t.Fatalf("events left: %+v", all)
	}
}
