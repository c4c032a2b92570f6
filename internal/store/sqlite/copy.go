package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

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
}

// columnList returns t's column names, comma-separated.
func columnList(t *store.Table) string {
	names := make([]string, len(t.Columns))
	for i, c := range t.Columns {
		names[i] = c.Name
	}
	return strings.Join(names, ", ")
}

// keyMatch returns "k1 = ? AND k2 = ?" for t's key.
func keyMatch(t *store.Table) string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		parts[i] = k + " = ?"
	}
	return strings.Join(parts, " AND ")
}

// scanRow reads one row of t's columns, converting to the column types.
func scanRow(sc interface{ Scan(...any) error }, t *store.Table) (store.Row, error) {
	raw := make([]any, len(t.Columns))
	ptrs := make([]any, len(raw))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	if err := sc.Scan(ptrs...); err != nil {
		return nil, err
	}
	row := make(store.Row, len(raw))
	for i, c := range t.Columns {
		if c.Reset != nil {
			row[i] = c.Reset
			continue
		}
		v, err := fromSQL(raw[i], c.Type)
		if err != nil {
			return nil, fmt.Errorf("%s.%s: %w", t.Name, c.Name, err)
		}
		row[i] = v
	}
	return row, nil
}

// fromSQL converts a value SQLite returned to a column type's.
func fromSQL(v any, typ store.ColumnType) (any, error) {
	switch typ {
	case store.Text:
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		case nil:
			return "", nil
		}
	case store.Int:
		if x, ok := v.(int64); ok {
			return x, nil
		}
	case store.Bool:
		if x, ok := v.(int64); ok {
			return x != 0, nil
		}
	case store.Bytes:
		switch x := v.(type) {
		case []byte:
			return append([]byte{}, x...), nil
		case string:
			return []byte(x), nil
		case nil:
			return []byte{}, nil
		}
	}
	return nil, fmt.Errorf("unexpected value %T", v)
}

// toSQL converts a row value to what SQLite stores.
func toSQL(v any) any {
	if b, ok := v.(bool); ok {
		return b2i(b)
	}
	return v
}

// ExportRows returns up to limit rows of t after the key values after,
// in key order.
func (s *Store) ExportRows(ctx context.Context, t *store.Table, after store.Row, limit int) ([]store.Row, error) {
	keys := strings.Join(t.Key, ", ")
	q := `SELECT ` + columnList(t) + ` FROM ` + t.Name
	var args []any
	if after != nil {
		q += ` WHERE (` + keys + `) > (` + strings.TrimSuffix(strings.Repeat("?, ", len(t.Key)), ", ") + `)`
		for _, v := range after {
			args = append(args, toSQL(v))
		}
	}
	q += ` ORDER BY ` + keys + ` LIMIT ?`
	args = append(args, limit)
	return s.queryRows(ctx, t, q, args...)
}

// ExportRecipients returns the recipient rows of message id.
func (s *Store) ExportRecipients(ctx context.Context, id string) ([]store.Row, error) {
	t := store.RecipientTable
	return s.queryRows(ctx, t, `SELECT `+columnList(t)+` FROM recipients WHERE message_id = ? ORDER BY id`, id)
}

func (s *Store) queryRows(ctx context.Context, t *store.Table, q string, args ...any) ([]store.Row, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	rows, err := s.rdb.DB.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: export %s: %w", t.Name, err)
	}
	defer rows.Close()
	var out []store.Row
	for rows.Next() {
		r, err := scanRow(rows, t)
		if err != nil {
			return nil, fmt.Errorf("sqlite store: export %s: %w", t.Name, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: export %s: %w", t.Name, err)
	}
	return out, nil
}

// LookupRows returns the rows of t under keys (nil where there is none).
func (s *Store) LookupRows(ctx context.Context, t *store.Table, keys []store.Row) ([]store.Row, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	q := `SELECT ` + columnList(t) + ` FROM ` + t.Name + ` WHERE ` + keyMatch(t)
	out := make([]store.Row, len(keys))
	for i, k := range keys {
		args := make([]any, len(k))
		for j, v := range k {
			args[j] = toSQL(v)
		}
		// Reset columns read as the source's would be exported.
		r, err := scanRow(s.rdb.DB.QueryRowContext(ctx, q, args...), t)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return nil, fmt.Errorf("sqlite store: look up %s: %w", t.Name, err)
		default:
			out[i] = r
		}
	}
	return out, nil
}

// ImportRows inserts the rows whose key is absent and, with replace,
// replaces the others, in one transaction.
func (s *Store) ImportRows(ctx context.Context, t *store.Table, rows []store.Row, replace bool) (inserted, replaced int, err error) {
	defer s.reads.accounts.Forget()
	defer s.reads.dkim.Forget()
	ins := `INSERT INTO ` + t.Name + ` (` + columnList(t) + `) VALUES (` +
		strings.TrimSuffix(strings.Repeat("?, ", len(t.Columns)), ", ") + `)`
	exists := `SELECT count(*) FROM ` + t.Name + ` WHERE ` + keyMatch(t)
	del := `DELETE FROM ` + t.Name + ` WHERE ` + keyMatch(t)
	err = s.w.do(ctx, false, func(w *writer) error {
		inserted, replaced = 0, 0
		bg := context.Background()
		for _, r := range rows {
			key := t.KeyOf(r)
			kargs := make([]any, len(key))
			for j, v := range key {
				kargs[j] = toSQL(v)
			}
			var n int
			if err := w.conn.QueryRowContext(bg, exists, kargs...).Scan(&n); err != nil {
				return err
			}
			if n > 0 && !replace {
				continue
			}
			if n > 0 {
				if _, err := w.conn.ExecContext(bg, del, kargs...); err != nil {
					return err
				}
			}
			args := make([]any, len(r))
			for j, v := range r {
				args[j] = toSQL(v)
			}
			if _, err := w.conn.ExecContext(bg, ins, args...); err != nil {
				return err
			}
			if n > 0 {
				replaced++
			} else {
				inserted++
			}
		}
		w.hooks.valid = false
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite store: import %s: %w", t.Name, err)
	}
	s.forgetDomains()
	return inserted, replaced, nil
}

// errCopied marks a message found in the store during its import.
var errCopied = errors.New("message present")

// ImportMessage stores a copied message, its recipients and its body; see
// store.Importer. A body larger than InlineMax goes to a blob file as an
// enqueued one does.
func (s *Store) ImportMessage(ctx context.Context, msg store.Row, rcpts []store.Row, src io.Reader) (bool, error) {
	mt := store.MessageTable
	id, _ := msg[mt.Column("id")].(string)
	if !validID(id) {
		return false, fmt.Errorf("sqlite store: import: invalid queue ID %q", id)
	}
	if s.closed.Load() {
		return false, ErrClosed
	}
	var n int
	if err := s.rdb.DB.QueryRowContext(ctx, `SELECT (SELECT count(*) FROM messages WHERE id = ?1) + (SELECT count(*) FROM copied_messages WHERE id = ?1)`, id).Scan(&n); err != nil {
		return false, fmt.Errorf("sqlite store: import %s: %w", id, err)
	}
	if n > 0 {
		return false, nil
	}
	b, err := s.NewBody()
	if err != nil {
		return false, err
	}
	bd := b.(*body)
	if _, err := io.Copy(bd, src); err != nil {
		bd.Abort()
		return false, fmt.Errorf("sqlite store: import %s: body: %w", id, err)
	}
	bd.done = true
	bd.settle()
	defer bd.release()
	var blobPath string
	var inline []byte
	if bd.f != nil {
		p, err := bd.commitBlob(id)
		if err != nil {
			bd.removeTemp()
			return false, mapErr(fmt.Errorf("sqlite store: import %s: write blob: %w", id, err))
		}
		blobPath = p
	} else {
		inline = bd.buf
		if inline == nil {
			inline = []byte{}
		}
	}
	rt := store.RecipientTable
	insMsg := `INSERT INTO messages (` + columnList(mt) + `, blob, body) VALUES (` +
		strings.Repeat("?, ", len(mt.Columns)) + `?, ?)`
	insRcpt := `INSERT INTO recipients (` + columnList(rt) + `) VALUES (` +
		strings.TrimSuffix(strings.Repeat("?, ", len(rt.Columns)), ", ") + `)`
	err = s.w.do(ctx, blobPath != "", func(w *writer) error {
		bg := context.Background()
		var n int
		if err := w.conn.QueryRowContext(bg, `SELECT (SELECT count(*) FROM messages WHERE id = ?1) + (SELECT count(*) FROM copied_messages WHERE id = ?1)`, id).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return clean(errCopied)
		}
		args := make([]any, 0, len(msg)+2)
		for _, v := range msg {
			args = append(args, toSQL(v))
		}
		args = append(args, b2i(blobPath != ""), inline)
		if _, err := w.conn.ExecContext(bg, insMsg, args...); err != nil {
			return err
		}
		for _, r := range rcpts {
			args := make([]any, len(r))
			for j, v := range r {
				args[j] = toSQL(v)
			}
			if _, err := w.conn.ExecContext(bg, insRcpt, args...); err != nil {
				return err
			}
		}
		_, err := w.conn.ExecContext(bg, `INSERT INTO copied_messages (id, copied) VALUES (?, ?)`, id, time.Now().UnixNano())
		return err
	})
	if err != nil {
		if blobPath != "" {
			os.Remove(blobPath)
		}
		if errors.Is(err, errCopied) {
			return false, nil
		}
		return false, fmt.Errorf("sqlite store: import %s: %w", id, err)
	}
	return true, nil
}

// FinishImport does nothing: every import was committed durably (the
// writer's commit is synchronous), and a server on this data directory
// polls for due work.
func (s *Store) FinishImport(ctx context.Context) error { return nil }
