package sqlite

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

const msgCols = `id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, account, tags, metadata, batch_id, send_at, headers`

const rcptCols = `id, address, notify, orcpt, status, attempts, next_attempt, last_reply, remote_mta, delay_warned, updated_at`

// nanos converts t to the stored form: Unix nanoseconds, 0 for the zero time.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func b2i(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// validID reports whether id is usable as a queue ID and blob file name.
func validID(id string) bool {
	if id == "" || len(id) > 200 || id[0] == '.' || id == "tmp" {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Enqueue stores msg and body durably; see store.Queue. A body larger than
// InlineMax is fsynced and linked into blobs/ by the caller's goroutine
// (concurrently with others) before the writer commits its row. An empty
// msg.Account is set to store.DefaultAccount. One accepted event per
// recipient is written in the same transaction. With a leaseUntil, the
// recipients are leased by this store's node under a new token, returned.
func (s *Store) Enqueue(ctx context.Context, msg *store.Message, b store.Body, leaseUntil time.Time) (string, error) {
	bd, ok := b.(*body)
	if !ok || bd.s != s {
		return "", errors.New("sqlite store: enqueue: body not from this store")
	}
	if bd.done {
		return "", errBodyDone
	}
	if bd.err != nil {
		bd.Abort()
		return "", bd.err
	}
	if !validID(msg.ID) {
		bd.Abort()
		return "", fmt.Errorf("sqlite store: enqueue: invalid queue ID %q", msg.ID)
	}
	if len(msg.Recipients) == 0 {
		bd.Abort()
		return "", fmt.Errorf("sqlite store: enqueue %s: no recipients", msg.ID)
	}
	if err := ctx.Err(); err != nil {
		bd.Abort()
		return "", err
	}
	bd.done = true
	defer bd.release()
	if msg.Account == "" {
		msg.Account = store.DefaultAccount
	}
	tags, meta, err := encodeTagsMeta(msg.Tags, msg.Metadata)
	if err != nil {
		bd.Abort()
		return "", fmt.Errorf("sqlite store: enqueue %s: %w", msg.ID, err)
	}
	msg.Size = bd.size + int64(len(msg.Headers))
	headers := msg.Headers
	if headers == nil {
		headers = []byte{}
	}

	var blobPath string
	var inline []byte
	if bd.f != nil {
		p, err := bd.commitBlob(msg.ID)
		if err != nil {
			bd.removeTemp()
			return "", mapErr(fmt.Errorf("sqlite store: enqueue %s: write blob: %w", msg.ID, err))
		}
		blobPath = p
	} else {
		inline = bd.buf
		if inline == nil {
			inline = []byte{}
		}
	}

	now := time.Now()
	received := nanos(msg.Received)
	due := nanos(msg.Start())
	lease := nanos(leaseUntil)
	var owner, token string
	if lease != 0 {
		owner, token = s.node, newToken()
	}
	bd.settle()
	err = s.w.do(context.Background(), blobPath != "", func(w *writer) error {
		res, err := w.st.insMsg.Exec(msg.ID, msg.Sender, received, msg.Size, msg.Ret, msg.EnvID,
			msg.ClientIP, msg.HELO, msg.AuthUser, msg.Source, b2i(msg.SMTPUTF8), b2i(blobPath != ""),
			msg.Account, tags, meta, msg.BatchID, nanos(msg.SendAt), headers, inline)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(fmt.Errorf("message %s: %w", msg.ID, store.ErrExists))
		}
		if msg.BatchID != "" {
			if err := w.joinBatch(msg.Account, msg.BatchID, len(msg.Recipients), now); err != nil {
				return err
			}
		}
		hooked, err := w.hasWebhooks(msg.Account)
		if err != nil {
			return err
		}
		for i := range msg.Recipients {
			r := &msg.Recipients[i]
			res, err := w.st.insRcpt.Exec(msg.ID, r.Address, r.Notify, r.ORCPT, due, lease, owner, token, now.UnixNano())
			if err != nil {
				return err
			}
			if r.ID, err = res.LastInsertId(); err != nil {
				return err
			}
			res, err = w.st.insAccepted.Exec(now.UnixNano(), msg.Account, msg.ID, r.Address, msg.Sender, tags, meta)
			if err != nil {
				return err
			}
			w.roll.add(now.UnixNano(), msg.Account, store.EventAccepted, r.Address, "", 0, false)
			if hooked {
				if err := w.fanOut(res, now.UnixNano(), msg.Account, store.EventAccepted); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		if blobPath != "" {
			// Our link: nothing committed references it (a name that
			// already existed made commitBlob fail before linking).
			os.Remove(blobPath)
		}
		return "", fmt.Errorf("sqlite store: enqueue %s: %w", msg.ID, err)
	}
	if token != "" && blobPath == "" {
		// For the worker this message is handed to (see readcache.Handoff):
		// the buffer goes back to the pool, so the worker gets a copy.
		data := make([]byte, 0, len(headers)+len(inline))
		s.handoff.Put(msg.ID, append(append(data, headers...), inline...), leaseUntil)
	}
	for i := range msg.Recipients {
		r := &msg.Recipients[i]
		r.Status = store.StatusQueued
		r.Attempts = 0
		r.NextAttempt = msg.Start()
		r.LastReply, r.RemoteMTA, r.DelayWarned = "", "", false
		r.UpdatedAt = now
	}
	return token, nil
}

// newToken returns a new lease token: 128 random bits, 26 base32 letters.
func newToken() string { return rand.Text() }

// OpenBody returns the stored body of message id. The inline body of a
// message this handle enqueued leased comes from memory while its lease
// lasts (see readcache.Handoff).
func (s *Store) OpenBody(ctx context.Context, id string) (io.ReadCloser, error) {
	if data, ok := s.handoff.Get(id); ok {
		return inlineReader{bytes.NewReader(data)}, nil
	}
	var blob bool
	var headers, data []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT blob, headers, body FROM messages WHERE id = ?`, id).Scan(&blob, &headers, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("sqlite store: body of %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite store: body of %s: %w", id, err)
	}
	if !blob {
		if len(headers) > 0 {
			data = append(headers, data...)
		}
		return inlineReader{bytes.NewReader(data)}, nil
	}
	f, err := os.Open(filepath.Join(s.blobDir, id))
	if errors.Is(err, os.ErrNotExist) {
		// Deleted between the query and the open.
		return nil, fmt.Errorf("sqlite store: body of %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite store: body of %s: %w", id, err)
	}
	if len(headers) > 0 {
		return prefixedFile{Reader: io.MultiReader(bytes.NewReader(headers), f), f: f}, nil
	}
	return f, nil
}

// prefixedFile reads the stored header prefix, then the blob file.
type prefixedFile struct {
	io.Reader
	f *os.File
}

func (p prefixedFile) Close() error { return p.f.Close() }

// Lease leases due recipients, grouped by message, to this store's node
// under a new token per message; see store.Queue. It runs in the writer,
// in a write transaction (BEGIN IMMEDIATE), so concurrent calls of this
// handle and of other handles (nodes) on the database never lease the same
// recipient.
func (s *Store) Lease(ctx context.Context, now time.Time, d time.Duration, limit int) ([]store.Lease, error) {
	if limit <= 0 {
		return nil, nil
	}
	until := now.Add(d)
	n, u := nanos(now), nanos(until)
	var leases []store.Lease
	err := s.w.do(ctx, false, func(w *writer) error {
		leases = leases[:0]
		ids, err := w.dueMessages(n, limit)
		if err != nil {
			return err
		}
		for _, id := range ids {
			m, err := scanMessage(w.st.msgByID.QueryRow(id))
			if err != nil {
				return err
			}
			token := newToken()
			rows, err := w.st.leaseRcpts.Query(u, s.node, token, id, n)
			if err != nil {
				return err
			}
			m.Recipients, err = scanRecipients(rows, m.Recipients[:0])
			if err != nil {
				return err
			}
			if len(m.Recipients) == 0 {
				continue
			}
			slices.SortFunc(m.Recipients, func(a, b store.Recipient) int { return int(a.ID - b.ID) })
			leases = append(leases, store.Lease{Message: m, Until: until, Token: token})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite store: lease: %w", err)
	}
	return leases, nil
}

// dueMessages returns up to limit distinct IDs of messages with leasable
// recipients, earliest due first.
func (w *writer) dueMessages(now int64, limit int) ([]string, error) {
	rows, err := w.st.dueMsgs.Query(now)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []string
	seen := make(map[string]struct{})
	for len(ids) < limit && rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		if _, ok := seen[id]; ok {
			continue
		}
		seen[id] = struct{}{}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// Update records delivery outcomes under a lease token; see store.Queue.
// Each outcome counts as an attempt unless its status is queued. A pending
// outcome with a zero NextAttempt is due at once. Every outcome but queued
// writes its event (deferred, delivered, bounced or expired) in the same
// transaction. An outcome whose recipient fails the lease check fails the
// operation after it may have written: the writer rolls its batch back and
// commits the others, so the update is all or nothing.
func (s *Store) Update(ctx context.Context, id, token string, outcomes []store.Outcome) error {
	s.handoff.Drop(id)
	for _, o := range outcomes {
		switch o.Status {
		case store.StatusQueued, store.StatusDeferred, store.StatusDelivered, store.StatusFailed, store.StatusExpired:
		default:
			return fmt.Errorf("sqlite store: update %s: invalid status %q", id, o.Status)
		}
	}
	now := time.Now()
	// An outcome keeps no client waiting: it may wait for an acceptance's
	// commit to share it (see writer.run).
	err := s.w.doLazy(ctx, func(w *writer) error {
		var blob bool
		var account, sender, tags, meta string
		var received int64
		if err := w.st.msgEvent.QueryRow(id).Scan(&blob, &account, &sender, &tags, &meta, &received); errors.Is(err, sql.ErrNoRows) {
			if token != "" {
				return clean(fmt.Errorf("message %s: %w: %w", id, store.ErrLeaseLost, store.ErrNotFound))
			}
			return clean(fmt.Errorf("message %s: %w", id, store.ErrNotFound))
		} else if err != nil {
			return err
		}
		hooked, err := w.hasWebhooks(account)
		if err != nil {
			return err
		}
		for i, o := range outcomes {
			next := nanos(o.NextAttempt)
			if !o.Status.Final() && next == 0 {
				next = now.UnixNano()
			}
			var attempt int64
			if o.Status != store.StatusQueued {
				attempt = 1
			}
			var addr string
			var attempts int64
			err := w.st.updRcpt.QueryRow(string(o.Status), attempt, next, o.Reply, o.RemoteMTA,
				b2i(o.DelayWarned), now.UnixNano(), o.RecipientID, id, token, now.UnixNano()).Scan(&addr, &attempts)
			if errors.Is(err, sql.ErrNoRows) {
				err := w.leaseCheckFailed(id, o.RecipientID, token)
				if i == 0 && (errors.Is(err, store.ErrLeaseLost) || errors.Is(err, store.ErrNotFound)) {
					// Nothing written yet: the batch need not roll back.
					return clean(err)
				}
				return err
			}
			if err != nil {
				return err
			}
			typ := outcomeEvent(o.Status)
			if typ == "" {
				continue
			}
			res, err := w.st.insEvent.Exec(now.UnixNano(), typ, account, id, addr, sender, o.RemoteMTA, o.Reply,
				o.Enhanced, o.TLS, o.Bounce, attempts, tags, meta)
			if err != nil {
				return err
			}
			w.roll.add(now.UnixNano(), account, typ, addr, o.TLS, time.Duration(now.UnixNano()-received), received > 0)
			if hooked {
				if err := w.fanOut(res, now.UnixNano(), account, typ); err != nil {
					return err
				}
			}
		}
		var pending int
		if err := w.st.countPending.QueryRow(id).Scan(&pending); err != nil {
			return err
		}
		if pending == 0 {
			return w.deleteMessage(id, blob)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: update %s: %w", id, err)
	}
	return nil
}

// leaseCheckFailed says why recipient rid of message id was not updated:
// with a token, the lease is lost whatever the reason; without, the
// recipient is either unknown or under a live lease.
func (w *writer) leaseCheckFailed(id string, rid int64, token string) error {
	if token != "" {
		return fmt.Errorf("recipient %d of message %s: not leased under this token: %w", rid, id, store.ErrLeaseLost)
	}
	var n int
	if err := w.st.rcptExists.QueryRow(rid, id).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return fmt.Errorf("recipient %d of message %s: %w", rid, id, store.ErrNotFound)
	}
	return fmt.Errorf("recipient %d of message %s: leased by a worker: %w", rid, id, store.ErrLeaseLost)
}

// Renew extends the lease token of message id; see store.Queue. It writes
// through the writer like every change (group commit).
func (s *Store) Renew(ctx context.Context, id, token string, until time.Time) error {
	if token == "" {
		return fmt.Errorf("sqlite store: renew %s: empty token: %w", id, store.ErrLeaseLost)
	}
	u := nanos(until)
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.st.renew.Exec(u, id, token)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrLeaseLost)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: renew %s: %w", id, err)
	}
	return nil
}

// deleteMessage deletes the rows of message id and schedules its blob file
// for removal after the commit.
func (w *writer) deleteMessage(id string, blob bool) error {
	if _, err := w.st.delRcpts.Exec(id); err != nil {
		return err
	}
	if _, err := w.st.delMsg.Exec(id); err != nil {
		return err
	}
	if blob {
		w.afterCommit = append(w.afterCommit, filepath.Join(w.s.blobDir, id))
	}
	return nil
}

// NextDue returns the earliest time at which a pending recipient can be
// leased: its NextAttempt, or the end of its lease if it is leased (so that
// a scheduler wakes up to take over work whose lease expired). It returns
// the zero time if nothing is pending.
func (s *Store) NextDue(ctx context.Context) (time.Time, error) {
	var n sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, qNextDue).Scan(&n)
	if err != nil {
		return time.Time{}, fmt.Errorf("sqlite store: next due: %w", err)
	}
	if !n.Valid {
		return time.Time{}, nil
	}
	return fromNanos(n.Int64), nil
}

// Get returns message id with all its recipients.
func (s *Store) Get(ctx context.Context, id string) (*store.Message, error) {
	msgs, err := s.queryMessages(ctx, `SELECT `+msgCols+` FROM messages WHERE id = ?`, id)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: get %s: %w", id, err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("sqlite store: get %s: %w", id, store.ErrNotFound)
	}
	return msgs[0], nil
}

// List returns up to limit messages after queue ID after, in queue ID order
// (queue IDs are time-ordered).
func (s *Store) List(ctx context.Context, after string, limit int) ([]*store.Message, error) {
	if limit <= 0 {
		return nil, nil
	}
	msgs, err := s.queryMessages(ctx, `SELECT `+msgCols+` FROM messages WHERE id > ? ORDER BY id LIMIT ?`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: list: %w", err)
	}
	return msgs, nil
}

// queryMessages runs a messages query and loads the recipients of each
// result, all in one read transaction so the view is consistent.
func (s *Store) queryMessages(ctx context.Context, q string, args ...any) ([]*store.Message, error) {
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var msgs []*store.Message
	for rows.Next() {
		m, err := scanMessage(rows)
		if err != nil {
			rows.Close()
			return nil, err
		}
		msgs = append(msgs, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(msgs) == 0 {
		return nil, nil
	}
	st, err := tx.PrepareContext(ctx, `SELECT `+rcptCols+` FROM recipients WHERE message_id = ? ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	for _, m := range msgs {
		rows, err := st.QueryContext(ctx, m.ID)
		if err != nil {
			return nil, err
		}
		if m.Recipients, err = scanRecipients(rows, nil); err != nil {
			return nil, err
		}
	}
	return msgs, nil
}

type scanner interface{ Scan(dest ...any) error }

// scanMessage reads msgCols. Headers (the prepended fields) come back too:
// delivery decisions such as quarantine filing depend on them.
func scanMessage(sc scanner) (*store.Message, error) {
	m := &store.Message{}
	var received, sendAt int64
	var tags, meta string
	err := sc.Scan(&m.ID, &m.Sender, &received, &m.Size, &m.Ret, &m.EnvID, &m.ClientIP, &m.HELO,
		&m.AuthUser, &m.Source, &m.SMTPUTF8, &m.Account, &tags, &meta, &m.BatchID, &sendAt, &m.Headers)
	if err != nil {
		return nil, err
	}
	m.Received, m.SendAt = fromNanos(received), fromNanos(sendAt)
	if m.Tags, m.Metadata, err = decodeTagsMeta(tags, meta); err != nil {
		return nil, fmt.Errorf("message %s: %w", m.ID, err)
	}
	return m, nil
}

// scanRecipients reads rcptCols rows into dst and closes rows.
func scanRecipients(rows *sql.Rows, dst []store.Recipient) ([]store.Recipient, error) {
	defer rows.Close()
	for rows.Next() {
		var r store.Recipient
		var status string
		var next, updated int64
		if err := rows.Scan(&r.ID, &r.Address, &r.Notify, &r.ORCPT, &status, &r.Attempts, &next,
			&r.LastReply, &r.RemoteMTA, &r.DelayWarned, &updated); err != nil {
			return nil, err
		}
		r.Status = store.Status(status)
		r.NextAttempt = fromNanos(next)
		r.UpdatedAt = fromNanos(updated)
		dst = append(dst, r)
	}
	return dst, rows.Err()
}

// Retry makes every pending recipient of message id due at now. Leases are
// kept, so a delivery in progress is not duplicated.
func (s *Store) Retry(ctx context.Context, id string, now time.Time) error {
	upd := time.Now().UnixNano()
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.st.retry.Exec(nanos(now), upd, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(fmt.Errorf("message %s: %w", id, store.ErrNotFound))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: retry %s: %w", id, err)
	}
	return nil
}

// Delete removes message id and its body whatever its state.
func (s *Store) Delete(ctx context.Context, id string) error {
	s.handoff.Drop(id)
	err := s.w.do(ctx, false, func(w *writer) error {
		var blob bool
		if err := w.st.msgBlob.QueryRow(id).Scan(&blob); errors.Is(err, sql.ErrNoRows) {
			return clean(fmt.Errorf("message %s: %w", id, store.ErrNotFound))
		} else if err != nil {
			return err
		}
		return w.deleteMessage(id, blob)
	})
	if err != nil {
		return fmt.Errorf("sqlite store: delete %s: %w", id, err)
	}
	return nil
}

// ReleaseLeases clears the leases of this store's node, and the leases
// taken before schema version 9, which carry no token and belong to no
// node (a node of that version held them, on this machine: an SQLite
// database is not shared between machines). Other nodes' leases are kept.
func (s *Store) ReleaseLeases(ctx context.Context) error {
	s.handoff.Clear()
	err := s.w.do(ctx, false, func(w *writer) error {
		_, err := w.conn.ExecContext(context.Background(), `UPDATE recipients
			SET lease_until = 0, lease_owner = '', lease_token = ''
			WHERE lease_until != 0 AND (lease_owner = ? OR lease_token = '')`, s.node)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: release leases: %w", err)
	}
	s.releaseDestinations()
	return nil
}

// Stats summarises the pending queue.
func (s *Store) Stats(ctx context.Context) (store.QueueStats, error) {
	var st store.QueueStats
	var oldest sql.NullInt64
	err := s.rdb.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM messages),
		(SELECT count(*) FROM recipients WHERE status IN ('queued', 'deferred')),
		(`+oldestSQL+`)`, time.Now().UnixNano()).Scan(&st.Messages, &st.Recipients, &oldest)
	if err != nil {
		return st, fmt.Errorf("sqlite store: stats: %w", err)
	}
	if oldest.Valid {
		st.Oldest = fromNanos(oldest.Int64)
	}
	return st, nil
}

// normAddr lower-cases an address or domain for the directory.
func normAddr(s string) string {
	return strings.ToLower(strings.TrimSpace(s))
}
