// Package clock abstracts time so that retry schedules, leases and expiry can
// be tested without sleeping: a Fake clock moves only when told, and its
// timers fire when it passes their deadline.
package clock

import (
	"context"
	"sync"
	"time"
)

// Clock tells the time.
type Clock interface {
	Now() time.Time
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// Timer is a one-shot timer on a Clock's time.
type Timer interface {
	// C receives the clock's time once, when the timer fires.
	C() <-chan time.Time
	// Stop keeps the timer from firing; it reports whether it was still
	// pending. It does not drain C.
	Stop() bool
}

// TimerClock is a Clock that makes timers on its own time.
type TimerClock interface {
	Clock
	NewTimer(d time.Duration) Timer
}

// NewTimer returns a timer that fires d from now on clk's time: clk's own
// when it makes timers (Real, Fake), a runtime timer otherwise.
func NewTimer(clk Clock, d time.Duration) Timer {
	if tc, ok := clk.(TimerClock); ok {
		return tc.NewTimer(d)
	}
	return realTimer{time.NewTimer(d)}
}

// NewTimer returns a runtime timer.
func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// Fake is a manually advanced clock for tests. The zero value starts at the
// zero time; use NewFake for a realistic start. Its timers fire during
// Advance; WaitTimers lets a test wait until code under test has armed one.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	timers  map[*fakeTimer]struct{} // pending timers
	changed chan struct{}           // closed when timers changes
}

// fakeTimer is a Fake clock's timer.
type fakeTimer struct {
	f    *Fake
	at   time.Time
	c    chan time.Time
	done bool // fired or stopped
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop removes the timer if it has not fired.
func (t *fakeTimer) Stop() bool {
	f := t.f
	f.mu.Lock()
	defer f.mu.Unlock()
	if t.done {
		return false
	}
	t.done = true
	delete(f.timers, t)
	f.notifyLocked()
	return true
}

// NewTimer returns a timer firing when the fake time reaches now+d (at
// once if d <= 0).
func (f *Fake) NewTimer(d time.Duration) Timer {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTimer{f: f, at: f.now.Add(d), c: make(chan time.Time, 1)}
	if d <= 0 {
		t.done = true
		t.c <- f.now
		return t
	}
	if f.timers == nil {
		f.timers = make(map[*fakeTimer]struct{})
	}
	f.timers[t] = struct{}{}
	f.notifyLocked()
	return t
}

// notifyLocked wakes WaitTimers callers; f.mu is held.
func (f *Fake) notifyLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// Timers returns the number of pending timers.
func (f *Fake) Timers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.timers)
}

// WaitTimers blocks until at least n timers are pending, or ctx ends (its
// error is returned). Tests use it to advance the clock only once the code
// under test waits on it.
func (f *Fake) WaitTimers(ctx context.Context, n int) error {
	for {
		f.mu.Lock()
		if len(f.timers) >= n {
			f.mu.Unlock()
			return nil
		}
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// NewFake returns a Fake clock set to t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the fake time forward by d and fires the timers whose time
// has come.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	fired := false
	for t := range f.timers {
		if !t.at.After(f.now) {
			t.done = true
			t.c <- f.now
			delete(f.timers, t)
			fired = true
		}
	}
	if fired {
		f.notifyLocked()
	}
}
