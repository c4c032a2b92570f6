package ratelimit

import (
	"slices"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

// maxAccountKey bounds the bytes of an account name kept as a key; longer
// names (never valid addresses) share the key of their first bytes.
const maxAccountKey = 320

// AccountFailures counts failed authentications per account name, from any
// client address, and asks for a growing delay before each further attempt
// on an account under attack. It never refuses: refusal (lockout) is per
// client address (AuthFailures), so that nobody can lock a user out by
// guessing at their account from many addresses. It is safe for concurrent
// use and remembers at most DefaultMaxEntries accounts.
type AccountFailures struct {
	free     int
	window   time.Duration
	delay    time.Duration
	maxDelay time.Duration
	clk      clock.Clock

	mu         sync.Mutex
	entries    map[string]*acctEntry
	maxEntries int
}

type acctEntry struct {
	count int
	first time.Time // first failure of the current window
}

// NewAccountFailures returns a tracker that, once an account has had free
// failures within window (counted from its first failure), asks for delay
// before the next attempt, doubling with each further failure up to
// maxDelay. delay <= 0 disables it. clk nil means the wall clock.
func NewAccountFailures(free int, window, delay, maxDelay time.Duration, clk clock.Clock) *AccountFailures {
	if clk == nil {
		clk = clock.Real{}
	}
	return &AccountFailures{
		free: max(free, 0), window: window, delay: delay, maxDelay: max(maxDelay, delay), clk: clk,
		entries: make(map[string]*acctEntry), maxEntries: DefaultMaxEntries,
	}
}

func accountKey(account string) string {
	if len(account) > maxAccountKey {
		return account[:maxAccountKey]
	}
	return account
}

// Delay returns how long to wait before checking a password for account.
func (a *AccountFailures) Delay(account string) time.Duration {
	if a.delay <= 0 {
		return 0
	}
	k := accountKey(account)
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[k]
	if !ok {
		return 0
	}
	if !now.Before(e.first.Add(a.window)) {
		delete(a.entries, k)
		return 0
	}
	return a.delayFor(e.count)
}

// delayFor is the delay after n failures: 0 up to free, then delay,
// doubling per failure, capped at maxDelay.
func (a *AccountFailures) delayFor(n int) time.Duration {
	if n < a.free {
		return 0
	}
	d := a.delay
	for i := a.free; i < n && d < a.maxDelay; i++ {
		d *= 2
	}
	return min(d, a.maxDelay)
}

// Fail records a failed authentication for account.
func (a *AccountFailures) Fail(account string) {
	if a.delay <= 0 {
		return
	}
	k := accountKey(account)
	now := a.clk.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[k]
	if ok && !now.Before(e.first.Add(a.window)) {
		ok = false
	}
	if !ok {
		if len(a.entries) >= a.maxEntries {
			a.evictLocked(now)
		}
		e = &acctEntry{first: now}
		a.entries[k] = e
	}
	e.count++
}

// Len returns the number of accounts currently remembered.
func (a *AccountFailures) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// evictLocked drops expired entries and, if that freed less than a tenth of
// the capacity, those with the fewest failures until 90% full, so that
// spraying many account names cannot flush the count of an account under
// attack.
func (a *AccountFailures) evictLocked(now time.Time) {
	for k, e := range a.entries {
		if !now.Before(e.first.Add(a.window)) {
			delete(a.entries, k)
		}
	}
	target := a.maxEntries - a.maxEntries/10
	if len(a.entries) <= target {
		return
	}
	counts := make([]int, 0, len(a.entries))
	for _, e := range a.entries {
		counts = append(counts, e.count)
	}
	slices.Sort(counts)
	limit := counts[len(a.entries)-target-1] // drop counts below, then equal ones
	for k, e := range a.entries {
		if e.count < limit {
			delete(a.entries, k)
		}
	}
	for k, e := range a.entries {
		if len(a.entries) <= target {
			break
		}
		if e.count == limit {
			delete(a.entries, k)
		}
	}
}
