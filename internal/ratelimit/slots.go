package ratelimit

import (
	"math"
	"time"
)

// This file exposes the slots Windows counts in, so that a store shared by
// several nodes can keep a key's counts (one row per slot) and decide a
// charge atomically, while the arithmetic of waits and statuses stays here,
// once.

// Window describes one of the sliding windows of Windows: events are
// counted in slots Width wide, and an event counts for between Period and
// Period+Width after it happened (Slots slots: Period/Width plus the
// current one), so that no interval of length Period ever holds more
// events than the limit.
type Window struct {
	Period time.Duration
	Width  time.Duration
	Slots  int
}

// SlidingWindows returns the windows of Limits, in order: the minute (5 s
// slots), the hour (5 min slots) and the day (1 h slots).
func SlidingWindows() [3]Window {
	var out [3]Window
	for i, w := range windows {
		out[i] = Window{Period: w.period, Width: w.gran, Slots: w.slots()}
	}
	return out
}

// Slot is the count of one slot of a key's window.
type Slot struct {
	Window int   // index in SlidingWindows: 0 minute, 1 hour, 2 day
	Epoch  int64 // the slot's number: Unix time in nanoseconds / the window's Width
	Count  int64
}

// Epochs returns the number of the current slot of each window at now.
func Epochs(now time.Time) [3]int64 {
	var out [3]int64
	for i, w := range windows {
		out[i] = w.epoch(now)
	}
	return out
}

// Live reports whether s still counts at now.
func Live(s Slot, now time.Time) bool {
	if s.Window < 0 || s.Window >= len(windows) {
		return false
	}
	w := windows[s.Window]
	return w.live(slot{epoch: s.Epoch, count: s.Count}, w.epoch(now))
}

// ring returns the live slots of window i among slots.
func ring(slots []Slot, i int, now time.Time) []slot {
	var out []slot
	for _, s := range slots {
		if s.Window == i && Live(s, now) {
			out = append(out, slot{epoch: s.Epoch, count: s.Count})
		}
	}
	return out
}

// array returns l per window.
func (l Limits) array() [3]int { return [3]int{l.PerMinute, l.PerHour, l.PerDay} }

// Fits reports whether n more events fit under l now, for a key whose
// slots are given (dead ones are ignored): in every window with a limit,
// the live count plus n is at most the limit. This is the decision a
// store makes when it charges a key; n > a limit never fits.
func Fits(slots []Slot, l Limits, n int, now time.Time) bool {
	ok, _ := Check(slots, l, n, now)
	return ok
}

// Check is Fits with, when n does not fit, how long to wait until it
// would (math.MaxInt64 if never: n exceeds a limit by itself), as
// Windows.Take reports it.
func Check(slots []Slot, l Limits, n int, now time.Time) (ok bool, retryAfter time.Duration) {
	if n <= 0 {
		return true, 0
	}
	limits := l.array()
	for _, lim := range limits {
		if lim > 0 && n > lim {
			return false, time.Duration(math.MaxInt64)
		}
	}
	for i, win := range windows {
		if limits[i] <= 0 {
			continue
		}
		if wait := win.wait(ring(slots, i, now), now, int64(limits[i]), int64(n)); wait > 0 {
			retryAfter = max(retryAfter, wait)
		}
	}
	return retryAfter == 0, retryAfter
}

// StatusOf returns the state of the tightest of l's limits for a key whose
// slots are given, as Windows.Status does.
func StatusOf(slots []Slot, l Limits, now time.Time) Status {
	limits := l.array()
	var st Status
	for i, win := range windows {
		if limits[i] <= 0 {
			continue
		}
		r := ring(slots, i, now)
		used := win.count(r, now)
		var reset time.Duration
		if used > 0 {
			reset = win.wait(r, now, used, 1)
		}
		left := max(limits[i]-int(used), 0)
		if st.Limit == 0 || left < st.Remaining {
			st = Status{Limit: limits[i], Remaining: left, Reset: reset, Window: win.period}
		}
	}
	return st
}

// TakeAt is Take at the time now instead of the limiter's clock, for a
// store that keeps windows in memory and is told the time.
func (w *Windows) TakeAt(key string, l Limits, n int, now time.Time) (ok bool, retryAfter time.Duration) {
	return w.takeAt(key, l, n, true, now)
}

// SlotsAt returns key's live slots at now.
func (w *Windows) SlotsAt(key string, now time.Time) []Slot {
	w.mu.Lock()
	defer w.mu.Unlock()
	e := w.keys[key]
	if e == nil {
		return nil
	}
	var out []Slot
	for i, win := range windows {
		cur := win.epoch(now)
		for _, s := range e.rings[i] {
			if win.live(s, cur) {
				out = append(out, Slot{Window: i, Epoch: s.epoch, Count: s.count})
			}
		}
	}
	return out
}
