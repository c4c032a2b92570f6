package storetest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// platformTests is the part of the suite for store.Platform.
var platformTests = []test{
	{"Accounts", testAccounts},
	{"DeleteAccountCascade", testDeleteAccountCascade},
	{"DomainUserAccount", testDomainUserAccount},
	{"MessageAccountTags", testMessageAccountTags},
	{"EnqueueEvents", testEnqueueEvents},
	{"UpdateEvents", testUpdateEvents},
	{"EventFilters", testEventFilters},
	{"EventPagination", testEventPagination},
	{"WebhookFanOut", testWebhookFanOut},
	{"WebhookLeaseExclusive", testWebhookLeaseExclusive},
	{"WebhookAttempts", testWebhookAttempts},
	{"DeleteWebhookDropsPending", testDeleteWebhookDropsPending},
	{"WebhookLimit", testWebhookLimit},
	{"PruneEvents", testPruneEvents},
	{"Suppressions", testSuppressions},
	{"APIKeys", testAPIKeys},
	{"Idempotency", testIdempotency},
	{"Routes", testRoutes},
	{"TenantIsolation", testTenantIsolation},
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func expectExists(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrExists) {
		t.Errorf("%s: err = %v, want ErrExists", what, err)
	}
}

func addAccount(t *testing.T, s store.Store, id string) {
	t.Helper()
	must(t, "AddAccount "+id, s.AddAccount(context.Background(), store.Account{ID: id, Name: "Account " + id}))
}

// deleteAccount calls DeleteAccount and returns its error only.
func deleteAccount(s store.Store, id string, force bool) error {
	_, err := s.DeleteAccount(context.Background(), id, force)
	return err
}

func listEvents(t *testing.T, s store.Store, f store.EventFilter) []store.Event {
	t.Helper()
	evs, err := s.ListEvents(context.Background(), f)
	if err != nil {
		t.Fatalf("ListEvents(%+v): %v", f, err)
	}
	return evs
}

// eventSummary renders events as "type:recipient" for comparisons.
func eventSummary(evs []store.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Type + ":" + e.Recipient
	}
	return out
}

func testAccounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	def, err := s.GetAccount(ctx, store.DefaultAccount)
	must(t, "GetAccount default", err)
	if def.ID != store.DefaultAccount {
		t.Errorf("default account = %+v", def)
	}
	a := store.Account{ID: "acme", Name: "Acme", Limits: store.AccountLimits{PerMinute: 10, PerHour: 100, PerDay: 1000}, Created: base}
	must(t, "AddAccount", s.AddAccount(ctx, a))
	expectExists(t, "AddAccount again", s.AddAccount(ctx, a))
	if err := s.AddAccount(ctx, store.Account{ID: "Bad ID"}); err == nil {
		t.Error("AddAccount with invalid ID succeeded")
	}
	got, err := s.GetAccount(ctx, "acme")
	must(t, "GetAccount", err)
	if got.Name != "Acme" || got.Limits != a.Limits || !got.Created.Equal(base) {
		t.Errorf("GetAccount = %+v, want %+v", got, a)
	}
	must(t, "UpdateAccountLimits", s.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerDay: 5}))
	got, _ = s.GetAccount(ctx, "acme")
	if got.Limits != (store.AccountLimits{PerDay: 5}) {
		t.Errorf("limits after update = %+v", got.Limits)
	}
	expectNotFound(t, "UpdateAccountLimits unknown", s.UpdateAccountLimits(ctx, "nope", store.AccountLimits{}))
	_, err = s.GetAccount(ctx, "nope")
	expectNotFound(t, "GetAccount unknown", err)
	all, err := s.ListAccounts(ctx)
	must(t, "ListAccounts", err)
	var ids []string
	for _, a := range all {
		ids = append(ids, a.ID)
	}
	if !slices.Equal(ids, []string{"acme", store.DefaultAccount}) {
		t.Errorf("ListAccounts = %v", ids)
	}

	// An account owning a domain or a user cannot be deleted.
	must(t, "AddDomain", s.AddDomain(ctx, "acme.example"))
	must(t, "SetDomainAccount", s.SetDomainAccount(ctx, "acme.example", "acme"))
	expectExists(t, "DeleteAccount owning a domain", deleteAccount(s, "acme", false))
	must(t, "SetDomainAccount back", s.SetDomainAccount(ctx, "acme.example", store.DefaultAccount))
	must(t, "AddUser", s.AddUser(ctx, store.User{Address: "u@acme.example", PasswordHash: "x"}))
	must(t, "SetUserAccount", s.SetUserAccount(ctx, "u@acme.example", "acme"))
	expectExists(t, "DeleteAccount owning a user", deleteAccount(s, "acme", false))
	must(t, "DeleteUser", s.DeleteUser(ctx, "u@acme.example"))

	// Deleting takes the account's keys and webhooks with it.
	must(t, "AddAPIKey", s.AddAPIKey(ctx, store.APIKey{ID: "k1", Account: "acme", SecretHash: []byte{1}}))
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "w1", Account: "acme", URL: "https://h.example/"}))
	must(t, "DeleteAccount", deleteAccount(s, "acme", false))
	expectNotFound(t, "DeleteAccount again", deleteAccount(s, "acme", false))
	expectNotFound(t, "DeleteAccount again with force", deleteAccount(s, "acme", true))
	_, err = s.GetAPIKey(ctx, "k1")
	expectNotFound(t, "GetAPIKey of deleted account", err)
	if hooks, _ := s.ListWebhooks(ctx, "acme"); len(hooks) != 0 {
		t.Errorf("webhooks of deleted account: %v", hooks)
	}
	for _, force := range []bool{false, true} {
		if err := deleteAccount(s, store.DefaultAccount, force); err == nil {
			t.Errorf("DeleteAccount(default, force %v) succeeded", force)
		}
	}
	if _, err := s.GetAccount(ctx, store.DefaultAccount); err != nil {
		t.Errorf("default account gone: %v", err)
	}
}

func testDomainUserAccount(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "acme")
	must(t, "AddDomain", s.AddDomain(ctx, "Acme.Example"))
	must(t, "AddDomain", s.AddDomain(ctx, "other.example"))
	acc, err := s.DomainAccount(ctx, "acme.example")
	must(t, "DomainAccount", err)
	if acc != store.DefaultAccount {
		t.Errorf("new domain's account = %q, want default", acc)
	}
	must(t, "SetDomainAccount", s.SetDomainAccount(ctx, "ACME.example.", "acme"))
	if acc, _ := s.DomainAccount(ctx, "acme.EXAMPLE"); acc != "acme" {
		t.Errorf("DomainAccount = %q, want acme", acc)
	}
	expectNotFound(t, "SetDomainAccount unknown domain", s.SetDomainAccount(ctx, "nope.example", "acme"))
	expectNotFound(t, "SetDomainAccount unknown account", s.SetDomainAccount(ctx, "other.example", "nope"))
	_, err = s.DomainAccount(ctx, "nope.example")
	expectNotFound(t, "DomainAccount unknown", err)
	ds, err := s.ListAccountDomains(ctx, "acme")
	must(t, "ListAccountDomains", err)
	if !slices.Equal(ds, []string{"acme.example"}) {
		t.Errorf("ListAccountDomains(acme) = %v", ds)
	}
	if ds, _ := s.ListAccountDomains(ctx, store.DefaultAccount); !slices.Equal(ds, []string{"other.example"}) {
		t.Errorf("ListAccountDomains(default) = %v", ds)
	}

	must(t, "AddUser", s.AddUser(ctx, store.User{Address: "u@acme.example", PasswordHash: "x"}))
	if acc, _ := s.UserAccount(ctx, "u@acme.example"); acc != store.DefaultAccount {
		t.Errorf("new user's account = %q, want default", acc)
	}
	must(t, "SetUserAccount", s.SetUserAccount(ctx, "U@Acme.Example", "acme"))
	if acc, _ := s.UserAccount(ctx, "u@acme.example"); acc != "acme" {
		t.Errorf("UserAccount = %q, want acme", acc)
	}
	expectNotFound(t, "SetUserAccount unknown user", s.SetUserAccount(ctx, "x@acme.example", "acme"))
	expectNotFound(t, "SetUserAccount unknown account", s.SetUserAccount(ctx, "u@acme.example", "nope"))
	_, err = s.UserAccount(ctx, "x@acme.example")
	expectNotFound(t, "UserAccount unknown", err)
}

func testMessageAccountTags(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com")
	m.Account = "acme"
	m.Tags = []string{"welcome", "q4"}
	m.Metadata = map[string]string{"user": "42", "plan": "pro"}
	Enqueue(t, s, m, []byte("x\r\n"), time.Time{})
	plain := NewMessage(base, "b@example.com")
	Enqueue(t, s, plain, []byte("y\r\n"), time.Time{})

	check := func(what string, got *store.Message, want *store.Message, wantAccount string) {
		t.Helper()
		if got.Account != wantAccount || !slices.Equal(got.Tags, want.Tags) || fmt.Sprint(got.Metadata) != fmt.Sprint(want.Metadata) {
			t.Errorf("%s: account %q tags %v metadata %v, want %q %v %v", what, got.Account, got.Tags, got.Metadata,
				wantAccount, want.Tags, want.Metadata)
		}
	}
	check("Get", mustGet(t, s, m.ID), m, "acme")
	check("Get plain", mustGet(t, s, plain.ID), &store.Message{}, store.DefaultAccount)
	list, err := s.List(ctx, "", 10)
	must(t, "List", err)
	if len(list) != 2 {
		t.Fatalf("List returned %d messages", len(list))
	}
	check("List", list[0], m, "acme")
	leases := mustLease(t, s, base, time.Minute, 10)
	if len(leases) != 2 {
		t.Fatalf("Lease returned %d", len(leases))
	}
	for _, l := range leases {
		if l.Message.ID == m.ID {
			check("Lease", l.Message, m, "acme")
		}
	}
}

func testEnqueueEvents(t *testing.T, s store.Store) {
	before := time.Now().Add(-time.Second)
	m := NewMessage(base, "a@example.com", "B@Example.net")
	m.Account = "acme"
	m.Tags = []string{"t1"}
	m.Metadata = map[string]string{"k": "v"}
	Enqueue(t, s, m, []byte("x\r\n"), time.Time{})
	evs := listEvents(t, s, store.EventFilter{MessageID: m.ID})
	if got := eventSummary(evs); !slices.Equal(got, []string{"accepted:a@example.com", "accepted:B@Example.net"}) {
		t.Fatalf("events = %v", got)
	}
	for _, e := range evs {
		if e.Account != "acme" || e.Sender != m.Sender || e.MessageID != m.ID || e.Attempt != 0 ||
			!slices.Equal(e.Tags, m.Tags) || e.Metadata["k"] != "v" || len(e.Metadata) != 1 {
			t.Errorf("accepted event = %+v", e)
		}
		if e.Time.Before(before) || e.Time.After(time.Now().Add(time.Second)) {
			t.Errorf("event time %v not now", e.Time)
		}
	}
	if evs[0].ID >= evs[1].ID {
		t.Errorf("event IDs not increasing: %d, %d", evs[0].ID, evs[1].ID)
	}
	// A rejected enqueue (duplicate ID) writes no event.
	dup := NewMessage(base, "c@example.com")
	dup.ID = m.ID
	if _, err := EnqueueErr(s, dup, []byte("x\r\n"), time.Time{}); err == nil {
		t.Fatal("duplicate Enqueue succeeded")
	}
	if n := len(listEvents(t, s, store.EventFilter{})); n != 2 {
		t.Errorf("%d events after a failed Enqueue, want 2", n)
	}
}

func testUpdateEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com", "b@example.com", "c@example.com", "d@example.com")
	m.Account = "acme"
	m.Tags = []string{"news"}
	Enqueue(t, s, m, []byte("x\r\n"), time.Time{})
	r := m.Recipients
	must(t, "Update", s.Update(ctx, m.ID, "", []store.Outcome{
		{RecipientID: r[0].ID, Status: store.StatusDelivered, Reply: "250 2.0.0 ok", RemoteMTA: "mx.example.com",
			TLS: "TLSv1.3 verified", Enhanced: "2.0.0"},
		{RecipientID: r[1].ID, Status: store.StatusFailed, Reply: "550 5.1.1 no such user", RemoteMTA: "mx.example.com",
			Enhanced: "5.1.1", Bounce: "hard:mailbox-unknown"},
		{RecipientID: r[2].ID, Status: store.StatusDeferred, NextAttempt: base.Add(time.Hour), Reply: "451 4.7.1 later"},
		{RecipientID: r[3].ID, Status: store.StatusQueued},
	}))
	must(t, "Update again", s.Update(ctx, m.ID, "", []store.Outcome{
		{RecipientID: r[2].ID, Status: store.StatusExpired, Reply: "451 4.7.1 later"},
	}))
	evs := listEvents(t, s, store.EventFilter{MessageID: m.ID, Types: []string{
		store.EventDelivered, store.EventBounced, store.EventDeferred, store.EventExpired}})
	want := []string{"delivered:a@example.com", "bounced:b@example.com", "deferred:c@example.com", "expired:c@example.com"}
	if got := eventSummary(evs); !slices.Equal(got, want) {
		t.Fatalf("events = %v, want %v", got, want)
	}
	d, b, df, ex := evs[0], evs[1], evs[2], evs[3]
	if d.Reply != "250 2.0.0 ok" || d.RemoteMTA != "mx.example.com" || d.TLS != "TLSv1.3 verified" ||
		d.Enhanced != "2.0.0" || d.Attempt != 1 || d.Account != "acme" || !slices.Equal(d.Tags, m.Tags) || d.Sender != m.Sender {
		t.Errorf("delivered event = %+v", d)
	}
	if b.Bounce != "hard:mailbox-unknown" || b.Enhanced != "5.1.1" || b.Reply != "550 5.1.1 no such user" || b.Attempt != 1 {
		t.Errorf("bounced event = %+v", b)
	}
	if df.Attempt != 1 || ex.Attempt != 2 {
		t.Errorf("attempts: deferred %d, expired %d; want 1, 2", df.Attempt, ex.Attempt)
	}
	// A queued outcome is no attempt and writes no event.
	if n := len(listEvents(t, s, store.EventFilter{Recipient: "d@example.com"})); n != 1 {
		t.Errorf("d@example.com has %d events, want 1 (accepted)", n)
	}
	// A failed Update (unknown recipient) rolls back its events with it.
	err := s.Update(ctx, m.ID, "", []store.Outcome{
		{RecipientID: r[3].ID, Status: store.StatusDelivered},
		{RecipientID: 1 << 40, Status: store.StatusDelivered},
	})
	expectNotFound(t, "Update unknown recipient", err)
	if evs := listEvents(t, s, store.EventFilter{Recipient: "d@example.com"}); len(evs) != 1 {
		t.Errorf("events of a failed Update were kept: %v", eventSummary(evs))
	}
}

func testEventFilters(t *testing.T, s store.Store) {
	ctx := context.Background()
	evs := []store.Event{
		{Time: base, Type: store.EventRejected, Account: "a", Recipient: "X@Example.com", Tags: []string{"red", "blue"}},
		{Time: base.Add(time.Minute), Type: store.EventSuppressed, Account: "a", Recipient: "y@example.com", MessageID: "M1"},
		{Time: base.Add(2 * time.Minute), Type: store.EventComplained, Account: "b", Recipient: "x@example.com", Tags: []string{"blue"}},
		{Time: base.Add(3 * time.Minute), Type: store.EventBounced, Account: "a", Recipient: "x@example.com", MessageID: "M1",
			Tags: []string{"reddish"}, Metadata: map[string]string{"a": "b"}},
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	for i := 1; i < len(evs); i++ {
		if evs[i].ID <= evs[i-1].ID {
			t.Fatalf("AddEvents IDs not increasing: %d then %d", evs[i-1].ID, evs[i].ID)
		}
	}
	cases := []struct {
		f    store.EventFilter
		want []int
	}{
		{store.EventFilter{}, []int{0, 1, 2, 3}},
		{store.EventFilter{Account: "a"}, []int{0, 1, 3}},
		{store.EventFilter{Account: "b"}, []int{2}},
		{store.EventFilter{Account: "c"}, nil},
		{store.EventFilter{Recipient: "x@EXAMPLE.com"}, []int{0, 2, 3}},
		{store.EventFilter{Account: "a", Recipient: "x@example.com"}, []int{0, 3}},
		{store.EventFilter{MessageID: "M1"}, []int{1, 3}},
		{store.EventFilter{Types: []string{store.EventBounced, store.EventRejected}}, []int{0, 3}},
		{store.EventFilter{Tag: "blue"}, []int{0, 2}},
		{store.EventFilter{Tag: "red"}, []int{0}},
		{store.EventFilter{Since: base.Add(time.Minute)}, []int{1, 2, 3}},
		{store.EventFilter{Until: base.Add(time.Minute)}, []int{0}},
		{store.EventFilter{Since: base.Add(time.Minute), Until: base.Add(3 * time.Minute)}, []int{1, 2}},
		{store.EventFilter{After: evs[1].ID}, []int{2, 3}},
		{store.EventFilter{Limit: 2}, []int{0, 1}},
	}
	for _, c := range cases {
		got := listEvents(t, s, c.f)
		var gotIdx []int
		for _, e := range got {
			i := slices.IndexFunc(evs, func(x store.Event) bool { return x.ID == e.ID })
			gotIdx = append(gotIdx, i)
		}
		if !slices.Equal(gotIdx, c.want) {
			t.Errorf("ListEvents(%+v) = %v, want %v", c.f, gotIdx, c.want)
		}
	}
	got := listEvents(t, s, store.EventFilter{MessageID: "M1", Types: []string{store.EventBounced}})
	if len(got) != 1 || !got[0].Time.Equal(evs[3].Time) || got[0].Metadata["a"] != "b" || got[0].Recipient != "x@example.com" {
		t.Errorf("stored event = %+v, want %+v", got, evs[3])
	}
}

func testEventPagination(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 1100
	evs := make([]store.Event, n)
	for i := range evs {
		acc := "a"
		if i%2 == 1 {
			acc = "b"
		}
		evs[i] = store.Event{Time: base, Type: store.EventRejected, Account: acc, Recipient: fmt.Sprintf("r%d@example.com", i)}
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	if got := listEvents(t, s, store.EventFilter{}); len(got) != 100 {
		t.Errorf("default limit returned %d, want 100", len(got))
	}
	if got := listEvents(t, s, store.EventFilter{Limit: 5000}); len(got) != 1000 {
		t.Errorf("limit 5000 returned %d, want the maximum 1000", len(got))
	}
	var seen []string
	var after int64
	for pages := 0; ; pages++ {
		if pages > 20 {
			t.Fatal("pagination does not end")
		}
		page := listEvents(t, s, store.EventFilter{Account: "b", After: after, Limit: 70})
		if len(page) == 0 {
			break
		}
		for _, e := range page {
			if e.ID <= after || e.Account != "b" {
				t.Fatalf("page after %d holds event %d of %s", after, e.ID, e.Account)
			}
			after = e.ID
			seen = append(seen, e.Recipient)
		}
	}
	if len(seen) != n/2 || seen[0] != "r1@example.com" || seen[len(seen)-1] != fmt.Sprintf("r%d@example.com", n-1) {
		t.Errorf("paged through %d events (%v ... ), want %d", len(seen), seen[:min(3, len(seen))], n/2)
	}
}

func addWebhook(t *testing.T, s store.Store, id, account string, types ...string) {
	t.Helper()
	must(t, "AddWebhook "+id, s.AddWebhook(context.Background(), store.Webhook{
		ID: id, Account: account, URL: "https://hooks.example/" + id, Secret: "s-" + id, EventTypes: types, Created: base}))
}

// pendingByWebhook leases every due delivery (releasing nothing) and
// returns "webhook:type:recipient" entries, sorted.
func pendingByWebhook(t *testing.T, s store.Store, now time.Time) []string {
	t.Helper()
	ds, err := s.LeaseWebhookDeliveries(context.Background(), now, time.Minute, 1000)
	must(t, "LeaseWebhookDeliveries", err)
	var out []string
	for _, d := range ds {
		out = append(out, d.WebhookID+":"+d.Event.Type+":"+d.Event.Recipient)
	}
	slices.Sort(out)
	return out
}

func testWebhookFanOut(t *testing.T, s store.Store) {
	ctx := context.Background()
	addWebhook(t, s, "all-a", "a")
	addWebhook(t, s, "bounces-a", "a", store.EventBounced, store.EventComplained)
	addWebhook(t, s, "all-b", "b")
	expectExists(t, "AddWebhook duplicate", s.AddWebhook(ctx, store.Webhook{ID: "all-a", Account: "b", URL: "https://x/"}))
	hooks, err := s.ListWebhooks(ctx, "a")
	must(t, "ListWebhooks", err)
	if len(hooks) != 2 || hooks[0].ID != "all-a" || hooks[1].ID != "bounces-a" ||
		!slices.Equal(hooks[1].EventTypes, []string{store.EventBounced, store.EventComplained}) ||
		hooks[1].URL != "https://hooks.example/bounces-a" || hooks[1].Secret != "s-bounces-a" || !hooks[1].Created.Equal(base) {
		t.Errorf("ListWebhooks(a) = %+v", hooks)
	}

	// Queue events (Enqueue, Update) and AddEvents all fan out.
	m := NewMessage(base, "r1@example.com", "r2@example.com")
	m.Account = "a"
	Enqueue(t, s, m, []byte("x\r\n"), time.Time{})
	must(t, "Update", s.Update(ctx, m.ID, "", []store.Outcome{
		{RecipientID: m.Recipients[0].ID, Status: store.StatusFailed, Reply: "550 no", Bounce: "hard:mailbox-unknown"},
		{RecipientID: m.Recipients[1].ID, Status: store.StatusDelivered, Reply: "250 ok"},
	}))
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{
		{Type: store.EventComplained, Account: "a", Recipient: "r3@example.com"},
		{Type: store.EventRejected, Account: "b", Recipient: "r4@example.com"},
		{Type: store.EventRejected, Account: "c", Recipient: "r5@example.com"},
	}))
	want := []string{
		"all-a:accepted:r1@example.com", "all-a:accepted:r2@example.com", "all-a:bounced:r1@example.com",
		"all-a:complained:r3@example.com", "all-a:delivered:r2@example.com",
		"all-b:rejected:r4@example.com",
		"bounces-a:bounced:r1@example.com", "bounces-a:complained:r3@example.com",
	}
	if got := pendingByWebhook(t, s, time.Now().Add(time.Second)); !slices.Equal(got, want) {
		t.Errorf("deliveries =\n%v\nwant\n%v", got, want)
	}
}

func testWebhookLeaseExclusive(t *testing.T, s store.Store) {
	ctx := context.Background()
	addWebhook(t, s, "h", store.DefaultAccount)
	const n = 60
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Time: base, Type: store.EventRejected, Recipient: fmt.Sprintf("r%d@example.com", i)}
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	if ds, err := s.LeaseWebhookDeliveries(ctx, base.Add(-time.Second), time.Minute, 100); err != nil || len(ds) != 0 {
		t.Errorf("lease before due: %d deliveries, err %v", len(ds), err)
	}
	var mu sync.Mutex
	seen := make(map[int64]int)
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ds, err := s.LeaseWebhookDeliveries(ctx, base, time.Minute, 7)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ds) == 0 {
					return
				}
				mu.Lock()
				for _, d := range ds {
					seen[d.ID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != n {
		t.Errorf("leased %d distinct deliveries, want %d", len(seen), n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("delivery %d leased %d times", id, c)
		}
	}
	// Leases expire.
	if ds, _ := s.LeaseWebhookDeliveries(ctx, base.Add(30*time.Second), time.Minute, 100); len(ds) != 0 {
		t.Errorf("%d deliveries leased again before the lease ended", len(ds))
	}
	if ds, _ := s.LeaseWebhookDeliveries(ctx, base.Add(2*time.Minute), time.Minute, 100); len(ds) != n {
		t.Errorf("%d deliveries leased after the lease ended, want %d", len(ds), n)
	}
}

func testWebhookAttempts(t *testing.T, s store.Store) {
	ctx := context.Background()
	addWebhook(t, s, "h1", "a")
	addWebhook(t, s, "h2", "a")
	addWebhook(t, s, "hb", "b")
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{
		{Time: base, Type: store.EventDelivered, Account: "a", Recipient: "x@example.com", MessageID: "M1", Tags: []string{"t"}},
		{Time: base, Type: store.EventDelivered, Account: "b", Recipient: "y@example.com"},
	}))
	ds, err := s.LeaseWebhookDeliveries(ctx, base, time.Minute, 10)
	must(t, "Lease", err)
	if len(ds) != 3 {
		t.Fatalf("leased %d deliveries, want 3", len(ds))
	}
	var d1 store.WebhookDelivery
	for _, d := range ds {
		if d.WebhookID == "h1" {
			d1 = d
		} else {
			must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "delivered", time.Time{}, "", 204))
		}
	}
	if d1.Status != "pending" || d1.Attempts != 0 || d1.Event.MessageID != "M1" || d1.Event.Recipient != "x@example.com" ||
		!slices.Equal(d1.Event.Tags, []string{"t"}) || d1.Event.Account != "a" {
		t.Fatalf("leased delivery = %+v", d1)
	}
	// A failed attempt: retried later, not before.
	must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d1.ID, "pending", base.Add(10*time.Minute), "HTTP 500", 500))
	if ds, _ := s.LeaseWebhookDeliveries(ctx, base.Add(5*time.Minute), time.Minute, 10); len(ds) != 0 {
		t.Errorf("leased %d deliveries before the retry is due", len(ds))
	}
	ds, _ = s.LeaseWebhookDeliveries(ctx, base.Add(10*time.Minute), time.Minute, 10)
	if len(ds) != 1 || ds[0].ID != d1.ID || ds[0].Attempts != 1 || ds[0].LastError != "HTTP 500" {
		t.Fatalf("retry lease = %+v", ds)
	}
	must(t, "RecordWebhookAttempt ok", s.RecordWebhookAttempt(ctx, d1.ID, "delivered", time.Time{}, "", 200))
	if ds, _ := s.LeaseWebhookDeliveries(ctx, base.Add(time.Hour), time.Minute, 10); slices.ContainsFunc(ds, func(d store.WebhookDelivery) bool { return d.ID == d1.ID }) {
		t.Error("delivered delivery leased again")
	}
	expectNotFound(t, "RecordWebhookAttempt unknown", s.RecordWebhookAttempt(ctx, 1<<40, "failed", time.Time{}, "x", 0))
	if err := s.RecordWebhookAttempt(ctx, d1.ID, "bogus", time.Time{}, "", 0); err == nil {
		t.Error("RecordWebhookAttempt with an invalid status succeeded")
	}

	list, err := s.ListWebhookDeliveries(ctx, "a", "h1", 10)
	must(t, "ListWebhookDeliveries", err)
	if len(list) != 1 || list[0].Status != "delivered" || list[0].Attempts != 2 || list[0].Event.Recipient != "x@example.com" {
		t.Errorf("ListWebhookDeliveries(a, h1) = %+v", list)
	}
	all, _ := s.ListWebhookDeliveries(ctx, "a", "", 10)
	if len(all) != 2 || all[0].ID < all[1].ID || all[0].Status != "delivered" {
		t.Errorf("ListWebhookDeliveries(a) = %+v, want 2 newest first", all)
	}
	if other, _ := s.ListWebhookDeliveries(ctx, "b", "h1", 10); len(other) != 0 {
		t.Errorf("account b sees deliveries of a's webhook: %+v", other)
	}
}

// testWebhookLimit: AddWebhookLimited counts per account, refuses with
// ErrLimit at the limit, frees a slot on delete, and holds under concurrent
// creation.
func testWebhookLimit(t *testing.T, s store.Store) {
	ctx := context.Background()
	hook := func(id, account string) store.Webhook {
		return store.Webhook{ID: id, Account: account, URL: "https://hooks.example/" + id, Created: base}
	}
	must(t, "AddWebhookLimited a1", s.AddWebhookLimited(ctx, hook("a1", "a"), 2))
	must(t, "AddWebhookLimited a2", s.AddWebhookLimited(ctx, hook("a2", "a"), 2))
	if err := s.AddWebhookLimited(ctx, hook("a3", "a"), 2); !errors.Is(err, store.ErrLimit) {
		t.Fatalf("third webhook with limit 2: err = %v, want ErrLimit", err)
	}
	must(t, "AddWebhookLimited b1", s.AddWebhookLimited(ctx, hook("b1", "b"), 2)) // other accounts unaffected
	must(t, "AddWebhookLimited a4 unlimited", s.AddWebhookLimited(ctx, hook("a4", "a"), 0))
	hooks, err := s.ListWebhooks(ctx, "a")
	must(t, "ListWebhooks", err)
	if len(hooks) != 3 {
		t.Fatalf("account a has %d webhooks, want 3 (a3 refused)", len(hooks))
	}
	must(t, "DeleteWebhook a1", s.DeleteWebhook(ctx, "a", "a1"))
	must(t, "DeleteWebhook a2", s.DeleteWebhook(ctx, "a", "a2"))
	must(t, "AddWebhookLimited a5 after deletes", s.AddWebhookLimited(ctx, hook("a5", "a"), 2))

	const tries, limit = 12, 3
	var wg sync.WaitGroup
	errs := make(chan error, tries)
	for i := range tries {
		wg.Go(func() { errs <- s.AddWebhookLimited(ctx, hook(fmt.Sprintf("c%d", i), "c"), limit) })
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, store.ErrLimit):
			t.Errorf("concurrent AddWebhookLimited: %v", err)
		}
	}
	hooks, err = s.ListWebhooks(ctx, "c")
	must(t, "ListWebhooks c", err)
	if ok != limit || len(hooks) != limit {
		t.Errorf("concurrent creation: %d succeeded, %d stored; want %d", ok, len(hooks), limit)
	}
}

func testDeleteWebhookDropsPending(t *testing.T, s store.Store) {
	ctx := context.Background()
	addWebhook(t, s, "h", "a")
	addWebhook(t, s, "keep", "a")
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{{Time: base, Type: store.EventBounced, Account: "a"}}))
	expectNotFound(t, "DeleteWebhook by another account", s.DeleteWebhook(ctx, "b", "h"))
	must(t, "DeleteWebhook", s.DeleteWebhook(ctx, "a", "h"))
	expectNotFound(t, "DeleteWebhook again", s.DeleteWebhook(ctx, "a", "h"))
	if got := pendingByWebhook(t, s, base); !slices.Equal(got, []string{"keep:bounced:"}) {
		t.Errorf("pending after delete = %v", got)
	}
	// New events no longer reach the deleted webhook.
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{{Time: base, Type: store.EventDelivered, Account: "a"}}))
	if got := pendingByWebhook(t, s, base); !slices.Equal(got, []string{"keep:delivered:"}) {
		t.Errorf("pending after new event = %v", got)
	}
}

func testPruneEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	addWebhook(t, s, "h", "a")
	old := base.Add(-48 * time.Hour)
	evs := []store.Event{
		{Time: old, Type: store.EventRejected, Account: "a", Recipient: "old-delivered@example.com"},
		{Time: old, Type: store.EventRejected, Account: "a", Recipient: "old-pending@example.com"},
		{Time: old, Type: store.EventRejected, Account: "z", Recipient: "old-nohook@example.com"},
		{Time: base, Type: store.EventRejected, Account: "a", Recipient: "new@example.com"},
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	ds, err := s.LeaseWebhookDeliveries(ctx, old, time.Minute, 10)
	must(t, "Lease", err)
	for _, d := range ds {
		if d.Event.Recipient == "old-delivered@example.com" {
			must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "delivered", time.Time{}, "", 200))
		}
	}
	n, err := s.PruneEvents(ctx, base.Add(-time.Hour))
	must(t, "PruneEvents", err)
	if n != 2 {
		t.Errorf("PruneEvents deleted %d, want 2", n)
	}
	var left []string
	for _, e := range listEvents(t, s, store.EventFilter{}) {
		left = append(left, e.Recipient)
	}
	// An event with a pending delivery stays until it is done.
	if !slices.Equal(left, []string{"old-pending@example.com", "new@example.com"}) {
		t.Errorf("events after prune = %v", left)
	}
	if list, _ := s.ListWebhookDeliveries(ctx, "a", "h", 10); len(list) != 2 {
		t.Errorf("%d deliveries after prune, want 2 (the pruned event's delivered one is gone)", len(list))
	}
	// Pruning everything keeps IDs increasing.
	last := evs[len(evs)-1].ID
	ds, _ = s.LeaseWebhookDeliveries(ctx, base.Add(time.Hour), time.Minute, 10)
	for _, d := range ds {
		must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "failed", time.Time{}, "gave up", 0))
	}
	if _, err := s.PruneEvents(ctx, base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	more := []store.Event{{Type: store.EventRejected, Account: "a"}}
	must(t, "AddEvents", s.AddEvents(ctx, more))
	if more[0].ID <= last {
		t.Errorf("event ID %d after a prune reuses an ID (last was %d)", more[0].ID, last)
	}
}

func testSuppressions(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddSuppression", s.AddSuppression(ctx, store.Suppression{Account: "a", Address: "X@Example.com",
		Reason: store.SuppressHardBounce, Detail: "550 5.1.1", Created: base}))
	ok, err := s.IsSuppressed(ctx, "a", "x@EXAMPLE.com")
	must(t, "IsSuppressed", err)
	if !ok {
		t.Error("address not suppressed")
	}
	if ok, _ := s.IsSuppressed(ctx, "b", "x@example.com"); ok {
		t.Error("suppression leaks to another account")
	}
	// Adding again replaces.
	must(t, "AddSuppression again", s.AddSuppression(ctx, store.Suppression{Account: "a", Address: "x@example.com",
		Reason: store.SuppressComplaint, Detail: "arf", Created: base.Add(time.Hour)}))
	for i := range 5 {
		must(t, "AddSuppression", s.AddSuppression(ctx, store.Suppression{Account: "a",
			Address: fmt.Sprintf("u%d@example.com", i), Reason: store.SuppressManual}))
	}
	list, err := s.ListSuppressions(ctx, "a", "", 3)
	must(t, "ListSuppressions", err)
	if len(list) != 3 || list[0].Address != "u0@example.com" || list[2].Address != "u2@example.com" {
		t.Fatalf("first page = %+v", list)
	}
	list, _ = s.ListSuppressions(ctx, "a", list[2].Address, 3)
	if len(list) != 3 || list[0].Address != "u3@example.com" || list[2].Address != "x@example.com" {
		t.Fatalf("second page = %+v", list)
	}
	x := list[2]
	if x.Reason != store.SuppressComplaint || x.Detail != "arf" || !x.Created.Equal(base.Add(time.Hour)) || x.Account != "a" {
		t.Errorf("replaced suppression = %+v", x)
	}
	if list, _ = s.ListSuppressions(ctx, "a", "x@example.com", 3); len(list) != 0 {
		t.Errorf("page after the last = %+v", list)
	}
	expectNotFound(t, "DeleteSuppression by another account", s.DeleteSuppression(ctx, "b", "x@example.com"))
	must(t, "DeleteSuppression", s.DeleteSuppression(ctx, "a", "X@example.COM"))
	if ok, _ := s.IsSuppressed(ctx, "a", "x@example.com"); ok {
		t.Error("still suppressed after delete")
	}
	expectNotFound(t, "DeleteSuppression again", s.DeleteSuppression(ctx, "a", "x@example.com"))
}

func testAPIKeys(t *testing.T, s store.Store) {
	ctx := context.Background()
	k := store.APIKey{ID: "hk_1", Account: "a", Name: "ci", Scopes: []string{store.ScopeSend, store.ScopeRead},
		SecretHash: []byte{0xde, 0xad, 0xbe, 0xef}, Created: base}
	must(t, "AddAPIKey", s.AddAPIKey(ctx, k))
	expectExists(t, "AddAPIKey duplicate ID", s.AddAPIKey(ctx, store.APIKey{ID: "hk_1", Account: "b", SecretHash: []byte{1}}))
	must(t, "AddAPIKey 2", s.AddAPIKey(ctx, store.APIKey{ID: "hk_2", Account: "a", Scopes: []string{store.ScopeAdmin},
		SecretHash: []byte{2}, Created: base.Add(time.Second)}))
	got, err := s.GetAPIKey(ctx, "hk_1")
	must(t, "GetAPIKey", err)
	if got.Account != "a" || got.Name != "ci" || !slices.Equal(got.Scopes, k.Scopes) || string(got.SecretHash) != string(k.SecretHash) ||
		!got.Created.Equal(base) || !got.LastUsed.IsZero() {
		t.Errorf("GetAPIKey = %+v", got)
	}
	_, err = s.GetAPIKey(ctx, "hk_x")
	expectNotFound(t, "GetAPIKey unknown", err)
	list, err := s.ListAPIKeys(ctx, "a")
	must(t, "ListAPIKeys", err)
	if len(list) != 2 || list[0].ID != "hk_1" || list[1].ID != "hk_2" {
		t.Errorf("ListAPIKeys = %+v", list)
	}
	used := base.Add(time.Hour)
	must(t, "TouchAPIKey", s.TouchAPIKey(ctx, "hk_1", used))
	if got, _ := s.GetAPIKey(ctx, "hk_1"); !got.LastUsed.Equal(used) {
		t.Errorf("LastUsed = %v, want %v", got.LastUsed, used)
	}
	// LastUsed never goes back.
	must(t, "TouchAPIKey earlier", s.TouchAPIKey(ctx, "hk_1", base))
	if got, _ := s.GetAPIKey(ctx, "hk_1"); !got.LastUsed.Equal(used) {
		t.Errorf("LastUsed after an earlier touch = %v, want %v", got.LastUsed, used)
	}
	expectNotFound(t, "DeleteAPIKey by another account", s.DeleteAPIKey(ctx, "b", "hk_1"))
	must(t, "DeleteAPIKey", s.DeleteAPIKey(ctx, "a", "hk_1"))
	expectNotFound(t, "DeleteAPIKey again", s.DeleteAPIKey(ctx, "a", "hk_1"))
	_, err = s.GetAPIKey(ctx, "hk_1")
	expectNotFound(t, "GetAPIKey deleted", err)
}

func testIdempotency(t *testing.T, s store.Store) {
	ctx := context.Background()
	now := time.Now()
	id, err := s.PutIdempotency(ctx, "a", "key-1", "M1", now)
	if err != nil || id != "" {
		t.Fatalf("PutIdempotency fresh = %q, %v", id, err)
	}
	id, err = s.PutIdempotency(ctx, "a", "key-1", "M2", now.Add(time.Minute))
	if !errors.Is(err, store.ErrExists) || id != "M1" {
		t.Errorf("PutIdempotency existing = %q, %v; want M1, ErrExists", id, err)
	}
	if id, err := s.PutIdempotency(ctx, "b", "key-1", "M3", now); err != nil || id != "" {
		t.Errorf("PutIdempotency same key, other account = %q, %v", id, err)
	}
	// Concurrent requests with one key: exactly one wins.
	var wins, dups int
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := s.PutIdempotency(ctx, "a", "race", fmt.Sprintf("R%d", i), now)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case errors.Is(err, store.ErrExists) && id != "":
				dups++
			default:
				t.Errorf("PutIdempotency race: %q, %v", id, err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || dups != 7 {
		t.Errorf("race: %d stored, %d duplicates; want 1, 7", wins, dups)
	}
	// Keys expire after a day: pruned, and replaced when reused.
	if _, err := s.PutIdempotency(ctx, "a", "old", "M4", now.Add(-25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutIdempotency(ctx, "a", "old2", "M5", now.Add(-25*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if id, err := s.PutIdempotency(ctx, "a", "old", "M6", now); err != nil || id != "" {
		t.Errorf("reusing an expired key = %q, %v; want stored", id, err)
	}
	if _, err := s.PruneEvents(ctx, now.Add(-48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if id, err := s.PutIdempotency(ctx, "a", "old2", "M7", now.Add(-24*time.Hour)); err != nil || id != "" {
		t.Errorf("key after prune = %q, %v; want stored", id, err)
	}
	if id, err := s.PutIdempotency(ctx, "a", "key-1", "M8", now); !errors.Is(err, store.ErrExists) || id != "M1" {
		t.Errorf("fresh key after prune = %q, %v; want M1, ErrExists", id, err)
	}
}

func testRoutes(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddRoute domain", s.AddRoute(ctx, store.Route{Address: "@Example.com", Account: "a", Action: "http",
		URL: "https://in.example/all", Secret: "s1"}))
	must(t, "AddRoute user", s.AddRoute(ctx, store.Route{Address: "Sales@example.com", Account: "a", Action: "maildir"}))
	r, err := s.GetRoute(ctx, "SALES@example.com")
	must(t, "GetRoute exact", err)
	if r.Address != "sales@example.com" || r.Action != "maildir" || r.Account != "a" {
		t.Errorf("GetRoute exact = %+v", r)
	}
	r, err = s.GetRoute(ctx, "other@EXAMPLE.com")
	must(t, "GetRoute domain", err)
	if r.Address != "@example.com" || r.URL != "https://in.example/all" || r.Secret != "s1" || r.Action != "http" {
		t.Errorf("GetRoute domain = %+v", r)
	}
	_, err = s.GetRoute(ctx, "x@example.org")
	expectNotFound(t, "GetRoute none", err)
	// Replacing keeps one route.
	must(t, "AddRoute replace", s.AddRoute(ctx, store.Route{Address: "sales@example.com", Account: "a", Action: "http", URL: "https://in.example/sales"}))
	if r, _ := s.GetRoute(ctx, "sales@example.com"); r.URL != "https://in.example/sales" {
		t.Errorf("replaced route = %+v", r)
	}
	if err := s.AddRoute(ctx, store.Route{Address: "x@example.com", Account: "a", Action: "ftp"}); err == nil {
		t.Error("AddRoute with an invalid action succeeded")
	}
	list, err := s.ListRoutes(ctx, "a")
	must(t, "ListRoutes", err)
	if len(list) != 2 || list[0].Address != "@example.com" || list[1].Address != "sales@example.com" {
		t.Errorf("ListRoutes = %+v", list)
	}
	must(t, "DeleteRoute", s.DeleteRoute(ctx, "a", "SALES@example.com"))
	if r, _ := s.GetRoute(ctx, "sales@example.com"); r.Address != "@example.com" {
		t.Errorf("after delete, GetRoute = %+v, want the domain route", r)
	}
	expectNotFound(t, "DeleteRoute again", s.DeleteRoute(ctx, "a", "sales@example.com"))
}

// testTenantIsolation checks that account b can neither see nor change
// account a's rows through any account-scoped method.
func testTenantIsolation(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddAPIKey", s.AddAPIKey(ctx, store.APIKey{ID: "ka", Account: "a", SecretHash: []byte{1}}))
	addWebhook(t, s, "wa", "a")
	must(t, "AddSuppression", s.AddSuppression(ctx, store.Suppression{Account: "a", Address: "s@example.com", Reason: store.SuppressManual}))
	must(t, "AddRoute", s.AddRoute(ctx, store.Route{Address: "in@a.example", Account: "a", Action: "maildir"}))
	m := NewMessage(base, "r@example.com")
	m.Account = "a"
	Enqueue(t, s, m, []byte("x\r\n"), time.Time{})

	if l, _ := s.ListAPIKeys(ctx, "b"); len(l) != 0 {
		t.Errorf("b lists a's keys: %+v", l)
	}
	if l, _ := s.ListWebhooks(ctx, "b"); len(l) != 0 {
		t.Errorf("b lists a's webhooks: %+v", l)
	}
	if l, _ := s.ListSuppressions(ctx, "b", "", 10); len(l) != 0 {
		t.Errorf("b lists a's suppressions: %+v", l)
	}
	if l, _ := s.ListRoutes(ctx, "b"); len(l) != 0 {
		t.Errorf("b lists a's routes: %+v", l)
	}
	if l := listEvents(t, s, store.EventFilter{Account: "b", MessageID: m.ID}); len(l) != 0 {
		t.Errorf("b lists a's events: %+v", l)
	}
	if l, _ := s.ListWebhookDeliveries(ctx, "b", "wa", 10); len(l) != 0 {
		t.Errorf("b lists a's webhook deliveries: %+v", l)
	}
	expectNotFound(t, "b deletes a's key", s.DeleteAPIKey(ctx, "b", "ka"))
	expectNotFound(t, "b deletes a's webhook", s.DeleteWebhook(ctx, "b", "wa"))
	expectNotFound(t, "b deletes a's suppression", s.DeleteSuppression(ctx, "b", "s@example.com"))
	expectNotFound(t, "b deletes a's route", s.DeleteRoute(ctx, "b", "in@a.example"))
	expectExists(t, "b takes over a's route", s.AddRoute(ctx, store.Route{Address: "in@a.example", Account: "b", Action: "http", URL: "https://evil/"}))
	if r, _ := s.GetRoute(ctx, "in@a.example"); r.Account != "a" || r.Action != "maildir" {
		t.Errorf("a's route changed by b: %+v", r)
	}
	// Everything of a is still there.
	if l, _ := s.ListAPIKeys(ctx, "a"); len(l) != 1 {
		t.Errorf("a's keys: %+v", l)
	}
	if l, _ := s.ListWebhooks(ctx, "a"); len(l) != 1 {
		t.Errorf("a's webhooks: %+v", l)
	}
	if ok, _ := s.IsSuppressed(ctx, "a", "s@example.com"); !ok {
		t.Error("a's suppression gone")
	}
	if l := listEvents(t, s, store.EventFilter{Account: "a", MessageID: m.ID}); len(l) != 1 {
		t.Errorf("a's events: %+v", l)
	}
}

// tenantRows gives account acct one of everything an account can own:
// a domain and a user, an API key, a webhook with a delivered delivery
// (with its attempt log) and pending ones, a suppression, an idempotency
// key, a route, events (n of them besides the queue's) and a queued
// message. It returns the queued message.
func tenantRows(t *testing.T, s store.Store, acct string, n int) *store.Message {
	t.Helper()
	ctx := context.Background()
	addAccount(t, s, acct)
	dom := acct + ".example"
	must(t, "AddDomain", s.AddDomain(ctx, dom))
	must(t, "SetDomainAccount", s.SetDomainAccount(ctx, dom, acct))
	must(t, "AddUser", s.AddUser(ctx, store.User{Address: "u@" + dom, PasswordHash: "x"}))
	must(t, "SetUserAccount", s.SetUserAccount(ctx, "u@"+dom, acct))
	must(t, "AddAPIKey", s.AddAPIKey(ctx, store.APIKey{ID: "key-" + acct, Account: acct, SecretHash: []byte{1}}))
	addWebhook(t, s, "hook-"+acct, acct)
	must(t, "AddSuppression", s.AddSuppression(ctx, store.Suppression{Account: acct, Address: "gone@example.org", Reason: store.SuppressHardBounce}))
	if _, err := s.PutIdempotency(ctx, acct, "order-1", "ok:M-"+acct, time.Now()); err != nil {
		t.Fatalf("PutIdempotency: %v", err)
	}
	must(t, "AddRoute", s.AddRoute(ctx, store.Route{Address: "in@" + dom, Account: acct, Action: "maildir"}))
	// A delivered delivery with its attempt log.
	first := []store.Event{{Time: base, Type: store.EventBounced, Account: acct, Recipient: "first@example.org"}}
	must(t, "AddEvents", s.AddEvents(ctx, first))
	ds, err := s.LeaseWebhookDeliveries(ctx, time.Now().Add(time.Hour), time.Minute, 1000)
	must(t, "LeaseWebhookDeliveries", err)
	for _, d := range ds {
		if d.Event.ID == first[0].ID {
			must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "delivered", time.Time{}, "", 200))
		} else {
			must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "pending", time.Now(), "", 500))
		}
	}
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Time: base, Type: store.EventDelivered, Account: acct, Recipient: fmt.Sprintf("r%d@example.org", i), Tags: []string{"t"}}
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	m := NewMessage(base, "queued@example.org")
	m.Account = acct
	m.Sender = "news@" + dom
	Enqueue(t, s, m, Body(7, 100<<10), time.Time{}) // large enough for a blob file
	return m
}

// testDeleteAccountCascade deletes an account owning one of everything:
// refused without force (nothing changes), then forced. Nothing of the old
// account is visible to a new account with the same ID, and another
// account's rows are untouched.
func testDeleteAccountCascade(t *testing.T, s store.Store) {
	ctx := context.Background()
	other := tenantRows(t, s, "other", 3)
	old := tenantRows(t, s, "acme", 2500) // more than one purge chunk
	// The newest event of the store is acme's: its ID must not come back.
	tail := []store.Event{{Time: base, Type: store.EventComplained, Account: "acme", MessageID: old.ID, Recipient: "queued@example.org"}}
	must(t, "AddEvents", s.AddEvents(ctx, tail))

	// Without force: refused, with what is in the way, and nothing changes.
	_, err := s.DeleteAccount(ctx, "acme", false)
	var inUse *store.AccountInUseError
	if !errors.As(err, &inUse) || !errors.Is(err, store.ErrExists) {
		t.Fatalf("DeleteAccount without force = %v, want *AccountInUseError wrapping ErrExists", err)
	}
	if *inUse != (store.AccountInUseError{Account: "acme", Domains: 1, Users: 1, Messages: 1}) {
		t.Errorf("AccountInUseError = %+v", *inUse)
	}
	if _, err := s.GetAPIKey(ctx, "key-acme"); err != nil {
		t.Errorf("a refused delete removed the API key: %v", err)
	}
	if hooks, _ := s.ListWebhooks(ctx, "acme"); len(hooks) != 1 {
		t.Errorf("a refused delete removed webhooks: %v", hooks)
	}
	mustGet(t, s, old.ID)

	// Forced.
	del, err := s.DeleteAccount(ctx, "acme", true)
	must(t, "DeleteAccount force", err)
	wantEvents := 1 + 2500 + 1 + 1 // bounced, delivered..., accepted, complained
	if del != (store.AccountDeletion{Domains: 1, Users: 1, Messages: 1, Events: wantEvents}) {
		t.Errorf("AccountDeletion = %+v, want 1 domain, 1 user, 1 message, %d events", del, wantEvents)
	}
	_, err = s.GetAccount(ctx, "acme")
	expectNotFound(t, "GetAccount deleted", err)
	// Domains and users stay on the server, back with the default account.
	if a, err := s.DomainAccount(ctx, "acme.example"); err != nil || a != store.DefaultAccount {
		t.Errorf("domain of the deleted account: %q, %v; want default", a, err)
	}
	if a, err := s.UserAccount(ctx, "u@acme.example"); err != nil || a != store.DefaultAccount {
		t.Errorf("user of the deleted account: %q, %v; want default", a, err)
	}
	// The queued message is gone, body included.
	_, err = s.Get(ctx, old.ID)
	expectNotFound(t, "Get queued message of the deleted account", err)
	if rc, err := s.OpenBody(ctx, old.ID); err == nil {
		rc.Close()
		t.Error("the body of a deleted account's message is still there")
	}
	if l := mustLease(t, s, base.Add(time.Hour), time.Minute, 100); len(l) != 1 || l[0].Message.ID != other.ID {
		t.Errorf("leasable after the delete: %d messages, want only other's", len(l))
	}
	// Its events, in every view.
	if evs := listEvents(t, s, store.EventFilter{Account: "acme", Limit: 1000}); len(evs) != 0 {
		t.Errorf("%d events of the deleted account remain", len(evs))
	}
	for _, e := range listEvents(t, s, store.EventFilter{Limit: 1000}) {
		if e.Account == "acme" || e.MessageID == old.ID {
			t.Errorf("event of the deleted account remains in the admin view: %+v", e)
		}
	}
	if evs := listEvents(t, s, store.EventFilter{MessageID: old.ID}); len(evs) != 0 {
		t.Errorf("events of the deleted account's message remain: %v", eventSummary(evs))
	}
	// No webhook delivery of it is due any more.
	for _, d := range pendingByWebhook(t, s, base.Add(48*time.Hour)) {
		if !strings.HasPrefix(d, "hook-other:") {
			t.Errorf("delivery of the deleted account still pending: %s", d)
		}
	}

	// A new account with the same ID starts empty.
	addAccount(t, s, "acme")
	if keys, _ := s.ListAPIKeys(ctx, "acme"); len(keys) != 0 {
		t.Errorf("new account sees keys %+v", keys)
	}
	_, err = s.GetAPIKey(ctx, "key-acme")
	expectNotFound(t, "GetAPIKey of the deleted account", err)
	if hooks, _ := s.ListWebhooks(ctx, "acme"); len(hooks) != 0 {
		t.Errorf("new account sees webhooks %+v", hooks)
	}
	if ds, _ := s.ListWebhookDeliveries(ctx, "acme", "", 100); len(ds) != 0 {
		t.Errorf("new account sees %d webhook deliveries", len(ds))
	}
	if sp, _ := s.ListSuppressions(ctx, "acme", "", 100); len(sp) != 0 {
		t.Errorf("new account sees suppressions %+v", sp)
	}
	if ok, _ := s.IsSuppressed(ctx, "acme", "gone@example.org"); ok {
		t.Error("new account inherits a suppression")
	}
	if v, err := s.PutIdempotency(ctx, "acme", "order-1", "ok:NEW", time.Now()); err != nil || v != "" {
		t.Errorf("new account's idempotency key: stored %q, %v; want a fresh key", v, err)
	}
	if rs, _ := s.ListRoutes(ctx, "acme"); len(rs) != 0 {
		t.Errorf("new account sees routes %+v", rs)
	}
	if _, err := s.GetRoute(ctx, "in@acme.example"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("route of the deleted account still routes: %v", err)
	}
	if ds, _ := s.ListAccountDomains(ctx, "acme"); len(ds) != 0 {
		t.Errorf("new account owns domains %v", ds)
	}
	if evs := listEvents(t, s, store.EventFilter{Account: "acme"}); len(evs) != 0 {
		t.Errorf("new account sees %d events", len(evs))
	}
	// Event IDs keep increasing.
	next := []store.Event{{Type: store.EventRejected, Account: "acme"}}
	must(t, "AddEvents", s.AddEvents(ctx, next))
	if next[0].ID <= tail[0].ID {
		t.Errorf("event ID %d after the delete reuses an ID (last was %d)", next[0].ID, tail[0].ID)
	}

	// Everything of the other account is untouched.
	if _, err := s.GetAPIKey(ctx, "key-other"); err != nil {
		t.Errorf("other's key: %v", err)
	}
	if hooks, _ := s.ListWebhooks(ctx, "other"); len(hooks) != 1 {
		t.Errorf("other's webhooks: %+v", hooks)
	}
	if ds, _ := s.ListWebhookDeliveries(ctx, "other", "", 100); len(ds) != 1+3+1 {
		t.Errorf("other has %d webhook deliveries, want 5", len(ds))
	}
	if ok, _ := s.IsSuppressed(ctx, "other", "gone@example.org"); !ok {
		t.Error("other's suppression gone")
	}
	if v, err := s.PutIdempotency(ctx, "other", "order-1", "ok:X", time.Now()); !errors.Is(err, store.ErrExists) || v != "ok:M-other" {
		t.Errorf("other's idempotency key: %q, %v", v, err)
	}
	if r, err := s.GetRoute(ctx, "in@other.example"); err != nil || r.Account != "other" {
		t.Errorf("other's route: %+v, %v", r, err)
	}
	if a, _ := s.DomainAccount(ctx, "other.example"); a != "other" {
		t.Errorf("other's domain now belongs to %q", a)
	}
	mustGet(t, s, other.ID)
	if evs := listEvents(t, s, store.EventFilter{Account: "other"}); len(evs) != 1+3+1 {
		t.Errorf("other has %d events, want 5", len(evs))
	}

	// Without force, an account with nothing in the way is deleted too.
	addAccount(t, s, "idle")
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{{Type: store.EventRejected, Account: "idle"}}))
	del, err = s.DeleteAccount(ctx, "idle", false)
	must(t, "DeleteAccount idle", err)
	if del.Events != 1 || del.Messages != 0 || del.Domains != 0 {
		t.Errorf("AccountDeletion of idle = %+v", del)
	}
}
