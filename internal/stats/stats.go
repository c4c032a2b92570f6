// Package stats computes the delivery statistics the operations console
// shows and the alert engine watches, from the store's rollups
// (store.Rollups) — never by scanning the event log, so a view costs a few
// index range reads whatever the number of events stored.
//
// Every function takes the account to report on; store.AllAccounts ("")
// is every account together (the operators' view). Times are UTC buckets
// of the rollups: a window always includes the current, partial, minute
// (or hour, or day).
package stats

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Source is what the statistics read: the store's rollups.
type Source interface {
	store.Rollups
}

// Stats computes statistics from a Source.
type Stats struct {
	src Source
}

// New returns Stats reading src.
func New(src Source) *Stats { return &Stats{src: src} }

// Counts are numbers of events by type over some period.
type Counts struct {
	Accepted   int64 // recipients queued
	Delivered  int64 // recipients accepted by the next hop or a mailbox
	Deferred   int64 // temporary failures (each attempt counts)
	Bounced    int64 // permanent failures, synchronous or by DSN
	Expired    int64 // recipients whose queue lifetime ran out
	Complained int64 // feedback-loop complaints
	Suppressed int64 // recipients not sent: on the suppression list
	Rejected   int64 // refused before queueing
}

// add adds n events of type typ; unknown types are ignored.
func (c *Counts) add(typ string, n int64) {
	switch typ {
	case store.EventAccepted:
		c.Accepted += n
	case store.EventDelivered:
		c.Delivered += n
	case store.EventDeferred:
		c.Deferred += n
	case store.EventBounced:
		c.Bounced += n
	case store.EventExpired:
		c.Expired += n
	case store.EventComplained:
		c.Complained += n
	case store.EventSuppressed:
		c.Suppressed += n
	case store.EventRejected:
		c.Rejected += n
	}
}

// DeliveryRate is Delivered / (Delivered + Bounced + Expired): the share
// of recipients that reached a final state that were delivered. It is 0
// when none did.
func (c Counts) DeliveryRate() float64 {
	return ratio(c.Delivered, c.Delivered+c.Bounced+c.Expired)
}

func ratio(n, d int64) float64 {
	if d == 0 {
		return 0
	}
	return float64(n) / float64(d)
}

// Point is one step of a series.
type Point struct {
	Start time.Time // start of the step (UTC)
	Counts
}

// Latency summarises the accept→delivered latency of the delivered
// recipients of a period, estimated from the rollups' log-scale histogram
// (store.LatencyBin): each percentile is within about 2 % of the exact
// value.
type Latency struct {
	Samples int64         // delivered recipients with a known latency
	P50     time.Duration // median; 0 when Samples is 0
	P99     time.Duration // 99th percentile; 0 when Samples is 0
}

// Window is a series over a recent period with its totals.
type Window struct {
	Step   time.Duration // width of each point: a minute, an hour or a day
	Points []Point       // oldest first; every step, those without events zero
	Total  Counts        // sum of the points
	// DeliveryRate is Total.DeliveryRate().
	DeliveryRate float64
	Latency      Latency
}

// Queue is the pending part of the queue.
type Queue struct {
	Messages   int           // messages with a pending recipient
	Recipients int           // pending recipients
	OldestAge  time.Duration // age of the oldest pending message; 0 when none
}

// Overview is what the console's first page shows.
type Overview struct {
	Account string    // as asked; "" is every account
	Now     time.Time // the time the windows end at (UTC)
	Hour    Window    // last 60 minutes, per minute
	Day     Window    // last 24 hours, per hour
	Month   Window    // last 30 days, per UTC day
	Queue   Queue
}

// Overview returns the overview of account at now: three windows (60
// minutes, 24 hours, 30 days, each ending with the step holding now) and
// the queue.
func (s *Stats) Overview(ctx context.Context, account string, now time.Time) (Overview, error) {
	now = now.UTC()
	o := Overview{Account: account, Now: now}
	var err error
	if o.Hour, err = s.window(ctx, account, now, store.RollupMinute, time.Minute, 60); err != nil {
		return o, err
	}
	if o.Day, err = s.window(ctx, account, now, store.RollupHour, time.Hour, 24); err != nil {
		return o, err
	}
	if o.Month, err = s.window(ctx, account, now, store.RollupDay, 24*time.Hour, 30); err != nil {
		return o, err
	}
	q, err := s.src.AccountQueue(ctx, account)
	if err != nil {
		return o, fmt.Errorf("stats: overview: %w", err)
	}
	o.Queue = Queue{Messages: q.Messages, Recipients: q.Recipients}
	if !q.Oldest.IsZero() && now.After(q.Oldest) {
		o.Queue.OldestAge = now.Sub(q.Oldest)
	}
	return o, nil
}

// window reads n steps of width step at resolution res, the last one
// holding now.
func (s *Stats) window(ctx context.Context, account string, now time.Time, res, step time.Duration, n int) (Window, error) {
	last := now.Truncate(step) // Truncate works on absolute time: UTC-aligned
	since := last.Add(-time.Duration(n-1) * step)
	q := store.RollupQuery{Account: account, Res: res, Since: since, Until: last.Add(step), Step: step}
	cs, err := s.src.EventCounts(ctx, q)
	if err != nil {
		return Window{}, fmt.Errorf("stats: %v window: %w", time.Duration(n)*step, err)
	}
	w := Window{Step: step, Points: make([]Point, n)}
	for i := range w.Points {
		w.Points[i].Start = since.Add(time.Duration(i) * step)
	}
	for _, c := range cs {
		i := int(c.Bucket.Sub(since) / step)
		if i < 0 || i >= n {
			continue
		}
		w.Points[i].add(c.Type, c.N)
		w.Total.add(c.Type, c.N)
	}
	w.DeliveryRate = w.Total.DeliveryRate()
	q.Total = true
	if w.Latency, err = s.latency(ctx, q); err != nil {
		return Window{}, fmt.Errorf("stats: %v window: %w", time.Duration(n)*step, err)
	}
	return w, nil
}

// latency reads the histogram of q and estimates its percentiles.
func (s *Stats) latency(ctx context.Context, q store.RollupQuery) (Latency, error) {
	lc, err := s.src.LatencyCounts(ctx, q)
	if err != nil {
		return Latency{}, err
	}
	return LatencyOf(lc), nil
}

// LatencyOf estimates the percentiles of a histogram read from
// store.Rollups.LatencyCounts (buckets are ignored, bins summed).
func LatencyOf(lc []store.LatencyCount) Latency {
	hist := make([]int64, store.LatencyBins)
	var l Latency
	for _, c := range lc {
		if c.Bin >= 0 && c.Bin < len(hist) && c.N > 0 {
			hist[c.Bin] += c.N
			l.Samples += c.N
		}
	}
	if l.Samples == 0 {
		return l
	}
	l.P50 = Percentile(hist, 0.50)
	l.P99 = Percentile(hist, 0.99)
	return l
}

// Percentile estimates the q-quantile (0 < q ≤ 1) of a latency histogram
// indexed by store.LatencyBin: it finds the bin holding the rank q·N and
// interpolates within it, geometrically (the bins are log-scale; bin 0,
// under a millisecond, linearly). 0 when the histogram is empty.
func Percentile(hist []int64, q float64) time.Duration {
	var total int64
	for _, n := range hist {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum float64
	for b, n := range hist {
		if n == 0 {
			continue
		}
		if cum+float64(n) >= rank {
			frac := (rank - cum) / float64(n)
			lo, hi := store.LatencyBinBounds(b)
			if b == 0 {
				return time.Duration(float64(hi) * frac)
			}
			return time.Duration(float64(lo) * math.Pow(float64(hi)/float64(lo), frac))
		}
		cum += float64(n)
	}
	_, hi := store.LatencyBinBounds(len(hist) - 1)
	return hi
}

// Destination is the delivery attempts to one receiving domain over a
// period.
type Destination struct {
	Domain    string // receiving domain of the recipients, lower case
	Attempts  int64  // Delivered + Deferred + Bounced
	Delivered int64
	Deferred  int64
	Bounced   int64
	// Rates, shares of Attempts (0 when there were none).
	DeferralRate float64
	BounceRate   float64
	TLSShare     float64 // attempts made over TLS
}

// MaxDestinations bounds the destinations returned.
const MaxDestinations = 1000

// Destinations returns the receiving domains account sent to from since
// until now, most attempts first, at most limit (1 to MaxDestinations;
// other values mean MaxDestinations). A period of up to six hours is
// counted per minute (since rounded down to the minute), one of up to a
// week per hour (since rounded down to the hour), a longer one per UTC
// day (since rounded down to midnight).
func (s *Stats) Destinations(ctx context.Context, account string, since, now time.Time, limit int) ([]Destination, error) {
	if limit < 1 || limit > MaxDestinations {
		limit = MaxDestinations
	}
	res := store.RollupDay
	switch span := now.Sub(since); {
	case span <= 6*time.Hour:
		res = store.RollupMinute
	case span <= 7*24*time.Hour:
		res = store.RollupHour
	}
	ds, err := s.src.DestCounts(ctx, store.RollupQuery{Account: account, Res: res, Since: since, Until: now.Add(time.Nanosecond)}, limit)
	if err != nil {
		return nil, fmt.Errorf("stats: destinations: %w", err)
	}
	return destinations(ds), nil
}

func destinations(ds []store.DestCount) []Destination {
	out := make([]Destination, len(ds))
	for i, d := range ds {
		out[i] = Destination{
			Domain: d.Domain, Attempts: d.Attempts, Delivered: d.Delivered, Deferred: d.Deferred, Bounced: d.Bounced,
			DeferralRate: ratio(d.Deferred, d.Attempts), BounceRate: ratio(d.Bounced, d.Attempts), TLSShare: ratio(d.TLS, d.Attempts),
		}
	}
	return out
}

// Rates are the counts of a recent window, for alerting.
type Rates struct {
	Since, Until time.Time // the window read: [Since, Until)
	Counts       Counts
	// ByType holds the same counts keyed by event type (store.Event*),
	// types without events absent.
	ByType       map[string]int64
	Destinations []Destination // every receiving domain, most attempts first (at most MaxDestinations)
	Latency      Latency
}

// MaxRatesWindow is the longest window Rates reads per minute; a longer
// one is read per hour.
const MaxRatesWindow = store.RollupMinuteRetention

// Rates returns the counts of account over the window ending at now:
// from now - window, rounded down to the minute, to the end of the minute
// holding now (so the window read is up to a minute longer than asked).
// Windows longer than MaxRatesWindow are read per hour (rounded down to
// the hour), longer than store.RollupHourRetention per UTC day.
func (s *Stats) Rates(ctx context.Context, account string, window time.Duration, now time.Time) (Rates, error) {
	if window <= 0 {
		return Rates{}, fmt.Errorf("stats: rates: window %v is not positive", window)
	}
	res := store.RollupMinute
	switch {
	case window > store.RollupHourRetention:
		res = store.RollupDay
	case window > MaxRatesWindow:
		res = store.RollupHour
	}
	now = now.UTC()
	// Until is exclusive: one nanosecond past now keeps the bucket holding
	// now when now falls on its first instant.
	q := store.RollupQuery{Account: account, Res: res, Since: now.Add(-window), Until: now.Add(time.Nanosecond), Total: true}
	_, since, until, _, err := q.Seconds()
	if err != nil {
		return Rates{}, fmt.Errorf("stats: rates: %w", err)
	}
	r := Rates{Since: time.Unix(since, 0).UTC(), Until: time.Unix(until, 0).UTC(), ByType: make(map[string]int64)}
	cs, err := s.src.EventCounts(ctx, q)
	if err != nil {
		return Rates{}, fmt.Errorf("stats: rates: %w", err)
	}
	for _, c := range cs {
		r.Counts.add(c.Type, c.N)
		r.ByType[c.Type] += c.N
	}
	ds, err := s.src.DestCounts(ctx, q, MaxDestinations)
	if err != nil {
		return Rates{}, fmt.Errorf("stats: rates: %w", err)
	}
	r.Destinations = destinations(ds)
	if r.Latency, err = s.latency(ctx, q); err != nil {
		return Rates{}, fmt.Errorf("stats: rates: %w", err)
	}
	return r, nil
}
