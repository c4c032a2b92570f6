package app

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
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
