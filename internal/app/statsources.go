package app

import (
	"context"
	"time"

	"github.com/heraldmail/herald/internal/console"
	"github.com/heraldmail/herald/internal/stats"
	"github.com/heraldmail/herald/internal/store"
)

// consoleStats feeds the console's overview and destinations pages from
// the store's rollups (internal/stats): every node's events, without
// scanning the event log.
type consoleStats struct {
	stats *stats.Stats
	// recent is the console's event-log reader, used only for what the
	// rollups do not keep: the last replies and back-off per destination.
	recent *console.StoreStats
}

// destinationsWindow is the period the destinations page covers.
const destinationsWindow = 24 * time.Hour

// maxConsoleDestinations bounds the destinations the page lists.
const maxConsoleDestinations = 200

func (c consoleStats) Overview(ctx context.Context, account string, now time.Time) (console.Overview, error) {
	ov, err := c.stats.Overview(ctx, account, now)
	if err != nil {
		return console.Overview{}, err
	}
	out := console.Overview{
		Totals:     countsByType(ov.Day.Total),
		LatencyP50: ov.Day.Latency.P50,
		LatencyP99: ov.Day.Latency.P99,
		Queue:      console.QueueBacklog{Messages: ov.Queue.Messages, Recipients: ov.Queue.Recipients},
		Window:     "last day",
	}
	if ov.Queue.OldestAge > 0 {
		out.Queue.Oldest = now.Add(-ov.Queue.OldestAge)
	}
	if final := ov.Day.Total.Delivered + ov.Day.Total.Bounced + ov.Day.Total.Expired; final > 0 {
		out.DeliveryRate, out.HasRate = ov.Day.Total.DeliveryRate(), true
	}
	for _, w := range []struct {
		name string
		win  stats.Window
	}{{"hour", ov.Hour}, {"day", ov.Day}, {"month", ov.Month}} {
		s := console.Series{Range: w.name, Step: w.win.Step, Counts: make(map[string][]int64, len(console.CountTypes))}
		for _, p := range w.win.Points {
			s.Times = append(s.Times, p.Start)
			byType := countsByType(p.Counts)
			for _, typ := range console.CountTypes {
				s.Counts[typ] = append(s.Counts[typ], byType[typ])
			}
		}
		out.Series = append(out.Series, s)
	}
	return out, nil
}

func (c consoleStats) Destinations(ctx context.Context, account string, now time.Time) ([]console.DestinationStats, string, error) {
	ds, err := c.stats.Destinations(ctx, account, now.Add(-destinationsWindow), now, maxConsoleDestinations)
	if err != nil {
		return nil, "", err
	}
	// Replies and back-off from the recent events, where there are any.
	recent := map[string]console.DestinationStats{}
	if rs, _, err := c.recent.Destinations(ctx, account, now); err == nil {
		for _, r := range rs {
			recent[r.Destination] = r
		}
	}
	out := make([]console.DestinationStats, 0, len(ds))
	for _, d := range ds {
		r := recent[d.Domain]
		out = append(out, console.DestinationStats{Destination: d.Domain, Attempts: d.Attempts, Delivered: d.Delivered,
			Deferred: d.Deferred, Bounced: d.Bounced, TLS: int64(d.TLSShare*float64(d.Attempts) + 0.5),
			BackoffState: r.BackoffState, PausedUntil: r.PausedUntil, LastReplies: r.LastReplies})
	}
	return out, "last 24 hours (replies: last hour)", nil
}

// countsByType maps stats.Counts to the event types the console charts.
func countsByType(c stats.Counts) map[string]int64 {
	return map[string]int64{
		store.EventAccepted:   c.Accepted,
		store.EventDelivered:  c.Delivered,
		store.EventDeferred:   c.Deferred,
		store.EventBounced:    c.Bounced,
		store.EventExpired:    c.Expired,
		store.EventComplained: c.Complained,
	}
}
