package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// webhookCols are the columns of a webhook, in scanWebhook's order.
const webhookCols = `id, account, url, secret, event_types, created, batch_max, batch_wait, prev_secret, prev_expires, secret_rotated`

// scanWebhook reads a row of webhookCols.
func scanWebhook(row pgx.Row) (store.Webhook, error) {
	var wh store.Webhook
	var types string
	var created, wait, prevExp, rotated int64
	if err := row.Scan(&wh.ID, &wh.Account, &wh.URL, &wh.Secret, &types, &created,
		&wh.BatchMax, &wait, &wh.PreviousSecret, &prevExp, &rotated); err != nil {
		return wh, err
	}
	wh.EventTypes = decodeTypes(types)
	wh.Created = fromNanos(created)
	wh.BatchWait = time.Duration(wait)
	wh.PreviousExpires = fromNanos(prevExp)
	wh.SecretRotated = fromNanos(rotated)
	return wh, nil
}

// batchMax is a stored batch size: at least 1.
func batchMax(n int) int {
	if n < 1 {
		return 1
	}
	return n
}

// GetWebhook returns webhook id of any account (store.ErrNotFound).
func (s *Store) GetWebhook(ctx context.Context, id string) (store.Webhook, error) {
	return getOne(ctx, s, "get webhook", scanWebhook, `SELECT `+webhookCols+` FROM webhooks WHERE id = $1`, id)
}

// updateWebhook runs set (an UPDATE ... SET clause whose parameters are
// args, from $1) on webhook id of account and returns the webhook as it
// is then; store.ErrNotFound if account has no such webhook.
func (s *Store) updateWebhook(ctx context.Context, what, account, id, set string, a args) (store.Webhook, error) {
	q := `UPDATE webhooks SET ` + set + ` WHERE id = ` + a.add(id) + ` AND account = ` + a.add(account) + ` RETURNING ` + webhookCols
	wh, err := scanWebhook(s.pool.QueryRow(ctx, q, a...))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.Webhook{}, mapErr(fmt.Errorf("postgres store: %s %s: %w", what, id, err))
	}
	return wh, nil
}

// UpdateWebhook applies c to webhook id of account.
func (s *Store) UpdateWebhook(ctx context.Context, account, id string, c store.WebhookChange) (store.Webhook, error) {
	var a args
	set := `id = id`
	if c.URL != nil {
		if *c.URL == "" {
			return store.Webhook{}, fmt.Errorf("postgres store: update webhook %s: empty URL", id)
		}
		set += `, url = ` + a.add(*c.URL)
	}
	if c.EventTypes != nil {
		types, err := encodeTypes(*c.EventTypes)
		if err != nil {
			return store.Webhook{}, fmt.Errorf("postgres store: update webhook %s: %w", id, err)
		}
		set += `, event_types = ` + a.add(types)
	}
	if c.BatchMax != nil {
		set += `, batch_max = ` + a.add(int32(batchMax(*c.BatchMax)))
	}
	if c.BatchWait != nil {
		set += `, batch_wait = ` + a.add(int64(max(*c.BatchWait, 0)))
	}
	return s.updateWebhook(ctx, "update webhook", account, id, set, a)
}

// RotateWebhookSecret makes secret the webhook's secret; the old one signs
// too until previousExpires.
func (s *Store) RotateWebhookSecret(ctx context.Context, account, id, secret string, now, previousExpires time.Time) (store.Webhook, error) {
	if secret == "" {
		return store.Webhook{}, fmt.Errorf("postgres store: rotate webhook secret %s: empty secret", id)
	}
	var a args
	if !previousExpires.After(now) {
		return s.updateWebhook(ctx, "rotate webhook secret", account, id,
			`prev_secret = '', prev_expires = 0, secret = `+a.add(secret)+`, secret_rotated = `+a.add(nanos(now)), a)
	}
	// The right-hand sides see the row as it was: prev_secret takes the
	// old secret.
	return s.updateWebhook(ctx, "rotate webhook secret", account, id,
		`prev_secret = secret, prev_expires = `+a.add(nanos(previousExpires))+`, secret = `+a.add(secret)+
			`, secret_rotated = `+a.add(nanos(now)), a)
}

// ExpireWebhookPreviousSecret forgets the previous secret of webhook id.
func (s *Store) ExpireWebhookPreviousSecret(ctx context.Context, account, id string) (store.Webhook, error) {
	return s.updateWebhook(ctx, "expire previous webhook secret", account, id, `prev_secret = '', prev_expires = 0`, nil)
}

// LeaseWebhookBatch leases up to limit more deliveries of one webhook for
// a batch. They are claimed with FOR UPDATE SKIP LOCKED under the same
// lease condition as LeaseWebhookDeliveries, so no two callers on any
// nodes lease the same delivery.
func (s *Store) LeaseWebhookBatch(ctx context.Context, webhookID string, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []store.WebhookDelivery
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `WITH c AS (
				SELECT d.id FROM webhook_deliveries d
				WHERE d.webhook_id = $1 AND d.status = 'pending' AND d.lease_until < $2
					AND (d.next_attempt <= $2 OR d.attempts = 0)
				ORDER BY d.event_id
				LIMIT $4
				FOR UPDATE SKIP LOCKED
			), d AS (
				UPDATE webhook_deliveries d SET lease_until = $3 FROM c WHERE d.id = c.id
				RETURNING d.id, d.webhook_id, d.attempts, d.next_attempt, d.last_error, d.status, d.event_id
			)
			SELECT `+deliveryCols+`, `+eventColsE+` FROM d JOIN events e ON e.id = d.event_id
			ORDER BY e.id`, webhookID, nanos(now), nanos(now.Add(d)), limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.WebhookDelivery, error) { return scanDelivery(row) })
		return err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: lease webhook batch of %s: %w", webhookID, err))
	}
	return out, nil
}

// HoldWebhookDeliveries makes the pending deliveries ids due at until and
// releases their leases.
func (s *Store) HoldWebhookDeliveries(ctx context.Context, ids []int64, until time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := s.pool.Exec(ctx, `UPDATE webhook_deliveries SET next_attempt = $2, lease_until = 0
		WHERE id = ANY($1) AND status = 'pending'`, ids, nanos(until))
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: hold webhook deliveries: %w", err))
	}
	return nil
}

// RecordWebhookAttempts records the outcomes of one request for every
// delivery it carried, in one statement.
func (s *Store) RecordWebhookAttempts(ctx context.Context, attempts []store.WebhookAttempt) error {
	if len(attempts) == 0 {
		return nil
	}
	now := time.Now().UnixNano()
	n := len(attempts)
	ids, nexts, codes := make([]int64, n), make([]int64, n), make([]int32, n)
	statuses, errs := make([]string, n), make([]string, n)
	for i, a := range attempts {
		switch a.Status {
		case deliveryPending, deliveryDelivered, deliveryFailed:
		default:
			return fmt.Errorf("postgres store: record webhook attempts: delivery %d: invalid status %q", a.ID, a.Status)
		}
		ids[i], statuses[i], errs[i], codes[i] = a.ID, a.Status, a.Error, int32(a.HTTPStatus)
		nexts[i] = nanos(a.Next)
		if a.Status == deliveryPending && nexts[i] == 0 {
			nexts[i] = now
		}
	}
	_, err := s.pool.Exec(ctx, `WITH v AS (
			SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::text[], $5::integer[]) AS v(id, status, next, error, code)
		), d AS (
			UPDATE webhook_deliveries d SET status = v.status, attempts = d.attempts + 1, next_attempt = v.next,
				lease_until = 0, last_error = v.error
			FROM v WHERE d.id = v.id
			RETURNING d.id
		)
		INSERT INTO webhook_attempts (delivery_id, time, http_status, error)
		SELECT v.id, $6, v.code, v.error FROM v JOIN d ON d.id = v.id`, ids, statuses, nexts, errs, codes, now)
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: record webhook attempts: %w", err))
	}
	return nil
}
