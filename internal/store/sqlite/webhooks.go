package sqlite

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// webhookCols are the columns of a webhook, in scanWebhook's order.
const webhookCols = `id, account, url, secret, event_types, created, batch_max, batch_wait, prev_secret, prev_expires, secret_rotated`

// scanWebhook reads a row of webhookCols.
func scanWebhook(sc scanner) (store.Webhook, error) {
	var wh store.Webhook
	var types string
	var created, wait, prevExp, rotated int64
	if err := sc.Scan(&wh.ID, &wh.Account, &wh.URL, &wh.Secret, &types, &created,
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

// GetWebhook returns webhook id of any account (store.ErrNotFound).
func (s *Store) GetWebhook(ctx context.Context, id string) (store.Webhook, error) {
	return getOne(ctx, s, "get webhook", scanWebhook, `SELECT `+webhookCols+` FROM webhooks WHERE id = ?`, id)
}

// updateWebhook runs set (an UPDATE ... SET clause without WHERE) on
// webhook id of account in the writer and returns the webhook as it is
// then; store.ErrNotFound if account has no such webhook.
func (s *Store) updateWebhook(ctx context.Context, what, account, id, set string, args ...any) (store.Webhook, error) {
	var out store.Webhook
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `UPDATE webhooks SET `+set+` WHERE id = ? AND account = ?`,
			append(args, id, account)...)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrNotFound)
		}
		out, err = scanWebhook(w.conn.QueryRowContext(bg, `SELECT `+webhookCols+` FROM webhooks WHERE id = ?`, id))
		return err
	})
	if err != nil {
		return store.Webhook{}, fmt.Errorf("sqlite store: %s %s: %w", what, id, mapErr(err))
	}
	return out, nil
}

// UpdateWebhook applies c to webhook id of account.
func (s *Store) UpdateWebhook(ctx context.Context, account, id string, c store.WebhookChange) (store.Webhook, error) {
	set := `id = id`
	var args []any
	if c.URL != nil {
		if *c.URL == "" {
			return store.Webhook{}, fmt.Errorf("sqlite store: update webhook %s: empty URL", id)
		}
		set += `, url = ?`
		args = append(args, *c.URL)
	}
	if c.EventTypes != nil {
		types, err := encodeTypes(*c.EventTypes)
		if err != nil {
			return store.Webhook{}, fmt.Errorf("sqlite store: update webhook %s: %w", id, err)
		}
		set += `, event_types = ?`
		args = append(args, types)
	}
	if c.BatchMax != nil {
		set += `, batch_max = ?`
		args = append(args, batchMax(*c.BatchMax))
	}
	if c.BatchWait != nil {
		set += `, batch_wait = ?`
		args = append(args, int64(max(*c.BatchWait, 0)))
	}
	return s.updateWebhook(ctx, "update webhook", account, id, set, args...)
}

// RotateWebhookSecret makes secret the webhook's secret; the old one signs
// too until previousExpires.
func (s *Store) RotateWebhookSecret(ctx context.Context, account, id, secret string, now, previousExpires time.Time) (store.Webhook, error) {
	if secret == "" {
		return store.Webhook{}, fmt.Errorf("sqlite store: rotate webhook secret %s: empty secret", id)
	}
	if !previousExpires.After(now) {
		return s.updateWebhook(ctx, "rotate webhook secret", account, id,
			`prev_secret = '', prev_expires = 0, secret = ?, secret_rotated = ?`, secret, nanos(now))
	}
	return s.updateWebhook(ctx, "rotate webhook secret", account, id,
		`prev_secret = secret, prev_expires = ?, secret = ?, secret_rotated = ?`, nanos(previousExpires), secret, nanos(now))
}

// ExpireWebhookPreviousSecret forgets the previous secret of webhook id.
func (s *Store) ExpireWebhookPreviousSecret(ctx context.Context, account, id string) (store.Webhook, error) {
	return s.updateWebhook(ctx, "expire previous webhook secret", account, id, `prev_secret = '', prev_expires = 0`)
}

// LeaseWebhookBatch leases up to limit more deliveries of one webhook for
// a batch. It runs in the writer, so no two callers lease the same
// delivery.
func (s *Store) LeaseWebhookBatch(ctx context.Context, webhookID string, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	n, u := nanos(now), nanos(now.Add(d))
	var out []store.WebhookDelivery
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		out = out[:0]
		rows, err := w.conn.QueryContext(bg, `SELECT `+deliveryCols+`, `+eventColsE+`
			FROM webhook_deliveries d INDEXED BY webhook_deliveries_pending JOIN events e ON e.id = d.event_id
			WHERE d.webhook_id = ? AND d.status = 'pending' AND d.lease_until < ? AND (d.next_attempt <= ? OR d.attempts = 0)
			ORDER BY d.event_id LIMIT ?`, webhookID, n, n, limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			dl, err := scanDelivery(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, dl)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		if len(out) == 0 {
			return nil
		}
		_, err = w.conn.ExecContext(bg, `UPDATE webhook_deliveries SET lease_until = ? WHERE id IN (SELECT value FROM json_each(?))`,
			u, deliveryIDs(out))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite store: lease webhook batch of %s: %w", webhookID, mapErr(err))
	}
	return out, nil
}

// deliveryIDs encodes the IDs of ds as a JSON array, for json_each.
func deliveryIDs(ds []store.WebhookDelivery) string {
	ids := make([]int64, len(ds))
	for i, d := range ds {
		ids[i] = d.ID
	}
	b, _ := json.Marshal(ids)
	return string(b)
}

// HoldWebhookDeliveries makes the pending deliveries ids due at until and
// releases their leases.
func (s *Store) HoldWebhookDeliveries(ctx context.Context, ids []int64, until time.Time) error {
	if len(ids) == 0 {
		return nil
	}
	list, err := json.Marshal(ids)
	if err != nil {
		return fmt.Errorf("sqlite store: hold webhook deliveries: %w", err)
	}
	err = s.w.do(ctx, false, func(w *writer) error {
		_, err := w.conn.ExecContext(context.Background(), `UPDATE webhook_deliveries SET next_attempt = ?, lease_until = 0
			WHERE id IN (SELECT value FROM json_each(?)) AND status = 'pending'`, nanos(until), string(list))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: hold webhook deliveries: %w", mapErr(err))
	}
	return nil
}

// RecordWebhookAttempts records the outcomes of one request for every
// delivery it carried, in one transaction.
func (s *Store) RecordWebhookAttempts(ctx context.Context, attempts []store.WebhookAttempt) error {
	now := time.Now()
	for _, a := range attempts {
		switch a.Status {
		case deliveryPending, deliveryDelivered, deliveryFailed:
		default:
			return fmt.Errorf("sqlite store: record webhook attempts: delivery %d: invalid status %q", a.ID, a.Status)
		}
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		for _, a := range attempts {
			nx := nanos(a.Next)
			if a.Status == deliveryPending && nx == 0 {
				nx = now.UnixNano()
			}
			res, err := w.conn.ExecContext(bg, `UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1,
				next_attempt = ?, lease_until = 0, last_error = ? WHERE id = ?`, a.Status, nx, a.Error, a.ID)
			if err != nil {
				return err
			}
			if n, err := res.RowsAffected(); err != nil {
				return err
			} else if n == 0 {
				continue
			}
			if _, err := w.conn.ExecContext(bg, `INSERT INTO webhook_attempts (delivery_id, time, http_status, error) VALUES (?, ?, ?, ?)`,
				a.ID, now.UnixNano(), a.HTTPStatus, a.Error); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: record webhook attempts: %w", mapErr(err))
	}
	return nil
}

// batchMax is a stored batch size: at least 1.
func batchMax(n int) int {
	if n < 1 {
		return 1
	}
	return n
}
