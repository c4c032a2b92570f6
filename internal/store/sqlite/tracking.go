package sqlite

import (
	"context"

	"github.com/heraldmail/herald/internal/store"
)

// UpdateAccountTracking replaces an account's open and click tracking
// default; store.ErrNotFound if unknown.
func (s *Store) UpdateAccountTracking(ctx context.Context, id string, t store.AccountTracking) error {
	defer s.reads.accounts.Forget()
	return s.execOne(ctx, "update tracking of account "+id, store.ErrNotFound,
		`UPDATE accounts SET track_opens = ?, track_clicks = ? WHERE id = ?`, t.Opens, t.Clicks, id)
}
