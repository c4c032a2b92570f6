package clock

import (
	"context"
	"testing"
	"time"
)

func TestFakeTimers(t *testing.T) {
	start := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f := NewFake(start)
	a := NewTimer(f, time.Minute)
	b := f.NewTimer(2 * time.Minute)
	if n := f.Timers(); n != 2 {
		t.Fatalf("Timers = %d, want 2", n)
	}
	f.Advance(59 * time.Second)
	select {
	case <-a.C():
		t.Fatal("timer fired before its time")
	default:
	}
	f.Advance(time.Second)
	select {
	case at := <-a.C():
		if !at.Equal(start.Add(time.Minute)) {
			t.Errorf("fired with %v", at)
		}
	default:
		t.Fatal("timer did not fire at its time")
	}
	if a.Stop() {
		t.Error("Stop of a fired timer reported pending")
	}
	if !b.Stop() || f.Timers() != 0 {
		t.Errorf("Stop of a pending timer: Timers = %d", f.Timers())
	}
	f.Advance(time.Hour)
	select {
	case <-b.C():
		t.Fatal("stopped timer fired")
	default:
	}
	// d <= 0 fires at once.
	select {
	case <-f.NewTimer(0).C():
	default:
		t.Fatal("zero timer not fired")
	}
}

func TestFakeWaitTimers(t *testing.T) {
	f := NewFake(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
	armed := make(chan Timer)
	go func() { armed <- f.NewTimer(time.Second) }()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.WaitTimers(ctx, 1); err != nil {
		t.Fatalf("WaitTimers: %v", err)
	}
	tm := <-armed
	f.Advance(time.Second)
	<-tm.C()
	short, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := f.WaitTimers(short, 1); err == nil {
		t.Fatal("WaitTimers returned nil with no timer pending and ctx done")
	}
}

// The real clock's timers are runtime timers.
func TestRealTimer(t *testing.T) {
	tm := NewTimer(Real{}, time.Hour)
	if !tm.Stop() {
		t.Error("Stop of a pending real timer returned false")
	}
}
