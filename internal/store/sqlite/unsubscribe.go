package sqlite

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// This file implements store.Unsubscribes: unsubscribe groups and
// suppressions per group (issue 12).

// suppressionCols are the columns scanSuppression reads, in its order.
const suppressionCols = `account, address, grp, kind, reason, detail, created`

// AddUnsubscribeGroup stores a new group; see store.Unsubscribes. The
// count and the insert run in the writer's transaction.
func (s *Store) AddUnsubscribeGroup(ctx context.Context, g store.UnsubscribeGroup, max int) error {
	if g.ID == "" || g.Account == "" {
		return errors.New("sqlite store: add unsubscribe group: empty ID or account")
	}
	created := g.Created
	if created.IsZero() {
		created = time.Now()
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		if max > 0 {
			var n int
			if err := w.conn.QueryRowContext(bg, `SELECT count(*) FROM unsubscribe_groups WHERE account = ?`, g.Account).Scan(&n); err != nil {
				return clean(err)
			}
			if n >= max {
				return clean(fmt.Errorf("account %q has %d unsubscribe groups (limit %d): %w", g.Account, n, max, store.ErrLimit))
			}
		}
		res, err := w.conn.ExecContext(bg, `INSERT INTO unsubscribe_groups (account, id, name, description, created)
			VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, g.Account, g.ID, g.Name, g.Description, nanos(created))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add unsubscribe group %s: %w", g.ID, err)
	}
	return nil
}

func scanGroup(sc scanner) (store.UnsubscribeGroup, error) {
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
		`SELECT account, id, name, description, created FROM unsubscribe_groups WHERE account = ? AND id = ?`, account, id)
}

// ListUnsubscribeGroups returns account's groups ordered by ID.
func (s *Store) ListUnsubscribeGroups(ctx context.Context, account string) ([]store.UnsubscribeGroup, error) {
	return queryList(ctx, s, "list unsubscribe groups", scanGroup,
		`SELECT account, id, name, description, created FROM unsubscribe_groups WHERE account = ? ORDER BY id`, account)
}

// UpdateUnsubscribeGroup changes a group's name and description.
func (s *Store) UpdateUnsubscribeGroup(ctx context.Context, g store.UnsubscribeGroup) error {
	return s.execOne(ctx, "update unsubscribe group "+g.ID, store.ErrNotFound,
		`UPDATE unsubscribe_groups SET name = ?, description = ? WHERE account = ? AND id = ?`, g.Name, g.Description, g.Account, g.ID)
}

// DeleteUnsubscribeGroup deletes a group and its suppressions in one
// transaction.
func (s *Store) DeleteUnsubscribeGroup(ctx context.Context, account, id string) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `DELETE FROM unsubscribe_groups WHERE account = ? AND id = ?`, account, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrNotFound)
		}
		_, err = w.conn.ExecContext(bg, `DELETE FROM suppressions WHERE account = ? AND grp = ?`, account, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: delete unsubscribe group %s: %w", id, err)
	}
	return nil
}

// SuppressedFor reports whether address is suppressed globally or in
// group.
func (s *Store) SuppressedFor(ctx context.Context, account, address, group string) (bool, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, `SELECT 1 FROM suppressions WHERE account = ? AND address = ? AND grp IN ('', ?) LIMIT 1`,
		account, normAddr(address), group).Scan(&one)
	if errNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sqlite store: suppressed for: %w", err)
	}
	return true, nil
}

// FindSuppressions returns the suppressions f selects, ordered by address
// and group.
func (s *Store) FindSuppressions(ctx context.Context, f store.SuppressionFilter) ([]store.Suppression, error) {
	q := `SELECT ` + suppressionCols + ` FROM suppressions WHERE account = ? AND (address, grp) > (?, ?)`
	args := []any{f.Account, normAddr(f.After), f.AfterGroup}
	if f.Kind != "" {
		q += ` AND kind = ?`
		args = append(args, f.Kind)
	}
	if f.ByGroup {
		q += ` AND grp = ?`
		args = append(args, f.Group)
	}
	q += ` ORDER BY address, grp LIMIT ?`
	args = append(args, listLimit(f.Limit))
	return queryList(ctx, s, "find suppressions", scanSuppression, q, args...)
}

// RemoveSuppression deletes the suppression of address in group.
func (s *Store) RemoveSuppression(ctx context.Context, account, address, group string) error {
	addr := normAddr(address)
	return s.execOne(ctx, "delete suppression "+addr, store.ErrNotFound,
		`DELETE FROM suppressions WHERE account = ? AND address = ? AND grp = ?`, account, addr, group)
}

// Unsubscribe adds sp unless the address has a suppression in sp.Group,
// and records ev in the same transaction.
func (s *Store) Unsubscribe(ctx context.Context, sp store.Suppression, ev store.Event) (bool, error) {
	addr := normAddr(sp.Address)
	if addr == "" || sp.Account == "" || ev.Type == "" {
		return false, errors.New("sqlite store: unsubscribe: empty address, account or event type")
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
	tags, meta, err := encodeTagsMeta(ev.Tags, ev.Metadata)
	if err != nil {
		return false, fmt.Errorf("sqlite store: unsubscribe: %w", err)
	}
	added := false
	err = s.w.do(ctx, false, func(w *writer) error {
		added = false
		res, err := w.conn.ExecContext(context.Background(), `INSERT INTO suppressions (account, address, grp, kind, reason, detail, created)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			sp.Account, addr, sp.Group, sp.Kind, sp.Reason, sp.Detail, nanos(sp.Created))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return nil
		}
		if _, err := w.insertEvent(&ev, ev.Time.UnixNano(), tags, meta); err != nil {
			return err
		}
		added = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("sqlite store: unsubscribe %s: %w", addr, err)
	}
	return added, nil
}
