package ratelimit

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

// Limits are the message counts allowed to one key (an account, a user) per
// minute, per hour and per day. Zero means no limit for that window.
type Limits struct {
	PerMinute int
	PerHour   int
	PerDay    int
}

// DefaultWindowsMaxEntries bounds the keys a Windows limiter remembers
// (about 1 KiB each).
const DefaultWindowsMaxEntries = 20_000

// window describes one sliding window, counted in slots of gran: an event
// counts for at least period (between period and period+gran), so that no
// interval of length period ever holds more events than the limit.
type window struct {
	period time.Duration
	gran   time.Duration
}

var windows = [3]window{
	{time.Minute, 5 * time.Second},
	{time.Hour, 5 * time.Minute},
	{24 * time.Hour, time.Hour},
}

// slots returns the ring size of w: period/gran slots plus the current one.
func (w window) slots() int { return int(w.period/w.gran) + 1 }

type slot struct {
	epoch int64 // time / gran of the slot's events
	count int64
}

type windowsEntry struct {
	rings   [3][]slot
	lastUse time.Time
}

// Windows is a keyed limiter enforcing per-minute, per-hour and per-day
// counts over sliding windows, with the limits given on each call so that
// every account or user can have its own. Counts are kept in slots (5
// seconds, 5 minutes and 1 hour wide), so an event stops counting between
// one period and one period plus a slot after it happened; the limit is
// never exceeded over any interval of the period. At most
// DefaultWindowsMaxEntries keys are remembered: keys with nothing counted in
// the last day are forgotten first, then the least recently used. It is safe
// for concurrent use.
type Windows struct {
	clk        clock.Clock
	mu         sync.Mutex
	keys       map[string]*windowsEntry
	maxEntries int
}

// NewWindows returns a Windows limiter reading time from clk (nil means the
// wall clock).
func NewWindows(clk clock.Clock) *Windows {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Windows{clk: clk, keys: make(map[string]*windowsEntry), maxEntries: DefaultWindowsMaxEntries}
}

// Take counts n events (messages) for key if that keeps every window of l
// within its limit, and returns true. Otherwise it counts nothing and
// returns false with how long to wait before the same Take could succeed
// (math.MaxInt64 if never: n exceeds a limit by itself). n <= 0 always
// succeeds.
func (w *Windows) Take(key string, l Limits, n int) (ok bool, retryAfter time.Duration) {
	return w.take(key, l, n, true)
}

// Allows reports whether Take(key, l, n) would succeed now, counting
// nothing: a cheap early refusal before work whose cost Take charges later.
func (w *Windows) Allows(key string, l Limits, n int) (ok bool, retryAfter time.Duration) {
	return w.take(key, l, n, false)
}

func (w *Windows) take(key string, l Limits, n int, count bool) (ok bool, retryAfter time.Duration) {
	return w.takeAt(key, l, n, count, w.clk.Now())
}

func (w *Windows) takeAt(key string, l Limits, n int, count bool, now time.Time) (ok bool, retryAfter time.Duration) {
	if n <= 0 {
		return true, 0
	}
	limits := [3]int{l.PerMinute, l.PerHour, l.PerDay}
	for _, lim := range limits {
		if lim > 0 && n > lim {
			return false, time.Duration(math.MaxInt64)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.keys[key]
	if e == nil {
		if limits == [3]int{} || !count {
			return true, 0 // unlimited, or nothing counted yet
		}
		if len(w.keys) >= w.maxEntries {
			w.evictLocked(now)
		}
		e = &windowsEntry{}
		for i, win := range windows {
			e.rings[i] = make([]slot, win.slots())
		}
		w.keys[key] = e
	}
	e.lastUse = now
	for i, win := range windows {
		if limits[i] <= 0 {
			continue
		}
		if wait := win.wait(e.rings[i], now, int64(limits[i]), int64(n)); wait > 0 {
			retryAfter = max(retryAfter, wait)
		}
	}
	if retryAfter > 0 {
		return false, retryAfter
	}
	if !count {
		return true, 0
	}
	for i, win := range windows {
		win.add(e.rings[i], now, int64(n))
	}
	return true, 0
}

// Usage returns the events counted for key in the current minute, hour and
// day windows.
func (w *Windows) Usage(key string) (minute, hour, day int) {
	now := w.clk.Now()
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.keys[key]
	if e == nil {
		return 0, 0, 0
	}
	return int(windows[0].count(e.rings[0], now)), int(windows[1].count(e.rings[1], now)), int(windows[2].count(e.rings[2], now))
}

// Status describes the tightest of a key's limits: the one with the fewest
// events left.
type Status struct {
	Limit     int           // the window's limit; 0 when l has no limit
	Remaining int           // events still allowed in it now
	Reset     time.Duration // until Remaining next grows (0 if nothing is counted)
	Window    time.Duration // the window's period: a minute, an hour or a day
}

// Status returns the state of key's tightest limit under l.
func (w *Windows) Status(key string, l Limits) Status {
	now := w.clk.Now()
	limits := [3]int{l.PerMinute, l.PerHour, l.PerDay}
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.keys[key]
	var st Status
	for i, win := range windows {
		if limits[i] <= 0 {
			continue
		}
		var used int64
		var reset time.Duration
		if e != nil {
			used = win.count(e.rings[i], now)
			if used > 0 {
				reset = win.wait(e.rings[i], now, used, 1)
			}
		}
		left := max(limits[i]-int(used), 0)
		if st.Limit == 0 || left < st.Remaining {
			st = Status{Limit: limits[i], Remaining: left, Reset: reset, Window: win.period}
		}
	}
	return st
}

// Len returns the number of keys remembered.
func (w *Windows) Len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.keys)
}

func (win window) epoch(t time.Time) int64 { return t.UnixNano() / int64(win.gran) }

// live reports whether a slot still counts at epoch cur.
func (win window) live(s slot, cur int64) bool {
	return s.count > 0 && s.epoch <= cur && s.epoch > cur-int64(win.slots())
}

func (win window) count(ring []slot, now time.Time) int64 {
	cur := win.epoch(now)
	var total int64
	for _, s := range ring {
		if win.live(s, cur) {
			total += s.count
		}
	}
	return total
}

func (win window) add(ring []slot, now time.Time, n int64) {
	cur := win.epoch(now)
	i := int(cur % int64(len(ring)))
	if ring[i].epoch != cur {
		ring[i] = slot{epoch: cur}
	}
	ring[i].count += n
}

// wait returns 0 if n more events fit under limit now, else how long until
// enough of the counted events have expired.
func (win window) wait(ring []slot, now time.Time, limit, n int64) time.Duration {
	cur := win.epoch(now)
	var live []slot
	var total int64
	for _, s := range ring {
		if win.live(s, cur) {
			live = append(live, s)
			total += s.count
		}
	}
	excess := total + n - limit
	if excess <= 0 {
		return 0
	}
	slices.SortFunc(live, func(a, b slot) int { return int(a.epoch - b.epoch) })
	for _, s := range live {
		excess -= s.count
		if excess <= 0 {
			// The slot stops counting at epoch s.epoch+slots.
			expiry := time.Unix(0, (s.epoch+int64(win.slots()))*int64(win.gran))
			return max(expiry.Sub(now), time.Nanosecond)
		}
	}
	return time.Duration(math.MaxInt64) // unreachable when n <= limit
}

// evictLocked forgets keys with nothing counted in any window and, if that
// freed less than a tenth of the capacity, the least recently used others.
func (w *Windows) evictLocked(now time.Time) {
	for k, e := range w.keys {
		if windows[2].count(e.rings[2], now) == 0 && windows[1].count(e.rings[1], now) == 0 &&
			windows[0].count(e.rings[0], now) == 0 {
			delete(w.keys, k)
		}
	}
	target := w.maxEntries - w.maxEntries/10
	if len(w.keys) <= target {
		return
	}
	type use struct {
		key string
		at  time.Time
	}
	uses := make([]use, 0, len(w.keys))
	for k, e := range w.keys {
		uses = append(uses, use{k, e.lastUse})
	}
	slices.SortFunc(uses, func(a, b use) int { return a.at.Compare(b.at) })
	for _, u := range uses[:len(uses)-target] {
		delete(w.keys, u.key)
	}
}
