package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// Batches (store.Batches): the batches table, the holds of a paused
// batch's recipients (leases of store.HeldOwner) and the cancellation of
// its pending recipients. A change locks the batch's row, then its
// messages' rows (as Update does before their recipients), in one
// transaction.

const batchCols = `id, account, state, created, updated, messages, recipients, cancelled`

func scanBatch(row pgx.Row) (store.Batch, error) {
	var b store.Batch
	var created, updated, msgs, rcpts, cancelled int64
	if err := row.Scan(&b.ID, &b.Account, &b.State, &created, &updated, &msgs, &rcpts, &cancelled); err != nil {
		return b, err
	}
	b.Created, b.Updated = fromNanos(created), fromNanos(updated)
	b.Messages, b.Recipients, b.Cancelled = int(msgs), int(rcpts), int(cancelled)
	return b, nil
}

// CreateBatch implements store.Batches.
func (s *Store) CreateBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	return s.CreateBatchLimited(ctx, account, id, now, 0)
}

// CreateBatchLimited implements store.Batches. With a limit, the count
// and the insert run under an advisory lock of the account, so concurrent
// creations on any node cannot pass it.
func (s *Store) CreateBatchLimited(ctx context.Context, account, id string, now time.Time, max int) (store.Batch, error) {
	if !store.ValidBatchID(id) {
		return store.Batch{}, fmt.Errorf("postgres store: create batch: invalid batch ID %q", id)
	}
	if account == "" {
		account = store.DefaultAccount
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('herald.batches'), hashtext($1))`, account); err != nil {
				return err
			}
			var exists bool
			var n int
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM batches WHERE id = $1 AND account = $2),
				(SELECT count(*) FROM batches WHERE account = $2 AND created > $3)`, id, account, nanos(now.Add(-24*time.Hour))).Scan(&exists, &n); err != nil {
				return err
			}
			if !exists && n >= max {
				return store.ErrLimit
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO batches (id, account, state, created, updated)
			VALUES ($1, $2, 'active', $3, $3) ON CONFLICT DO NOTHING`, id, account, nanos(now))
		return err
	})
	if errors.Is(err, store.ErrLimit) {
		return store.Batch{}, fmt.Errorf("postgres store: create batch %s: %w", id, err)
	}
	if err != nil {
		return store.Batch{}, mapErr(fmt.Errorf("postgres store: create batch %s: %w", id, err))
	}
	b, err := s.GetBatch(ctx, account, id)
	if errors.Is(err, store.ErrNotFound) {
		return store.Batch{}, fmt.Errorf("postgres store: create batch %s: %w", id, store.ErrExists)
	}
	return b, err
}

// GetBatch implements store.Batches.
func (s *Store) GetBatch(ctx context.Context, account, id string) (store.Batch, error) {
	if account == "" {
		account = store.DefaultAccount
	}
	var b store.Batch
	err := pgx.BeginTxFunc(ctx, s.pool, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
		var err error
		b, err = scanBatch(tx.QueryRow(ctx, `SELECT `+batchCols+` FROM batches WHERE id = $1 AND account = $2`, id, account))
		if errors.Is(err, pgx.ErrNoRows) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT r.status, r.lease_token = $3, count(*)
			FROM messages m JOIN recipients r ON r.message_id = m.id
			WHERE m.batch_id = $1 AND m.account = $2 AND `+pendingSQL+`
			GROUP BY 1, 2`, id, account, store.HeldToken)
		if err != nil {
			return err
		}
		defer rows.Close()
		b.Pending = make(map[store.Status]int)
		for rows.Next() {
			var status string
			var held bool
			var n int64
			if err := rows.Scan(&status, &held, &n); err != nil {
				return err
			}
			b.Pending[store.Status(status)] += int(n)
			if held {
				b.Held += int(n)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return store.Batch{}, fmt.Errorf("postgres store: get batch %s: %w", id, err)
	}
	return b, nil
}

// lockBatch locks batch id of account and its messages, and returns its
// state (ErrNotFound when the account has no such batch).
func lockBatch(ctx context.Context, tx pgx.Tx, account, id string) (string, error) {
	var state string
	err := tx.QueryRow(ctx, `SELECT state FROM batches WHERE id = $1 AND account = $2 FOR UPDATE`, id, account).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("batch %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return "", err
	}
	if _, err := tx.Exec(ctx, `SELECT 1 FROM messages WHERE batch_id = $1 ORDER BY id FOR NO KEY UPDATE`, id); err != nil {
		return "", err
	}
	return state, nil
}

// batchTx runs fn in a transaction, again when it fails on a deadlock or
// serialization failure.
func (s *Store) batchTx(ctx context.Context, fn func(tx pgx.Tx) error) error {
	var err error
	for range maxBatchRetries {
		err = pgx.BeginFunc(ctx, s.pool, fn)
		if !retryable(err) {
			break
		}
	}
	return mapErr(err)
}

// PauseBatch implements store.Batches.
func (s *Store) PauseBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	return s.moveBatch(ctx, account, id, now, "pause", store.BatchActive, store.BatchPaused, false,
		`UPDATE recipients r SET lease_until = $1, lease_owner = $2, lease_token = $3
			FROM messages m WHERE m.batch_id = $4 AND r.message_id = m.id AND `+pendingSQL+` AND r.lease_until < $5`,
		nanos(store.HeldUntil), store.HeldOwner, store.HeldToken, id, nanos(now))
}

// ResumeBatch implements store.Batches. The nodes are woken: the released
// recipients may be due.
func (s *Store) ResumeBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	return s.moveBatch(ctx, account, id, now, "resume", store.BatchPaused, store.BatchActive, true,
		`UPDATE recipients r SET lease_until = 0, lease_owner = '', lease_token = ''
			FROM messages m WHERE m.batch_id = $1 AND r.message_id = m.id AND r.lease_token = $2`, id, store.HeldToken)
}

// moveBatch moves batch id of account from state from to state to (a
// batch already there stays) and runs recipientsSQL with args on its
// recipients, in one transaction, waking the nodes after it with wake; a
// cancelled batch is refused (ErrBatchState).
func (s *Store) moveBatch(ctx context.Context, account, id string, now time.Time, what, from, to string, wake bool, recipientsSQL string, args ...any) (store.Batch, error) {
	if account == "" {
		account = store.DefaultAccount
	}
	err := s.batchTx(ctx, func(tx pgx.Tx) error {
		state, err := lockBatch(ctx, tx, account, id)
		if err != nil {
			return err
		}
		switch state {
		case store.BatchCancelled:
			return fmt.Errorf("batch %s is cancelled: %w", id, store.ErrBatchState)
		case from:
			if _, err := tx.Exec(ctx, `UPDATE batches SET state = $3, updated = $2 WHERE id = $1`, id, nanos(now), to); err != nil {
				return err
			}
		}
		if _, err := tx.Exec(ctx, recipientsSQL, args...); err != nil {
			return err
		}
		if wake {
			return s.notify(ctx, tx)
		}
		return nil
	})
	if err != nil {
		return store.Batch{}, fmt.Errorf("postgres store: %s batch %s: %w", what, id, err)
	}
	return s.GetBatch(ctx, account, id)
}

// CancelBatch implements store.Batches.
func (s *Store) CancelBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error) {
	if account == "" {
		account = store.DefaultAccount
	}
	var gone []string
	err := s.batchTx(ctx, func(tx pgx.Tx) error {
		state, err := lockBatch(ctx, tx, account, id)
		if err != nil {
			return err
		}
		if state != store.BatchCancelled {
			if _, err := tx.Exec(ctx, `UPDATE batches SET state = 'cancelled', updated = $2 WHERE id = $1`, id, nanos(now)); err != nil {
				return err
			}
		}
		gone, err = s.cancelRecipients(ctx, tx, id, `DELETE FROM recipients r USING messages m
			WHERE m.batch_id = $1 AND r.message_id = m.id AND `+pendingSQL+` AND (r.lease_until < $2 OR r.lease_token = $3)
			RETURNING r.message_id, r.address, m.account, m.sender, m.tags, m.metadata`, id, nanos(now), store.HeldToken)
		return err
	})
	if err != nil {
		return store.Batch{}, fmt.Errorf("postgres store: cancel batch %s: %w", id, err)
	}
	for _, mid := range gone {
		s.handoff.Drop(mid)
	}
	return s.GetBatch(ctx, account, id)
}

// cancelRecipients runs q (args), which deletes recipients and returns
// their message ID, address and message's account, sender, tags and
// metadata; it records a cancelled event for each, counts them in batch
// id and deletes the messages left with no pending recipient, whose IDs
// it returns.
func (s *Store) cancelRecipients(ctx context.Context, tx pgx.Tx, id, q string, args ...any) ([]string, error) {
	rows, err := tx.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	var evs []store.Event
	var msgs []string
	seen := make(map[string]bool)
	for rows.Next() {
		var e store.Event
		var tags, meta string
		if err := rows.Scan(&e.MessageID, &e.Recipient, &e.Account, &e.Sender, &tags, &meta); err != nil {
			rows.Close()
			return nil, err
		}
		if e.Tags, e.Metadata, err = decodeTagsMeta(tags, meta); err != nil {
			rows.Close()
			return nil, err
		}
		if !seen[e.MessageID] {
			seen[e.MessageID] = true
			msgs = append(msgs, e.MessageID)
		}
		evs = append(evs, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, nil
	}
	now := time.Now().UnixNano()
	n := len(evs)
	times, attempts, queued := make([]int64, n), make([]int32, n), make([]int64, n)
	types, accounts, msgIDs, rcpts, senders := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	empty, replies, tagss, metas := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	for i, e := range evs {
		tags, meta, err := encodeTagsMeta(e.Tags, e.Metadata)
		if err != nil {
			return nil, err
		}
		times[i], types[i], accounts[i], msgIDs[i], rcpts[i], senders[i] = now, store.EventCancelled, e.Account, e.MessageID, e.Recipient, e.Sender
		replies[i], tagss[i], metas[i] = "not sent: its batch was cancelled", tags, meta
	}
	erows, err := tx.Query(ctx, addEventsSQL, times, types, accounts, msgIDs, rcpts, senders, empty, replies, empty,
		empty, empty, attempts, tagss, metas, queued)
	if err != nil {
		return nil, err
	}
	erows.Close()
	if err := erows.Err(); err != nil {
		return nil, err
	}
	var gone []string
	for _, mid := range msgs {
		var deleted int64
		if err := tx.QueryRow(ctx, deleteDoneSQL, mid).Scan(&deleted); err != nil {
			return nil, err
		}
		if deleted > 0 {
			gone = append(gone, mid)
		}
	}
	if _, err := tx.Exec(ctx, `UPDATE batches SET cancelled = cancelled + $2 WHERE id = $1`, id, n); err != nil {
		return nil, err
	}
	return gone, nil
}

// CheckBatch implements store.Batches. The state is read first outside a
// transaction: an active batch, the common case, costs no write.
func (s *Store) CheckBatch(ctx context.Context, messageID, batchID, token string) (string, error) {
	var state string
	err := s.pool.QueryRow(ctx, `SELECT state FROM batches WHERE id = $1`, batchID).Scan(&state)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("postgres store: check batch %s: %w", batchID, err)
	}
	if state == store.BatchActive || token == "" {
		return state, nil
	}
	var gone []string
	err = s.batchTx(ctx, func(tx pgx.Tx) error {
		if err := tx.QueryRow(ctx, `SELECT state FROM batches WHERE id = $1 FOR SHARE`, batchID).Scan(&state); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, lockMessageSQL, messageID); err != nil {
			return err
		}
		switch state {
		case store.BatchPaused:
			_, err := tx.Exec(ctx, `UPDATE recipients r SET lease_until = $1, lease_owner = $2, lease_token = $3
				WHERE r.message_id = $4 AND r.lease_token = $5 AND `+pendingSQL,
				nanos(store.HeldUntil), store.HeldOwner, store.HeldToken, messageID, token)
			return err
		case store.BatchCancelled:
			var err error
			gone, err = s.cancelRecipients(ctx, tx, batchID, `DELETE FROM recipients r USING messages m
				WHERE r.message_id = $1 AND m.id = r.message_id AND r.lease_token = $2 AND `+pendingSQL+`
				RETURNING r.message_id, r.address, m.account, m.sender, m.tags, m.metadata`, messageID, token)
			return err
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("postgres store: check batch %s: %w", batchID, err)
	}
	for _, mid := range gone {
		s.handoff.Drop(mid)
	}
	return state, nil
}

var _ store.Batches = (*Store)(nil)

// oldestSQL is when the oldest pending message was to leave: its
// received time, or its send time for a scheduled message whose time has
// come ($1 is now), so that a message scheduled days ahead does not look
// late to the queue-age alert and metric. oldestAccountSQL is the same
// for the account $1 ($2 is now).
const (
	oldestSQL = `SELECT min(o) FROM (SELECT min(received) AS o FROM messages WHERE send_at = 0
		UNION ALL SELECT min(send_at) FROM messages WHERE send_at <> 0 AND send_at <= $1) x`
	oldestAccountSQL = `SELECT min(o) FROM (SELECT min(received) AS o FROM messages WHERE account = $1 AND send_at = 0
		UNION ALL SELECT min(send_at) FROM messages WHERE account = $1 AND send_at <> 0 AND send_at <= $2) x`
)
