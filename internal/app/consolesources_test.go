package app

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/console"
	"github.com/heraldmail/herald/internal/stats"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// The console's alert page reads what the engine stored: the firing
// alerts with their subject and silence, and the history of transitions.
func TestConsoleAlertsFromStore(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	t0 := time.Date(2026, 12, 2, 10, 0, 0, 0, time.UTC)
	clk := clock.NewFake(t0)
	fire := func(key, rule string, firing bool, from int64, at time.Time) int64 {
		s, ok, err := st.TransitionAlert(ctx, store.AlertState{Key: key, Rule: rule, Firing: firing, Since: at, Value: 0.2, Detail: "20 % of 500"}, from)
		if err != nil || !ok {
			t.Fatalf("transition %s: %v %v", key, ok, err)
		}
		return s.Version
	}
	v := fire("deferral_rate/gmail.com", "deferral_rate", true, 0, t0)
	fire("deferral_rate/gmail.com", "deferral_rate", false, v, t0.Add(time.Minute))
	fire("bounce_rate", "bounce_rate", true, 0, t0.Add(2*time.Minute))
	if err := st.SilenceAlert(ctx, store.AlertSilence{Rule: "bounce_rate", Until: t0.Add(time.Hour), Reason: "migration", Created: t0}); err != nil {
		t.Fatal(err)
	}
	src := consoleAlerts{view: alertView{st: st, rules: alert.Rules(nil), clock: clk}}
	firing, err := src.Firing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(firing) != 1 || firing[0].Rule != "bounce_rate" || !firing[0].Silenced || firing[0].Summary != "20 % of 500" {
		t.Fatalf("firing = %+v, want the silenced bounce_rate alert only", firing)
	}
	hist, err := src.History(ctx, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 || hist[1].Subject != "gmail.com" || hist[1].Resolved.IsZero() || hist[2].Since.IsZero() {
		t.Fatalf("history = %+v, want 3 transitions, newest first, the resolve of gmail.com second", hist)
	}
}

// The console's overview and destinations come from the rollups: counts,
// charts, delivery rate and latency of what the store recorded.
func TestConsoleStatsFromRollups(t *testing.T) {
	ctx := context.Background()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	var evs []store.Event
	for i := 0; i < 9; i++ {
		evs = append(evs, store.Event{Time: now, Type: store.EventDelivered, Account: store.DefaultAccount,
			Recipient: "r@gmail.test", Queued: now.Add(-2 * time.Second), TLS: "opportunistic"})
	}
	evs = append(evs, store.Event{Time: now, Type: store.EventBounced, Account: store.DefaultAccount, Recipient: "x@yahoo.test"})
	if err := st.AddEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	cs := consoleStats{stats: stats.New(st), recent: &console.StoreStats{Store: st}}
	ov, err := cs.Overview(ctx, "", now)
	if err != nil {
		t.Fatal(err)
	}
	if ov.Totals[store.EventDelivered] != 9 || ov.Totals[store.EventBounced] != 1 || !ov.HasRate || ov.DeliveryRate != 0.9 {
		t.Errorf("totals %v, rate %v %v", ov.Totals, ov.DeliveryRate, ov.HasRate)
	}
	if ov.LatencyP50 < 1900*time.Millisecond || ov.LatencyP50 > 2100*time.Millisecond {
		t.Errorf("p50 latency %v, want about 2s", ov.LatencyP50)
	}
	if len(ov.Series) != 3 || ov.Series[0].Range != "hour" {
		t.Fatalf("series %+v", ov.Series)
	}
	var charted int64
	for _, n := range ov.Series[0].Counts[store.EventDelivered] {
		charted += n
	}
	if charted != 9 {
		t.Errorf("the hour chart shows %d deliveries, want 9", charted)
	}
	other, err := cs.Overview(ctx, "another", now)
	if err != nil || other.Totals[store.EventDelivered] != 0 {
		t.Errorf("another account sees %v (%v)", other.Totals, err)
	}
	ds, _, err := cs.Destinations(ctx, "", now)
	if err != nil || len(ds) != 2 || ds[0].Destination != "gmail.test" || ds[0].Delivered != 9 || ds[0].TLS != 9 || ds[1].Bounced != 1 {
		t.Fatalf("destinations %+v (%v)", ds, err)
	}
}
