package store

import (
	"context"
	"errors"
	"time"
)

// This file declares batches (issue 12, scheduled send): a batch groups the
// messages of one account so that they can be paused, resumed and
// cancelled together (SendGrid's mail/batch). The state lives in the
// store, so a pause holds on every node and across restarts.
//
// A paused batch's pending recipients are held: they carry a lease that
// belongs to no node (HeldOwner, HeldToken) and never runs out (HeldUntil),
// so no node's Lease takes them and ReleaseLeases (which clears a node's
// own leases) leaves them alone. Their NextAttempt (the scheduled time)
// is kept. A recipient that was in delivery when its batch was paused, or
// a message enqueued into a paused batch, is held when the scheduler sees
// it (CheckBatch), before any attempt.

// Batch states.
const (
	BatchActive    = "active"    // its messages are delivered when due
	BatchPaused    = "paused"    // its pending recipients are held
	BatchCancelled = "cancelled" // its pending recipients were removed; no message may join
)

// The lease that holds the recipients of a paused batch. HeldOwner is not
// a valid node name (config.checkNodeID), so no node's ReleaseLeases
// clears it.
const (
	HeldOwner = "(batch paused)"
	HeldToken = "batch-paused"
)

// HeldUntil is the end of a hold's lease: far enough never to run out,
// small enough that lease_until + 1 stays an int64 of nanoseconds.
var HeldUntil = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)

// EventCancelled is the event of a pending recipient removed by the
// cancellation of its batch.
const EventCancelled = "cancelled"

// MaxBatchIDLen bounds a batch ID.
const MaxBatchIDLen = 64

// ErrBatchState is returned (wrapped) when a batch's state does not allow
// the change asked for: pausing or resuming a cancelled batch, or adding a
// message to it.
var ErrBatchState = errors.New("batch state does not allow this")

// Batch is a group of an account's messages.
type Batch struct {
	ID      string
	Account string
	State   string // BatchActive, BatchPaused, BatchCancelled
	Created time.Time
	Updated time.Time // last change: of state, or a message joining (PruneEvents removes batches idle since before its cutoff with no message queued)

	// Messages and Recipients count what was enqueued into the batch;
	// Cancelled the recipients its cancellation removed.
	Messages   int
	Recipients int
	Cancelled  int
	// Pending counts the batch's recipients still in the queue by status
	// (queued, deferred); Held those of them held by a pause. Filled by
	// GetBatch.
	Pending map[Status]int
	Held    int
}

// ValidBatchID reports whether id is usable as a batch ID: 1 to
// MaxBatchIDLen letters, digits, '-', '_' and '.'.
func ValidBatchID(id string) bool {
	if id == "" || len(id) > MaxBatchIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return true
}

// Batches manages batches. Every method but CheckBatch is scoped to an
// account: a batch of another account is not found (ErrNotFound).
type Batches interface {
	// CreateBatch creates batch id of account, active, at now. It is
	// idempotent: when the account has the batch already it is returned
	// as it is (so a caller that generates IDs, such as a request with
	// personalizations, may create its batch again on a retry). An ID
	// another account uses returns ErrExists; an invalid ID an error.
	CreateBatch(ctx context.Context, account, id string, now time.Time) (Batch, error)
	// CreateBatchLimited is CreateBatch that refuses a new batch
	// (ErrLimit, nothing written) when the account created max batches or
	// more in the day before now; max 0 means no limit. Callers with an
	// API key create batches, and each is a row kept until it is pruned.
	CreateBatchLimited(ctx context.Context, account, id string, now time.Time, max int) (Batch, error)
	// GetBatch returns batch id of account with its counts.
	GetBatch(ctx context.Context, account, id string) (Batch, error)
	// PauseBatch holds the pending recipients of the batch's messages
	// that are not in delivery now (see the file comment for the others).
	// Pausing a paused batch changes nothing; a cancelled one returns
	// ErrBatchState.
	PauseBatch(ctx context.Context, account, id string, now time.Time) (Batch, error)
	// ResumeBatch makes the batch active and releases the holds: the
	// recipients are due at their NextAttempt (at once if it has passed).
	// Resuming an active batch changes nothing; a cancelled one returns
	// ErrBatchState.
	ResumeBatch(ctx context.Context, account, id string, now time.Time) (Batch, error)
	// CancelBatch marks the batch cancelled and removes the pending
	// recipients of its messages that are not in delivery now, with a
	// cancelled event each (fanned out to the webhooks); a message left
	// with no pending recipient is removed with its body. Recipients
	// delivered already are not touched; one in delivery now is removed
	// when the scheduler sees it next (CheckBatch). Cancelling again
	// removes what is left.
	CancelBatch(ctx context.Context, account, id string, now time.Time) (Batch, error)
	// CheckBatch is the scheduler's check of a leased message of a batch,
	// before it is delivered: if the batch is paused, the recipients
	// leased under token are held instead; if it is cancelled, they are
	// removed as by CancelBatch. It returns the batch's state
	// (BatchActive, or "" for an unknown batch: deliver).
	CheckBatch(ctx context.Context, messageID, batchID, token string) (string, error)
}

// Start is when the message was to leave: SendAt for a scheduled message,
// else Received. Its first attempt is due then, and the queue lifetime
// counts from it.
func (m *Message) Start() time.Time {
	if m.SendAt.After(m.Received) {
		return m.SendAt
	}
	return m.Received
}
