package store

import "context"

// This file declares the state of open and click tracking (issue 12):
// an account's default, kept with the account. The events (EventOpened,
// EventClicked) go to the event log through Platform.AddEvents; a clicked
// event carries the URL followed in its Reply field, so the event log
// needs no column of its own for it.

// AccountTracking is an account's default for open and click tracking:
// both off unless set.
type AccountTracking struct {
	Opens  bool `json:"opens"`  // add a tracking pixel to the HTML part
	Clicks bool `json:"clicks"` // rewrite the HTML part's http(s) links
}

// TrackingSettings keeps the accounts' tracking defaults; GetAccount and
// ListAccounts return them in Account.Tracking and AddAccount stores them.
type TrackingSettings interface {
	// UpdateAccountTracking replaces an account's tracking default;
	// ErrNotFound if the account is unknown.
	UpdateAccountTracking(ctx context.Context, id string, t AccountTracking) error
}
