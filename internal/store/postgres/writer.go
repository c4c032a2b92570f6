package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// batchTimeout bounds one writer transaction: a database that stops
// answering fails the batch instead of hanging every caller.
const batchTimeout = time.Minute

// maxBatchRetries bounds the reruns of a batch that lost a deadlock or a
// serialization conflict against another node's transaction.
const maxBatchRetries = 5

// batch is the writer transaction an operation runs in.
type batch struct {
	tx pgx.Tx
	// wake is set by an operation that made work due: the batch sends a
	// NOTIFY before its commit.
	wake bool
}

// op is one operation run by the writer inside a batch transaction.
type op struct {
	// fn performs the operation. It may be run more than once (after a
	// rollback caused by another operation of its batch), so it must
	// derive everything from its inputs. It returns a *cleanError when it
	// fails without having changed anything (or with changes that may
	// commit, such as a row lock), so that its batch need not be rolled
	// back.
	fn   func(ctx context.Context, b *batch) error
	res  error
	done chan error
}

// cleanError marks an operation failure that leaves the batch's
// transaction usable: the rest of the batch can still commit.
type cleanError struct{ err error }

func (e *cleanError) Error() string { return e.err.Error() }
func (e *cleanError) Unwrap() error { return e.err }

func clean(err error) error { return &cleanError{err} }

// errCommitUnknown is wrapped by the error of operations whose batch may or
// may not have committed (the connection failed during COMMIT).
var errCommitUnknown = errors.New("commit outcome unknown")

var opPool = sync.Pool{New: func() any { return &op{done: make(chan error, 1)} }}

// writer owns one connection and commits batches of operations, so that
// concurrent callers share a transaction and its WAL flush.
type writer struct {
	s        *Store
	conn     *pgx.Conn // nil after a connection failure, until reconnected
	ch       chan *op
	maxBatch int
	stopped  chan struct{}

	mu     sync.RWMutex // guards closed and sends on ch
	closed bool
}

func newWriter(s *Store, conn *pgx.Conn, maxBatch int) *writer {
	return &writer{
		s:        s,
		conn:     conn,
		ch:       make(chan *op, maxBatch),
		maxBatch: maxBatch,
		stopped:  make(chan struct{}),
	}
}

// do runs fn in the writer and waits for its batch to commit. Once
// submitted, the operation is not abandoned when ctx ends: the caller
// learns whether it committed.
func (w *writer) do(ctx context.Context, fn func(ctx context.Context, b *batch) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := opPool.Get().(*op)
	o.fn, o.res = fn, nil
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		opPool.Put(o)
		return ErrClosed
	}
	w.ch <- o
	w.mu.RUnlock()
	err := <-o.done
	o.fn = nil
	opPool.Put(o)
	return err
}

// close stops accepting operations, lets the writer commit those already
// submitted and waits for it to exit.
func (w *writer) close() error {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.ch)
	}
	w.mu.Unlock()
	<-w.stopped
	if w.conn != nil {
		return w.conn.Close(context.Background())
	}
	return nil
}

func (w *writer) run() {
	defer close(w.stopped)
	batch := make([]*op, 0, w.maxBatch)
	for o := range w.ch {
		batch = append(batch[:0], o)
	fill:
		for len(batch) < w.maxBatch {
			select {
			case o, ok := <-w.ch:
				if !ok {
					break fill
				}
				batch = append(batch, o)
			default:
				break fill
			}
		}
		w.runBatch(batch)
		clear(batch)
	}
}

// connect (re)opens the writer's connection after a failure.
func (w *writer) connect(ctx context.Context) error {
	if w.conn != nil && !w.conn.IsClosed() {
		return nil
	}
	if w.conn != nil {
		w.conn.Close(ctx)
		w.conn = nil
	}
	conn, err := pgx.ConnectConfig(ctx, w.s.connCfg)
	if err != nil {
		return fmt.Errorf("postgres store: writer: %w: %w", ErrUnavailable, err)
	}
	w.conn = conn
	return nil
}

// runBatch runs ops in one transaction and answers each. An operation that
// fails (other than cleanly) causes a rollback; it alone is answered with
// its error and the others are run again. A deadlock or serialization
// failure against another node reruns the whole batch. A connection or
// commit failure fails every operation of the batch: nobody is told
// success for data that was not committed.
func (w *writer) runBatch(ops []*op) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	pending := ops
	retries := 0
retry:
	for len(pending) > 0 {
		if err := w.connect(ctx); err != nil {
			w.failAll(pending, err)
			return
		}
		tx, err := w.conn.Begin(ctx)
		if err != nil {
			w.failAll(pending, fmt.Errorf("postgres store: begin: %w", err))
			return
		}
		b := &batch{tx: tx}
		for i, o := range pending {
			o.res = nil
			err := o.fn(ctx, b)
			if err == nil {
				continue
			}
			var ce *cleanError
			if errors.As(err, &ce) {
				o.res = ce.err
				continue
			}
			tx.Rollback(ctx)
			switch {
			case retryable(err) && retries < maxBatchRetries:
				retries++
				continue retry
			case fatal(err) || w.conn.IsClosed() || ctx.Err() != nil:
				w.failAll(pending, err)
				return
			}
			o.done <- mapErr(err)
			pending = append(pending[:i:i], pending[i+1:]...)
			continue retry
		}
		if b.wake {
			if _, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, w.s.channel, w.s.instance); err != nil {
				tx.Rollback(ctx)
				w.failAll(pending, fmt.Errorf("postgres store: notify: %w", err))
				return
			}
		}
		if err := tx.Commit(ctx); err != nil {
			if retryable(err) && retries < maxBatchRetries {
				retries++
				continue retry
			}
			if pgCode(err) == "" {
				// The connection failed during COMMIT: the server may
				// have committed.
				err = fmt.Errorf("%w: %w", errCommitUnknown, err)
			}
			w.failAll(pending, fmt.Errorf("postgres store: commit: %w", err))
			return
		}
		for _, o := range pending {
			o.done <- o.res
		}
		return
	}
}

func (w *writer) failAll(ops []*op, err error) {
	err = mapErr(err)
	for _, o := range ops {
		o.done <- err
	}
}

// retryable reports a conflict with a concurrent transaction that a rerun
// resolves: a deadlock or a serialization failure.
func retryable(err error) bool {
	c := pgCode(err)
	return c == "40P01" || c == "40001"
}

// fatal reports whether err is a failure of the server rather than of one
// operation: insufficient resources (53: disk full), operator intervention
// (57: shutdown), connection exceptions (08) and system errors (58, XX).
// (A broken connection or an expired batch is checked separately.)
func fatal(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "08", "53", "57", "58", "XX":
		return true
	}
	return false
}
