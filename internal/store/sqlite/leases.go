package sqlite

import (
	"context"
	"fmt"

	"github.com/heraldmail/herald/internal/store"
)

// MessageLeases implements store.QueueLeases. The holds of a paused
// batch (store.HeldToken) are not delivery leases and are left out.
func (s *Store) MessageLeases(ctx context.Context, id string) ([]store.RecipientLease, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT id, lease_owner, lease_until FROM recipients
		WHERE message_id = ? AND status IN ('queued', 'deferred') AND lease_until != 0 AND lease_token != ? ORDER BY id`, id, store.HeldToken)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: leases of %s: %w", id, err)
	}
	defer rows.Close()
	var out []store.RecipientLease
	for rows.Next() {
		var l store.RecipientLease
		var until int64
		if err := rows.Scan(&l.RecipientID, &l.Owner, &until); err != nil {
			return nil, fmt.Errorf("sqlite store: leases of %s: %w", id, err)
		}
		l.Until = fromNanos(until)
		out = append(out, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: leases of %s: %w", id, err)
	}
	return out, nil
}

// The queue's leases can be read (to explain where a message is).
var _ store.QueueLeases = (*Store)(nil)
