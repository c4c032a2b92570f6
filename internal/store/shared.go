package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
)

// This file declares the state that must be the same on every node of a
// cluster (issue 9: nothing node-local but caches): secrets such as the
// VERP key, the DMARC aggregate reports received, the TLS-RPT session
// counts and who sends each day's report, the sending-rate windows of
// accounts and users, and the traffic state of delivery destinations
// (connections held, messages per minute, back-off).
//
// Coordination state that lives only as long as the processes using it
// (rate windows, destination connections and back-off) may be kept in
// memory by a backend that serves one node (SQLite: one server per data
// directory), shared by every handle of the database in the process; the
// shared backend (PostgreSQL) keeps it in the database.

// Secrets holds named secrets every node must share.
type Secrets interface {
	// Secret returns the secret called name. When the store has none and
	// initial is not empty, it stores initial first and returns it; when
	// several callers or nodes race, the first to commit wins and every
	// caller gets the winner's bytes. With initial empty it only reads,
	// and an absent secret returns ErrNotFound.
	Secret(ctx context.Context, name string, initial []byte) ([]byte, error)
}

// DMARCReport is a DMARC aggregate report received for a local domain.
// Domain, Reporter, ReportID, Begin and End identify it: the same report
// received twice (a reporter retrying, or copies to several nodes) is kept
// once.
type DMARCReport struct {
	Domain     string    // policy domain, lower-case
	Reporter   string    // the reporting organisation (org_name)
	ReportID   string    // the reporter's report ID
	Begin, End time.Time // the reporting period
	Received   time.Time
	// Data is the parsed report as JSON (a dmarcreport.Report), opaque to
	// the store.
	Data []byte
}

// DMARCReports keeps the DMARC aggregate reports received by every node.
type DMARCReports interface {
	// AddDMARCReport keeps r. A report with the same domain, reporter,
	// report ID and period is kept already: ErrExists, nothing changes.
	AddDMARCReport(ctx context.Context, r DMARCReport) error
	// ListDMARCReports returns the reports of domain ("" for every
	// domain), ordered by Begin, then domain, reporter and report ID.
	ListDMARCReports(ctx context.Context, domain string) ([]DMARCReport, error)
}

// TLSCount is a number of outbound TLS sessions (RFC 8460) with one
// outcome, under one policy of one policy domain, on one UTC day.
type TLSCount struct {
	Day          time.Time // UTC midnight
	Domain       string    // policy domain, lower-case
	PolicyType   string    // "sts", "tlsa" or "no-policy-found"
	PolicyString []string  // the policy's lines or records
	MXPatterns   []string  // an MTA-STS policy's mx patterns
	// Result is "" for successful sessions, else the failure's result
	// type; the four fields after it describe a failure.
	Result                               string
	SendingIP, MXHost, ReceivingIP, Info string
	Count                                int64
}

// Key returns what identifies c's counter within its day and domain: a
// hash of every field but Day, Domain and Count.
func (c TLSCount) Key() string {
	h := sha256.New()
	for _, f := range []string{c.PolicyType, strings.Join(c.PolicyString, "\n"), strings.Join(c.MXPatterns, "\n"),
		c.Result, c.SendingIP, c.MXHost, c.ReceivingIP, c.Info} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// TLSReports keeps the TLS-RPT session counts of every node, and makes
// each day's report for a policy domain sent by one node: the node that
// claims it.
type TLSReports interface {
	// AddTLSCounts adds counts to the counters kept (one counter per day,
	// domain and Key), atomically.
	AddTLSCounts(ctx context.Context, counts []TLSCount) error
	// TLSCountDays returns the days before before that have counts,
	// oldest first.
	TLSCountDays(ctx context.Context, before time.Time) ([]time.Time, error)
	// TLSCounts returns the counters of day (UTC midnight), ordered by
	// domain.
	TLSCounts(ctx context.Context, day time.Time) ([]TLSCount, error)
	// ClaimTLSReport claims the sending of domain's report for day until
	// until and returns the claim's token, unless the report was finished
	// or another claim on it lasts past now: then it returns "" (not an
	// error). A claim that ran out (its node died while sending) can be
	// taken over.
	ClaimTLSReport(ctx context.Context, domain string, day, now, until time.Time) (token string, err error)
	// FinishTLSReport records that domain's report for day was sent (or
	// given up) under the claim token and deletes the day's counts of
	// domain. A claim taken over by another node: ErrLeaseLost, nothing
	// changes.
	FinishTLSReport(ctx context.Context, domain string, day time.Time, token string) error
	// PruneTLSReports deletes the counts and the claims of the days before
	// before.
	PruneTLSReports(ctx context.Context, before time.Time) error
}

// RateCounters keeps sliding-window counts (ratelimit.SlidingWindows: a
// minute in 5 s slots, an hour in 5 min slots, a day in 1 h slots) per key,
// so that every node charges an account's or a user's sending against the
// same windows.
type RateCounters interface {
	// TakeRate counts n events for key at now, in the current slot of
	// every window, if in every window with a limit the key's live count
	// plus n stays within it (ratelimit.Fits); otherwise it counts
	// nothing and ok is false. The decision and the count are one atomic
	// step against every node. It returns the key's live slots
	// afterwards.
	TakeRate(ctx context.Context, key string, l ratelimit.Limits, n int, now time.Time) (ok bool, slots []ratelimit.Slot, err error)
	// RateSlots returns the key's live slots at now.
	RateSlots(ctx context.Context, key string, now time.Time) ([]ratelimit.Slot, error)
}

// DestinationLimits are a delivery destination's limits, before back-off;
// zero means none.
type DestinationLimits struct {
	MaxConnections    int // sessions at once, on all nodes together
	MessagesPerMinute int // sessions (messages) started in any minute, on all nodes
}

// Effective returns l reduced by a back-off factor (0, 1]: each limit
// times factor, rounded down, but at least 1.
func (l DestinationLimits) Effective(factor float64) DestinationLimits {
	scale := func(n int) int {
		if n <= 0 {
			return 0
		}
		return max(1, int(float64(n)*factor))
	}
	return DestinationLimits{MaxConnections: scale(l.MaxConnections), MessagesPerMinute: scale(l.MessagesPerMinute)}
}

// DestinationState is a destination's back-off, the same for every node.
type DestinationState struct {
	Factor      float64   // fraction of the limits in effect, (0, 1]; 1 when not backed off
	Strikes     int       // throttling episodes not yet forgiven
	PausedUntil time.Time // no session starts before this
	LastChange  time.Time // of the last back-off or recovery step
	// Version changes with every SetDestinationState; 0 for a destination
	// that has no state (Factor 1, nothing else set).
	Version int64
}

// DestinationGrant is the answer of AcquireDestination.
type DestinationGrant struct {
	OK bool
	// Token names the connection held when OK and the destination has a
	// connection limit ("" otherwise); pass it to Renew and Release.
	Token string
	// Wait is, when not OK, how long until the pause ends or the rate
	// lets one more message start; 0 when the destination is at its
	// connection limit (a connection may end any time).
	Wait  time.Duration
	State DestinationState // the back-off the decision applied
}

// Destinations keeps the traffic state of delivery destinations (a
// recipient domain, or a mailbox provider's group of domains) for every
// node: the connections held, the messages started per minute and the
// back-off. A connection is held by a node until a time it renews, so that
// a dead node's connections are given back when they run out.
type Destinations interface {
	// AcquireDestination decides whether a session carrying one message
	// may start to destination key now, atomically against every node: not
	// while the destination is paused (State.PausedUntil after now), not
	// when the connections held by all nodes reach
	// l.Effective(State.Factor).MaxConnections, not when the messages
	// started in the last minute (the minute window of
	// ratelimit.SlidingWindows) reach its MessagesPerMinute. When it may,
	// it counts the message and, with a connection limit, holds a
	// connection for this node until until.
	AcquireDestination(ctx context.Context, key string, l DestinationLimits, now, until time.Time) (DestinationGrant, error)
	// RenewDestination holds the connection token of key until until. A
	// connection that ran out and was given back: ErrLeaseLost.
	RenewDestination(ctx context.Context, key, token string, until time.Time) error
	// ReleaseDestination gives the connection token of key back; an
	// unknown token is not an error.
	ReleaseDestination(ctx context.Context, key, token string) error
	// DestinationState returns key's back-off (Factor 1, Version 0 when it
	// has none).
	DestinationState(ctx context.Context, key string) (DestinationState, error)
	// SetDestinationState replaces key's back-off with st if its Version is
	// still version (0: it has none), and reports whether it did; false
	// (not an error) means another node changed it first.
	SetDestinationState(ctx context.Context, key string, version int64, st DestinationState) (bool, error)
}
