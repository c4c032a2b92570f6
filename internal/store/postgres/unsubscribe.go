package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// This file implements store.Unsubscribes: unsubscribe groups and
// suppressions per group (issue 12).

// suppressionCols are the columns scanSuppression reads, in its order.
const suppressionCols = `account, address, grp, kind, reason, detail, created`

// AddUnsubscribeGroup stores a new group; see store.Unsubscribes. An
// advisory lock on the account makes count and insert atomic across
// nodes.
func (s *Store) AddUnsubscribeGroup(ctx context.Context, g store.UnsubscribeGroup, max int) error {
	if g.ID == "" || g.Account == "" {
		return errors.New("postgres store: add unsubscribe group: empty ID or account")
	}
	created := g.Created
	if created.IsZero() {
		created = time.Now()
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('herald.unsubscribe_groups'), hashtext($1))`, g.Account); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM unsubscribe_groups WHERE account = $1`, g.Account).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return fmt.Errorf("account %q has %d unsubscribe groups (limit %d): %w", g.Account, n, max, store.ErrLimit)
			}
		}
		tag, err := tx.Exec(ctx, `INSERT INTO unsubscribe_groups (account, id, name, description, created)
			VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING`, g.Account, g.ID, g.Name, g.Description, nanos(created))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		return nil
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: add unsubscribe group %s: %w", g.ID, err))
	}
	return nil
}

func scanGroup(sc pgx.Row) (store.UnsubscribeGroup, error) {
	var g store.UnsubscribeGroup
	var created int64
	if err := sc.Scan(&g.Account, &g.ID, &g.Name, &g.Description, &created); err != nil {
		return store.UnsubscribeGroup{}, err
	}
	g.Created = fromNanos(created)
	return g, nil
}

// GetUnsubscribeGroup returns one group of account; store.ErrNotFound.
func (s *Store) GetUnsubscribeGroup(ctx context.Context, account, id string) (store.UnsubscribeGroup, error) {
	return getOne(ctx, s, "get unsubscribe group "+id, scanGroup,
		`SELECT account, id, name, description, created FROM unsubscribe_groups WHERE account = $1 AND id = $2`, account, id)
}

// ListUnsubscribeGroups returns account's groups ordered by ID.
func (s *Store) ListUnsubscribeGroups(ctx context.Context, account string) ([]store.UnsubscribeGroup, error) {
	return queryList(ctx, s, "list unsubscribe groups", scanGroup,
		`SELECT account, id, name, description, created FROM unsubscribe_groups WHERE account = $1 ORDER BY id`, account)
}

// UpdateUnsubscribeGroup changes a group's name and description.
func (s *Store) UpdateUnsubscribeGroup(ctx context.Context, g store.UnsubscribeGroup) error {
	return s.execOne(ctx, "update unsubscribe group "+g.ID, store.ErrNotFound,
		`UPDATE unsubscribe_groups SET name = $1, description = $2 WHERE account = $3 AND id = $4`, g.Name, g.Description, g.Account, g.ID)
}

// DeleteUnsubscribeGroup deletes a group and its suppressions in one
// transaction.
func (s *Store) DeleteUnsubscribeGroup(ctx context.Context, account, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM unsubscribe_groups WHERE account = $1 AND id = $2`, account, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM suppressions WHERE account = $1 AND grp = $2`, account, id)
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: delete unsubscribe group %s: %w", id, err))
	}
	return nil
}

// SuppressedFor reports whether address is suppressed globally or in
// group.
func (s *Store) SuppressedFor(ctx context.Context, account, address, group string) (bool, error) {
	var ok bool
	err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM suppressions WHERE account = $1 AND address = $2 AND grp IN ('', $3))`,
		account, normAddr(address), group).Scan(&ok)
	if err != nil {
		return false, fmt.Errorf("postgres store: suppressed for: %w", err)
	}
	return ok, nil
}

// FindSuppressions returns the suppressions f selects, ordered by address
// and group.
func (s *Store) FindSuppressions(ctx context.Context, f store.SuppressionFilter) ([]store.Suppression, error) {
	var a args
	q := `SELECT ` + suppressionCols + ` FROM suppressions WHERE account = ` + a.add(f.Account) +
		` AND (address, grp) > (` + a.add(normAddr(f.After)) + `, ` + a.add(f.AfterGroup) + `)`
	if f.Kind != "" {
		q += ` AND kind = ` + a.add(f.Kind)
	}
	if f.ByGroup {
		q += ` AND grp = ` + a.add(f.Group)
	}
	q += ` ORDER BY address, grp LIMIT ` + a.add(listLimit(f.Limit))
	return queryList(ctx, s, "find suppressions", scanSuppression, q, a...)
}

// RemoveSuppression deletes the suppression of address in group.
func (s *Store) RemoveSuppression(ctx context.Context, account, address, group string) error {
	addr := normAddr(address)
	return s.execOne(ctx, "delete suppression "+addr, store.ErrNotFound,
		`DELETE FROM suppressions WHERE account = $1 AND address = $2 AND grp = $3`, account, addr, group)
}

// Unsubscribe adds sp unless the address has a suppression in sp.Group,
// and records ev (fanned out to webhooks, counted in the rollups) in the
// same transaction.
func (s *Store) Unsubscribe(ctx context.Context, sp store.Suppression, ev store.Event) (bool, error) {
	addr := normAddr(sp.Address)
	if addr == "" || sp.Account == "" || ev.Type == "" {
		return false, errors.New("postgres store: unsubscribe: empty address, account or event type")
	}
	if sp.Created.IsZero() {
		sp.Created = time.Now()
	}
	if sp.Kind == "" {
		sp.Kind = store.SuppressionKind(sp.Reason)
	}
	if ev.Account == "" {
		ev.Account = sp.Account
	}
	if ev.Time.IsZero() {
		ev.Time = sp.Created
	}
	qargs, err := eventArgs([]store.Event{ev})
	if err != nil {
		return false, err
	}
	for retries := 0; ; retries++ {
		added := false
		err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			tag, err := tx.Exec(ctx, `INSERT INTO suppressions (account, address, grp, kind, reason, detail, created)
				VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
				sp.Account, addr, sp.Group, sp.Kind, sp.Reason, sp.Detail, nanos(sp.Created))
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			rows, err := tx.Query(ctx, addEventsSQL, qargs...)
			if err != nil {
				return err
			}
			if _, err := pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil {
				return err
			}
			added = true
			return nil
		})
		if retryable(err) && retries < maxBatchRetries {
			continue // a rollup row locked in the other order (rollups.go)
		}
		if err != nil {
			return false, mapErr(fmt.Errorf("postgres store: unsubscribe %s: %w", addr, err))
		}
		return added, nil
	}
}
