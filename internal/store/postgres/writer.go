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

// op is one write run by the writer inside a batch transaction. Its
// statements are sent with those of every other operation of the batch in
// one pipeline (one round trip); every decision an operation makes (a
// duplicate ID, a lost lease) is taken by its SQL, which then writes
// nothing, so that the client never has to undo what the server did.
type op struct {
	// queue adds the operation's statements to the pipeline. It may be
	// called more than once (after a rollback caused by another
	// operation), so it must derive everything from its inputs.
	queue func(pb *pgx.Batch)
	// result reads the results of exactly the statements queue added, in
	// order. It returns nil, a *cleanError when the operation decided not
	// to write (the batch still commits), or another error, which rolls
	// the batch back.
	result func(br pgx.BatchResults) error
	// wake: the commit makes work due, so the batch sends a NOTIFY.
	wake bool
	res  error
	done chan error
}

// cleanError marks an operation failure that wrote nothing: the rest of
// the batch can still commit.
type cleanError struct{ err error }

func (e *cleanError) Error() string { return e.err.Error() }
func (e *cleanError) Unwrap() error { return e.err }

func clean(err error) error { return &cleanError{err} }

// errCommitUnknown is wrapped by the error of operations whose batch may or
// may not have committed (the connection failed during COMMIT).
var errCommitUnknown = errors.New("commit outcome unknown")

var opPool = sync.Pool{New: func() any { return &op{done: make(chan error, 1)} }}

// writer owns one connection and commits batches of operations, so that
// concurrent callers share a transaction, a round trip and a WAL flush.
type writer struct {
	s        *Store
	conn     *pgx.Conn // reconnected after a connection failure
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

// do runs an operation in the writer and waits for its batch to commit.
// Once submitted, the operation is not abandoned when ctx ends: the
// caller learns whether it committed.
func (w *writer) do(ctx context.Context, wake bool, queue func(pb *pgx.Batch), result func(br pgx.BatchResults) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := opPool.Get().(*op)
	o.queue, o.result, o.wake, o.res = queue, result, wake, nil
	w.mu.RLock()
	if w.closed {
		w.mu.RUnlock()
		opPool.Put(o)
		return ErrClosed
	}
	w.ch <- o
	w.mu.RUnlock()
	err := <-o.done
	o.queue, o.result = nil, nil
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
	conn, err := pgx.ConnectConfig(ctx, w.s.connFor("writer"))
	if err != nil {
		return fmt.Errorf("postgres store: writer: %w: %w", ErrUnavailable, err)
	}
	w.conn = conn
	return nil
}

// runBatch runs ops in one transaction and answers each: BEGIN and every
// operation's statements in one pipeline, then COMMIT. An operation whose
// statements fail is answered with its error and the others are run
// again. A deadlock or serialization failure against another node reruns
// the whole batch. A connection or commit failure fails every operation
// of the batch: nobody is told success for data that was not committed.
func (w *writer) runBatch(ops []*op) {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	pending := ops
	retries, reconnects := 0, 0
	for len(pending) > 0 {
		if err := w.connect(ctx); err != nil {
			w.failAll(pending, err)
			return
		}
		failed, err := w.pipeline(ctx, pending)
		switch {
		case err == nil:
			for _, o := range pending {
				o.done <- o.res
			}
			return
		case retryable(err) && retries < maxBatchRetries:
			retries++
		case w.conn.IsClosed() && !errors.Is(err, errCommitUnknown) && reconnects < 1:
			// The connection broke (a database restart, an idle
			// timeout) before COMMIT was sent, so nothing was committed:
			// run the batch again on a new connection.
			reconnects++
		case failed < 0 || fatal(err) || w.conn.IsClosed() || ctx.Err() != nil:
			w.failAll(pending, err)
			return
		default:
			pending[failed].done <- mapErr(err)
			pending = append(pending[:failed:failed], pending[failed+1:]...)
		}
	}
}

// pipeline runs one attempt of a batch. On failure it returns the index of
// the operation that failed, or -1 when the batch as a whole did (begin,
// notify, commit); the transaction is then rolled back.
func (w *writer) pipeline(ctx context.Context, ops []*op) (failed int, err error) {
	pb := &pgx.Batch{}
	pb.Queue(`BEGIN`)
	wake := false
	for _, o := range ops {
		o.res = nil
		o.queue(pb)
		wake = wake || o.wake
	}
	if wake {
		pb.Queue(`SELECT pg_notify($1, $2)`, w.s.channel, w.s.instance)
	}
	br := w.conn.SendBatch(ctx, pb)
	failed = -1
	if _, err = br.Exec(); err == nil {
		for i, o := range ops {
			err = o.result(br)
			var ce *cleanError
			if errors.As(err, &ce) {
				o.res, err = ce.err, nil
			}
			if err != nil {
				failed = i
				break
			}
		}
	}
	if err == nil && wake {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil && cerr != nil {
		err, failed = cerr, -1
	}
	if err != nil {
		w.conn.Exec(ctx, `ROLLBACK`)
		return failed, err
	}
	if _, err := w.conn.Exec(ctx, `COMMIT`); err != nil {
		if pgCode(err) == "" {
			// The connection failed during COMMIT: the server may have
			// committed.
			err = fmt.Errorf("%w: %w", errCommitUnknown, err)
		}
		w.conn.Exec(ctx, `ROLLBACK`)
		return -1, fmt.Errorf("postgres store: commit: %w", err)
	}
	return -1, nil
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

// write runs an operation in the writer's next batch; or, when the store
// was opened for the comparison benchmark without group commit, in a
// transaction of its own on the pool (PostgreSQL then shares WAL flushes
// between concurrent commits by itself).
func (s *Store) write(ctx context.Context, wake bool, queue func(pb *pgx.Batch), result func(br pgx.BatchResults) error) error {
	if !s.ownTx {
		return s.w.do(ctx, wake, queue, result)
	}
	for retries := 0; ; retries++ {
		var res error
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			pb := &pgx.Batch{}
			queue(pb)
			if wake {
				pb.Queue(`SELECT pg_notify($1, $2)`, s.channel, s.instance)
			}
			br := tx.SendBatch(ctx, pb)
			err := result(br)
			var ce *cleanError
			if errors.As(err, &ce) {
				res, err = ce.err, nil
			}
			if err == nil && wake {
				_, err = br.Exec()
			}
			if cerr := br.Close(); err == nil {
				err = cerr
			}
			return err
		})
		if retryable(err) && retries < maxBatchRetries {
			continue
		}
		if err == nil {
			err = res
		}
		return mapErr(err)
	}
}
