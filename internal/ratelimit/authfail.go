// Package ratelimit holds Herald's in-process limiters: authentication
// failure tracking with tarpitting and lockout (per client address) and
// slow-down (per account), connection caps (total and per client address)
// and a keyed token bucket.
//
// IPv4 clients are keyed by their address; IPv6 clients by their /64, since
// one host usually controls a whole /64.
package ratelimit

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

// DefaultMaxEntries bounds the number of client keys a limiter remembers.
const DefaultMaxEntries = 100_000

// ErrLockedOut is returned by AuthFailures.Reserve for a client that may
// not try to authenticate now.
var ErrLockedOut = errors.New("ratelimit: too many authentication failures")

// Key returns the key a client address is counted under: the address itself
// for IPv4 (IPv4-mapped IPv6 addresses are unmapped), its /64 for IPv6. Zones
// are dropped.
func Key(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap().WithZone("")
	if ip.Is4() {
		return netip.PrefixFrom(ip, 32)
	}
	p, err := ip.Prefix(64)
	if err != nil { // invalid address: one shared key
		return netip.Prefix{}
	}
	return p
}

// AuthFailures counts failed authentications per client and tells the
// server how long to delay its answer and whether the client is locked out.
//
// Attempts whose outcome is not known yet count as failures from the start
// (Reserve): a client can never have more than maxFailures password checks
// failed or in flight within a window, however many connections it opens
// in parallel. It is safe for concurrent use and remembers at most
// DefaultMaxEntries clients.
type AuthFailures struct {
	max     int
	window  time.Duration
	lockout time.Duration
	delay   time.Duration
	clk     clock.Clock

	mu         sync.Mutex
	entries    map[netip.Prefix]*failEntry
	maxEntries int
}

type failEntry struct {
	count       int       // failures of the current window
	pending     int       // reserved attempts not yet resolved
	first       time.Time // first failure (or reservation) of the current window
	lockedUntil time.Time // zero if not locked
	// changed is closed (and replaced) whenever a reservation is resolved
	// or the entry is dropped, to wake Reserve calls waiting for room.
	changed chan struct{}
}

// NewAuthFailures returns a tracker that locks a client out for lockout
// after maxFailures failures within window (counted from the first failure),
// and asks for a delay of delay*failures before each answer. maxFailures < 1
// disables the lockout (delays still apply). clk nil means the wall clock.
func NewAuthFailures(maxFailures int, window, lockout, delay time.Duration, clk clock.Clock) *AuthFailures {
	if clk == nil {
		clk = clock.Real{}
	}
	return &AuthFailures{
		max: maxFailures, window: window, lockout: lockout, delay: delay, clk: clk,
		entries:    make(map[netip.Prefix]*failEntry),
		maxEntries: DefaultMaxEntries,
	}
}

// refresh ends e's lockout or window if it is over at now, keeping the
// attempts in flight.
func (a *AuthFailures) refresh(e *failEntry, now time.Time) {
	switch {
	case !e.lockedUntil.IsZero():
		if !now.Before(e.lockedUntil) {
			e.lockedUntil, e.count, e.first = time.Time{}, 0, now
		}
	case !now.Before(e.first.Add(a.window)):
		e.count, e.first = 0, now
	}
}

// empty reports whether e holds no information at now.
func (a *AuthFailures) empty(e *failEntry, now time.Time) bool {
	a.refresh(e, now)
	return e.pending == 0 && e.count == 0 && e.lockedUntil.IsZero()
}

// lookupLocked returns the current entry of k (refreshed), dropping it if it
// holds nothing; create adds a fresh one when there is none.
func (a *AuthFailures) lookupLocked(k netip.Prefix, now time.Time, create bool) *failEntry {
	e, ok := a.entries[k]
	if ok && a.empty(e, now) {
		a.dropLocked(k, e)
		ok = false
	}
	if !ok {
		if !create {
			return nil
		}
		if len(a.entries) >= a.maxEntries {
			a.evictLocked(now)
		}
		e = &failEntry{first: now, changed: make(chan struct{})}
		a.entries[k] = e
	}
	return e
}

func (a *AuthFailures) dropLocked(k netip.Prefix, e *failEntry) {
	delete(a.entries, k)
	close(e.changed) // wake waiters: they look the key up again
	e.changed = make(chan struct{})
}

// Check reports how long to wait before answering the client at ip (zero if
// it has no recent failures) and whether it is locked out.
func (a *AuthFailures) Check(ip netip.Addr) (wait time.Duration, locked bool) {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	e := a.lookupLocked(Key(ip), now, false)
	if e == nil {
		return 0, false
	}
	return a.delay * time.Duration(e.count), !e.lockedUntil.IsZero()
}

// Fail records a failed authentication by the client at ip. Failures while
// the client is locked out do not extend the lockout.
func (a *AuthFailures) Fail(ip netip.Addr) {
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	a.failLocked(a.lookupLocked(Key(ip), now, true), now)
}

func (a *AuthFailures) failLocked(e *failEntry, now time.Time) {
	if !e.lockedUntil.IsZero() {
		return
	}
	e.count++
	if a.max > 0 && e.count >= a.max {
		e.lockedUntil = now.Add(a.lockout)
	}
}

// Succeed forgets the failures of the client at ip; its attempts in flight
// still count until they are resolved.
func (a *AuthFailures) Succeed(ip netip.Addr) {
	k := Key(ip)
	a.mu.Lock()
	defer a.mu.Unlock()
	if e, ok := a.entries[k]; ok {
		e.count, e.lockedUntil = 0, time.Time{}
		if e.pending == 0 {
			a.dropLocked(k, e)
		}
	}
}

// AuthAttempt is an authentication attempt reserved with Reserve. It counts
// as a failure of its client until Succeed is called; exactly one of Fail
// and Succeed must be called (further calls do nothing).
type AuthAttempt struct {
	a    *AuthFailures
	key  netip.Prefix
	e    *failEntry
	once sync.Once
}

// Reserve starts an authentication attempt by the client at ip before its
// outcome is known, so that attempts made in parallel count as failures
// from the start: while failures plus attempts in flight have reached
// maxFailures, Reserve waits for an attempt in flight to be resolved (a
// success frees its place) or for ctx to end. It returns ErrLockedOut,
// without a reservation, when the client is locked out or its failures
// alone reach the limit. wait is the delay to apply before checking the
// credentials: delay times the client's failures (not its attempts in
// flight, so that a client opening several sessions at once with the right
// password is not slowed down).
func (a *AuthFailures) Reserve(ctx context.Context, ip netip.Addr) (att *AuthAttempt, wait time.Duration, err error) {
	k := Key(ip)
	for {
		now := a.clk.Now()
		a.mu.Lock()
		e := a.lookupLocked(k, now, true)
		if !e.lockedUntil.IsZero() || (a.max > 0 && e.count >= a.max) {
			a.mu.Unlock()
			return nil, 0, ErrLockedOut
		}
		if a.max < 1 || e.count+e.pending < a.max {
			wait = a.delay * time.Duration(e.count)
			e.pending++
			a.mu.Unlock()
			return &AuthAttempt{a: a, key: k, e: e}, wait, nil
		}
		ch := e.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, 0, ctx.Err()
		}
	}
}

// Fail records the attempt as a failure of its client.
func (t *AuthAttempt) Fail() { t.resolve(true) }

// Succeed releases the attempt without counting it. It does not forget the
// client's earlier failures: a client that knows one password cannot use
// it to reset its count between guesses at others.
func (t *AuthAttempt) Succeed() { t.resolve(false) }

func (t *AuthAttempt) resolve(failed bool) {
	t.once.Do(func() {
		a := t.a
		now := a.clk.Now()
		a.mu.Lock()
		defer a.mu.Unlock()
		e := t.e
		if cur, ok := a.entries[t.key]; ok && cur == e {
			e.pending--
			a.refresh(e, now)
			if failed {
				a.failLocked(e, now)
			}
			close(e.changed)
			e.changed = make(chan struct{})
			if a.empty(e, now) {
				a.dropLocked(t.key, e)
			}
			return
		}
		if failed { // the entry was evicted meanwhile: count in a new one
			a.failLocked(a.lookupLocked(t.key, now, true), now)
		}
	})
}

// Len returns the number of clients currently remembered.
func (a *AuthFailures) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// evictLocked makes room: it drops entries holding nothing and, if that
// freed less than a tenth of the capacity, arbitrary others until 90% full,
// so the O(n) sweep runs at most once per maxEntries/10 insertions.
func (a *AuthFailures) evictLocked(now time.Time) {
	for k, e := range a.entries {
		if a.empty(e, now) {
			a.dropLocked(k, e)
		}
	}
	target := a.maxEntries - a.maxEntries/10
	for k, e := range a.entries {
		if len(a.entries) <= target {
			break
		}
		a.dropLocked(k, e)
	}
}
