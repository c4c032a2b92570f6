package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// webhookTests is the part of the suite for store.WebhookAdmin (batched
// webhooks and secret rotation).
var webhookTests = []test{
	{"Settings", testWebhookSettings},
	{"SecretRotation", testWebhookSecretRotation},
	{"BatchLease", testWebhookBatchLease},
	{"BatchLeaseExclusive", testWebhookBatchLeaseExclusive},
}

func testWebhookSettings(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "wb", Account: "a", URL: "https://h.example/b", Secret: "s1",
		EventTypes: []string{store.EventBounced}, Created: base, BatchMax: 100, BatchWait: 5 * time.Second}))
	addWebhook(t, s, "w1", "a")
	got, err := s.GetWebhook(ctx, "wb")
	must(t, "GetWebhook", err)
	if got.Account != "a" || got.BatchMax != 100 || got.BatchWait != 5*time.Second || got.Secret != "s1" ||
		!slices.Equal(got.EventTypes, []string{store.EventBounced}) || got.PreviousSecret != "" ||
		!got.PreviousExpires.IsZero() || !got.SecretRotated.IsZero() || !got.Created.Equal(base) {
		t.Errorf("GetWebhook = %+v", got)
	}
	if w1, err := s.GetWebhook(ctx, "w1"); err != nil || w1.BatchMax != 1 || w1.BatchWait != 0 {
		t.Errorf("GetWebhook of a webhook added without batch settings = %+v, %v; want BatchMax 1, BatchWait 0", w1, err)
	}
	_, err = s.GetWebhook(ctx, "nope")
	expectNotFound(t, "GetWebhook unknown", err)

	// A partial update changes only what it names.
	n, wait := 10, time.Duration(0)
	up, err := s.UpdateWebhook(ctx, "a", "wb", store.WebhookChange{BatchMax: &n, BatchWait: &wait})
	must(t, "UpdateWebhook", err)
	if up.BatchMax != 10 || up.BatchWait != 0 || up.URL != "https://h.example/b" || !slices.Equal(up.EventTypes, []string{store.EventBounced}) {
		t.Errorf("UpdateWebhook(batch) = %+v", up)
	}
	u, all := "https://h.example/c", []string{}
	up, err = s.UpdateWebhook(ctx, "a", "wb", store.WebhookChange{URL: &u, EventTypes: &all})
	must(t, "UpdateWebhook", err)
	if up.URL != u || len(up.EventTypes) != 0 || up.BatchMax != 10 {
		t.Errorf("UpdateWebhook(url, types) = %+v", up)
	}
	hooks, err := s.ListWebhooks(ctx, "a")
	must(t, "ListWebhooks", err)
	if len(hooks) != 2 || hooks[0].ID != "w1" || hooks[1].URL != u || hooks[1].BatchMax != 10 {
		t.Errorf("ListWebhooks = %+v", hooks)
	}
	// The new event types apply to the next events: all of them now.
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{{Time: base, Type: store.EventDelivered, Account: "a", Recipient: "r@example.com"}}))
	if got := pendingByWebhook(t, s, base.Add(time.Second)); !slices.Equal(got, []string{"w1:delivered:r@example.com", "wb:delivered:r@example.com"}) {
		t.Errorf("deliveries after the update = %v", got)
	}

	// Another account can neither read nor change it.
	_, err = s.UpdateWebhook(ctx, "b", "wb", store.WebhookChange{URL: &u})
	expectNotFound(t, "UpdateWebhook of another account's webhook", err)
	_, err = s.UpdateWebhook(ctx, "a", "nope", store.WebhookChange{URL: &u})
	expectNotFound(t, "UpdateWebhook unknown", err)
}

func testWebhookSecretRotation(t *testing.T, s store.Store) {
	ctx := context.Background()
	addWebhook(t, s, "w", "a")
	t1 := base.Add(time.Hour)
	w, err := s.RotateWebhookSecret(ctx, "a", "w", "s2", t1, t1.Add(24*time.Hour))
	must(t, "RotateWebhookSecret", err)
	if w.Secret != "s2" || w.PreviousSecret != "s-w" || !w.PreviousExpires.Equal(t1.Add(24*time.Hour)) || !w.SecretRotated.Equal(t1) {
		t.Errorf("after rotation: %+v", w)
	}
	if g, _ := s.GetWebhook(ctx, "w"); g.Secret != "s2" || g.PreviousSecret != "s-w" || !g.SecretRotated.Equal(t1) {
		t.Errorf("GetWebhook after rotation: %+v", g)
	}
	// A second rotation drops the oldest secret.
	t2 := t1.Add(time.Minute)
	w, err = s.RotateWebhookSecret(ctx, "a", "w", "s3", t2, t2.Add(time.Hour))
	must(t, "RotateWebhookSecret again", err)
	if w.Secret != "s3" || w.PreviousSecret != "s2" || !w.PreviousExpires.Equal(t2.Add(time.Hour)) || !w.SecretRotated.Equal(t2) {
		t.Errorf("after the second rotation: %+v", w)
	}
	// Ending the transition keeps the new secret only.
	w, err = s.ExpireWebhookPreviousSecret(ctx, "a", "w")
	must(t, "ExpireWebhookPreviousSecret", err)
	if w.Secret != "s3" || w.PreviousSecret != "" || !w.PreviousExpires.IsZero() || !w.SecretRotated.Equal(t2) {
		t.Errorf("after ending the transition: %+v", w)
	}
	// A rotation without overlap keeps no previous secret.
	w, err = s.RotateWebhookSecret(ctx, "a", "w", "s4", t2, time.Time{})
	must(t, "RotateWebhookSecret without overlap", err)
	if w.Secret != "s4" || w.PreviousSecret != "" || !w.PreviousExpires.IsZero() {
		t.Errorf("after a rotation without overlap: %+v", w)
	}
	_, err = s.RotateWebhookSecret(ctx, "b", "w", "evil", t2, t2.Add(time.Hour))
	expectNotFound(t, "RotateWebhookSecret of another account's webhook", err)
	_, err = s.ExpireWebhookPreviousSecret(ctx, "b", "w")
	expectNotFound(t, "ExpireWebhookPreviousSecret of another account's webhook", err)
	if g, _ := s.GetWebhook(ctx, "w"); g.Secret != "s4" {
		t.Errorf("another account's calls changed the secret: %+v", g)
	}
}

// batchRecipients returns the event recipients of ds, for comparisons.
func batchRecipients(ds []store.WebhookDelivery) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Event.Recipient
	}
	return out
}

func testWebhookBatchLease(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "wb", Account: "a", URL: "https://h.example/", BatchMax: 10}))
	addWebhook(t, s, "other", "b")
	var evs []store.Event
	for i := range 5 {
		evs = append(evs, store.Event{Time: base, Type: store.EventDelivered, Account: "a", Recipient: fmt.Sprintf("r%d@a.example", i)})
	}
	evs = append(evs, store.Event{Time: base.Add(time.Millisecond), Type: store.EventDelivered, Account: "b", Recipient: "x@b.example"})
	must(t, "AddEvents", s.AddEvents(ctx, evs))

	now := base.Add(time.Second)
	head, err := s.LeaseWebhookDeliveries(ctx, now, time.Minute, 1)
	must(t, "LeaseWebhookDeliveries", err)
	if len(head) != 1 {
		t.Fatalf("leased %d deliveries, want 1", len(head))
	}
	// The batch takes the webhook's other deliveries, not the head (leased,
	// whichever it is) nor another webhook's, in event order.
	var want []string
	for i := range 5 {
		if r := fmt.Sprintf("r%d@a.example", i); r != head[0].Event.Recipient {
			want = append(want, r)
		}
	}
	if head[0].WebhookID != "wb" {
		t.Fatalf("the first lease returned %s's delivery (%s), want wb's (earliest event)", head[0].WebhookID, head[0].Event.Recipient)
	}
	more, err := s.LeaseWebhookBatch(ctx, "wb", now, time.Minute, 3)
	must(t, "LeaseWebhookBatch", err)
	if got := batchRecipients(more); !slices.Equal(got, want[:3]) {
		t.Errorf("LeaseWebhookBatch(limit 3) = %v, want %v", got, want[:3])
	}
	rest, err := s.LeaseWebhookBatch(ctx, "wb", now, time.Minute, 10)
	must(t, "LeaseWebhookBatch", err)
	if got := batchRecipients(rest); !slices.Equal(got, want[3:]) {
		t.Errorf("second LeaseWebhookBatch = %v, want %v", got, want[3:])
	}
	if ds, err := s.LeaseWebhookBatch(ctx, "wb", now, time.Minute, 10); err != nil || len(ds) != 0 {
		t.Errorf("LeaseWebhookBatch with everything leased = %v, %v", batchRecipients(ds), err)
	}

	// Held: not due for LeaseWebhookDeliveries before the deadline, but a
	// batch still takes them (first attempts).
	batch := slices.Concat(head, more, rest)
	ids := make([]int64, len(batch))
	for i, d := range batch {
		ids[i] = d.ID
	}
	hold := now.Add(30 * time.Second)
	must(t, "HoldWebhookDeliveries", s.HoldWebhookDeliveries(ctx, ids, hold))
	if ds, _ := s.LeaseWebhookDeliveries(ctx, now.Add(time.Second), time.Minute, 100); len(ds) != 1 || ds[0].WebhookID != "other" {
		t.Errorf("LeaseWebhookDeliveries during the hold = %v, want only the other webhook's", batchRecipients(ds))
	}
	all, err := s.LeaseWebhookBatch(ctx, "wb", now.Add(time.Second), time.Minute, 10)
	must(t, "LeaseWebhookBatch of held deliveries", err)
	if len(all) != 5 {
		t.Fatalf("LeaseWebhookBatch of held deliveries = %v, want all 5", batchRecipients(all))
	}

	// One request's outcome for all: two delivered, two retried, one given up.
	t2 := now.Add(2 * time.Second)
	next := t2.Add(time.Minute)
	must(t, "RecordWebhookAttempts", s.RecordWebhookAttempts(ctx, []store.WebhookAttempt{
		{ID: all[0].ID, Status: "delivered", HTTPStatus: 200},
		{ID: all[1].ID, Status: "delivered", HTTPStatus: 200},
		{ID: all[2].ID, Status: "pending", Next: next, Error: "HTTP 500", HTTPStatus: 500},
		{ID: all[3].ID, Status: "pending", Next: next, Error: "HTTP 500", HTTPStatus: 500},
		{ID: all[4].ID, Status: "failed", Error: "HTTP 500", HTTPStatus: 500},
		{ID: 1 << 40, Status: "delivered"}, // gone: skipped
	}))
	ds, err := s.ListWebhookDeliveries(ctx, "a", "wb", 100)
	must(t, "ListWebhookDeliveries", err)
	state := map[int64]store.WebhookDelivery{}
	for _, d := range ds {
		state[d.ID] = d
	}
	for i, wantStatus := range []string{"delivered", "delivered", "pending", "pending", "failed"} {
		d := state[all[i].ID]
		if d.Status != wantStatus || d.Attempts != 1 {
			t.Errorf("delivery %d: status %q attempts %d, want %q after one attempt", i, d.Status, d.Attempts, wantStatus)
		}
		if wantStatus == "pending" && (!d.NextAttempt.Equal(next) || d.LastError != "HTTP 500") {
			t.Errorf("delivery %d: next %v error %q, want %v, HTTP 500", i, d.NextAttempt, d.LastError, next)
		}
	}
	// Retries are not taken before they are due; then they are.
	if ds, _ := s.LeaseWebhookBatch(ctx, "wb", t2.Add(time.Second), time.Minute, 10); len(ds) != 0 {
		t.Errorf("LeaseWebhookBatch before the retry is due = %v", batchRecipients(ds))
	}
	if ds, _ := s.LeaseWebhookBatch(ctx, "wb", next, time.Minute, 10); !slices.Equal(batchRecipients(ds), batchRecipients(all[2:4])) {
		t.Errorf("LeaseWebhookBatch when the retry is due = %v, want %v", batchRecipients(ds), batchRecipients(all[2:4]))
	}
}

func testWebhookBatchLeaseExclusive(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "wb", Account: "a", URL: "https://h.example/", BatchMax: 1000}))
	const n = 200
	evs := make([]store.Event, n)
	for i := range evs {
		evs[i] = store.Event{Time: base, Type: store.EventDelivered, Account: "a", Recipient: fmt.Sprintf("r%d@a.example", i)}
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	var mu sync.Mutex
	seen := map[int64]int{}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ds, err := s.LeaseWebhookBatch(ctx, "wb", base.Add(time.Second), time.Minute, 9)
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
}
