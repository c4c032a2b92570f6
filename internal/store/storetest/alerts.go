package storetest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// alertTests is the part of the suite for store.Alerts and
// store.AlertInputs on one node; alertNodeTests covers several.
var alertTests = []test{
	{"Transitions", testAlertTransitions},
	{"History", testAlertHistory},
	{"Silences", testAlertSilences},
	{"FailingWebhooks", testAlertFailingWebhooks},
}

var alertNodeTests = []nodeTest{
	{"AlertTransitionOnce", testNodesAlertTransitionOnce},
}

var alertT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testAlertTransitions(t *testing.T, s store.Store) {
	ctx := context.Background()
	if sts, err := s.AlertStates(ctx); err != nil || len(sts) != 0 {
		t.Fatalf("AlertStates on an empty store = %v, %v", sts, err)
	}
	fire := store.AlertState{Key: "bounce_rate", Rule: "bounce_rate", Firing: true, Since: alertT0, Value: 0.2, Detail: "20 % of 500"}
	st, ok, err := s.TransitionAlert(ctx, fire, 0)
	must(t, "TransitionAlert fire", err)
	if !ok || st.Version != 1 || !st.Firing {
		t.Fatalf("first fire = %+v, %v; want version 1 firing", st, ok)
	}
	// The same version again (another evaluation that read version 0): lost.
	if _, ok, err := s.TransitionAlert(ctx, fire, 0); err != nil || ok {
		t.Fatalf("second fire from version 0 = %v, %v; want lost", ok, err)
	}
	// A stale version: lost.
	res := store.AlertState{Key: "bounce_rate", Rule: "bounce_rate", Firing: false, Since: alertT0.Add(time.Hour), Value: 0.01}
	if _, ok, err := s.TransitionAlert(ctx, res, 7); err != nil || ok {
		t.Fatalf("resolve from a wrong version = %v, %v; want lost", ok, err)
	}
	st, ok, err = s.TransitionAlert(ctx, res, 1)
	must(t, "TransitionAlert resolve", err)
	if !ok || st.Version != 2 || st.Firing {
		t.Fatalf("resolve = %+v, %v; want version 2 resolved", st, ok)
	}
	long := store.AlertState{Key: "deferral_rate/" + strings.Repeat("d", 400), Rule: "deferral_rate", Firing: true,
		Since: alertT0, Detail: strings.Repeat("é", 1000)}
	st, ok, err = s.TransitionAlert(ctx, long, 0)
	must(t, "TransitionAlert long", err)
	if !ok || len(st.Key) > store.MaxAlertKey || len(st.Detail) > store.MaxAlertDetail {
		t.Fatalf("long key/detail not clipped: %d %d", len(st.Key), len(st.Detail))
	}
	sts, err := s.AlertStates(ctx)
	must(t, "AlertStates", err)
	if len(sts) != 2 {
		t.Fatalf("AlertStates = %d states, want 2", len(sts))
	}
	b := sts[0]
	if b.Key != "bounce_rate" || b.Firing || b.Version != 2 || !b.Since.Equal(alertT0.Add(time.Hour)) || b.Value != 0.01 {
		t.Errorf("stored state = %+v", b)
	}
	if sts[1].Detail != long.Detail[:store.MaxAlertDetail] || sts[1].Rule != "deferral_rate" {
		t.Errorf("clipped detail or rule wrong: %q", sts[1].Rule)
	}
}

func testAlertHistory(t *testing.T, s store.Store) {
	ctx := context.Background()
	v := map[string]int64{}
	for i := range 6 {
		key := []string{"a", "b"}[i%2]
		st := store.AlertState{Key: key, Rule: key, Firing: i/2%2 == 0, Since: alertT0.Add(time.Duration(i) * time.Hour), Value: float64(i)}
		_, ok, err := s.TransitionAlert(ctx, st, v[key])
		must(t, "TransitionAlert", err)
		if !ok {
			t.Fatalf("transition %d lost", i)
		}
		v[key]++
	}
	all, err := s.AlertHistory(ctx, "", 100)
	must(t, "AlertHistory", err)
	if len(all) != 6 || all[0].Value != 5 || all[5].Value != 0 || all[0].Rule != "b" || !all[5].Firing {
		t.Fatalf("history = %+v", all)
	}
	if all[0].Node == "" {
		t.Errorf("history does not name the node")
	}
	a, err := s.AlertHistory(ctx, "a", 2)
	must(t, "AlertHistory a", err)
	if len(a) != 2 || a[0].Value != 4 || a[1].Value != 2 || a[0].Firing != true || a[1].Firing != false {
		t.Fatalf("history of a = %+v", a)
	}
	n, err := s.PruneAlertHistory(ctx, alertT0.Add(3*time.Hour))
	must(t, "PruneAlertHistory", err)
	if n != 3 {
		t.Errorf("pruned %d transitions, want 3", n)
	}
	all, _ = s.AlertHistory(ctx, "", 100)
	if len(all) != 3 || all[2].Value != 3 {
		t.Errorf("history after prune = %+v", all)
	}
	// Both states are firing: kept by any prune. Once b resolved, a later
	// prune drops its state.
	if sts, _ := s.AlertStates(ctx); len(sts) != 2 {
		t.Fatalf("states after prune = %+v", sts)
	}
	if _, ok, err := s.TransitionAlert(ctx, store.AlertState{Key: "b", Rule: "b", Since: alertT0.Add(6 * time.Hour)}, 3); err != nil || !ok {
		t.Fatalf("resolve b = %v, %v", ok, err)
	}
	_, err = s.PruneAlertHistory(ctx, alertT0.Add(10*time.Hour))
	must(t, "PruneAlertHistory all", err)
	sts, _ := s.AlertStates(ctx)
	if len(sts) != 1 || sts[0].Key != "a" || !sts[0].Firing {
		t.Fatalf("states after full prune = %+v", sts)
	}
	// A pruned alert starts again from version 0.
	if _, ok, err := s.TransitionAlert(ctx, store.AlertState{Key: "b", Rule: "b", Firing: true, Since: alertT0}, 0); err != nil || !ok {
		t.Errorf("fire of a pruned alert = %v, %v", ok, err)
	}
}

func testAlertSilences(t *testing.T, s store.Store) {
	ctx := context.Background()
	must(t, "SilenceAlert", s.SilenceAlert(ctx, store.AlertSilence{Rule: "bounce_rate", Until: alertT0.Add(2 * time.Hour), Reason: "migration", Created: alertT0}))
	must(t, "SilenceAlert", s.SilenceAlert(ctx, store.AlertSilence{Rule: "disk_free", Until: alertT0.Add(time.Hour), Created: alertT0}))
	got, err := s.AlertSilences(ctx, alertT0)
	must(t, "AlertSilences", err)
	if len(got) != 2 || got[0].Rule != "bounce_rate" || got[0].Reason != "migration" || !got[0].Until.Equal(alertT0.Add(2*time.Hour)) {
		t.Fatalf("silences = %+v", got)
	}
	if got, _ := s.AlertSilences(ctx, alertT0.Add(90*time.Minute)); len(got) != 1 || got[0].Rule != "bounce_rate" {
		t.Fatalf("silences after one ended = %+v", got)
	}
	// Replacing, then removing.
	must(t, "SilenceAlert replace", s.SilenceAlert(ctx, store.AlertSilence{Rule: "bounce_rate", Until: alertT0.Add(time.Minute), Created: alertT0}))
	if got, _ := s.AlertSilences(ctx, alertT0.Add(2*time.Minute)); len(got) != 1 || got[0].Rule != "disk_free" {
		t.Fatalf("silences after replace = %+v", got)
	}
	must(t, "SilenceAlert remove", s.SilenceAlert(ctx, store.AlertSilence{Rule: "disk_free"}))
	if got, _ := s.AlertSilences(ctx, alertT0); len(got) != 1 || got[0].Rule != "bounce_rate" {
		t.Fatalf("silences after remove = %+v", got)
	}
}

func testAlertFailingWebhooks(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "acme")
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "bad", Account: "acme", URL: "https://bad.example/", Secret: "s"}))
	must(t, "AddWebhook", s.AddWebhook(ctx, store.Webhook{ID: "good", Account: "acme", URL: "https://good.example/", Secret: "s"}))
	if got, err := s.FailingWebhooks(ctx, 10); err != nil || len(got) != 0 {
		t.Fatalf("FailingWebhooks with nothing sent = %v, %v", got, err)
	}
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{
		{Time: alertT0, Type: store.EventBounced, Account: "acme", Recipient: "a@x.example"},
		{Time: alertT0, Type: store.EventBounced, Account: "acme", Recipient: "b@x.example"},
	}))
	ds, err := s.LeaseWebhookDeliveries(ctx, alertT0.Add(time.Minute), time.Minute, 10)
	must(t, "LeaseWebhookDeliveries", err)
	if len(ds) != 4 {
		t.Fatalf("leased %d deliveries, want 4", len(ds))
	}
	for _, d := range ds {
		if d.WebhookID == "good" {
			must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "delivered", time.Time{}, "", 204))
		} else {
			must(t, "RecordWebhookAttempt", s.RecordWebhookAttempt(ctx, d.ID, "pending", alertT0.Add(time.Hour), "HTTP 500", 500))
		}
	}
	got, err := s.FailingWebhooks(ctx, 10)
	must(t, "FailingWebhooks", err)
	if len(got) != 1 || got[0].WebhookID != "bad" || got[0].Account != "acme" || got[0].Pending != 2 ||
		got[0].LastError != "HTTP 500" || got[0].FailingSince.IsZero() {
		t.Fatalf("FailingWebhooks = %+v", got)
	}
}

// Nodes evaluating the same alert at once: each transition is won by
// exactly one of them.
func testNodesAlertTransitionOnce(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("b"), open("c")}
	var version int64
	for round := range 6 {
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i, n := range nodes {
			wg.Go(func() {
				st := store.AlertState{Key: "k", Rule: "k", Firing: round%2 == 0, Since: alertT0.Add(time.Duration(round) * time.Minute),
					Detail: fmt.Sprintf("node %d", i)}
				_, ok, err := n.TransitionAlert(ctx, st, version)
				if err != nil {
					t.Errorf("node %d: %v", i, err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if wins.Load() != 1 {
			t.Fatalf("round %d: %d nodes won the transition, want 1", round, wins.Load())
		}
		version++
	}
	h, err := s.AlertHistory(ctx, "k", 100)
	must(t, "AlertHistory", err)
	if len(h) != 6 {
		t.Fatalf("history has %d transitions, want 6", len(h))
	}
}
