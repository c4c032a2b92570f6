package alert_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// BenchmarkEvaluateRates is one evaluation of the three rate rules over
// an SQLite event log of 300,000 events, 100,000 of them in the last hour
// (1,000 destinations), through the interim event-log adapter, counting
// every window afresh.
func BenchmarkEvaluateRates(b *testing.B) {
	st, err := sqlite.Open(b.TempDir(), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	now := t0
	types := []string{store.EventDelivered, store.EventDelivered, store.EventDelivered, store.EventDeferred, store.EventBounced}
	for batch := range 300 {
		at := now.Add(-48 * time.Hour).Add(time.Duration(batch) * 5 * time.Minute)
		if batch >= 200 {
			at = now.Add(-time.Hour).Add(time.Duration(batch-200) * 30 * time.Second)
		}
		evs := make([]store.Event, 1000)
		for i := range evs {
			evs[i] = store.Event{Time: at, Type: types[i%len(types)], Account: store.DefaultAccount,
				Recipient: fmt.Sprintf("u%d@d%d.test", i, (batch*1000+i)%1000)}
		}
		if err := st.AddEvents(ctx, evs); err != nil {
			b.Fatal(err)
		}
	}
	var rules []alert.Rule
	for _, r := range alert.DefaultRules() {
		if r.Kind == alert.KindBounceRate || r.Kind == alert.KindComplaintRate || r.Kind == alert.KindDeferralRate {
			rules = append(rules, r)
		}
	}
	clk := clock.NewFake(now)
	// A fresh NodeSignals each time: the counts are not reused (as they
	// are for a 60th of their window in a running node).
	for b.Loop() {
		e := alert.New(alert.Options{Rules: rules, Store: st, Clock: clk, Signals: &alert.NodeSignals{Store: st, Clock: clk}})
		if err := e.Evaluate(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
