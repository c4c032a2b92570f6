package store

import (
	"context"
	"time"
)

// Limits of a webhook's batch settings and secret rotation (issue 12).
const (
	// MaxWebhookBatch is the most events one webhook request may carry.
	MaxWebhookBatch = 1000
	// MaxWebhookBatchWait is the longest a webhook may wait to fill a batch.
	MaxWebhookBatchWait = 60 * time.Second
	// MaxWebhookSecretOverlap is the longest both secrets of a rotation
	// may stay active.
	MaxWebhookSecretOverlap = 7 * 24 * time.Hour
)

// WebhookChange is a partial update of a webhook: nil fields stay as they
// are.
type WebhookChange struct {
	URL        *string
	EventTypes *[]string // empty: all
	BatchMax   *int
	BatchWait  *time.Duration
}

// WebhookAttempt is the outcome of one attempt of one delivery, as
// RecordWebhookAttempt takes it; RecordWebhookAttempts records many.
type WebhookAttempt struct {
	ID         int64     // the delivery
	Status     string    // "pending", "delivered" or "failed"
	Next       time.Time // next attempt, for pending
	Error      string    // fixed error text, "" on success
	HTTPStatus int       // 0 when there was no response
}

// WebhookAdmin is the state behind batched webhooks and secret rotation.
//
// Batches: a dispatcher that leased one delivery of a webhook with
// BatchMax > 1 (LeaseWebhookDeliveries) leases more of the same webhook
// with LeaseWebhookBatch, under the same claim as every lease (a delivery
// is leased by one caller at a time, on any node), may hold a batch that
// is not full yet until its deadline (HoldWebhookDeliveries, which
// releases the leases without counting an attempt), and records the
// outcome of a request for every delivery it carried in one step
// (RecordWebhookAttempts). Each delivery keeps its own state, attempts
// and attempt log, as with single-event requests.
type WebhookAdmin interface {
	// GetWebhook returns a webhook of any account by ID (ErrNotFound).
	// Callers serving an account must compare Account themselves.
	GetWebhook(ctx context.Context, id string) (Webhook, error)
	// UpdateWebhook applies c to webhook id of account and returns the
	// result; ErrNotFound if there is no such webhook in account.
	// Pending deliveries go to the new URL from their next attempt; a
	// change of event types applies to events recorded after it.
	UpdateWebhook(ctx context.Context, account, id string, c WebhookChange) (Webhook, error)
	// RotateWebhookSecret makes secret the webhook's secret, rotated at
	// now; the secret it replaces signs requests too until
	// previousExpires (a zero or past time ends it at once). A previous
	// secret still active from an earlier rotation is dropped.
	// ErrNotFound if there is no such webhook in account.
	RotateWebhookSecret(ctx context.Context, account, id, secret string, now, previousExpires time.Time) (Webhook, error)
	// ExpireWebhookPreviousSecret ends a rotation's transition: only the
	// current secret signs from now on. ErrNotFound if there is no such
	// webhook in account.
	ExpireWebhookPreviousSecret(ctx context.Context, account, id string) (Webhook, error)
	// LeaseWebhookBatch leases, until now+d, up to limit pending
	// deliveries of webhook webhookID that nobody holds a lease on and
	// that are either due at now or not attempted yet (a first attempt
	// held for a batch), in event order.
	LeaseWebhookBatch(ctx context.Context, webhookID string, now time.Time, d time.Duration, limit int) ([]WebhookDelivery, error)
	// HoldWebhookDeliveries releases the leases of the pending deliveries
	// ids and makes them due at until, without counting an attempt.
	HoldWebhookDeliveries(ctx context.Context, ids []int64, until time.Time) error
	// RecordWebhookAttempts is RecordWebhookAttempt for many deliveries
	// in one transaction; deliveries that no longer exist (webhook
	// deleted) are skipped.
	RecordWebhookAttempts(ctx context.Context, attempts []WebhookAttempt) error
}
