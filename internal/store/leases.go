package store

import (
	"context"
	"time"
)

// This file declares a read of the queue's delivery leases, for
// explaining where a message is ("in delivery now on node X until T"):
// the lease columns the queue keeps already, read without changing them.

// RecipientLease is the lease held on one pending recipient of a message.
type RecipientLease struct {
	RecipientID int64
	Owner       string    // the node holding it ("" when the store serves one node and names none)
	Until       time.Time // the lease runs out then; another node may take it over after
}

// QueueLeases reads the delivery leases of the queue.
type QueueLeases interface {
	// MessageLeases returns the leases held on message id's pending
	// recipients, expired or not (an expired lease nobody took over yet
	// is still held), ordered by recipient ID. A message with none, or
	// unknown, returns an empty list.
	MessageLeases(ctx context.Context, id string) ([]RecipientLease, error)
}
