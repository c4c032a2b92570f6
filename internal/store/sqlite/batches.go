package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Batches (store.Batches): the batches table, the holds of a paused
// batch's recipients (leases of store.HeldOwner) and the cancellation of
// its pending recipients, each change in one writer transaction.

const batchCols = `id, account, state, created, updated, messages, recipients, cancelled`

func scanBatch(sc scanner) (store.Batch, error) {
	var b store.Batch
	var created, updated int64
	if err := sc.Scan(&b.ID, &b.Account, &b.State, &created, &updated, &b.Messages, &b.Recipients, &b.Cancelled); err != nil {
		return b, err
	}
	b.Created, b.Updated = fromNanos(created), fromNanos(updated)
	return b, nil
}

// CreateBatch implements store.Batches.
func (s *Store) CreateBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	return s.CreateBatchLimited(ctx, account, id, now, 0)
}

// CreateBatchLimited implements store.Batches. The count and the insert
// run in the single writer, so concurrent creations cannot pass the limit.
func (s *Store) CreateBatchLimited(ctx context.Context, account, id string, now time.Time, max int) (store.Batch, error) {
	if !store.ValidBatchID(id) {
		return store.Batch{}, fmt.Errorf("sqlite store: create batch: invalid batch ID %q", id)
	}
	if account == "" {
		account = store.DefaultAccount
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		if max > 0 {
			var exists, n int
			if err := w.conn.QueryRowContext(context.Background(), `SELECT count(*) FROM batches WHERE id = ? AND account = ?`,
				id, account).Scan(&exists); err != nil {
				return err
			}
			if exists == 0 {
				if err := w.conn.QueryRowContext(context.Background(), `SELECT count(*) FROM batches WHERE account = ? AND created > ?`,
					account, nanos(now.Add(-24*time.Hour))).Scan(&n); err != nil {
					return err
				}
				if n >= max {
					return store.ErrLimit
				}
			}
		}
		_, err := w.conn.ExecContext(context.Background(), `INSERT INTO batches (id, account, state, created, updated)
			VALUES (?, ?, 'active', ?, ?) ON CONFLICT DO NOTHING`, id, account, nanos(now), nanos(now))
		return err
	})
	if errors.Is(err, store.ErrLimit) {
		return store.Batch{}, fmt.Errorf("sqlite store: create batch %s: %w", id, err)
	}
	if err != nil {
		return store.Batch{}, mapErr(fmt.Errorf("sqlite store: create batch %s: %w", id, err))
	}
	b, err := s.GetBatch(ctx, account, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Batch{}, fmt.Errorf("sqlite store: create batch %s: %w", id, store.ErrExists)
	}
	return b, err
}

// GetBatch implements store.Batches.
func (s *Store) GetBatch(ctx context.Context, account, id string) (store.Batch, error) {
	if account == "" {
		account = store.DefaultAccount
	}
	tx, err := s.rdb.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return store.Batch{}, fmt.Errorf("sqlite store: get batch %s: %w", id, err)
	}
	defer tx.Rollback()
	b, err := scanBatch(tx.QueryRowContext(ctx, `SELECT `+batchCols+` FROM batches WHERE id = ? AND account = ?`, id, account))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Batch{}, fmt.Errorf("sqlite store: get batch %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Batch{}, fmt.Errorf("sqlite store: get batch %s: %w", id, err)
	}
	rows, err := tx.QueryContext(ctx, `SELECT r.status, r.lease_token = ?, count(*)
		FROM messages m JOIN recipients r ON r.message_id = m.id
		WHERE m.batch_id = ? AND m.account = ? AND r.status IN ('queued', 'deferred')
		GROUP BY 1, 2`, store.HeldToken, id, account)
	if err != nil {
		return store.Batch{}, fmt.Errorf("sqlite store: get batch %s: %w", id, err)
	}
	defer rows.Close()
	b.Pending = make(map[store.Status]int)
	for rows.Next() {
		var status string
		var held bool
		var n int
		if err := rows.Scan(&status, &held, &n); err != nil {
			return store.Batch{}, fmt.Errorf("sqlite store: get batch %s: %w", id, err)
		}
		b.Pending[store.Status(status)] += n
		if held {
			b.Held += n
		}
	}
	if err := rows.Err(); err != nil {
		return store.Batch{}, fmt.Errorf("sqlite store: get batch %s: %w", id, err)
	}
	return b, nil
}

// batchState reads a batch's state in the writer: ErrNotFound when the
// account has no such batch.
func (w *writer) batchState(account, id string) (string, error) {
	var state string
	err := w.conn.QueryRowContext(context.Background(), `SELECT state FROM batches WHERE id = ? AND account = ?`, id, account).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", clean(fmt.Errorf("batch %s: %w", id, store.ErrNotFound))
	}
	return state, err
}

// joinBatch counts a message enqueued into batch id (in Enqueue's
// transaction, after the message row was written): the batch must be the
// account's and not cancelled.
func (w *writer) joinBatch(account, id string, rcpts int, now time.Time) error {
	res, err := w.conn.ExecContext(context.Background(), `UPDATE batches SET messages = messages + 1, recipients = recipients + ?,
			updated = max(updated, ?)
		WHERE id = ? AND account = ? AND state != 'cancelled'`, rcpts, nanos(now), id, account)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return fmt.Errorf("batch %s of account %s: unknown or cancelled: %w", id, account, store.ErrBatchState)
	}
	return nil
}

// holdSQL holds the pending recipients of the batch ?4 that are not under
// a live lease at ?5.
const holdSQL = `UPDATE recipients SET lease_until = ?1, lease_owner = ?2, lease_token = ?3
	WHERE message_id IN (SELECT id FROM messages WHERE batch_id = ?4) AND status IN ('queued', 'deferred') AND lease_until < ?5`

// PauseBatch implements store.Batches.
func (s *Store) PauseBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	return s.moveBatch(ctx, account, id, now, "pause", store.BatchActive, store.BatchPaused,
		holdSQL, nanos(store.HeldUntil), store.HeldOwner, store.HeldToken, id, nanos(now))
}

// ResumeBatch implements store.Batches.
func (s *Store) ResumeBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	return s.moveBatch(ctx, account, id, now, "resume", store.BatchPaused, store.BatchActive,
		`UPDATE recipients SET lease_until = 0, lease_owner = '', lease_token = ''
			WHERE message_id IN (SELECT id FROM messages WHERE batch_id = ?) AND lease_token = ?`, id, store.HeldToken)
}

// moveBatch moves batch id of account from state from to state to (a
// batch already there stays) and runs recipientsSQL with args on its
// recipients, in one write; a cancelled batch is refused (ErrBatchState).
func (s *Store) moveBatch(ctx context.Context, account, id string, now time.Time, what, from, to, recipientsSQL string, args ...any) (store.Batch, error) {
	if account == "" {
		account = store.DefaultAccount
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		state, err := w.batchState(account, id)
		if err != nil {
			return err
		}
		switch state {
		case store.BatchCancelled:
			return clean(fmt.Errorf("batch %s is cancelled: %w", id, store.ErrBatchState))
		case from:
			if _, err := w.conn.ExecContext(context.Background(), `UPDATE batches SET state = ?, updated = ? WHERE id = ?`, to, nanos(now), id); err != nil {
				return err
			}
		}
		_, err = w.conn.ExecContext(context.Background(), recipientsSQL, args...)
		return err
	})
	if err != nil {
		return store.Batch{}, mapErr(fmt.Errorf("sqlite store: %s batch %s: %w", what, id, err))
	}
	return s.GetBatch(ctx, account, id)
}

// CancelBatch implements store.Batches.
func (s *Store) CancelBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	if account == "" {
		account = store.DefaultAccount
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		state, err := w.batchState(account, id)
		if err != nil {
			return err
		}
		if state != store.BatchCancelled {
			if _, err := w.conn.ExecContext(context.Background(), `UPDATE batches SET state = 'cancelled', updated = ? WHERE id = ?`, nanos(now), id); err != nil {
				return err
			}
		}
		return w.cancelRecipients(id, `SELECT r.id, r.message_id, r.address FROM messages m JOIN recipients r ON r.message_id = m.id
			WHERE m.batch_id = ? AND r.status IN ('queued', 'deferred') AND (r.lease_until < ? OR r.lease_token = ?)
			ORDER BY r.message_id, r.id`, id, nanos(now), store.HeldToken)
	})
	if err != nil {
		return store.Batch{}, mapErr(fmt.Errorf("sqlite store: cancel batch %s: %w", id, err))
	}
	return s.GetBatch(ctx, account, id)
}

// cancelRecipients removes the recipients that query q (args) selects
// (recipient ID, message ID, address, ordered by message) with a cancelled
// event each, counts them in batch id, and removes the messages left with
// no pending recipient.
func (w *writer) cancelRecipients(id, q string, args ...any) error {
	bg := context.Background()
	rows, err := w.conn.QueryContext(bg, q, args...)
	if err != nil {
		return err
	}
	type victim struct {
		rid       int64
		msg, addr string
	}
	var vs []victim
	for rows.Next() {
		var v victim
		if err := rows.Scan(&v.rid, &v.msg, &v.addr); err != nil {
			rows.Close()
			return err
		}
		vs = append(vs, v)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	now := time.Now().UnixNano()
	for i := 0; i < len(vs); {
		mid := vs[i].msg
		var blob bool
		var account, sender, tags, meta string
		var received int64
		if err := w.st.msgEvent.QueryRow(mid).Scan(&blob, &account, &sender, &tags, &meta, &received); err != nil {
			return err
		}
		hooked, err := w.hasWebhooks(account)
		if err != nil {
			return err
		}
		for ; i < len(vs) && vs[i].msg == mid; i++ {
			v := vs[i]
			if _, err := w.conn.ExecContext(bg, `DELETE FROM recipients WHERE id = ?`, v.rid); err != nil {
				return err
			}
			res, err := w.st.insEvent.Exec(now, store.EventCancelled, account, mid, v.addr, sender, "",
				"not sent: its batch was cancelled", "", "", "", 0, tags, meta)
			if err != nil {
				return err
			}
			w.roll.add(now, account, store.EventCancelled, v.addr, "", 0, false)
			if hooked {
				if err := w.fanOut(res, now, account, store.EventCancelled); err != nil {
					return err
				}
			}
		}
		var pending int
		if err := w.st.countPending.QueryRow(mid).Scan(&pending); err != nil {
			return err
		}
		if pending == 0 {
			if err := w.deleteMessage(mid, blob); err != nil {
				return err
			}
		}
	}
	if len(vs) > 0 {
		if _, err := w.conn.ExecContext(bg, `UPDATE batches SET cancelled = cancelled + ? WHERE id = ?`, len(vs), id); err != nil {
			return err
		}
	}
	return nil
}

// CheckBatch implements store.Batches. The state is read first without
// the writer: an active batch, the common case, costs no write.
func (s *Store) CheckBatch(ctx context.Context, messageID, batchID, token string) (string, error) {
	var state string
	err := s.rdb.QueryRowContext(ctx, `SELECT state FROM batches WHERE id = ?`, batchID).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlite store: check batch %s: %w", batchID, err)
	}
	if state == store.BatchActive || token == "" {
		return state, nil
	}
	err = s.w.do(ctx, false, func(w *writer) error {
		if err := w.conn.QueryRowContext(context.Background(), `SELECT state FROM batches WHERE id = ?`, batchID).Scan(&state); err != nil {
			return err
		}
		switch state {
		case store.BatchPaused:
			_, err := w.conn.ExecContext(context.Background(), `UPDATE recipients SET lease_until = ?, lease_owner = ?, lease_token = ?
				WHERE message_id = ? AND lease_token = ? AND status IN ('queued', 'deferred')`,
				nanos(store.HeldUntil), store.HeldOwner, store.HeldToken, messageID, token)
			return err
		case store.BatchCancelled:
			return w.cancelRecipients(batchID, `SELECT id, message_id, address FROM recipients
				WHERE message_id = ? AND lease_token = ? AND status IN ('queued', 'deferred') ORDER BY id`, messageID, token)
		}
		return nil
	})
	if err != nil {
		return "", mapErr(fmt.Errorf("sqlite store: check batch %s: %w", batchID, err))
	}
	return state, nil
}

var _ store.Batches = (*Store)(nil)

// oldestSQL is when the oldest pending message was to leave: its
// received time, or its send time for a scheduled message whose time has
// come (?1 is now), so that a message scheduled days ahead does not look
// late to the queue-age alert and metric. oldestAccountSQL is the same
// for the account ?1 (?2 is now).
const (
	oldestSQL = `SELECT min(o) FROM (SELECT min(received) AS o FROM messages WHERE send_at = 0
		UNION ALL SELECT min(send_at) FROM messages WHERE send_at != 0 AND send_at <= ?1)`
	oldestAccountSQL = `SELECT min(o) FROM (SELECT min(received) AS o FROM messages WHERE account = ?1 AND send_at = 0
		UNION ALL SELECT min(send_at) FROM messages INDEXED BY messages_send_at WHERE send_at != 0 AND send_at <= ?2 AND account = ?1)`
)
