package workpool

import (
	"context"
	"sync"
	"testing"
	"time"
)

// With one worker and a poll interval of an hour, queued items are still
// all processed promptly: a finishing worker wakes the loop when work was
// left behind. Hand-off items run on the reserved worker.
func TestBacklogAndHandoff(t *testing.T) {
	var mu sync.Mutex
	queue := []int{1, 2, 3, 4, 5}
	done := make(chan int, 10)
	p := New(Config[int]{
		Workers:      1,
		PollInterval: time.Hour,
		DrainTimeout: time.Second,
		Lease: func(ctx context.Context, n int) ([]int, error) {
			mu.Lock()
			defer mu.Unlock()
			n = min(n, len(queue))
			items := queue[:n]
			queue = queue[n:]
			return items, nil
		},
		Work: func(ctx context.Context, i int) { done <- i },
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { p.Run(ctx); close(stopped) }()
	for range 5 {
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("backlog not processed without waiting for the poll interval")
		}
	}
	// Direct hand-off.
	deadline := time.Now().Add(5 * time.Second)
	for !p.Reserve() {
		if time.Now().After(deadline) {
			t.Fatal("worker never free")
		}
		time.Sleep(time.Millisecond)
	}
	p.Submit(42)
	if got := <-done; got != 42 {
		t.Fatalf("hand-off ran %d", got)
	}
	// Stored while busy, then Notify: taken without waiting for the timer.
	mu.Lock()
	queue = append(queue, 7)
	mu.Unlock()
	p.Notify()
	select {
	case got := <-done:
		if got != 7 {
			t.Fatalf("got %d", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("notified work not taken")
	}
	cancel()
	<-stopped
}

// At shutdown, running work gets DrainTimeout, then its context is
// cancelled; Run returns only after it has stopped.
func TestDrainCancelsAfterTimeout(t *testing.T) {
	started := make(chan struct{})
	finished := make(chan error, 1)
	p := New(Config[int]{
		Workers: 1, PollInterval: time.Hour, DrainTimeout: 20 * time.Millisecond,
		Lease: func(ctx context.Context, n int) ([]int, error) { return nil, nil },
		Work: func(ctx context.Context, _ int) {
			close(started)
			<-ctx.Done()
			finished <- ctx.Err()
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { p.Run(ctx); close(stopped) }()
	if !p.Reserve() {
		t.Fatal("no free worker")
	}
	p.Submit(1)
	<-started
	cancel()
	<-stopped
	select {
	case err := <-finished:
		if err == nil {
			t.Fatal("work context not cancelled")
		}
	default:
		t.Fatal("Run returned before the work stopped")
	}
}
