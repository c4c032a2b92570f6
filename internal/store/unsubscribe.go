package store

import (
	"context"
	"time"
)

// This file declares the state of one-click unsubscribe (issue 12,
// RFC 8058): an account's unsubscribe groups, and suppressions per group.
// A suppression has a kind (why it exists) and a group: "" is global (all
// mail of the account), any other value the ID of one of the account's
// unsubscribe groups (only mail sent in that group is held back).

// Suppression kinds.
const (
	KindBounce      = "bounce"      // a hard bounce
	KindComplaint   = "complaint"   // a feedback-loop complaint
	KindUnsubscribe = "unsubscribe" // the recipient unsubscribed (one-click link)
	KindManual      = "manual"      // added by the account or an operator
)

// SuppressUnsubscribe is the Reason of a suppression made by the one-click
// unsubscribe link.
const SuppressUnsubscribe = "unsubscribe"

// EventUnsubscribed is the event of a recipient who used a message's
// one-click unsubscribe link.
const EventUnsubscribed = "unsubscribed"

// SuppressionKind returns the kind a suppression with reason has when none
// is given: hard bounces are KindBounce, complaints KindComplaint,
// unsubscribes KindUnsubscribe, everything else KindManual.
func SuppressionKind(reason string) string {
	switch reason {
	case SuppressHardBounce:
		return KindBounce
	case SuppressComplaint:
		return KindComplaint
	case SuppressUnsubscribe:
		return KindUnsubscribe
	}
	return KindManual
}

// ValidSuppressionKind reports whether k is one of the kinds.
func ValidSuppressionKind(k string) bool {
	switch k {
	case KindBounce, KindComplaint, KindUnsubscribe, KindManual:
		return true
	}
	return false
}

// UnsubscribeGroup is a kind of mail of an account recipients can
// unsubscribe from separately (newsletter, product updates...).
type UnsubscribeGroup struct {
	Account     string
	ID          string // [a-z0-9_-], unique per account
	Name        string
	Description string
	Created     time.Time
}

// SuppressionFilter selects suppressions of one account. Rows are ordered
// by address, then group; After and AfterGroup are the cursor (the last
// row of the previous page).
type SuppressionFilter struct {
	Account    string
	Kind       string // "" any
	Group      string // with ByGroup: only this group ("" global)
	ByGroup    bool
	After      string // rows after (After, AfterGroup)
	AfterGroup string
	Limit      int // default 100, at most 1000
}

// Unsubscribes keeps the unsubscribe groups and group suppressions. The
// older Platform methods AddSuppression (which honours Group and Kind),
// DeleteSuppression, IsSuppressed and ListSuppressions act on global
// suppressions (group "") only, except AddSuppression.
type Unsubscribes interface {
	// AddUnsubscribeGroup stores a new group; an existing ID of the
	// account is ErrExists. When the account has max groups or more
	// (max > 0) it adds nothing and returns ErrLimit. A zero Created is
	// now.
	AddUnsubscribeGroup(ctx context.Context, g UnsubscribeGroup, max int) error
	// GetUnsubscribeGroup returns one group of account; ErrNotFound.
	GetUnsubscribeGroup(ctx context.Context, account, id string) (UnsubscribeGroup, error)
	// ListUnsubscribeGroups returns account's groups ordered by ID.
	ListUnsubscribeGroups(ctx context.Context, account string) ([]UnsubscribeGroup, error)
	// UpdateUnsubscribeGroup changes the name and description of g;
	// ErrNotFound.
	UpdateUnsubscribeGroup(ctx context.Context, g UnsubscribeGroup) error
	// DeleteUnsubscribeGroup deletes a group and its suppressions;
	// ErrNotFound.
	DeleteUnsubscribeGroup(ctx context.Context, account, id string) error

	// SuppressedFor reports whether address may not receive mail of
	// group: it is suppressed globally, or in group (when not "").
	SuppressedFor(ctx context.Context, account, address, group string) (bool, error)
	// FindSuppressions returns the suppressions f selects.
	FindSuppressions(ctx context.Context, f SuppressionFilter) ([]Suppression, error)
	// RemoveSuppression deletes the suppression of address in group ("":
	// the global one); ErrNotFound.
	RemoveSuppression(ctx context.Context, account, address, group string) error
	// Unsubscribe adds s unless address already has a suppression in
	// s.Group, and then records ev (with its webhook deliveries) in the
	// same transaction. It reports whether it added s; a repeat changes
	// nothing and records no event.
	Unsubscribe(ctx context.Context, s Suppression, ev Event) (bool, error)
}
