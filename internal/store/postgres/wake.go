package postgres

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// Reconnection delays of the wake-up listener.
const (
	wakeRetryMin = 500 * time.Millisecond
	wakeRetryMax = 30 * time.Second
)

// wakeListener is the LISTEN connection behind Store.Wake.
type wakeListener struct {
	mu      sync.Mutex
	ch      chan struct{}
	ready   chan struct{} // closed once the first LISTEN succeeded (tests)
	signals atomic.Int64  // wake-ups signalled, before coalescing (tests)
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
}

// Wake returns a channel that receives a value when another handle on this
// database (another node, or a command such as herald sendmail or herald
// queue retry) committed work that is due now: a message enqueued without
// a lease, a retry, released leases. It also receives one each time the
// listening connection is (re-)established, since notifications sent while
// it was down are lost. Values are coalesced (at most one is buffered), so
// a receiver should then look for all due work. The channel is never
// closed.
//
// The first call starts listening on a connection of its own (LISTEN on
// a channel named after the schema); commands that never call Wake do not
// listen. The composition root connects it to the queue scheduler's wake.
func (s *Store) Wake() <-chan struct{} {
	l := &s.wake
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ch == nil {
		l.ch = make(chan struct{}, 1)
		l.ready = make(chan struct{})
		if !l.stopped {
			ctx, cancel := context.WithCancel(context.Background())
			l.cancel, l.done = cancel, make(chan struct{})
			go s.listen(ctx)
		}
	}
	return l.ch
}

// signal delivers a coalesced wake-up.
func (l *wakeListener) signal() {
	l.signals.Add(1)
	select {
	case l.ch <- struct{}{}:
	default:
	}
}

// stop ends the listener and waits for it.
func (l *wakeListener) stop() {
	l.mu.Lock()
	l.stopped = true
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
}

// listen keeps a LISTEN connection open until ctx ends, reconnecting with
// backoff, and signals for notifications from other handles.
func (s *Store) listen(ctx context.Context) {
	l := &s.wake
	defer close(l.done)
	delay := wakeRetryMin
	first := true
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, func() {
			delay = wakeRetryMin
			if first {
				close(l.ready)
			} else {
				l.signal() // notifications may have been missed
			}
			first = false
		})
		if ctx.Err() != nil {
			return
		}
		s.log.Warn("wake-up listener lost its connection; other nodes' new mail is found by polling meanwhile", "err", err, "retry", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, wakeRetryMax)
	}
}

// listenOnce connects, listens, calls up and waits for notifications until
// the connection fails or ctx ends.
func (s *Store) listenOnce(ctx context.Context, up func()) error {
	conn, err := pgx.ConnectConfig(ctx, s.connFor("listen"))
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	up()
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Payload != s.instance {
			s.wake.signal()
		}
	}
}
