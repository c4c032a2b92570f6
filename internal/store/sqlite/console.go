package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// This file implements store.ConsoleAccess: console operators and login
// sessions (migration 11).

// AddOperator creates an operator; an existing name returns store.ErrExists.
func (s *Store) AddOperator(ctx context.Context, o store.Operator) error {
	name := strings.ToLower(strings.TrimSpace(o.Name))
	if name == "" {
		return errors.New("sqlite store: add operator: empty name")
	}
	created := o.Created
	if created.IsZero() {
		created = time.Now()
	}
	return s.execOne(ctx, "add operator "+name, store.ErrExists,
		`INSERT INTO operators (name, password_hash, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
		name, o.PasswordHash, nanos(created))
}

// GetOperator returns an operator or store.ErrNotFound.
func (s *Store) GetOperator(ctx context.Context, name string) (store.Operator, error) {
	var o store.Operator
	var c int64
	err := s.rdb.QueryRowContext(ctx, `SELECT name, password_hash, created FROM operators WHERE name = ?`,
		strings.ToLower(strings.TrimSpace(name))).Scan(&o.Name, &o.PasswordHash, &c)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("sqlite store: get operator %s: %w", name, err)
	}
	o.Created = fromNanos(c)
	return o, nil
}

// ListOperators returns every operator ordered by name.
func (s *Store) ListOperators(ctx context.Context) ([]store.Operator, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT name, password_hash, created FROM operators ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: list operators: %w", err)
	}
	defer rows.Close()
	var out []store.Operator
	for rows.Next() {
		var o store.Operator
		var c int64
		if err := rows.Scan(&o.Name, &o.PasswordHash, &c); err != nil {
			return nil, fmt.Errorf("sqlite store: list operators: %w", err)
		}
		o.Created = fromNanos(c)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: list operators: %w", err)
	}
	return out, nil
}

// SetOperatorPassword replaces the hash and ends the operator's sessions.
func (s *Store) SetOperatorPassword(ctx context.Context, name, hash string) error {
	n := strings.ToLower(strings.TrimSpace(name))
	return s.operatorChange(ctx, "set operator password "+n, n,
		`UPDATE operators SET password_hash = ? WHERE name = ?`, hash, n)
}

// DeleteOperator removes an operator and its sessions.
func (s *Store) DeleteOperator(ctx context.Context, name string) error {
	n := strings.ToLower(strings.TrimSpace(name))
	return s.operatorChange(ctx, "delete operator "+n, n, `DELETE FROM operators WHERE name = ?`, n)
}

// operatorChange runs q (one row of operators) and deletes the operator's
// sessions in the same transaction.
func (s *Store) operatorChange(ctx context.Context, what, name, q string, args ...any) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, q, args...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrNotFound)
		}
		_, err = w.conn.ExecContext(bg, `DELETE FROM console_sessions WHERE kind = ? AND subject = ?`, store.SessionOperator, name)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	return nil
}

// AddSession stores a new session; an existing ID hash returns
// store.ErrExists.
func (s *Store) AddSession(ctx context.Context, se store.Session) error {
	if len(se.IDHash) == 0 {
		return errors.New("sqlite store: add session: no ID")
	}
	return s.execOne(ctx, "add session", store.ErrExists,
		`INSERT INTO console_sessions (id_hash, kind, subject, account, csrf, created, last_seen, expires)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
		se.IDHash, se.Kind, se.Subject, se.Account, se.CSRF, nanos(se.Created), nanos(se.LastSeen), nanos(se.Expires))
}

// GetSession returns a session or store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, idHash []byte) (store.Session, error) {
	var se store.Session
	var c, l, e int64
	err := s.rdb.QueryRowContext(ctx, `SELECT id_hash, kind, subject, account, csrf, created, last_seen, expires
		FROM console_sessions WHERE id_hash = ?`, idHash).Scan(&se.IDHash, &se.Kind, &se.Subject, &se.Account, &se.CSRF, &c, &l, &e)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return se, fmt.Errorf("sqlite store: get session: %w", err)
	}
	se.Created, se.LastSeen, se.Expires = fromNanos(c), fromNanos(l), fromNanos(e)
	return se, nil
}

// TouchSession moves a session's LastSeen forward to t.
func (s *Store) TouchSession(ctx context.Context, idHash []byte, t time.Time) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		var n int
		if err := w.conn.QueryRowContext(context.Background(), `SELECT count(*) FROM console_sessions WHERE id_hash = ?`, idHash).Scan(&n); err != nil {
			return err
		}
		if n == 0 {
			return clean(store.ErrNotFound)
		}
		_, err := w.conn.ExecContext(context.Background(), `UPDATE console_sessions SET last_seen = max(last_seen, ?) WHERE id_hash = ?`, nanos(t), idHash)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: touch session: %w", err)
	}
	return nil
}

// DeleteSession ends a session.
func (s *Store) DeleteSession(ctx context.Context, idHash []byte) error {
	return s.execOne(ctx, "delete session", nil, `DELETE FROM console_sessions WHERE id_hash = ?`, idHash)
}

// DeleteSessionsOf ends every session of kind and subject.
func (s *Store) DeleteSessionsOf(ctx context.Context, kind, subject string) (int, error) {
	return s.deleteCount(ctx, "delete sessions of "+kind+" "+subject,
		`DELETE FROM console_sessions WHERE kind = ? AND subject = ?`, kind, subject)
}

// PruneSessions deletes expired and idle sessions.
func (s *Store) PruneSessions(ctx context.Context, expiredBefore, idleBefore time.Time) (int, error) {
	return s.deleteCount(ctx, "prune sessions",
		`DELETE FROM console_sessions WHERE expires < ? OR last_seen < ?`, nanos(expiredBefore), nanos(idleBefore))
}

func (s *Store) deleteCount(ctx context.Context, what, q string, args ...any) (int, error) {
	var n int64
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), q, args...)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	return int(n), nil
}
