package console

import (
	"context"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// The interfaces in this file are what the statistics (rollups), the alert
// engine and the blocklist checks provide to the console. In each, account
// "" means every account (an operator); any other value must restrict the
// answer to that account's mail.

// CountTypes are the event types the overview counts and charts.
var CountTypes = []string{store.EventAccepted, store.EventDelivered, store.EventDeferred, store.EventBounced, store.EventComplained}

// Series is one chart: counts per event type in buckets of Step.
type Series struct {
	Range  string             // "hour", "day" or "month"
	Step   time.Duration      // bucket width: a minute, an hour, a day
	Times  []time.Time        // start of each bucket, oldest first
	Counts map[string][]int64 // per event type (CountTypes), one count per bucket
}

// QueueBacklog is the pending queue.
type QueueBacklog struct {
	Messages   int
	Recipients int
	Oldest     time.Time // Received of the oldest pending message; zero if none
}

// Overview is the overview page's data.
type Overview struct {
	// Series holds the "hour" (by minute), "day" (by hour) and "month"
	// (30 days, by day) charts; a source may leave out those it lacks.
	Series []Series
	// Totals counts each event type over the last day.
	Totals map[string]int64
	// DeliveryRate is delivered / (delivered + bounced + expired) over the
	// last day; HasRate is false when nothing was final.
	DeliveryRate float64
	HasRate      bool
	// LatencyP50/P99: time from acceptance to delivery over the last day
	// (zero when unknown).
	LatencyP50, LatencyP99 time.Duration
	Queue                  QueueBacklog
	// Window describes what the numbers cover ("last day", or the interim
	// source's "last hour, at most N events").
	Window string
}

// OverviewSource provides the overview (internal/stats, from rollups).
type OverviewSource interface {
	Overview(ctx context.Context, account string, now time.Time) (Overview, error)
}

// DestinationStats is one receiving domain or provider.
type DestinationStats struct {
	Destination  string // domain or provider group
	Attempts     int64
	Delivered    int64
	Deferred     int64
	Bounced      int64
	TLS          int64  // attempts that used TLS
	Policy       string // "MTA-STS", "DANE", "" (opportunistic) as last seen
	BackoffState string // "" when not throttled, else a short description
	PausedUntil  time.Time
	LastReplies  []string // the latest remote replies, newest first
}

// DeferralRate is Deferred / Attempts (0 without attempts).
func (d DestinationStats) DeferralRate() float64 { return ratio(d.Deferred, d.Attempts) }

// BounceRate is Bounced / Attempts.
func (d DestinationStats) BounceRate() float64 { return ratio(d.Bounced, d.Attempts) }

// TLSShare is TLS / Attempts.
func (d DestinationStats) TLSShare() float64 { return ratio(d.TLS, d.Attempts) }

func ratio(a, b int64) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// DestinationSource provides per-destination statistics.
type DestinationSource interface {
	Destinations(ctx context.Context, account string, now time.Time) ([]DestinationStats, string, error) // stats, window description
}

// Alert is a firing or resolved alert (internal/alert).
type Alert struct {
	Rule     string // rule name, e.g. "bounce_rate"
	Subject  string // what it is about: a destination, an IP, a domain; "" for the server
	Severity string // "warning", "critical"
	Summary  string // human-readable: value and threshold
	Since    time.Time
	Resolved time.Time // zero while firing
	Silenced bool
}

// AlertSource provides the firing alerts and their history.
type AlertSource interface {
	Firing(ctx context.Context) ([]Alert, error)
	History(ctx context.Context, limit int) ([]Alert, error)
}

// Listing is the result of one blocklist lookup of the server's own IP or
// domain (internal/dnsbl).
type Listing struct {
	Target  string // the IP address or domain looked up
	List    string // the blocklist zone
	Listed  bool
	Codes   []string // the A records returned (127.0.0.x)
	Reason  string   // the TXT record, if any
	Checked time.Time
	Err     string // the lookup failed (timeout, SERVFAIL)
}

// BlocklistSource provides the latest own-reputation checks.
type BlocklistSource interface {
	Listings(ctx context.Context) ([]Listing, error)
}

// Interim statistics: until internal/stats provides rollups, the overview
// and destinations are computed from the store's event log, over the last
// hour and at most interimMaxEvents events, and the queue figures from a
// bounded scan of the queue.
const (
	interimWindow    = time.Hour
	interimMaxEvents = 5000
	interimMaxQueue  = 10000
)

// StoreStats is the interim OverviewSource and DestinationSource: it reads
// the event log and the queue directly, over a small recent window. It is
// replaced by the rollups of internal/stats.
type StoreStats struct {
	Store Store
}

func (s *StoreStats) recentEvents(ctx context.Context, account string, now time.Time) ([]store.Event, error) {
	var out []store.Event
	var after int64
	for len(out) < interimMaxEvents {
		evs, err := s.Store.ListEvents(ctx, store.EventFilter{Account: account, Since: now.Add(-interimWindow), After: after, Limit: 1000})
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
		if len(evs) < 1000 {
			break
		}
		after = evs[len(evs)-1].ID
	}
	return out, nil
}

// backlog returns the pending queue: the store's summary for an operator,
// a bounded scan for an account.
func backlog(ctx context.Context, st Store, account string) (QueueBacklog, error) {
	if account == "" {
		qs, err := st.Stats(ctx)
		return QueueBacklog{Messages: qs.Messages, Recipients: qs.Recipients, Oldest: qs.Oldest}, err
	}
	var b QueueBacklog
	after := ""
	for seen := 0; seen < interimMaxQueue; {
		msgs, err := st.List(ctx, after, 500)
		if err != nil {
			return b, err
		}
		for _, m := range msgs {
			if m.Account != account {
				continue
			}
			n := 0
			for _, r := range m.Recipients {
				if !r.Status.Final() {
					n++
				}
			}
			if n > 0 {
				b.Messages++
				b.Recipients += n
				if b.Oldest.IsZero() || m.Received.Before(b.Oldest) {
					b.Oldest = m.Received
				}
			}
		}
		seen += len(msgs)
		if len(msgs) < 500 {
			break
		}
		after = msgs[len(msgs)-1].ID
	}
	return b, nil
}

// Overview implements OverviewSource over the last hour of events.
func (s *StoreStats) Overview(ctx context.Context, account string, now time.Time) (Overview, error) {
	evs, err := s.recentEvents(ctx, account, now)
	if err != nil {
		return Overview{}, err
	}
	start := now.Truncate(time.Minute).Add(-59 * time.Minute)
	ser := Series{Range: "hour", Step: time.Minute, Counts: make(map[string][]int64)}
	for i := range 60 {
		ser.Times = append(ser.Times, start.Add(time.Duration(i)*time.Minute))
	}
	for _, t := range CountTypes {
		ser.Counts[t] = make([]int64, 60)
	}
	o := Overview{Totals: make(map[string]int64), Window: "last hour (interim: read from the event log, at most 5000 events)"}
	accepted := make(map[string]time.Time)
	var lat []time.Duration
	var final int64
	for _, e := range evs {
		o.Totals[e.Type]++
		if i := int(e.Time.Sub(start) / time.Minute); i >= 0 && i < 60 {
			if c, ok := ser.Counts[e.Type]; ok {
				c[i]++
			}
		}
		switch e.Type {
		case store.EventAccepted:
			if _, ok := accepted[e.MessageID]; !ok {
				accepted[e.MessageID] = e.Time
			}
		case store.EventDelivered:
			final++
			if t, ok := accepted[e.MessageID]; ok {
				lat = append(lat, e.Time.Sub(t))
			}
		case store.EventBounced, store.EventExpired:
			final++
		}
	}
	if final > 0 {
		o.DeliveryRate, o.HasRate = float64(o.Totals[store.EventDelivered])/float64(final), true
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		o.LatencyP50 = lat[(len(lat)-1)*50/100]
		o.LatencyP99 = lat[(len(lat)-1)*99/100]
	}
	o.Series = []Series{ser}
	o.Queue, err = backlog(ctx, s.Store, account)
	return o, err
}

// Destinations implements DestinationSource over the last hour of events,
// with each destination's back-off from the store.
func (s *StoreStats) Destinations(ctx context.Context, account string, now time.Time) ([]DestinationStats, string, error) {
	evs, err := s.recentEvents(ctx, account, now)
	if err != nil {
		return nil, "", err
	}
	by := make(map[string]*DestinationStats)
	for i := len(evs) - 1; i >= 0; i-- { // newest first, for the replies
		e := evs[i]
		if e.Type != store.EventDelivered && e.Type != store.EventDeferred && e.Type != store.EventBounced {
			continue
		}
		_, dom, ok := strings.Cut(e.Recipient, "@")
		if !ok {
			continue
		}
		dom = strings.ToLower(dom)
		d := by[dom]
		if d == nil {
			d = &DestinationStats{Destination: dom}
			by[dom] = d
		}
		d.Attempts++
		switch e.Type {
		case store.EventDelivered:
			d.Delivered++
		case store.EventDeferred:
			d.Deferred++
		case store.EventBounced:
			d.Bounced++
		}
		if e.TLS != "" && e.TLS != "none" && !strings.HasPrefix(e.TLS, "none") {
			d.TLS++
		}
		if e.Reply != "" && len(d.LastReplies) < 3 && !slices.Contains(d.LastReplies, e.Reply) {
			d.LastReplies = append(d.LastReplies, e.Reply)
		}
	}
	out := make([]DestinationStats, 0, len(by))
	for _, d := range by {
		if st, err := s.Store.DestinationState(ctx, d.Destination); err == nil && st.Version != 0 {
			if st.Factor < 1 {
				d.BackoffState = "backed off to " + fmtFloat(100*st.Factor) + " % of its limits"
			}
			if st.PausedUntil.After(now) {
				d.PausedUntil = st.PausedUntil
			}
		}
		out = append(out, *d)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Attempts != out[j].Attempts {
			return out[i].Attempts > out[j].Attempts
		}
		return out[i].Destination < out[j].Destination
	})
	return out, "last hour (interim: read from the event log, at most 5000 events)", nil
}
