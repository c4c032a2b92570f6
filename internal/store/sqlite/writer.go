package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	sqlite3 "modernc.org/sqlite/lib"
)

// op is one write operation run by the writer inside a batch transaction.
type op struct {
	// fn performs the operation. It may be run more than once (after a
	// rollback caused by another operation of its batch), so it must derive
	// everything from its inputs. It returns a *cleanError when it fails
	// before writing anything, so that its batch need not be rolled back.
	fn func(w *writer) error
	// blob is set when fn references a blob file just linked into place:
	// the writer then fsyncs the blobs directory before committing.
	blob bool
	// lazy: nobody waits on the operation to answer a client (a delivery
	// outcome); it may wait a moment to share the next acceptance's
	// commit.
	lazy bool
	res  error
	done chan error
}

// cleanError marks an operation failure that happened before the operation
// wrote anything: the rest of the batch can still commit.
type cleanError struct{ err error }

func (e *cleanError) Error() string { return e.err.Error() }
func (e *cleanError) Unwrap() error { return e.err }

func clean(err error) error { return &cleanError{err} }

var opPool = sync.Pool{New: func() any { return &op{done: make(chan error, 1)} }}

// writer owns the single write connection and commits batches of operations.
type writer struct {
	s        *Store
	conn     *sql.Conn
	ch       chan *op
	maxBatch int
	stopped  chan struct{}

	mu     sync.RWMutex // guards closed and sends on ch
	closed bool

	// afterCommit collects blob files to remove once the current batch has
	// committed.
	afterCommit []string

	hooks webhookCache

	// commits counts the batches committed, held the batches of lazy
	// operations held for an acceptance (for tests).
	commits, held atomic.Int64
	// lazyWait is lazyWait unless Options.lazyWait (a test) says otherwise.
	lazyWait time.Duration

	// roll accumulates the rollup increments of the batch's events,
	// written just before it commits.
	roll rollAcc

	st stmts
}

// stmts are the statements prepared once on the write connection.
type stmts struct {
	insMsg, insRcpt                *sql.Stmt
	dueMsgs, leaseRcpts, msgByID   *sql.Stmt
	msgBlob, updRcpt, countPending *sql.Stmt
	delRcpts, delMsg, retry        *sql.Stmt
	renew, rcptExists              *sql.Stmt
	begin, commit, rollback        *sql.Stmt

	// Event log: the message fields copied onto its events, the accepted
	// event of Enqueue and the general event insert.
	msgEvent, insAccepted, insEvent   *sql.Stmt
	fanOut, dataVersion, hookAccounts *sql.Stmt

	// Rollup upserts (rollups.go).
	rollCount, rollLat, rollDest *sql.Stmt

	all []*sql.Stmt // every statement above, for close
}

// The queue statements of the lease protocol, named so that a test can
// check their query plans stay index-driven.
const (
	// qDueMsgs lists messages with leasable recipients, earliest first,
	// through recipients_ready (an expression index of the due time).
	qDueMsgs = `SELECT message_id FROM recipients
		WHERE status IN ('queued', 'deferred') AND max(next_attempt, lease_until + 1) <= ?
		ORDER BY max(next_attempt, lease_until + 1)`
	// qLeaseRcpts leases a message's due recipients to a node under a
	// token (recipients_message).
	qLeaseRcpts = `UPDATE recipients SET lease_until = ?, lease_owner = ?, lease_token = ?
		WHERE message_id = ? AND status IN ('queued', 'deferred') AND max(next_attempt, lease_until + 1) <= ?
		RETURNING ` + rcptCols
	// qUpdRcpt records one outcome and releases the lease, if the lease
	// check passes: with a token (?10) the recipient must hold it; without
	// (an administrative update) it must not be under a live lease at ?11.
	qUpdRcpt = `UPDATE recipients SET status = ?1, attempts = attempts + ?2, next_attempt = ?3,
		lease_until = 0, lease_owner = '', lease_token = '',
		last_reply = ?4, remote_mta = ?5, delay_warned = (delay_warned OR ?6), updated_at = ?7
		WHERE id = ?8 AND message_id = ?9 AND iif(?10 = '', lease_until < ?11, lease_token = ?10)
		RETURNING address, attempts`
	// qRcptExists tells an unknown recipient from a leased one.
	qRcptExists = `SELECT count(*) FROM recipients WHERE id = ? AND message_id = ?`
	// qRenew extends a lease, never shortening it.
	qRenew = `UPDATE recipients SET lease_until = max(lease_until, ?)
		WHERE message_id = ? AND lease_token = ? AND status IN ('queued', 'deferred')`
	// qCountPending counts a message's pending recipients.
	qCountPending = `SELECT count(*) FROM recipients WHERE message_id = ? AND status IN ('queued', 'deferred')`
)

// The other statements of the queue's hot path, named for the same test
// at queue depth (queue_depth_bench_test.go): Enqueue's inserts, the
// message reads of Lease and Update, an event of Update, the deletion of
// a message when its recipients are done, and NextDue.
const (
	qInsMsg = `INSERT INTO messages (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, blob,
			account, tags, metadata, batch_id, send_at, headers, body)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`
	qInsRcpt = `INSERT INTO recipients (message_id, address, notify, orcpt, status, attempts, next_attempt,
			lease_until, lease_owner, lease_token, last_reply, remote_mta, delay_warned, updated_at)
		VALUES (?, ?, ?, ?, 'queued', 0, ?, ?, ?, ?, '', '', 0, ?)`
	qInsAccepted = `INSERT INTO events (time, type, account, message_id, recipient, sender, tags, metadata)
		VALUES (?, 'accepted', ?, ?, ?, ?, ?, ?)`
	qInsEvent = `INSERT INTO events (` + eventInsCols + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	qMsgByID  = `SELECT ` + msgCols + ` FROM messages WHERE id = ?`
	qMsgEvent = `SELECT blob, account, sender, tags, metadata, received FROM messages WHERE id = ?`
	qDelRcpts = `DELETE FROM recipients WHERE message_id = ?`
	qDelMsg   = `DELETE FROM messages WHERE id = ?`
	// qNextDue is the earliest time a pending recipient can be leased
	// (recipients_ready: the minimum of the index).
	qNextDue = `SELECT min(max(next_attempt, lease_until + 1)) FROM recipients
		WHERE status IN ('queued', 'deferred')`
)

func newWriter(s *Store, conn *sql.Conn, maxBatch int, wait time.Duration) (*writer, error) {
	if wait <= 0 {
		wait = lazyWait
	}
	w := &writer{
		s:        s,
		conn:     conn,
		ch:       make(chan *op, maxBatch),
		maxBatch: maxBatch,
		stopped:  make(chan struct{}),
		lazyWait: wait,
	}
	ctx := context.Background()
	for _, p := range []struct {
		dst **sql.Stmt
		q   string
	}{
		{&w.st.begin, `BEGIN IMMEDIATE`},
		{&w.st.commit, `COMMIT`},
		{&w.st.rollback, `ROLLBACK`},
		{&w.st.insMsg, qInsMsg},
		{&w.st.insRcpt, qInsRcpt},
		{&w.st.dueMsgs, qDueMsgs},
		{&w.st.leaseRcpts, qLeaseRcpts},
		{&w.st.msgByID, qMsgByID},
		{&w.st.msgBlob, `SELECT blob FROM messages WHERE id = ?`},
		{&w.st.updRcpt, qUpdRcpt},
		{&w.st.rcptExists, qRcptExists},
		{&w.st.renew, qRenew},
		{&w.st.msgEvent, qMsgEvent},
		{&w.st.rollCount, qRollCount},
		{&w.st.rollLat, qRollLat},
		{&w.st.rollDest, qRollDest},
		{&w.st.insAccepted, qInsAccepted},
		{&w.st.insEvent, qInsEvent},
		{&w.st.fanOut, `INSERT INTO webhook_deliveries (webhook_id, event_id, next_attempt)
			SELECT id, ?, ? FROM webhooks
			WHERE account = ? AND (event_types = '' OR instr(event_types, ',' || ? || ',') > 0)`},
		{&w.st.dataVersion, `PRAGMA data_version`},
		{&w.st.hookAccounts, `SELECT DISTINCT account FROM webhooks`},
		{&w.st.countPending, qCountPending},
		{&w.st.delRcpts, qDelRcpts},
		{&w.st.delMsg, qDelMsg},
		{&w.st.retry, `UPDATE recipients SET next_attempt = ?, updated_at = ? WHERE message_id = ? AND status IN ('queued', 'deferred')`},
	} {
		st, err := conn.PrepareContext(ctx, p.q)
		if err != nil {
			return nil, fmt.Errorf("sqlite store: prepare %q: %w", p.q, err)
		}
		*p.dst = st
		w.st.all = append(w.st.all, st)
	}
	return w, nil
}

// do runs fn in the writer and waits for its batch to commit. Once
// submitted, the operation is not abandoned when ctx ends: the caller
// learns whether it committed.
func (w *writer) do(ctx context.Context, blob bool, fn func(w *writer) error) error {
	return w.submit(ctx, blob, false, fn)
}

// doLazy is do for an operation that may wait up to lazyWait for an
// acceptance to commit with.
func (w *writer) doLazy(ctx context.Context, fn func(w *writer) error) error {
	return w.submit(ctx, false, true, fn)
}

func (w *writer) submit(ctx context.Context, blob, lazy bool, fn func(w *writer) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	o := opPool.Get().(*op)
	o.fn, o.blob, o.lazy, o.res = fn, blob, lazy, nil
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
	for _, st := range w.st.all {
		st.Close()
	}
	return w.conn.Close()
}

// lazyWait bounds how long lazy operations wait for an acceptance to
// share their commit.
const lazyWait = 5 * time.Millisecond

// run commits batches of the operations waiting on ch (group commit).
// Every commit costs an fsync and the WAL frames of every page it
// changed, whatever the number of operations in it, so a batch of lazy
// operations (delivery outcomes) only is held while a body is being
// written (an acceptance is coming: its commit, which a client waits for,
// takes them along), up to lazyWait. With nothing being accepted they
// commit at once.
func (w *writer) run() {
	defer close(w.stopped)
	batch := make([]*op, 0, w.maxBatch)
	timer := time.NewTimer(w.lazyWait)
	timer.Stop()
	for o := range w.ch {
		batch = append(batch[:0], o)
		batch = w.fill(batch)
		if allLazy(batch) && w.s.openBodies.Load() > 0 {
			w.held.Add(1)
			timer.Reset(w.lazyWait)
		wait:
			for len(batch) < w.maxBatch {
				select {
				case o, ok := <-w.ch:
					if !ok {
						break wait
					}
					batch = append(batch, o)
					if !o.lazy {
						batch = w.fill(batch)
						break wait
					}
				case <-timer.C:
					break wait
				}
			}
			timer.Stop()
		}
		w.runBatch(batch)
		clear(batch)
	}
}

// fill adds to batch the operations already waiting, up to maxBatch.
func (w *writer) fill(batch []*op) []*op {
	for len(batch) < w.maxBatch {
		select {
		case o, ok := <-w.ch:
			if !ok {
				return batch
			}
			batch = append(batch, o)
		default:
			return batch
		}
	}
	return batch
}

func allLazy(ops []*op) bool {
	for _, o := range ops {
		if !o.lazy {
			return false
		}
	}
	return true
}

// runBatch runs ops in one transaction and answers each. An operation that
// fails after writing causes a rollback; it alone is answered with its
// error and the others are run again. A storage or commit failure fails
// every operation of the batch: nobody is told success for data that was
// not committed.
func (w *writer) runBatch(ops []*op) {
	ctx := context.Background()
	pending := ops
retry:
	for len(pending) > 0 {
		w.afterCommit = w.afterCommit[:0]
		w.hooks.checked = false
		w.roll.reset()
		if _, err := w.st.begin.ExecContext(ctx); err != nil {
			w.failAll(pending, fmt.Errorf("sqlite store: begin: %w", err))
			return
		}
		blob := false
		for i, o := range pending {
			o.res = nil
			err := o.fn(w)
			if err == nil {
				blob = blob || o.blob
				continue
			}
			var ce *cleanError
			if errors.As(err, &ce) {
				o.res = ce.err
				continue
			}
			w.rollback()
			if fatal(err) {
				w.failAll(pending, err)
				return
			}
			o.done <- mapErr(err)
			pending = append(pending[:i:i], pending[i+1:]...)
			continue retry
		}
		if err := w.flushRollups(); err != nil {
			w.rollback()
			w.failAll(pending, fmt.Errorf("sqlite store: %w", err))
			return
		}
		if blob {
			if err := syncDir(w.s.blobDir); err != nil {
				w.rollback()
				w.failAll(pending, fmt.Errorf("sqlite store: sync blob directory: %w", err))
				return
			}
		}
		if _, err := w.st.commit.ExecContext(ctx); err != nil {
			w.rollback()
			w.failAll(pending, fmt.Errorf("sqlite store: commit: %w", err))
			return
		}
		w.commits.Add(1)
		for _, p := range w.afterCommit {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				w.s.log.Warn("cannot remove blob", "path", p, "err", err)
			}
		}
		for _, o := range pending {
			o.done <- o.res
		}
		return
	}
}

func (w *writer) rollback() {
	// An error here means no transaction is active (SQLite may have
	// rolled back by itself); either way nothing is committed.
	w.st.rollback.ExecContext(context.Background())
	// The webhook cache may hold rolled-back changes.
	w.hooks.valid = false
}

func (w *writer) failAll(ops []*op, err error) {
	err = mapErr(err)
	for _, o := range ops {
		o.done <- err
	}
}

// fatal reports whether err is a failure of the database rather than of one
// operation (constraint violations and errors outside SQLite are the
// latter).
func fatal(err error) bool {
	if isFull(err) {
		return true
	}
	switch sqliteCode(err) {
	case 0, sqlite3.SQLITE_CONSTRAINT, sqlite3.SQLITE_TOOBIG, sqlite3.SQLITE_MISMATCH, sqlite3.SQLITE_RANGE:
		return false
	}
	return true
}
