package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Deleting an account happens in two parts. The first transaction checks
// what the account still owns, hands domains and users back to the default
// account (force), deletes the account row and the small per-account tables
// and records the ID in account_purges. The purge then deletes the rows
// there may be many of (queued messages, events with their webhook
// deliveries, suppressions, idempotency keys) a chunk per transaction, so
// that the writer, which every SMTP 250 waits for, is never held for long;
// its last transaction removes the account_purges row, which frees the ID.

// purgeChunk bounds the rows of one kind one purge transaction deletes.
const purgeChunk = 2000

// purgeMessageChunk bounds the queued messages one purge transaction
// deletes (each has recipients and possibly a blob file).
const purgeMessageChunk = 500

// accountOwnRows delete the per-account rows that are few: run when the
// account is deleted and again when its purge ends, since a key, webhook or
// route may have been added for the ID meanwhile (AddAPIKey does not check
// that the account exists).
var accountOwnRows = []string{
	`DELETE FROM api_keys WHERE account = ?`,
	`DELETE FROM webhooks WHERE account = ?`, // their deliveries go with the events
	`DELETE FROM routes WHERE account = ?`,
	`DELETE FROM templates WHERE account = ?`, // their versions are purged in chunks
	`DELETE FROM unsubscribe_groups WHERE account = ?`,
	// Its rollups (those of all accounts keep counting its events).
	`DELETE FROM rollup_counts WHERE res IN (60, 3600, 86400) AND account = ?`,
	`DELETE FROM rollup_latency WHERE res IN (60, 3600, 86400) AND account = ?`,
	`DELETE FROM rollup_dest WHERE res IN (60, 3600, 86400) AND account = ?`,
}

// DeleteAccount deletes an account; see store.Platform. Without force it
// refuses with a *store.AccountInUseError while the account owns domains
// or users or has queued messages.
func (s *Store) DeleteAccount(ctx context.Context, id string, force bool) (store.AccountDeletion, error) {
	defer s.reads.accounts.Forget()
	defer s.handoff.Clear() // its queued mail may be deleted
	var del store.AccountDeletion
	if id == store.DefaultAccount {
		return del, fmt.Errorf("sqlite store: delete account %s: the default account cannot be deleted: %w", id, store.ErrExists)
	}
	defer s.forgetDomains() // its domains may go back to the default account
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		del = store.AccountDeletion{}
		var exists int
		if err := w.conn.QueryRowContext(bg, `SELECT count(*) FROM accounts WHERE id = ?`, id).Scan(&exists); err != nil {
			return err
		}
		if exists == 0 {
			return clean(store.ErrNotFound)
		}
		var messages int
		if err := w.conn.QueryRowContext(bg, `SELECT (SELECT count(*) FROM domains WHERE account = ?),
			(SELECT count(*) FROM users WHERE account = ?),
			(SELECT count(*) FROM messages WHERE account = ? AND account != 'default')`, id, id, id).Scan(&del.Domains, &del.Users, &messages); err != nil {
			return err
		}
		if !force && (del.Domains > 0 || del.Users > 0 || messages > 0) {
			return clean(&store.AccountInUseError{Account: id, Domains: del.Domains, Users: del.Users, Messages: messages})
		}
		for _, q := range append([]string{
			`UPDATE domains SET account = 'default' WHERE account = ?`,
			`UPDATE users SET account = 'default' WHERE account = ?`,
			`DELETE FROM accounts WHERE id = ?`,
		}, accountOwnRows...) {
			if _, err := w.conn.ExecContext(bg, q, id); err != nil {
				return err
			}
		}
		w.hooks.valid = false
		_, err := w.conn.ExecContext(bg, `INSERT INTO account_purges (id, started) VALUES (?, ?) ON CONFLICT DO NOTHING`, id, time.Now().UnixNano())
		return err
	})
	if err != nil {
		return store.AccountDeletion{}, fmt.Errorf("sqlite store: delete account %s: %w", id, err)
	}
	s.touches.reset()
	// The account is gone and its ID reserved: whatever stops the purge
	// now, PruneEvents finishes it later.
	msgs, evs, err := s.purgeAccount(ctx, id)
	del.Messages, del.Events = msgs, evs
	if err != nil {
		s.log.Warn("purge of a deleted account cut short; it resumes with the next event prune", "account", id, "err", err)
		del.Pending = true
	}
	return del, nil
}

// purgeAccount deletes the remaining rows of deleted account id a chunk per
// transaction and finally its account_purges row. It returns how many
// queued messages and events it deleted.
func (s *Store) purgeAccount(ctx context.Context, id string) (messages, events int, err error) {
	for {
		var done bool
		var m, e int
		err := s.w.do(ctx, false, func(w *writer) error {
			var err error
			m, e, done, err = w.purgeChunk(id)
			return err
		})
		if err != nil {
			return messages, events, fmt.Errorf("sqlite store: purge account %s: %w", id, err)
		}
		messages += m
		events += e
		if done {
			return messages, events, nil
		}
	}
}

// purgeChunk deletes one chunk of the first kind of rows deleted account id
// still has. When none is left it ends the purge: the newest event of the
// store, kept so that event IDs never go back, is stripped of everything
// but its ID, time and type if it is the account's, and the account_purges
// row is deleted.
func (w *writer) purgeChunk(id string) (messages, events int, done bool, err error) {
	bg := context.Background()
	// Queued messages (force, or enqueued while the account was deleted).
	rows, err := w.conn.QueryContext(bg, `SELECT id, blob FROM messages WHERE account = ? AND account != 'default' LIMIT ?`, id, purgeMessageChunk)
	if err != nil {
		return 0, 0, false, err
	}
	type msg struct {
		id   string
		blob bool
	}
	var msgs []msg
	for rows.Next() {
		var m msg
		if err := rows.Scan(&m.id, &m.blob); err != nil {
			rows.Close()
			return 0, 0, false, err
		}
		msgs = append(msgs, m)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, 0, false, err
	}
	for _, m := range msgs {
		if err := w.deleteMessage(m.id, m.blob); err != nil {
			return 0, 0, false, err
		}
	}
	if len(msgs) > 0 {
		return len(msgs), 0, false, nil
	}

	// Events, with their webhook deliveries and attempt logs, but not the
	// newest event of the store.
	ids, err := w.int64s(`SELECT id FROM events WHERE account = ? AND id < (SELECT max(id) FROM events) ORDER BY id LIMIT ?`, id, purgeChunk)
	if err != nil {
		return 0, 0, false, err
	}
	if len(ids) > 0 {
		n, err := w.deleteEvents(ids)
		return 0, n, false, err
	}

	// Suppressions and idempotency keys (WITHOUT ROWID: by primary key).
	for _, q := range []string{
		`DELETE FROM suppressions WHERE account = ? AND address IN (SELECT address FROM suppressions WHERE account = ? LIMIT ?)`,
		`DELETE FROM idempotency WHERE account = ? AND key IN (SELECT key FROM idempotency WHERE account = ? LIMIT ?)`,
		`DELETE FROM template_versions WHERE account = ? AND rowid IN (SELECT rowid FROM template_versions WHERE account = ? LIMIT ?)`,
		`DELETE FROM batches WHERE account = ? AND id IN (SELECT id FROM batches WHERE account = ? LIMIT ?)`,
	} {
		res, err := w.conn.ExecContext(bg, q, id, id, purgeChunk)
		if err != nil {
			return 0, 0, false, err
		}
		if n, err := res.RowsAffected(); err != nil {
			return 0, 0, false, err
		} else if n > 0 {
			return 0, 0, false, nil
		}
	}

	// The end.
	newest, err := w.int64s(`SELECT id FROM events WHERE id = (SELECT max(id) FROM events) AND account = ?`, id)
	if err != nil {
		return 0, 0, false, err
	}
	if len(newest) > 0 {
		if _, err := w.deleteDeliveries(newest); err != nil {
			return 0, 0, false, err
		}
		if _, err := w.conn.ExecContext(bg, `UPDATE events SET account = '', message_id = '', recipient = '', sender = '',
			remote_mta = '', reply = '', enhanced = '', tls = '', bounce = '', attempt = 0, tags = '', metadata = ''
			WHERE id = ?`, newest[0]); err != nil {
			return 0, 0, false, err
		}
		events = 1
	}
	for _, q := range append(accountOwnRows, `DELETE FROM account_purges WHERE id = ?`) {
		if _, err := w.conn.ExecContext(bg, q, id); err != nil {
			return 0, 0, false, err
		}
	}
	w.hooks.valid = false
	return 0, events, true, nil
}

// int64s runs a query returning one integer column inside the writer.
func (w *writer) int64s(q string, args ...any) ([]int64, error) {
	rows, err := w.conn.QueryContext(context.Background(), q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// deleteDeliveries deletes the webhook deliveries of the events ids, with
// their attempt logs.
func (w *writer) deleteDeliveries(ids []int64) (int, error) {
	list, err := idList(ids)
	if err != nil {
		return 0, err
	}
	bg := context.Background()
	if _, err := w.conn.ExecContext(bg, `DELETE FROM webhook_attempts WHERE delivery_id IN
		(SELECT id FROM webhook_deliveries WHERE event_id IN (SELECT value FROM json_each(?)))`, list); err != nil {
		return 0, err
	}
	res, err := w.conn.ExecContext(bg, `DELETE FROM webhook_deliveries WHERE event_id IN (SELECT value FROM json_each(?))`, list)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// deleteEvents deletes the events ids with their webhook deliveries and
// attempt logs and returns how many events it deleted.
func (w *writer) deleteEvents(ids []int64) (int, error) {
	if _, err := w.deleteDeliveries(ids); err != nil {
		return 0, err
	}
	list, err := idList(ids)
	if err != nil {
		return 0, err
	}
	res, err := w.conn.ExecContext(context.Background(), `DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))`, list)
	if err != nil {
		return 0, err
	}
	n, err := res.RowsAffected()
	return int(n), err
}

// resumePurges finishes the purges of deleted accounts that were cut
// short.
func (s *Store) resumePurges(ctx context.Context) error {
	ids, err := queryList(ctx, s, "list account purges", scanString, `SELECT id FROM account_purges ORDER BY id`)
	if err != nil {
		return err
	}
	for _, id := range ids {
		m, e, err := s.purgeAccount(ctx, id)
		if err != nil {
			return err
		}
		s.log.Info("finished the purge of a deleted account", "account", id, "messages", m, "events", e)
	}
	return nil
}

// idList encodes IDs as a JSON array for json_each.
func idList(ids []int64) (string, error) {
	b, err := json.Marshal(ids)
	return string(b), err
}
