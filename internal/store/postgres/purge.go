package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// Deleting an account happens in two parts, as in the SQLite store. The
// first transaction checks what the account still owns, hands domains and
// users back to the default account (force), deletes the account row and
// the small per-account tables and records the ID in account_purges. The
// purge then deletes the rows there may be many of (queued messages,
// events with their webhook deliveries, suppressions, idempotency keys) a
// chunk per transaction, so that no transaction holds locks for long; its
// last transaction removes the account_purges row, which frees the ID.

// purgeChunk bounds the rows of one kind one purge transaction deletes.
const purgeChunk = 2000

// purgeMessageChunk bounds the queued messages one purge transaction
// deletes (each has recipients and possibly body chunks).
const purgeMessageChunk = 500

// accountOwnRows delete the per-account rows that are few: run when the
// account is deleted and again when its purge ends, since a key, webhook or
// route may have been added for the ID meanwhile (AddAPIKey does not check
// that the account exists).
var accountOwnRows = []string{
	`DELETE FROM api_keys WHERE account = $1`,
	`DELETE FROM webhooks WHERE account = $1`, // their deliveries go with the events
	`DELETE FROM routes WHERE account = $1`,
	`DELETE FROM templates WHERE account = $1`, // their versions are purged in chunks
	`DELETE FROM unsubscribe_groups WHERE account = $1`,
	// Its rollups (those of all accounts keep counting its events).
	`DELETE FROM rollup_counts WHERE res IN (60, 3600, 86400) AND account = $1`,
	`DELETE FROM rollup_latency WHERE res IN (60, 3600, 86400) AND account = $1`,
	`DELETE FROM rollup_dest WHERE res IN (60, 3600, 86400) AND account = $1`,
}

// DeleteAccount deletes an account; see store.Platform. Without force it
// refuses with a *store.AccountInUseError while the account owns domains
// or users or has queued messages.
func (s *Store) DeleteAccount(ctx context.Context, id string, force bool) (store.AccountDeletion, error) {
	var del store.AccountDeletion
	if id == store.DefaultAccount {
		return del, fmt.Errorf("postgres store: delete account %s: the default account cannot be deleted: %w", id, store.ErrExists)
	}
	defer s.forgetDomains() // its domains may go back to the default account
	defer s.reads.accounts.Forget()
	defer s.handoff.Clear() // its queued mail is deleted
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		del = store.AccountDeletion{}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE)`, id).Scan(&exists); err != nil {
			return err
		}
		if !exists {
			return store.ErrNotFound
		}
		var messages int
		if err := tx.QueryRow(ctx, `SELECT (SELECT count(*) FROM domains WHERE account = $1),
			(SELECT count(*) FROM users WHERE account = $1),
			(SELECT count(*) FROM messages WHERE account = $1 AND account <> 'default')`, id).Scan(&del.Domains, &del.Users, &messages); err != nil {
			return err
		}
		if !force && (del.Domains > 0 || del.Users > 0 || messages > 0) {
			return &store.AccountInUseError{Account: id, Domains: del.Domains, Users: del.Users, Messages: messages}
		}
		for _, q := range append([]string{
			`UPDATE domains SET account = 'default' WHERE account = $1`,
			`UPDATE users SET account = 'default' WHERE account = $1`,
			`DELETE FROM accounts WHERE id = $1`,
		}, accountOwnRows...) {
			if _, err := tx.Exec(ctx, q, id); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO account_purges (id, started) VALUES ($1, $2) ON CONFLICT DO NOTHING`, id, time.Now().UnixNano())
		return err
	})
	if err != nil {
		return store.AccountDeletion{}, mapErr(fmt.Errorf("postgres store: delete account %s: %w", id, err))
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
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			var err error
			m, e, done, err = s.purgeChunk(ctx, tx, id)
			return err
		})
		if err != nil {
			return messages, events, mapErr(fmt.Errorf("postgres store: purge account %s: %w", id, err))
		}
		messages += m
		events += e
		if done {
			return messages, events, nil
		}
	}
}

// purgeChunk deletes one chunk of the first kind of rows deleted account id
// still has. When none is left it ends the purge.
func (s *Store) purgeChunk(ctx context.Context, tx pgx.Tx, id string) (messages, events int, done bool, err error) {
	// Queued messages (force, or enqueued while the account was deleted).
	rows, err := tx.Query(ctx, `SELECT id FROM messages WHERE account = $1 AND account <> 'default' LIMIT $2`, id, purgeMessageChunk)
	if err != nil {
		return 0, 0, false, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return 0, 0, false, err
	}
	for _, m := range ids {
		var n int64
		if err := tx.QueryRow(ctx, deleteMessageSQL, m).Scan(&n); err != nil {
			return 0, 0, false, err
		}
	}
	if len(ids) > 0 {
		return len(ids), 0, false, nil
	}

	// Events, with their webhook deliveries and attempt logs.
	rows, err = tx.Query(ctx, `SELECT id FROM events WHERE account = $1 ORDER BY id LIMIT $2`, id, purgeChunk)
	if err != nil {
		return 0, 0, false, err
	}
	evIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return 0, 0, false, err
	}
	if len(evIDs) > 0 {
		var n int64
		err := tx.QueryRow(ctx, deleteEventsSQL, evIDs).Scan(&n)
		return 0, int(n), false, err
	}

	// Suppressions and idempotency keys.
	for _, q := range []string{
		`DELETE FROM suppressions WHERE account = $1 AND address IN (SELECT address FROM suppressions WHERE account = $1 LIMIT $2)`,
		`DELETE FROM idempotency WHERE account = $1 AND key IN (SELECT key FROM idempotency WHERE account = $1 LIMIT $2)`,
		`DELETE FROM template_versions WHERE account = $1 AND (template_id, version) IN (SELECT template_id, version FROM template_versions WHERE account = $1 LIMIT $2)`,
		`DELETE FROM batches WHERE account = $1 AND id IN (SELECT id FROM batches WHERE account = $1 LIMIT $2)`,
	} {
		tag, err := tx.Exec(ctx, q, id, purgeChunk)
		if err != nil {
			return 0, 0, false, err
		}
		if tag.RowsAffected() > 0 {
			return 0, 0, false, nil
		}
	}

	// The end.
	for _, q := range append(accountOwnRows, `DELETE FROM account_purges WHERE id = $1`) {
		if _, err := tx.Exec(ctx, q, id); err != nil {
			return 0, 0, false, err
		}
	}
	return 0, 0, true, nil
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

// errNoRows reports whether err is pgx.ErrNoRows.
func errNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
