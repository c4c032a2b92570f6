package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// eventInsCols are the columns written by an event insert, in bind order.
const eventInsCols = `time, type, account, message_id, recipient, sender, remote_mta, reply, enhanced, tls, bounce, attempt, tags, metadata`

// eventCols are the columns read for an event, in scan order.
const eventCols = `id, ` + eventInsCols

// Event list limits.
const (
	defaultListLimit = 100
	maxListLimit     = 1000
)

// listLimit applies the default and maximum to a requested page size.
func listLimit(n int) int {
	switch {
	case n <= 0:
		return defaultListLimit
	case n > maxListLimit:
		return maxListLimit
	}
	return n
}

// encodeTagsMeta returns the stored form of a message's tags and metadata:
// JSON, or "" when empty, so that events without them stay small.
func encodeTagsMeta(tags []string, meta map[string]string) (string, string, error) {
	var t, m string
	if len(tags) > 0 {
		b, err := json.Marshal(tags)
		if err != nil {
			return "", "", fmt.Errorf("encode tags: %w", err)
		}
		t = string(b)
	}
	if len(meta) > 0 {
		b, err := json.Marshal(meta)
		if err != nil {
			return "", "", fmt.Errorf("encode metadata: %w", err)
		}
		m = string(b)
	}
	return t, m, nil
}

// decodeTagsMeta is the inverse of encodeTagsMeta; empty decodes to nil.
func decodeTagsMeta(t, m string) ([]string, map[string]string, error) {
	var tags []string
	var meta map[string]string
	if t != "" {
		if err := json.Unmarshal([]byte(t), &tags); err != nil {
			return nil, nil, fmt.Errorf("decode tags: %w", err)
		}
	}
	if m != "" {
		if err := json.Unmarshal([]byte(m), &meta); err != nil {
			return nil, nil, fmt.Errorf("decode metadata: %w", err)
		}
	}
	return tags, meta, nil
}

// outcomeEvent returns the event type recorded for a recipient reaching
// status, or "" for none.
func outcomeEvent(s store.Status) string {
	switch s {
	case store.StatusDeferred:
		return store.EventDeferred
	case store.StatusDelivered:
		return store.EventDelivered
	case store.StatusFailed:
		return store.EventBounced
	case store.StatusExpired:
		return store.EventExpired
	}
	return ""
}

func scanEvent(sc scanner, dst *store.Event) error {
	var t int64
	var tags, meta string
	if err := sc.Scan(&dst.ID, &t, &dst.Type, &dst.Account, &dst.MessageID, &dst.Recipient, &dst.Sender,
		&dst.RemoteMTA, &dst.Reply, &dst.Enhanced, &dst.TLS, &dst.Bounce, &dst.Attempt, &tags, &meta); err != nil {
		return err
	}
	dst.Time = fromNanos(t)
	var err error
	if dst.Tags, dst.Metadata, err = decodeTagsMeta(tags, meta); err != nil {
		return fmt.Errorf("event %d: %w", dst.ID, err)
	}
	return nil
}

// webhookCache remembers which accounts have webhooks, so that an event of
// an account without any costs no fan-out statement. Changes made by other
// connections (another process) are noticed through PRAGMA data_version,
// read once per transaction; this writer's own changes to webhooks, and any
// rollback, invalidate it.
type webhookCache struct {
	accounts map[string]struct{}
	valid    bool  // accounts matches the database as this connection sees it
	version  int64 // PRAGMA data_version when last compared
	checked  bool  // version was compared in the current transaction
}

// hasWebhooks reports whether account has at least one webhook.
func (w *writer) hasWebhooks(account string) (bool, error) {
	c := &w.hooks
	if !c.checked {
		var v int64
		if err := w.st.dataVersion.QueryRow().Scan(&v); err != nil {
			return false, err
		}
		if v != c.version {
			c.valid, c.version = false, v
		}
		c.checked = true
	}
	if !c.valid {
		rows, err := w.st.hookAccounts.Query()
		if err != nil {
			return false, err
		}
		accounts := make(map[string]struct{})
		for rows.Next() {
			var a string
			if err := rows.Scan(&a); err != nil {
				rows.Close()
				return false, err
			}
			accounts[a] = struct{}{}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return false, err
		}
		c.accounts, c.valid = accounts, true
	}
	_, ok := c.accounts[account]
	return ok, nil
}

// fanOut queues event res (just inserted) for the matching webhooks of
// account.
func (w *writer) fanOut(res sql.Result, t int64, account, typ string) error {
	id, err := res.LastInsertId()
	if err != nil {
		return err
	}
	_, err = w.st.fanOut.Exec(id, t, account, typ)
	return err
}

// insertEvent inserts one event (its time t in Unix ns, tags and metadata
// encoded) inside the writer's transaction, counts it in the rollups and
// fans it out to the account's webhooks; it returns the event's ID.
func (w *writer) insertEvent(e *store.Event, t int64, tags, meta string) (int64, error) {
	res, err := w.st.insEvent.Exec(t, e.Type, e.Account, e.MessageID, e.Recipient, e.Sender, e.RemoteMTA,
		e.Reply, e.Enhanced, e.TLS, e.Bounce, e.Attempt, tags, meta)
	if err != nil {
		return 0, err
	}
	id, err := res.LastInsertId()
	if err != nil {
		return 0, err
	}
	w.roll.add(t, e.Account, e.Type, e.Recipient, e.TLS, e.Time.Sub(e.Queued), !e.Queued.IsZero())
	hooked, err := w.hasWebhooks(e.Account)
	if err != nil {
		return 0, err
	}
	if hooked {
		if _, err := w.st.fanOut.Exec(id, t, e.Account, e.Type); err != nil {
			return 0, err
		}
	}
	return id, nil
}

// AddEvents appends events not tied to a queue change and fans them out
// to the matching webhooks, in one transaction. An empty Account is
// store.DefaultAccount and a zero Time is now; the IDs, accounts and times
// assigned are written back into evs.
func (s *Store) AddEvents(ctx context.Context, evs []store.Event) error {
	if len(evs) == 0 {
		return nil
	}
	type row struct {
		t          int64
		tags, meta string
	}
	rows := make([]row, len(evs))
	now := time.Now()
	for i := range evs {
		e := &evs[i]
		if e.Type == "" {
			return fmt.Errorf("sqlite store: add events: event %d has no type", i)
		}
		if e.Account == "" {
			e.Account = store.DefaultAccount
		}
		if e.Time.IsZero() {
			e.Time = now
		}
		tags, meta, err := encodeTagsMeta(e.Tags, e.Metadata)
		if err != nil {
			return fmt.Errorf("sqlite store: add events: %w", err)
		}
		rows[i] = row{e.Time.UnixNano(), tags, meta}
	}
	ids := make([]int64, len(evs))
	err := s.w.do(ctx, false, func(w *writer) error {
		for i := range evs {
			var err error
			if ids[i], err = w.insertEvent(&evs[i], rows[i].t, rows[i].tags, rows[i].meta); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add events: %w", err)
	}
	for i := range evs {
		evs[i].ID = ids[i]
	}
	return nil
}

// ListEvents returns the events matching f ordered by ID.
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	var where []string
	var args []any
	add := func(cond string, a ...any) {
		where = append(where, cond)
		args = append(args, a...)
	}
	if f.Account != "" {
		add(`account = ?`, f.Account)
	}
	if f.MessageID != "" {
		add(`message_id = ?`, f.MessageID)
	}
	if f.Recipient != "" {
		add(`recipient = ? COLLATE NOCASE AND recipient != ''`, strings.TrimSpace(f.Recipient))
	}
	if len(f.Types) > 0 {
		ph := strings.Repeat(", ?", len(f.Types))[2:]
		a := make([]any, len(f.Types))
		for i, t := range f.Types {
			a[i] = t
		}
		add(`type IN (`+ph+`)`, a...)
	}
	if f.Tag != "" {
		add(`tags != '' AND EXISTS (SELECT 1 FROM json_each(events.tags) WHERE value = ?)`, f.Tag)
	}
	if !f.Since.IsZero() {
		add(`time >= ?`, f.Since.UnixNano())
	}
	if !f.Until.IsZero() {
		add(`time < ?`, f.Until.UnixNano())
	}
	if f.After > 0 {
		add(`id > ?`, f.After)
	}
	q := `SELECT ` + eventCols + ` FROM events`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY id LIMIT ?`
	args = append(args, listLimit(f.Limit))
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: list events: %w", err)
	}
	defer rows.Close()
	var out []store.Event
	for rows.Next() {
		var e store.Event
		if err := scanEvent(rows, &e); err != nil {
			return nil, fmt.Errorf("sqlite store: list events: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: list events: %w", err)
	}
	return out, nil
}

// pruneChunk is how many events one prune transaction deletes at most, so
// that a large prune does not hold the writer for long.
const pruneChunk = 2000

// idempotencyTTL is how long an idempotency key is remembered.
const idempotencyTTL = 24 * time.Hour

// PruneEvents deletes events older than before, with their delivered or
// failed webhook deliveries and those deliveries' attempt logs. An event
// with a pending delivery is kept until the delivery is done, and so is
// the newest event (it keeps event IDs increasing). Idempotency
// keys older than a day are deleted too, and the purges of deleted
// accounts that were cut short are finished. It returns how many events
// were deleted (by age). Work is split into short transactions.
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	if err := s.resumePurges(ctx); err != nil {
		return 0, fmt.Errorf("sqlite store: prune events: %w", err)
	}
	b := before.UnixNano()
	total := 0
	for {
		var n int64
		err := s.w.do(ctx, false, func(w *writer) error {
			bg := context.Background()
			n = 0
			// Old events with no pending delivery, oldest (lowest ID) first.
			// The newest event is kept, so that IDs (rowids) are never reused.
			rows, err := w.conn.QueryContext(bg, `SELECT id FROM events e WHERE time < ?
				AND id < (SELECT max(id) FROM events)
				AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
				ORDER BY id LIMIT ?`, b, pruneChunk)
			if err != nil {
				return err
			}
			var ids []int64
			for rows.Next() {
				var id int64
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return err
				}
				ids = append(ids, id)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return err
			}
			if len(ids) == 0 {
				return nil
			}
			deleted, err := w.deleteEvents(ids)
			n = int64(deleted)
			return err
		})
		if err != nil {
			return total, fmt.Errorf("sqlite store: prune events: %w", err)
		}
		total += int(n)
		if n < pruneChunk {
			break
		}
	}
	cutoff := time.Now().Add(-idempotencyTTL).UnixNano()
	if err := s.execOne(ctx, "prune idempotency keys", nil, `DELETE FROM idempotency WHERE created < ?`, cutoff); err != nil {
		return total, err
	}
	// Batches idle since before the cutoff with no message in the queue.
	if err := s.execOne(ctx, "prune batches", nil, `DELETE FROM batches WHERE updated < ?
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.batch_id = batches.id)`, b); err != nil {
		return total, err
	}
	return total, nil
}

// encodeTypes stores a webhook's event types as ",a,b," ("" for all), so
// that the fan-out trigger matches a type with instr.
func encodeTypes(types []string) (string, error) {
	if len(types) == 0 {
		return "", nil
	}
	for _, t := range types {
		if t == "" || strings.Contains(t, ",") {
			return "", fmt.Errorf("invalid event type %q", t)
		}
	}
	return "," + strings.Join(types, ",") + ",", nil
}

func decodeTypes(s string) []string {
	s = strings.Trim(s, ",")
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// AddWebhook stores a webhook; an existing ID returns store.ErrExists. An
// empty Account is store.DefaultAccount and a zero Created is now. From
// then on, every new event of the account whose type it subscribes to is
// queued for it.
func (s *Store) AddWebhook(ctx context.Context, wh store.Webhook) error {
	return s.AddWebhookLimited(ctx, wh, 0)
}

// AddWebhookLimited adds a webhook unless its account already has max
// (store.ErrLimit); max < 1 means no limit. The count and the insert run in
// the writer's transaction, so concurrent calls cannot exceed max.
func (s *Store) AddWebhookLimited(ctx context.Context, wh store.Webhook, max int) error {
	if wh.ID == "" || wh.URL == "" {
		return errors.New("sqlite store: add webhook: empty ID or URL")
	}
	if wh.Account == "" {
		wh.Account = store.DefaultAccount
	}
	types, err := encodeTypes(wh.EventTypes)
	if err != nil {
		return fmt.Errorf("sqlite store: add webhook %s: %w", wh.ID, err)
	}
	created := wh.Created
	if created.IsZero() {
		created = time.Now()
	}
	err = s.w.do(ctx, false, func(w *writer) error {
		if max > 0 {
			var n int
			if err := w.conn.QueryRowContext(context.Background(),
				`SELECT COUNT(*) FROM webhooks WHERE account = ?`, wh.Account).Scan(&n); err != nil {
				return clean(err)
			}
			if n >= max {
				return clean(fmt.Errorf("account %q has %d webhooks (limit %d): %w", wh.Account, n, max, store.ErrLimit))
			}
		}
		res, err := w.conn.ExecContext(context.Background(),
			`INSERT INTO webhooks (`+webhookCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			wh.ID, wh.Account, wh.URL, wh.Secret, types, nanos(created), batchMax(wh.BatchMax), int64(wh.BatchWait),
			wh.PreviousSecret, nanos(wh.PreviousExpires), nanos(wh.SecretRotated))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrExists)
		}
		w.hooks.valid = false
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add webhook %s: %w", wh.ID, err)
	}
	return nil
}

// ListWebhooks returns the webhooks of account ordered by ID.
func (s *Store) ListWebhooks(ctx context.Context, account string) ([]store.Webhook, error) {
	return queryList(ctx, s, "list webhooks", scanWebhook,
		`SELECT `+webhookCols+` FROM webhooks WHERE account = ? ORDER BY id`, account)
}

// DeleteWebhook removes a webhook of account and drops its pending
// deliveries; a webhook that does not exist or belongs to another account
// returns store.ErrNotFound.
func (s *Store) DeleteWebhook(ctx context.Context, account, id string) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `DELETE FROM webhooks WHERE id = ? AND account = ?`, id, account)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrNotFound)
		}
		w.hooks.valid = false
		_, err = w.conn.ExecContext(bg, `DELETE FROM webhook_deliveries WHERE webhook_id = ? AND status = 'pending'`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: delete webhook %s: %w", id, err)
	}
	return nil
}

const deliveryCols = `d.id, d.webhook_id, d.attempts, d.next_attempt, d.last_error, d.status`

func scanDelivery(sc scanner) (store.WebhookDelivery, error) {
	var d store.WebhookDelivery
	var next, t int64
	var tags, meta string
	e := &d.Event
	err := sc.Scan(&d.ID, &d.WebhookID, &d.Attempts, &next, &d.LastError, &d.Status,
		&e.ID, &t, &e.Type, &e.Account, &e.MessageID, &e.Recipient, &e.Sender,
		&e.RemoteMTA, &e.Reply, &e.Enhanced, &e.TLS, &e.Bounce, &e.Attempt, &tags, &meta)
	if err != nil {
		return d, err
	}
	d.NextAttempt = fromNanos(next)
	e.Time = fromNanos(t)
	if e.Tags, e.Metadata, err = decodeTagsMeta(tags, meta); err != nil {
		return d, fmt.Errorf("event %d: %w", e.ID, err)
	}
	return d, nil
}

// eventColsE is eventCols qualified by the alias e.
var eventColsE = "e." + strings.ReplaceAll(eventCols, ", ", ", e.")

// LeaseWebhookDeliveries returns up to limit pending deliveries due at or
// before now and not leased, earliest due first, leasing them until now+d.
// It runs in the writer, so concurrent calls never lease the same delivery.
func (s *Store) LeaseWebhookDeliveries(ctx context.Context, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	n, u := nanos(now), nanos(now.Add(d))
	var out []store.WebhookDelivery
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		out = out[:0]
		rows, err := w.conn.QueryContext(bg, `SELECT `+deliveryCols+`, `+eventColsE+`
			FROM webhook_deliveries d JOIN events e ON e.id = d.event_id
			WHERE d.status = 'pending' AND max(d.next_attempt, d.lease_until + 1) <= ?
			ORDER BY max(d.next_attempt, d.lease_until + 1), d.id LIMIT ?`, n, limit)
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
		for _, dl := range out {
			if _, err := w.conn.ExecContext(bg, `UPDATE webhook_deliveries SET lease_until = ? WHERE id = ?`, u, dl.ID); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite store: lease webhook deliveries: %w", err)
	}
	return out, nil
}

// Webhook delivery states.
const (
	deliveryPending   = "pending"
	deliveryDelivered = "delivered"
	deliveryFailed    = "failed"
)

// RecordWebhookAttempt stores the outcome of one attempt of delivery id:
// its new status, next attempt (for pending) and error, releasing its
// lease, and appends the attempt to the log. An unknown delivery returns
// store.ErrNotFound.
func (s *Store) RecordWebhookAttempt(ctx context.Context, id int64, status string, next time.Time, errText string, httpStatus int) error {
	switch status {
	case deliveryPending, deliveryDelivered, deliveryFailed:
	default:
		return fmt.Errorf("sqlite store: record webhook attempt %d: invalid status %q", id, status)
	}
	now := time.Now()
	nx := nanos(next)
	if status == deliveryPending && nx == 0 {
		nx = now.UnixNano()
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `UPDATE webhook_deliveries SET status = ?, attempts = attempts + 1,
			next_attempt = ?, lease_until = 0, last_error = ? WHERE id = ?`, status, nx, errText, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrNotFound)
		}
		_, err = w.conn.ExecContext(bg, `INSERT INTO webhook_attempts (delivery_id, time, http_status, error) VALUES (?, ?, ?, ?)`,
			id, now.UnixNano(), httpStatus, errText)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: record webhook attempt %d: %w", id, err)
	}
	return nil
}

// ListWebhookDeliveries returns the most recent deliveries (newest first)
// of webhook webhookID of account, or of all the account's webhooks when
// webhookID is "", with their events. limit defaults to 100, at most 1000.
func (s *Store) ListWebhookDeliveries(ctx context.Context, account, webhookID string, limit int) ([]store.WebhookDelivery, error) {
	q := `SELECT ` + deliveryCols + `, ` + eventColsE + `
		FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id JOIN events e ON e.id = d.event_id
		WHERE h.account = ?`
	args := []any{account}
	if webhookID != "" {
		q += ` AND d.webhook_id = ?`
		args = append(args, webhookID)
	}
	q += ` ORDER BY d.id DESC LIMIT ?`
	args = append(args, listLimit(limit))
	return queryList(ctx, s, "list webhook deliveries", scanDelivery, q, args...)
}

// errNoRows reports whether err is sql.ErrNoRows.
func errNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }
