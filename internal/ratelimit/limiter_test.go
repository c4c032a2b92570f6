package ratelimit

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

var windowsStart = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)

func TestWindowsPerMinute(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(windowsStart)
	w := NewWindows(clk)
	l := Limits{PerMinute: 10}
	for i := range 10 {
		if ok, _ := w.Take("acct", l, 1); !ok {
			t.Fatalf("take %d refused", i)
		}
	}
	ok, retry := w.Take("acct", l, 1)
	if ok || retry < time.Minute || retry > time.Minute+5*time.Second {
		t.Fatalf("11th take: ok=%v retry=%v, want refused for 60-65s", ok, retry)
	}
	clk.Advance(retry - time.Second)
	if ok, _ := w.Take("acct", l, 1); ok {
		t.Fatal("accepted before retryAfter")
	}
	clk.Advance(time.Second)
	if ok, _ := w.Take("acct", l, 1); !ok {
		t.Fatal("refused at retryAfter")
	}
	// Other keys are independent.
	if ok, _ := w.Take("other", l, 10); !ok {
		t.Fatal("other key refused")
	}
}

// TestWindowsSliding checks the guarantee: no interval of a minute holds
// more than the limit, while the limiter still lets nearly the limit through.
func TestWindowsSliding(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(windowsStart.Add(1700 * time.Millisecond))
	w := NewWindows(clk)
	l := Limits{PerMinute: 30}
	var taken []time.Time
	for range 1200 { // 10 minutes in steps of 0.5s, two messages a step
		for range 2 {
			if ok, _ := w.Take("u", l, 1); ok {
				taken = append(taken, clk.Now())
			}
		}
		clk.Advance(500 * time.Millisecond)
	}
	for i := range taken {
		n := 0
		for j := i; j < len(taken) && taken[j].Sub(taken[i]) < time.Minute; j++ {
			n++
		}
		if n > 30 {
			t.Fatalf("%d messages in the minute from %v", n, taken[i])
		}
	}
	if len(taken) < 9*30 {
		t.Fatalf("only %d messages in 10 minutes at 30/min", len(taken))
	}
}

func TestWindowsHourDay(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(windowsStart)
	w := NewWindows(clk)
	l := Limits{PerMinute: 100, PerHour: 150, PerDay: 200}
	if ok, _ := w.Take("a", l, 100); !ok {
		t.Fatal("first 100 refused")
	}
	clk.Advance(2 * time.Minute)
	// 60 more would break the hour limit: nothing is counted.
	ok, retry := w.Take("a", l, 60)
	if ok || retry < 58*time.Minute || retry > 63*time.Minute {
		t.Fatalf("hour limit: ok=%v retry=%v", ok, retry)
	}
	if m, h, d := w.Usage("a"); m != 0 || h != 100 || d != 100 {
		t.Fatalf("usage %d %d %d after refused take, want 0 100 100", m, h, d)
	}
	if ok, _ := w.Take("a", l, 50); !ok {
		t.Fatal("50 within the hour refused")
	}
	clk.Advance(2 * time.Hour)
	if ok, _ := w.Take("a", l, 50); !ok {
		t.Fatal("50 in a new hour refused")
	}
	ok, retry = w.Take("a", l, 1)
	if ok || retry < 21*time.Hour || retry > 23*time.Hour {
		t.Fatalf("day limit: ok=%v retry=%v", ok, retry)
	}
	clk.Advance(retry)
	if ok, _ := w.Take("a", l, 1); !ok {
		t.Fatal("refused after the day's retryAfter")
	}
}

func TestWindowsLimitsPerCall(t *testing.T) {
	t.Parallel()
	w := NewWindows(clock.NewFake(windowsStart))
	if ok, retry := w.Take("a", Limits{PerHour: 5}, 6); ok || retry != time.Duration(math.MaxInt64) {
		t.Fatalf("n above the limit: ok=%v retry=%v", ok, retry)
	}
	if ok, _ := w.Take("a", Limits{PerHour: 5}, 5); !ok {
		t.Fatal("refused")
	}
	if ok, _ := w.Take("a", Limits{PerHour: 5}, 1); ok {
		t.Fatal("accepted over the limit")
	}
	// A raised limit applies at once to the same key.
	if ok, _ := w.Take("a", Limits{PerHour: 10}, 5); !ok {
		t.Fatal("refused under the raised limit")
	}
	// No limits: always accepted, nothing remembered for new keys.
	for range 100 {
		if ok, _ := w.Take("free", Limits{}, 1000); !ok {
			t.Fatal("unlimited take refused")
		}
	}
	if ok, _ := w.Take("a", Limits{PerHour: 10}, 0); !ok {
		t.Fatal("take of 0 refused")
	}
	if w.Len() != 1 {
		t.Fatalf("Len = %d, want 1", w.Len())
	}
}

func TestWindowsConcurrent(t *testing.T) {
	t.Parallel()
	w := NewWindows(clock.NewFake(windowsStart))
	var (
		wg sync.WaitGroup
		ok atomic.Int64
	)
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if got, _ := w.Take("k", Limits{PerMinute: 50, PerDay: 1000}, 1); got {
					ok.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if ok.Load() != 50 {
		t.Fatalf("%d takes succeeded, want 50", ok.Load())
	}
}

func TestWindowsBoundedMemory(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(windowsStart)
	w := NewWindows(clk)
	w.maxEntries = 100
	for i := range 1000 {
		w.Take(fmt.Sprintf("k%d", i), Limits{PerDay: 10}, 1)
		clk.Advance(time.Second)
	}
	if n := w.Len(); n > 100 {
		t.Fatalf("%d keys remembered, want <= 100", n)
	}
	// The most recent key survives eviction.
	if _, _, d := w.Usage("k999"); d != 1 {
		t.Fatalf("recent key forgotten: day usage %d", d)
	}
	// Keys idle for more than a day are forgotten first.
	clk.Advance(26 * time.Hour)
	w.Take("fresh0", Limits{PerDay: 10}, 1)
	for i := range 200 {
		w.Take(fmt.Sprintf("fresh%d", i), Limits{PerDay: 10}, 1)
	}
	if _, _, d := w.Usage("fresh199"); d != 1 || w.Len() > 100 {
		t.Fatalf("after idle eviction: Len %d, fresh usage %d", w.Len(), d)
	}
}

// The exported slot arithmetic agrees with Windows: the same decisions,
// waits and statuses from a key's slots as from the limiter itself, so a
// store keeping the slots decides as one node would.
func TestSlotsAgreeWithWindows(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(windowsStart.Add(1300 * time.Millisecond))
	w := NewWindows(clk)
	l := Limits{PerMinute: 7, PerHour: 20, PerDay: 45}
	for step := range 400 {
		n := 1 + step%3
		slots := w.SlotsAt("k", clk.Now())
		fits, wait := Check(slots, l, n, clk.Now())
		ok, retry := w.Take("k", l, n)
		if fits != ok || wait != retry {
			t.Fatalf("step %d: Check = %v %v, Take = %v %v", step, fits, wait, ok, retry)
		}
		if got, want := StatusOf(w.SlotsAt("k", clk.Now()), l, clk.Now()), w.Status("k", l); got != want {
			t.Fatalf("step %d: StatusOf = %+v, Status = %+v", step, got, want)
		}
		clk.Advance(time.Duration(1+step%7) * 1700 * time.Millisecond)
	}
	if ok, retry := Check(nil, l, 8, clk.Now()); ok || retry != time.Duration(math.MaxInt64) {
		t.Fatalf("n above the minute limit: %v %v", ok, retry)
	}
	for _, s := range w.SlotsAt("k", clk.Now()) {
		if !Live(s, clk.Now()) {
			t.Fatalf("SlotsAt returned a dead slot %+v", s)
		}
	}
	if ws := SlidingWindows(); ws[0].Slots != 13 || ws[1].Width != 5*time.Minute || ws[2].Slots != 25 {
		t.Fatalf("windows %+v", ws)
	}
}
