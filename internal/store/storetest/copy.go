package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// copyTest is a case of store.Copy between two stores of the backend.
type copyTest struct {
	name string
	fn   func(t *testing.T, src, dst store.Store)
}

// copyTests is the part of the suite for store.Exporter and
// store.Importer (herald store copy).
var copyTests = []copyTest{
	{"Everything", testCopyEverything},
	{"Rerun", testCopyRerun},
	{"Conflict", testCopyConflict},
	{"EventConflict", testCopyEventConflict},
}

// copyEnds returns the store's Exporter and Importer sides.
func copyEnds(t *testing.T, src, dst store.Store) (store.Exporter, store.Importer) {
	t.Helper()
	ex, ok := src.(store.Exporter)
	if !ok {
		t.Fatalf("%T does not implement store.Exporter", src)
	}
	im, ok := dst.(store.Importer)
	if !ok {
		t.Fatalf("%T does not implement store.Importer", dst)
	}
	return ex, im
}

// copyFixture is what fillForCopy put in a store.
type copyFixture struct {
	small, big, leased, deferred *store.Message
	smallBody, bigBody           []byte
	secret                       []byte
	events                       int
}

// fillForCopy puts some of every kind of state in s.
func fillForCopy(t *testing.T, s store.Store) copyFixture {
	t.Helper()
	ctx := context.Background()
	now := time.Now().UTC().Truncate(time.Millisecond)
	must(t, "account", s.AddAccount(ctx, store.Account{ID: "acme", Name: "Acme", Limits: store.AccountLimits{PerMinute: 5, PerDay: 100},
		Tracking: store.AccountTracking{Clicks: true}, Created: now}))
	must(t, "domain", s.AddDomain(ctx, "acme.test"))
	must(t, "assign", s.SetDomainAccount(ctx, "acme.test", "acme"))
	must(t, "policy", s.SetDomainPolicy(ctx, "acme.test", store.DomainPolicy{DMARC: "monitor", SPFReject: "on"}))
	must(t, "user", s.AddUser(ctx, store.User{Address: "alice@acme.test", PasswordHash: "$argon2id$x", SendAs: []string{"@acme.test"}, Created: now}))
	must(t, "user account", s.SetUserAccount(ctx, "alice@acme.test", "acme"))
	must(t, "alias", s.AddAlias(ctx, store.Alias{Address: "postmaster@acme.test", Targets: []string{"alice@acme.test", "ext@remote.test"}}))
	must(t, "dkim", s.AddDKIMKey(ctx, store.DKIMKey{Domain: "acme.test", Selector: "s1", Algorithm: store.DKIMAlgorithmEd25519, PrivateKey: []byte("-----PEM-----"), Active: true, Created: now}))
	must(t, "api key", s.AddAPIKey(ctx, store.APIKey{ID: "k1", Account: "acme", Name: "ci", Scopes: []string{store.ScopeSend}, SecretHash: bytes.Repeat([]byte{7}, 32), Created: now}))
	must(t, "suppression", s.AddSuppression(ctx, store.Suppression{Account: "acme", Address: "gone@remote.test", Reason: store.SuppressHardBounce, Detail: "550 5.1.1", Created: now}))
	_, err := s.PutIdempotency(ctx, "acme", "req-1", "outcome-1", now)
	must(t, "idempotency", err)
	must(t, "route", s.AddRoute(ctx, store.Route{Address: "hook@acme.test", Account: "acme", Action: "http", URL: "http://127.0.0.1:1/in", Secret: "rs"}))
	must(t, "webhook", s.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: "acme", URL: "http://127.0.0.1:1/hook", Secret: "ws", Created: now}))
	must(t, "template", s.AddTemplate(ctx, store.Template{ID: "tpl_1", Account: "acme", Name: "welcome", Created: now}, store.TemplateVersion{Subject: "Hi {{name}}", Text: "t", HTML: "<p>h</p>", Created: now}, 0))
	f := copyFixture{secret: bytes.Repeat([]byte{0x5e}, 32)}
	_, err = s.Secret(ctx, "verp", f.secret)
	must(t, "secret", err)
	must(t, "dmarc report", s.AddDMARCReport(ctx, store.DMARCReport{Domain: "acme.test", Reporter: "google.com", ReportID: "r1",
		Begin: now.Add(-24 * time.Hour), End: now, Received: now, Data: []byte(`{"x":1}`)}))
	day := now.Truncate(24 * time.Hour)
	must(t, "tls counts", s.AddTLSCounts(ctx, []store.TLSCount{{Day: day, Domain: "remote.test", PolicyType: "sts", PolicyString: []string{"version: STSv1"}, Count: 3}}))
	tok, err := s.ClaimTLSReport(ctx, "remote.test", day, now, now.Add(time.Hour))
	must(t, "claim", err)
	if tok == "" {
		t.Fatal("no TLS-RPT claim")
	}

	// The queue: an inline body, a big one (blob file, chunks), one
	// leased (the lease must not be copied as held), one deferred after
	// an attempt.
	t0 := now.Add(-time.Hour)
	f.small = NewMessage(t0, "a@remote.test", "b@remote.test")
	f.small.Account, f.small.Tags, f.small.Metadata = "acme", []string{"t1"}, map[string]string{"k": "v"}
	f.small.Headers = []byte("DKIM-Signature: v=1; test\r\n")
	f.smallBody = Body(11, 3<<10)
	Enqueue(t, s, f.small, f.smallBody, time.Time{})
	f.big = NewMessage(t0.Add(time.Second), "c@remote.test")
	f.big.Headers = []byte("Authentication-Results: x; spf=pass\r\n")
	f.bigBody = Body(12, 700<<10)
	Enqueue(t, s, f.big, f.bigBody, time.Time{})
	f.leased = NewMessage(t0.Add(2*time.Second), "d@remote.test")
	Enqueue(t, s, f.leased, Body(13, 100), now.Add(time.Hour))
	f.deferred = NewMessage(t0.Add(3*time.Second), "e@remote.test", "f@remote.test")
	f.deferred.Account = "acme"
	Enqueue(t, s, f.deferred, Body(14, 100), time.Time{})
	must(t, "defer", s.Update(ctx, f.deferred.ID, "", []store.Outcome{
		{RecipientID: f.deferred.Recipients[0].ID, Status: store.StatusDeferred, NextAttempt: now.Add(30 * time.Minute), Reply: "451 4.7.1 later", RemoteMTA: "mx.remote.test", DelayWarned: true},
		{RecipientID: f.deferred.Recipients[1].ID, Status: store.StatusDelivered, Reply: "250 ok", RemoteMTA: "mx.remote.test"},
	}))
	evs, err := s.ListEvents(ctx, store.EventFilter{Limit: 1000})
	must(t, "events", err)
	f.events = len(evs)
	if f.events < 8 {
		t.Fatalf("only %d events", f.events)
	}
	return f
}

// dump exports every row of every copied table of s.
func dump(t *testing.T, s store.Store) map[string][]store.Row {
	t.Helper()
	ex, ok := s.(store.Exporter)
	if !ok {
		t.Fatalf("%T does not implement store.Exporter", s)
	}
	out := map[string][]store.Row{}
	for _, tb := range append(slices.Clone(store.CopyTables), store.MessageTable) {
		var after store.Row
		for {
			rows, err := ex.ExportRows(context.Background(), tb, after, 3)
			must(t, "export "+tb.Name, err)
			out[tb.Name] = append(out[tb.Name], rows...)
			if len(rows) < 3 {
				break
			}
			after = tb.KeyOf(rows[len(rows)-1])
		}
	}
	return out
}

// copyCounts runs store.Copy and returns its counts by kind.
func copyCounts(t *testing.T, src, dst store.Store, opts store.CopyOptions) map[string]store.CopyCount {
	t.Helper()
	ex, im := copyEnds(t, src, dst)
	counts, err := store.Copy(context.Background(), ex, im, opts)
	must(t, "Copy", err)
	m := map[string]store.CopyCount{}
	for _, c := range counts {
		m[c.Kind] = c
	}
	if len(m) != len(store.CopyTables)+1 {
		t.Fatalf("counts of %d kinds, want %d", len(m), len(store.CopyTables)+1)
	}
	return m
}

func testCopyEverything(t *testing.T, src, dst store.Store) {
	ctx := context.Background()
	f := fillForCopy(t, src)
	counts := copyCounts(t, src, dst, store.CopyOptions{Batch: 2}) // several batches of every kind
	if c := counts["messages"]; c.Seen != 4 || c.Copied != 4 {
		t.Errorf("messages %+v, want 4 copied", c)
	}
	if c := counts["events"]; c.Copied != f.events {
		t.Errorf("events %+v, want %d copied", c, f.events)
	}
	if c := counts["accounts"]; c.Seen != 2 || c.Copied != 1 || c.Present != 1 {
		t.Errorf("accounts %+v, want acme copied and default present", c)
	}

	// Every copied table holds the same rows (but the destination's own
	// default account, created with its store).
	a, b := dump(t, src), dump(t, dst)
	for name, rows := range a {
		got := b[name]
		if name == "accounts" {
			rows, got = rows[:1], got[:1] // "acme" < "default"
		}
		if len(rows) != len(got) {
			t.Errorf("%s: %d rows copied, want %d", name, len(got), len(rows))
			continue
		}
		for i := range rows {
			if !store.EqualRows(rows[i], got[i]) {
				t.Errorf("%s row %d: %v, want %v", name, i, got[i], rows[i])
			}
		}
	}

	// Through the interfaces the server uses.
	if acc, err := dst.GetAccount(ctx, "acme"); err != nil || acc.Limits.PerDay != 100 {
		t.Errorf("account: %+v %v", acc, err)
	}
	if owner, err := dst.DomainAccount(ctx, "acme.test"); err != nil || owner != "acme" {
		t.Errorf("domain owner %q %v", owner, err)
	}
	if local, err := dst.IsLocalDomain(ctx, "acme.test"); err != nil || !local {
		t.Errorf("IsLocalDomain: %v %v", local, err)
	}
	if p, err := dst.GetDomainPolicy(ctx, "acme.test"); err != nil || p.DMARC != "monitor" || p.SPFReject != "on" {
		t.Errorf("policy %+v %v", p, err)
	}
	if u, err := dst.GetUser(ctx, "alice@acme.test"); err != nil || u.PasswordHash != "$argon2id$x" || !slices.Equal(u.SendAs, []string{"@acme.test"}) {
		t.Errorf("user %+v %v", u, err)
	}
	if k, err := dst.GetDKIMKey(ctx, "acme.test", "s1"); err != nil || !k.Active || string(k.PrivateKey) != "-----PEM-----" {
		t.Errorf("dkim key %+v %v", k, err)
	}
	if sup, err := dst.IsSuppressed(ctx, "acme", "gone@remote.test"); err != nil || !sup {
		t.Errorf("suppressed: %v %v", sup, err)
	}
	if v, err := dst.PutIdempotency(ctx, "acme", "req-1", "other", time.Now()); !errors.Is(err, store.ErrExists) || v != "outcome-1" {
		t.Errorf("idempotency key: %q %v, want the copied one", v, err)
	}
	if sec, err := dst.Secret(ctx, "verp", nil); err != nil || !bytes.Equal(sec, f.secret) {
		t.Errorf("secret %x %v", sec, err)
	}
	if r, err := dst.GetRoute(ctx, "hook@acme.test"); err != nil || r.URL != "http://127.0.0.1:1/in" {
		t.Errorf("route %+v %v", r, err)
	}
	if ds, err := dst.ListWebhookDeliveries(ctx, "acme", "wh1", 100); err != nil || len(ds) == 0 {
		t.Errorf("webhook deliveries %d %v", len(ds), err)
	}
	if reps, err := dst.ListDMARCReports(ctx, ""); err != nil || len(reps) != 1 || string(reps[0].Data) != `{"x":1}` {
		t.Errorf("dmarc reports %+v %v", reps, err)
	}

	// The queue: envelopes, recipient states and bodies.
	for _, m := range []*store.Message{f.small, f.big, f.leased, f.deferred} {
		want, got := mustGet(t, src, m.ID), mustGet(t, dst, m.ID)
		if fmt.Sprint(envelope(want)) != fmt.Sprint(envelope(got)) {
			t.Errorf("message %s: %v, want %v", m.ID, envelope(got), envelope(want))
		}
		if !bytes.Equal(ReadBody(t, dst, m.ID), ReadBody(t, src, m.ID)) {
			t.Errorf("message %s: body differs", m.ID)
		}
	}
	if got := ReadBody(t, dst, f.big.ID); !bytes.Equal(got, append(slices.Clone(f.big.Headers), f.bigBody...)) {
		t.Errorf("big body: %d bytes", len(got))
	}
	// The leased message is due in the destination: leases are not copied.
	leases, err := dst.Lease(ctx, time.Now(), time.Minute, 10)
	must(t, "lease", err)
	var ids []string
	for _, l := range leases {
		ids = append(ids, l.Message.ID)
	}
	if !slices.Contains(ids, f.leased.ID) || !slices.Contains(ids, f.small.ID) || slices.Contains(ids, f.deferred.ID) {
		t.Errorf("due in the destination: %v (leased %s must be, deferred %s must not)", ids, f.leased.ID, f.deferred.ID)
	}

	// New events get IDs after the copied ones.
	must(t, "add event", dst.AddEvents(ctx, []store.Event{{Time: time.Now(), Type: store.EventRejected, Account: "acme", Recipient: "x@remote.test"}}))
	evs, err := dst.ListEvents(ctx, store.EventFilter{Limit: 1000})
	must(t, "events", err)
	if len(evs) != f.events+1 {
		t.Fatalf("%d events after one more, want %d", len(evs), f.events+1)
	}
	for _, e := range evs[:len(evs)-1] {
		if e.ID >= evs[len(evs)-1].ID {
			t.Errorf("new event ID %d not after copied %d", evs[len(evs)-1].ID, e.ID)
		}
	}
}

// envelope is a message without its recipients' IDs (the destination
// assigns its own).
func envelope(m *store.Message) []any {
	out := []any{m.ID, m.Sender, m.Received.UnixNano(), m.Size, m.Ret, m.EnvID, m.ClientIP, m.HELO, m.AuthUser, m.Source,
		m.SMTPUTF8, m.Account, m.Tags, fmt.Sprint(m.Metadata), string(m.Headers)}
	for _, r := range m.Recipients {
		out = append(out, r.Address, r.Notify, r.ORCPT, r.Status, r.Attempts, r.NextAttempt.UnixNano(), r.LastReply, r.RemoteMTA, r.DelayWarned, r.UpdatedAt.UnixNano())
	}
	return out
}

// A copy run again copies nothing twice, and never brings back a message
// the destination delivered since.
func testCopyRerun(t *testing.T, src, dst store.Store) {
	ctx := context.Background()
	f := fillForCopy(t, src)
	copyCounts(t, src, dst, store.CopyOptions{})
	before := dump(t, dst)
	again := copyCounts(t, src, dst, store.CopyOptions{})
	for kind, c := range again {
		if c.Copied != 0 || c.Replaced != 0 || c.Present != c.Seen {
			t.Errorf("second run, %s: %+v, want everything present", kind, c)
		}
	}
	after := dump(t, dst)
	for name := range before {
		if len(before[name]) != len(after[name]) {
			t.Errorf("%s: %d rows after the second run, %d before", name, len(after[name]), len(before[name]))
		}
	}
	// Delivered in the destination (and so removed), then copied again.
	m := mustGet(t, dst, f.small.ID)
	var outs []store.Outcome
	for _, r := range m.Recipients {
		outs = append(outs, store.Outcome{RecipientID: r.ID, Status: store.StatusDelivered, Reply: "250 ok"})
	}
	must(t, "deliver", dst.Update(ctx, f.small.ID, "", outs))
	if _, err := dst.Get(ctx, f.small.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("delivered message still queued: %v", err)
	}
	third := copyCounts(t, src, dst, store.CopyOptions{})
	if c := third["messages"]; c.Copied != 0 || c.Present != 4 {
		t.Errorf("third run, messages %+v, want 4 present", c)
	}
	if _, err := dst.Get(ctx, f.small.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("a delivered message was copied again: %v", err)
	}
}

// A destination with another VERP key refuses the copy, writing nothing,
// unless the source's is to replace it.
func testCopyConflict(t *testing.T, src, dst store.Store) {
	ctx := context.Background()
	f := fillForCopy(t, src)
	other := bytes.Repeat([]byte{0x07}, 32)
	_, err := dst.Secret(ctx, "verp", other)
	must(t, "destination secret", err)
	ex, im := copyEnds(t, src, dst)
	_, err = store.Copy(ctx, ex, im, store.CopyOptions{})
	var ce *store.ConflictError
	if !errors.As(err, &ce) || len(ce.Conflicts) != 1 || ce.Conflicts[0].Kind != "secrets" || ce.Conflicts[0].Key != "verp" {
		t.Fatalf("Copy into a store with another VERP key: %v, want a conflict on secret verp", err)
	}
	if ds, err := dst.ListDomains(ctx); err != nil || len(ds) != 0 {
		t.Fatalf("a refused copy wrote domains: %v %v", ds, err)
	}
	if _, err := dst.Get(ctx, f.small.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a refused copy wrote a message: %v", err)
	}
	counts := copyCounts(t, src, dst, store.CopyOptions{Replace: true})
	if c := counts["secrets"]; c.Replaced != 1 {
		t.Errorf("secrets %+v, want 1 replaced", c)
	}
	if sec, err := dst.Secret(ctx, "verp", nil); err != nil || !bytes.Equal(sec, f.secret) {
		t.Errorf("secret after replacing: %x %v", sec, err)
	}
}

// A destination with its own event log (events under the IDs of the
// source's) refuses the copy: inserting around them would lose events
// silently.
func testCopyEventConflict(t *testing.T, src, dst store.Store) {
	ctx := context.Background()
	fillForCopy(t, src)
	must(t, "destination event", dst.AddEvents(ctx, []store.Event{{Time: time.Now(), Type: store.EventRejected, Account: store.DefaultAccount, Recipient: "x@remote.test"}}))
	ex, im := copyEnds(t, src, dst)
	_, err := store.Copy(ctx, ex, im, store.CopyOptions{})
	var ce *store.ConflictError
	if !errors.As(err, &ce) || len(ce.Conflicts) != 1 || ce.Conflicts[0].Kind != "events" {
		t.Fatalf("Copy into a store with its own events: %v, want a conflict on one event", err)
	}
	evs, err := dst.ListEvents(ctx, store.EventFilter{Limit: 100})
	must(t, "events", err)
	if len(evs) != 1 {
		t.Errorf("a refused copy left %d events, want the destination's 1", len(evs))
	}
}
