// Package ratelimit holds Herald's in-process limiters: authentication
// failure tracking with tarpitting and lockout, connection caps (total and
// per client address) and a keyed token bucket.
//
// IPv4 clients are keyed by their address; IPv6 clients by their /64, since
// one host usually controls a whole /64.
package ratelimit

import (
	"net/netip"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

// DefaultMaxEntries bounds the number of client keys a limiter remembers.
const DefaultMaxEntries = 100_000

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
// It is safe for concurrent use and remembers at most DefaultMaxEntries
// clients.
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
	count       int
	first       time.Time // first failure of the current window
	lockedUntil time.Time // zero if not locked
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

// expired reports whether e no longer holds any information at now.
func (a *AuthFailures) expired(e *failEntry, now time.Time) bool {
	if !e.lockedUntil.IsZero() {
		return !now.Before(e.lockedUntil)
	}
	return !now.Before(e.first.Add(a.window))
}

// Check reports how long to wait before answering the client at ip (zero if
// it has no recent failures) and whether it is locked out.
func (a *AuthFailures) Check(ip netip.Addr) (wait time.Duration, locked bool) {
	k := Key(ip)
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[k]
	if !ok {
		return 0, false
	}
	if a.expired(e, now) {
		delete(a.entries, k)
		return 0, false
	}
	return a.delay * time.Duration(e.count), !e.lockedUntil.IsZero()
}

// Fail records a failed authentication by the client at ip. Failures while
// the client is locked out do not extend the lockout.
func (a *AuthFailures) Fail(ip netip.Addr) {
	k := Key(ip)
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[k]
	if ok && a.expired(e, now) {
		delete(a.entries, k)
		ok = false
	}
	if !ok {
		if len(a.entries) >= a.maxEntries {
			a.evictLocked(now)
		}
		e = &failEntry{first: now}
		a.entries[k] = e
	}
	if !e.lockedUntil.IsZero() {
		return
	}
	e.count++
	if a.max > 0 && e.count >= a.max {
		e.lockedUntil = now.Add(a.lockout)
	}
}

// Succeed forgets the failures of the client at ip.
func (a *AuthFailures) Succeed(ip netip.Addr) {
	k := Key(ip)
	a.mu.Lock()
	delete(a.entries, k)
	a.mu.Unlock()
}

// Len returns the number of clients currently remembered.
func (a *AuthFailures) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// evictLocked makes room: it drops expired entries and, if that freed less
// than a tenth of the capacity, arbitrary others until 90% full, so the O(n)
// sweep runs at most once per maxEntries/10 insertions.
func (a *AuthFailures) evictLocked(now time.Time) {
	for k, e := range a.entries {
		if a.expired(e, now) {
			delete(a.entries, k)
		}
	}
	target := a.maxEntries - a.maxEntries/10
	for k := range a.entries {
		if len(a.entries) <= target {
			break
		}
		delete(a.entries, k)
	}
}
