package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// This file implements store.ConsoleAccess: console operators and login
// sessions (migration 2), shared by every node.

// AddOperator creates an operator; an existing name returns store.ErrExists.
func (s *Store) AddOperator(ctx context.Context, o store.Operator) error {
	name := strings.ToLower(strings.TrimSpace(o.Name))
	if name == "" {
		return errors.New("postgres store: add operator: empty name")
	}
	created := o.Created
	if created.IsZero() {
		created = time.Now()
	}
	return s.execOne(ctx, "add operator "+name, store.ErrExists,
		`INSERT INTO operators (name, password_hash, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		name, o.PasswordHash, nanos(created))
}

// GetOperator returns an operator or store.ErrNotFound.
func (s *Store) GetOperator(ctx context.Context, name string) (store.Operator, error) {
	var o store.Operator
	var c int64
	err := s.pool.QueryRow(ctx, `SELECT name, password_hash, created FROM operators WHERE name = $1`,
		strings.ToLower(strings.TrimSpace(name))).Scan(&o.Name, &o.PasswordHash, &c)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("postgres store: get operator %s: %w", name, err)
	}
	o.Created = fromNanos(c)
	return o, nil
}

// ListOperators returns every operator ordered by name.
func (s *Store) ListOperators(ctx context.Context) ([]store.Operator, error) {
	rows, err := s.pool.Query(ctx, `SELECT name, password_hash, created FROM operators ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("postgres store: list operators: %w", err)
	}
	defer rows.Close()
	var out []store.Operator
	for rows.Next() {
		var o store.Operator
		var c int64
		if err := rows.Scan(&o.Name, &o.PasswordHash, &c); err != nil {
			return nil, fmt.Errorf("postgres store: list operators: %w", err)
		}
		o.Created = fromNanos(c)
		out = append(out, o)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("postgres store: list operators: %w", err)
	}
	return out, nil
}

// SetOperatorPassword replaces the hash and ends the operator's sessions.
func (s *Store) SetOperatorPassword(ctx context.Context, name, hash string) error {
	n := strings.ToLower(strings.TrimSpace(name))
	return s.operatorChange(ctx, "set operator password "+n, n,
		`UPDATE operators SET password_hash = $1 WHERE name = $2`, hash, n)
}

// DeleteOperator removes an operator and its sessions.
func (s *Store) DeleteOperator(ctx context.Context, name string) error {
	n := strings.ToLower(strings.TrimSpace(name))
	return s.operatorChange(ctx, "delete operator "+n, n, `DELETE FROM operators WHERE name = $1`, n)
}

// operatorChange runs q (one row of operators) and deletes the operator's
// sessions in the same transaction.
func (s *Store) operatorChange(ctx context.Context, what, name, q string, args ...any) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, q, args...)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM console_sessions WHERE kind = $1 AND subject = $2`, store.SessionOperator, name)
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: %s: %w", what, err))
	}
	return nil
}

// AddSession stores a new session; an existing ID hash returns
// store.ErrExists.
func (s *Store) AddSession(ctx context.Context, se store.Session) error {
	if len(se.IDHash) == 0 {
		return errors.New("postgres store: add session: no ID")
	}
	return s.execOne(ctx, "add session", store.ErrExists,
		`INSERT INTO console_sessions (id_hash, kind, subject, account, csrf, created, last_seen, expires)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING`,
		se.IDHash, se.Kind, se.Subject, se.Account, se.CSRF, nanos(se.Created), nanos(se.LastSeen), nanos(se.Expires))
}

// GetSession returns a session or store.ErrNotFound.
func (s *Store) GetSession(ctx context.Context, idHash []byte) (store.Session, error) {
	var se store.Session
	var c, l, e int64
	err := s.pool.QueryRow(ctx, `SELECT id_hash, kind, subject, account, csrf, created, last_seen, expires
		FROM console_sessions WHERE id_hash = $1`, idHash).Scan(&se.IDHash, &se.Kind, &se.Subject, &se.Account, &se.CSRF, &c, &l, &e)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return se, fmt.Errorf("postgres store: get session: %w", err)
	}
	se.Created, se.LastSeen, se.Expires = fromNanos(c), fromNanos(l), fromNanos(e)
	return se, nil
}

// TouchSession moves a session's LastSeen forward to t.
func (s *Store) TouchSession(ctx context.Context, idHash []byte, t time.Time) error {
	return s.execOne(ctx, "touch session", store.ErrNotFound,
		`UPDATE console_sessions SET last_seen = GREATEST(last_seen, $1) WHERE id_hash = $2`, nanos(t), idHash)
}

// DeleteSession ends a session.
func (s *Store) DeleteSession(ctx context.Context, idHash []byte) error {
	return s.execOne(ctx, "delete session", nil, `DELETE FROM console_sessions WHERE id_hash = $1`, idHash)
}

// DeleteSessionsOf ends every session of kind and subject.
func (s *Store) DeleteSessionsOf(ctx context.Context, kind, subject string) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE kind = $1 AND subject = $2`, kind, subject)
	if err != nil {
		return 0, mapErr(fmt.Errorf("postgres store: delete sessions of %s %s: %w", kind, subject, err))
	}
	return int(tag.RowsAffected()), nil
}

// PruneSessions deletes expired and idle sessions.
func (s *Store) PruneSessions(ctx context.Context, expiredBefore, idleBefore time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM console_sessions WHERE expires < $1 OR last_seen < $2`, nanos(expiredBefore), nanos(idleBefore))
	if err != nil {
		return 0, mapErr(fmt.Errorf("postgres store: prune sessions: %w", err))
	}
	return int(tag.RowsAffected()), nil
}
