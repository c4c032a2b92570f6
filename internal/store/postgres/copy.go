package postgres

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// This file implements store.Exporter and store.Importer (herald store
// copy) over the tables of store.CopyTables.

var (
	_ store.Exporter = (*Store)(nil)
	_ store.Importer = (*Store)(nil)
)

// NotCopied names the tables of this store that store.Copy does not copy,
// and why (the tests check that every table is copied or named here).
var NotCopied = map[string]string{
	"schema_version":   "the schema's own version",
	"copied_messages":  "which messages a copy brought in: the destination's own record",
	"alert_states":     "measured again by the nodes of the destination within a minute",
	"alert_history":    "this node's alert transitions: operations history, not state",
	"console_sessions": "console logins: operators log in again on the new store",
	"acme_orders":      "claims of certificate orders in progress: none while the node is stopped",
	"acme_challenges":  "challenge responses of orders in progress: short-lived",
	"rollup_counts":    "statistics: the destination counts what it records from then on (see README, Moving from SQLite)",
	"rollup_latency":   "statistics, as rollup_counts",
	"rollup_dest":      "statistics, as rollup_counts",
	"messages":         "copied as store.MessageTable, with the bodies",
	"recipients":       "copied as store.RecipientTable, with their messages",
	"body_chunks":      "copied with their messages",
	"pending_bodies":   "bodies being received: none while the node is stopped",
	"rate_windows":     "sending-rate windows: short-lived, and the SQLite store keeps them in memory only",
	"destinations":     "delivery destinations' connections and back-off: short-lived, and the SQLite store keeps them in memory only",
}

// columnList returns t's column names, comma-separated.
func columnList(t *store.Table) string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// sqlType is the parameter cast of a column type.
func sqlType(typ store.ColumnType) string {
	switch typ {
	case store.Int:
		return "bigint"
	case store.Bool:
		return "boolean"
	case store.Bytes:
		return "bytea"
	}
	return "text"
}

// params returns "$first::type, ..." for t's columns.
func params(t *store.Table, first int) string {
	parts := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		parts[i] = "$" + strconv.Itoa(first+i) + "::" + sqlType(c.Type)
	}
	return strings.Join(parts, ", ")
}

// keyMatch returns "k1 = $i AND ..." with each key column's parameter at
// its position in t.Columns (from first).
func keyMatch(t *store.Table, first int) string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		j := t.Column(k)
		parts[i] = fmt.Sprintf("%s = $%d::%s", k, first+j, sqlType(t.Columns[j].Type))
	}
	return strings.Join(parts, " AND ")
}

// keyOnlyMatch returns "k1 = $1 AND k2 = $2" for key values alone.
func keyOnlyMatch(t *store.Table) string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		parts[i] = fmt.Sprintf("%s = $%d::%s", k, i+1, sqlType(t.Columns[t.Column(k)].Type))
	}
	return strings.Join(parts, " AND ")
}

// scanRow reads one row of t's columns.
func scanRow(sc pgx.Row, t *store.Table) (store.Row, error) {
	ptrs := make([]any, len(t.Columns))
	for i, c := range t.Columns {
		switch c.Type {
		case store.Int:
			ptrs[i] = new(int64)
		case store.Bool:
			ptrs[i] = new(bool)
		case store.Bytes:
			ptrs[i] = new([]byte)
		default:
			ptrs[i] = new(string)
		}
	}
	if err := sc.Scan(ptrs...); err != nil {
		return nil, err
	}
	row := make(store.Row, len(ptrs))
	for i, c := range t.Columns {
		if c.Reset != nil {
			row[i] = c.Reset
			continue
		}
		switch p := ptrs[i].(type) {
		case *int64:
			row[i] = *p
		case *bool:
			row[i] = *p
		case *[]byte:
			if *p == nil {
				*p = []byte{}
			}
			row[i] = *p
		case *string:
			row[i] = *p
		}
	}
	return row, nil
}

// ExportRows returns up to limit rows of t after the key values after,
// in key order.
func (s *Store) ExportRows(ctx context.Context, t *store.Table, after store.Row, limit int) ([]store.Row, error) {
	keys := strings.Join(t.Key, ", ")
	q := `SELECT ` + columnList(t) + ` FROM ` + t.Name
	args := []any{limit}
	if after != nil {
		ps := make([]string, len(t.Key))
		for i, k := range t.Key {
			ps[i] = fmt.Sprintf("$%d::%s", i+2, sqlType(t.Columns[t.Column(k)].Type))
		}
		q += ` WHERE (` + keys + `) > (` + strings.Join(ps, ", ") + `)`
		args = append(args, after...)
	}
	q += ` ORDER BY ` + keys + ` LIMIT $1`
	return s.queryRows(ctx, t, q, args...)
}

// ExportRecipients returns the recipient rows of message id.
func (s *Store) ExportRecipients(ctx context.Context, id string) ([]store.Row, error) {
	t := store.RecipientTable
	return s.queryRows(ctx, t, `SELECT `+columnList(t)+` FROM recipients WHERE message_id = $1 ORDER BY id`, id)
}

func (s *Store) queryRows(ctx context.Context, t *store.Table, q string, args ...any) ([]store.Row, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres store: export %s: %w", t.Name, err)
	}
	defer rows.Close()
	var out []store.Row
	for rows.Next() {
		r, err := scanRow(rows, t)
		if err != nil {
			return nil, fmt.Errorf("postgres store: export %s: %w", t.Name, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres store: export %s: %w", t.Name, err)
	}
	return out, nil
}

// LookupRows returns the rows of t under keys (nil where there is none),
// in one round trip.
func (s *Store) LookupRows(ctx context.Context, t *store.Table, keys []store.Row) ([]store.Row, error) {
	q := `SELECT ` + columnList(t) + ` FROM ` + t.Name + ` WHERE ` + keyOnlyMatch(t)
	var b pgx.Batch
	for _, k := range keys {
		b.Queue(q, k...)
	}
	br := s.pool.SendBatch(ctx, &b)
	defer br.Close()
	out := make([]store.Row, len(keys))
	for i := range keys {
		r, err := scanRow(br.QueryRow(), t)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("postgres store: look up %s: %w", t.Name, err)
		default:
			out[i] = r
		}
	}
	return out, nil
}

// ImportRows inserts the rows whose key is absent and, with replace,
// replaces the others, in one transaction.
func (s *Store) ImportRows(ctx context.Context, t *store.Table, rows []store.Row, replace bool) (inserted, replaced int, err error) {
	ins := `INSERT INTO ` + t.Name + ` (` + columnList(t) + `) SELECT ` + params(t, 1) +
		` WHERE NOT EXISTS (SELECT 1 FROM ` + t.Name + ` WHERE ` + keyMatch(t, 1) + `)`
	del := `DELETE FROM ` + t.Name + ` WHERE ` + keyOnlyMatch(t)
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		inserted, replaced = 0, 0
		var b pgx.Batch
		for _, r := range rows {
			if replace {
				b.Queue(del, t.KeyOf(r)...)
			}
			b.Queue(ins, r...)
		}
		br := tx.SendBatch(ctx, &b)
		for range rows {
			deleted := int64(0)
			if replace {
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return err
				}
				deleted = tag.RowsAffected()
			}
			tag, err := br.Exec()
			if err != nil {
				br.Close()
				return err
			}
			switch {
			case deleted > 0:
				replaced++
			case tag.RowsAffected() > 0:
				inserted++
			}
		}
		if err := br.Close(); err != nil {
			return err
		}
		if t.Serial != "" && inserted+replaced > 0 {
			// Past the copied IDs, never backwards (nextval may be
			// ahead of max: IDs taken by uncommitted inserts).
			seq := fmt.Sprintf("pg_get_serial_sequence('%s', '%s')", t.Name, t.Serial)
			if _, err := tx.Exec(ctx, `SELECT setval(`+seq+`, greatest(nextval(`+seq+`), (SELECT max(`+t.Serial+`) FROM `+t.Name+`)))`); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return 0, 0, mapErr(fmt.Errorf("postgres store: import %s: %w", t.Name, err))
	}
	s.forgetDomains()
	s.reads.accounts.Forget()
	s.reads.dkim.Forget()
	return inserted, replaced, nil
}

// copiedSQL counts a message in the queue or among those copied before.
const copiedSQL = `SELECT (SELECT count(*) FROM messages WHERE id = $1) + (SELECT count(*) FROM copied_messages WHERE id = $1)`

// importMessageSQL stores a copied message in one statement (one round
// trip): the message row unless the store has it or copied it before,
// then, only if it did, its recipients (one array per column), its
// record in copied_messages, the last chunk of a chunked body and the end
// of the body's pending state. It returns how many messages it stored.
var importMessageSQL = func() string {
	mt, rt := store.MessageTable, store.RecipientTable
	k := len(mt.Columns)
	p := k + 1 // first parameter after the message's columns
	bodyID, inline, tail, seq, now := p, p+1, p+2, p+3, p+4
	arrays, names := make([]string, len(rt.Columns)), make([]string, len(rt.Columns))
	for i, c := range rt.Columns {
		arrays[i] = fmt.Sprintf("$%d::%s[]", p+5+i, sqlType(c.Type))
		names[i] = "c" + strconv.Itoa(i)
	}
	q := `WITH m AS (
	INSERT INTO messages (` + columnList(mt) + `, body_id, body)
	SELECT ` + params(mt, 1) + fmt.Sprintf(`, $%d::bigint, $%d::bytea`, bodyID, inline) + `
	WHERE NOT EXISTS (SELECT 1 FROM copied_messages WHERE id = $1::text)
	ON CONFLICT DO NOTHING
	RETURNING id
), r AS (
	INSERT INTO recipients (` + columnList(rt) + `)
	SELECT ` + strings.Join(names, ", ") + ` FROM m, unnest(` + strings.Join(arrays, ", ") + `) WITH ORDINALITY
		AS u(` + strings.Join(names, ", ") + `, ord)
	ORDER BY ord
), c AS (
	INSERT INTO copied_messages (id, copied) SELECT id, ` + fmt.Sprintf("$%d::bigint", now) + ` FROM m
), ch AS (
	INSERT INTO body_chunks (body_id, seq, data)
	SELECT ` + fmt.Sprintf("$%d::bigint, $%d::integer, $%d::bytea", bodyID, seq, tail) + ` FROM m WHERE ` + fmt.Sprintf("$%d::bytea", tail) + ` IS NOT NULL
), pb AS (
	DELETE FROM pending_bodies WHERE id = ` + fmt.Sprintf("$%d::bigint", bodyID) + ` AND EXISTS (SELECT 1 FROM m)
)
SELECT count(*) FROM m`
	return q
}()

// ImportMessage stores a copied message, its recipients and its body; see
// store.Importer. The body is written as an enqueued one is: inline up to
// InlineMax, else in chunks as it streams in, a chunk at a time in memory.
// The message is committed asynchronously (no WAL flush per message: the
// copy of a large queue would be bound by them); FinishImport's
// synchronous commit makes them all durable. A message lost in a database
// crash before that goes with its copied_messages row, so the copy run
// again copies it again.
func (s *Store) ImportMessage(ctx context.Context, msg store.Row, rcpts []store.Row, src io.Reader) (bool, error) {
	mt, rt := store.MessageTable, store.RecipientTable
	id, _ := msg[mt.Column("id")].(string)
	if !validID(id) {
		return false, fmt.Errorf("postgres store: import: invalid queue ID %q", id)
	}
	var n int64
	if err := s.pool.QueryRow(ctx, copiedSQL, id).Scan(&n); err != nil {
		return false, fmt.Errorf("postgres store: import %s: %w", id, err)
	}
	if n > 0 {
		return false, nil // the body is not read
	}
	b, err := s.NewBody()
	if err != nil {
		return false, err
	}
	bd := b.(*body)
	if _, err := io.Copy(bd, src); err != nil {
		bd.Abort()
		return false, fmt.Errorf("postgres store: import %s: body: %w", id, err)
	}
	if bd.err != nil {
		bd.Abort()
		return false, bd.err
	}
	bd.done = true
	defer bd.release()
	var inline, tail []byte
	var bodyID *int64
	if bd.chunked {
		bodyID, tail = &bd.id, bd.buf
		if len(tail) == 0 {
			tail = nil
		}
	} else {
		inline = bd.buf
		if inline == nil {
			inline = []byte{}
		}
	}
	args := append([]any{}, msg...)
	args = append(args, bodyID, inline, tail, bd.seq, time.Now().UnixNano())
	for j, c := range rt.Columns {
		args = append(args, columnArray(rcpts, j, c.Type))
	}
	var stored int64
	var batch pgx.Batch
	batch.Queue(`BEGIN`)
	batch.Queue(`SET LOCAL synchronous_commit = off`)
	batch.Queue(importMessageSQL, args...).QueryRow(func(row pgx.Row) error { return row.Scan(&stored) })
	batch.Queue(`COMMIT`)
	err = s.pool.SendBatch(ctx, &batch).Close()
	if err != nil || stored == 0 {
		if bodyID != nil && bd.seq > 0 {
			s.deleteBody(*bodyID)
		}
	}
	if err != nil {
		return false, mapErr(fmt.Errorf("postgres store: import %s: %w", id, err))
	}
	return stored > 0, nil
}

// columnArray returns column j of rows as a typed slice, for unnest.
func columnArray(rows []store.Row, j int, typ store.ColumnType) any {
	switch typ {
	case store.Int:
		a := make([]int64, len(rows))
		for i, r := range rows {
			a[i] = r[j].(int64)
		}
		return a
	case store.Bool:
		a := make([]bool, len(rows))
		for i, r := range rows {
			a[i] = r[j].(bool)
		}
		return a
	case store.Bytes:
		a := make([][]byte, len(rows))
		for i, r := range rows {
			a[i] = r[j].([]byte)
		}
		return a
	}
	a := make([]string, len(rows))
	for i, r := range rows {
		a[i] = r[j].(string)
	}
	return a
}

// FinishImport makes everything imported durable (one synchronous commit
// flushes the WAL past the messages committed asynchronously) and wakes
// the nodes running on the store, which may deliver the messages.
func (s *Store) FinishImport(ctx context.Context) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		// An ID makes the commit write (and flush) a commit record.
		if _, err := tx.Exec(ctx, `SELECT txid_current()`); err != nil {
			return err
		}
		return s.notify(ctx, tx)
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: finish import: %w", err))
	}
	return nil
}
