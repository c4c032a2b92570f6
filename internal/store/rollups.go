package store

import (
	"context"
	"fmt"
	"math"
	"strings"
	"time"
)

// This file declares the rollups (issue 10): counters of the event log
// kept per minute and per hour, so that the operations console and the
// alert engine read a few hundred rows instead of scanning the events.
//
// A backend maintains them in the transaction that writes the events
// (Enqueue's accepted events, Update's outcome events, AddEvents), so
// they always agree with the events that were committed, on every node
// sharing the store. Each event is counted three times, in its minute,
// hour and (UTC) day buckets, and twice again: under its account and under
// AllAccounts. Pruning events never changes the rollups; CompactRollups
// drops minute buckets after RollupMinuteRetention, hour buckets after
// RollupHourRetention and day buckets after RollupDayRetention (the
// coarser buckets already hold the finer ones' counts, so nothing is lost
// but resolution). Reading a window at the coarsest resolution that
// serves it keeps every read to a few thousand rows: 30 days are 30 day
// rows per event type, not 43,200 minutes.

// AllAccounts is the account of the rollup rows that count every
// account's events (the operators' view).
const AllAccounts = ""

// Rollup resolutions: the width of a bucket. Buckets are aligned on the
// Unix epoch (so hours and days are UTC).
const (
	RollupMinute = time.Minute
	RollupHour   = time.Hour
	RollupDay    = 24 * time.Hour
)

// Default retention of the rollup buckets (CompactRollups).
const (
	RollupMinuteRetention = 48 * time.Hour
	RollupHourRetention   = 90 * 24 * time.Hour
	RollupDayRetention    = 400 * 24 * time.Hour
)

// The accept→delivered latency histogram has log-scale bins: bin 0 holds
// latencies under 1 ms, bin b ≥ 1 holds [2^((b-1)/16), 2^(b/16)) ms, and
// the last bin everything from 2^((LatencyBins-2)/16) ms (about 25 days)
// up. With 16 bins per octave a bin spans a factor of 2^(1/16) ≈ 1.044,
// so a percentile read as the bin's geometric middle is within ±2.2 % of
// the true value (interpolating within the bin does better on smooth
// distributions).
const (
	LatencyBinsPerOctave = 16
	LatencyBins          = 2 + 31*LatencyBinsPerOctave // up to 2^31 ms ≈ 24.9 days
)

// LatencyBin returns the histogram bin of latency d.
func LatencyBin(d time.Duration) int {
	ms := float64(d) / float64(time.Millisecond)
	if ms < 1 {
		return 0
	}
	b := 1 + int(math.Floor(LatencyBinsPerOctave*math.Log2(ms)))
	if b >= LatencyBins {
		return LatencyBins - 1
	}
	return b
}

// LatencyBinBounds returns the latencies bin b holds: [lo, hi). Bin 0 is
// [0, 1 ms); the last bin's hi is its lo times the bin ratio (it holds
// everything above lo).
func LatencyBinBounds(b int) (lo, hi time.Duration) {
	if b <= 0 {
		return 0, time.Millisecond
	}
	ms := func(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }
	return ms(math.Exp2(float64(b-1) / LatencyBinsPerOctave)), ms(math.Exp2(float64(b) / LatencyBinsPerOctave))
}

// RecipientDomain returns the receiving domain of a recipient address as
// the destination rollups key it: what follows the last '@', in ASCII
// lower case, at most 255 bytes (the whole address when it has no '@').
// The SQL of each backend computes the same for its backfill.
func RecipientDomain(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		addr = addr[i+1:]
	}
	if len(addr) > 255 {
		addr = addr[:255]
	}
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; 'A' <= c && c <= 'Z' {
			b := []byte(addr)
			for j := i; j < len(b); j++ {
				if c := b[j]; 'A' <= c && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return addr
}

// IsAttempt reports whether an event of type typ is a delivery attempt
// counted by the destination rollups: delivered, deferred or bounced.
func IsAttempt(typ string) bool {
	return typ == EventDelivered || typ == EventDeferred || typ == EventBounced
}

// TLSUsed reports whether an event's TLS field says the attempt ran over
// TLS (it is empty or "none" otherwise).
func TLSUsed(tls string) bool { return tls != "" && tls != "none" }

// RollupQuery selects rollup buckets: those of Account (AllAccounts for
// every account) at resolution Res whose start is in [Since, Until).
// Since is rounded down and Until up to a multiple of Res.
type RollupQuery struct {
	Account string
	Res     time.Duration // RollupMinute, RollupHour or RollupDay
	Since   time.Time
	Until   time.Time
	// Step groups the buckets into steps of this width (a multiple of
	// Res, aligned on the Unix epoch: 24h gives UTC days); 0 is Res.
	Step time.Duration
	// Total makes one group of the whole range instead, reported with a
	// zero Bucket (Step is ignored).
	Total bool
}

// Seconds validates q and returns its resolution, range and step in Unix
// seconds, the range rounded out to whole buckets, step 0 for Total (a
// backend's helper).
func (q RollupQuery) Seconds() (res, since, until, step int64, err error) {
	switch q.Res {
	case RollupMinute, RollupHour, RollupDay:
	default:
		return 0, 0, 0, 0, fmt.Errorf("rollup resolution %v: not a minute, an hour or a day", q.Res)
	}
	res = int64(q.Res / time.Second)
	if q.Step < 0 || q.Step%q.Res != 0 {
		return 0, 0, 0, 0, fmt.Errorf("rollup step %v: not a multiple of %v", q.Step, q.Res)
	}
	step = int64(q.Step / time.Second)
	switch {
	case q.Total:
		step = 0
	case step == 0:
		step = res
	}
	since = floorDiv(q.Since.Unix(), res) * res
	until = -floorDiv(-q.Until.Unix(), res) * res
	if q.Until.Nanosecond() > 0 && q.Until.Unix()%res == 0 {
		until += res
	}
	return res, since, until, step, nil
}

// floorDiv is a / b rounded towards minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

// EventCount is how many events of one type a step counted.
type EventCount struct {
	Bucket time.Time // start of the step (UTC); zero for the whole range
	Type   string    // an Event type
	N      int64
}

// LatencyCount is how many delivered events of a step fell in one bin of
// the latency histogram (see LatencyBin).
type LatencyCount struct {
	Bucket time.Time // start of the step (UTC); zero for the whole range
	Bin    int
	N      int64
}

// DestCount is the delivery attempts to one receiving domain over a
// range.
type DestCount struct {
	Domain    string // RecipientDomain of the recipients
	Attempts  int64  // delivered + deferred + bounced events
	Delivered int64
	Deferred  int64
	Bounced   int64
	TLS       int64 // attempts whose TLS field names a TLS session
}

// AccountQueue summarises one account's part of the queue.
type AccountQueue struct {
	Messages   int       // messages with at least one pending recipient
	Recipients int       // pending recipients
	Oldest     time.Time // Received of the oldest one (zero if none)
}

// Rollups reads and compacts the rollups. Only the backend writes them,
// with the events.
type Rollups interface {
	// EventCounts returns the event counts of q per step and type,
	// ordered by step, then type. Steps and types without events are
	// absent.
	EventCounts(ctx context.Context, q RollupQuery) ([]EventCount, error)
	// LatencyCounts returns the latency histogram of q per step and bin,
	// ordered by step, then bin; empty bins are absent.
	LatencyCounts(ctx context.Context, q RollupQuery) ([]LatencyCount, error)
	// DestCounts returns the attempts of q (Step is ignored) per
	// receiving domain, most attempts first (then by domain), at most
	// limit (1 to 1000; other values mean 1000).
	DestCounts(ctx context.Context, q RollupQuery, limit int) ([]DestCount, error)
	// CompactRollups deletes the minute, hour and day buckets that start
	// before minuteBefore, hourBefore and dayBefore, and returns how many
	// rows went. It is what the event-pruning job runs.
	CompactRollups(ctx context.Context, minuteBefore, hourBefore, dayBefore time.Time) (int, error)
	// AccountQueue summarises the pending queue of one account through an
	// index (account, received); AllAccounts is the whole queue.
	AccountQueue(ctx context.Context, account string) (AccountQueue, error)
}
