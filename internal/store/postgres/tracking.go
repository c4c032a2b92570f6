package postgres

import (
	"context"

	"github.com/heraldmail/herald/internal/store"
)

// UpdateAccountTracking replaces an account's open and click tracking
// default; store.ErrNotFound if unknown. Other nodes see it when their
// cached copy of the account expires (readcache.TTLDuration).
func (s *Store) UpdateAccountTracking(ctx context.Context, id string, t store.AccountTracking) error {
	defer s.reads.accounts.Forget()
	return s.execOne(ctx, "update tracking of account "+id, store.ErrNotFound,
		`UPDATE accounts SET track_opens = $1, track_clicks = $2 WHERE id = $3`, t.Opens, t.Clicks, id)
}
