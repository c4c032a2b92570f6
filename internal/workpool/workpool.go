// Package workpool runs leased work on a fixed number of workers. It is
// the loop shared by the delivery queue and the webhook dispatcher: take
// as much due work from a lease function as there are free workers, look
// again on a timer or when woken, look again as soon as a worker frees up
// if work was left behind, accept work handed over directly, and drain on
// shutdown.
package workpool

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Config tells a Pool how to find and do work.
type Config[T any] struct {
	Workers      int           // concurrent items
	PollInterval time.Duration // how often to look for due work
	DrainTimeout time.Duration // on shutdown, how long running items may finish
	// Lease returns up to n due items, taking them (e.g. leasing rows).
	Lease func(ctx context.Context, n int) ([]T, error)
	// Work processes one item; ctx is cancelled only after DrainTimeout
	// at shutdown.
	Work func(ctx context.Context, item T)
	// LeaseError is told about Lease failures (logging); may be nil.
	LeaseError func(error)
}

// Pool runs a Config. Create it with New and start it with Run.
type Pool[T any] struct {
	cfg     Config[T]
	slots   chan struct{} // one token per free worker
	wake    chan struct{}
	handoff chan T
	// backlog is set when work may be waiting without a worker: a worker
	// that finishes then wakes the loop instead of waiting for the timer.
	backlog atomic.Bool
	wg      sync.WaitGroup
}

// New returns a pool with every worker free.
func New[T any](cfg Config[T]) *Pool[T] {
	p := &Pool[T]{
		cfg:     cfg,
		slots:   make(chan struct{}, cfg.Workers),
		wake:    make(chan struct{}, 1),
		handoff: make(chan T, cfg.Workers),
	}
	for range cfg.Workers {
		p.slots <- struct{}{}
	}
	return p
}

// Wake makes the pool look for due work now. It never blocks.
func (p *Pool[T]) Wake() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Notify says work was stored without a worker: it is taken as soon as a
// worker is free.
func (p *Pool[T]) Notify() {
	p.backlog.Store(true)
	p.Wake()
}

// Reserve takes a free worker for an item about to be handed over with
// Submit; false means none is free (store the item and Notify instead).
func (p *Pool[T]) Reserve() bool {
	select {
	case <-p.slots:
		return true
	default:
		return false
	}
}

// Unreserve returns a worker taken by Reserve that will not be used.
func (p *Pool[T]) Unreserve() { p.slots <- struct{}{} }

// Submit hands an item to the worker taken by Reserve. It never blocks.
func (p *Pool[T]) Submit(item T) { p.handoff <- item }

// Run works until ctx is cancelled, then drains.
func (p *Pool[T]) Run(ctx context.Context) {
	// Work runs on its own context so that a shutdown lets items finish.
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			p.drain(cancel)
			return
		case item := <-p.handoff:
			p.start(wctx, item)
			continue
		case <-timer.C:
		case <-p.wake:
		}
		p.poll(ctx, wctx)
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
		timer.Reset(p.cfg.PollInterval)
	}
}

// drain waits for running items for at most DrainTimeout, then cancels
// them; their work is expected to leave unfinished items to be retried.
func (p *Pool[T]) drain(cancel context.CancelFunc) {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	t := time.NewTimer(p.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		cancel()
		<-done
	}
}

// poll leases as much due work as there are free workers.
func (p *Pool[T]) poll(ctx, wctx context.Context) {
	for ctx.Err() == nil {
		free := 0
	take:
		for free < cap(p.slots) {
			select {
			case <-p.slots:
				free++
			default:
				break take
			}
		}
		if free == 0 {
			p.backlog.Store(true)
			return
		}
		items, err := p.cfg.Lease(ctx, free)
		if err != nil {
			if ctx.Err() == nil && p.cfg.LeaseError != nil {
				p.cfg.LeaseError(err)
			}
			items = nil
		}
		if len(items) > free { // never exceed the worker count
			items = items[:free]
		}
		for _, it := range items {
			p.start(wctx, it)
		}
		for range free - len(items) {
			p.slots <- struct{}{}
		}
		if len(items) < free || err != nil {
			if err == nil {
				p.backlog.Store(false) // everything due is taken
			}
			return
		}
		p.backlog.Store(true) // every worker busy: more may be waiting
	}
}

// start runs one item on a worker whose slot is already taken.
func (p *Pool[T]) start(ctx context.Context, item T) {
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer func() {
			p.slots <- struct{}{}
			if p.backlog.Load() {
				p.Wake()
			}
		}()
		p.cfg.Work(ctx, item)
	}()
}
