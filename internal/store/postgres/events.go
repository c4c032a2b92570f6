package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// eventInsCols are the columns written by an event insert, in bind order.
const eventInsCols = `time, type, account, message_id, recipient, sender, remote_mta, reply, enhanced, tls, bounce, attempt, tags, metadata`

// eventColsE are the columns read for an event, qualified by the alias e.
const eventColsE = `e.id, e.time, e.type, e.account, e.message_id, e.recipient, e.sender, e.remote_mta, e.reply, e.enhanced,
	e.tls, e.bounce, e.attempt, e.tags, e.metadata`

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

func scanEvent(sc pgx.Row, dst *store.Event) error {
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

// addEventsSQL inserts events (IDs in input order), fans each out to the
// matching webhooks of its account and counts them in the rollups, in one
// statement. $15 is each event's Queued time (0: none).
var addEventsSQL = `WITH v AS (
	SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
		$8::text[], $9::text[], $10::text[], $11::text[], $12::integer[], $13::text[], $14::text[], $15::bigint[]) WITH ORDINALITY
		AS v(` + eventInsCols + `, queued, ord)
), e AS (
	INSERT INTO events (id, ` + eventInsCols + `)
	SELECT nextval('events_id_seq'), ` + eventInsCols + ` FROM v ORDER BY ord
	RETURNING id, time, type, account
), f AS (
	INSERT INTO webhook_deliveries (webhook_id, event_id, next_attempt)
	SELECT w.id, e.id, e.time FROM e JOIN webhooks w
		ON w.account = e.account AND (w.event_types = '' OR strpos(w.event_types, ',' || e.type || ',') > 0)
)` + rollupCTEs(`(SELECT time AS t, account, type, recipient AS rcpt, tls,
	CASE WHEN queued <> 0 THEN time - queued END AS lat FROM v)`) + `
SELECT id FROM e ORDER BY id`

// eventArgs fills in the defaults of evs (DefaultAccount, now) and returns
// addEventsSQL's arguments for them.
func eventArgs(evs []store.Event) ([]any, error) {
	n := len(evs)
	times, attempts := make([]int64, n), make([]int32, n)
	types, accounts, msgIDs, rcpts, senders := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	mtas, replies, enhs, tlss, bounces := make([]string, n), make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	tagss, metas, queued := make([]string, n), make([]string, n), make([]int64, n)
	now := time.Now()
	for i := range evs {
		e := &evs[i]
		if e.Type == "" {
			return nil, fmt.Errorf("postgres store: add events: event %d has no type", i)
		}
		if e.Account == "" {
			e.Account = store.DefaultAccount
		}
		if e.Time.IsZero() {
			e.Time = now
		}
		tags, meta, err := encodeTagsMeta(e.Tags, e.Metadata)
		if err != nil {
			return nil, fmt.Errorf("postgres store: add events: %w", err)
		}
		times[i], types[i], accounts[i], msgIDs[i], rcpts[i], senders[i] = e.Time.UnixNano(), e.Type, e.Account, e.MessageID, e.Recipient, e.Sender
		mtas[i], replies[i], enhs[i], tlss[i], bounces[i] = e.RemoteMTA, e.Reply, e.Enhanced, e.TLS, e.Bounce
		attempts[i], tagss[i], metas[i] = int32(e.Attempt), tags, meta
		if !e.Queued.IsZero() {
			queued[i] = e.Queued.UnixNano()
		}
	}
	return []any{times, types, accounts, msgIDs, rcpts, senders, mtas, replies, enhs,
		tlss, bounces, attempts, tagss, metas, queued}, nil
}

// AddEvents appends events not tied to a queue change and fans them out
// to the matching webhooks, in one transaction. An empty Account is
// store.DefaultAccount and a zero Time is now; the IDs, accounts and times
// assigned are written back into evs.
func (s *Store) AddEvents(ctx context.Context, evs []store.Event) error {
	if len(evs) == 0 {
		return nil
	}
	n := len(evs)
	qargs, err := eventArgs(evs)
	if err != nil {
		return err
	}
	var ids []int64
	for retries := 0; ; retries++ {
		rows, err := s.pool.Query(ctx, addEventsSQL, qargs...)
		if err == nil {
			ids, err = pgx.CollectRows(rows, pgx.RowTo[int64])
		}
		if retryable(err) && retries < maxBatchRetries {
			// A rollup row of a shard another session shares, locked
			// in the other order (rollups.go).
			continue
		}
		if err != nil {
			return mapErr(fmt.Errorf("postgres store: add events: %w", err))
		}
		break
	}
	if len(ids) != n {
		return fmt.Errorf("postgres store: add events: %d of %d stored", len(ids), n)
	}
	for i := range evs {
		evs[i].ID = ids[i]
	}
	return nil
}

// args collects the arguments of a dynamic query and numbers their
// placeholders.
type args []any

func (a *args) add(v any) string {
	*a = append(*a, v)
	return "$" + strconv.Itoa(len(*a))
}

// ListEvents returns the events matching f ordered by ID.
//
// IDs increase in the order events are inserted; on several nodes, two
// transactions may commit in the other order, so a page read while events
// are being written can miss an event with a lower ID that commits just
// after it. Pagination is a view of the log, not a change feed: webhooks
// are (each delivery row is written with its event).
func (s *Store) ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error) {
	var where []string
	var a args
	if f.Account != "" {
		where = append(where, `e.account = `+a.add(f.Account))
	}
	if f.MessageID != "" {
		where = append(where, `e.message_id = `+a.add(f.MessageID)+` AND e.message_id <> ''`)
	}
	if f.Recipient != "" {
		where = append(where, `lower(e.recipient) = lower(`+a.add(strings.TrimSpace(f.Recipient))+`) AND e.recipient <> ''`)
	}
	if len(f.Types) > 0 {
		where = append(where, `e.type = ANY(`+a.add(f.Types)+`)`)
	}
	if f.Tag != "" {
		where = append(where, `e.tags <> '' AND jsonb_exists(e.tags::jsonb, `+a.add(f.Tag)+`)`)
	}
	if !f.Since.IsZero() {
		where = append(where, `e.time >= `+a.add(f.Since.UnixNano()))
	}
	if !f.Until.IsZero() {
		where = append(where, `e.time < `+a.add(f.Until.UnixNano()))
	}
	if f.After > 0 {
		where = append(where, `e.id > `+a.add(f.After))
	}
	q := `SELECT ` + eventColsE + ` FROM events e`
	if len(where) > 0 {
		q += ` WHERE ` + strings.Join(where, ` AND `)
	}
	q += ` ORDER BY e.id LIMIT ` + a.add(listLimit(f.Limit))
	return queryList(ctx, s, "list events", func(row pgx.Row) (store.Event, error) {
		var e store.Event
		err := scanEvent(row, &e)
		return e, err
	}, q, a...)
}

// pruneChunk is how many events one prune transaction deletes at most, so
// that a large prune holds no locks for long.
const pruneChunk = 2000

// idempotencyTTL is how long an idempotency key is remembered.
const idempotencyTTL = 24 * time.Hour

// deleteEventsSQL deletes events $1 with their webhook deliveries and those
// deliveries' attempt logs, and returns how many events it deleted.
const deleteEventsSQL = `WITH d AS (
	DELETE FROM webhook_deliveries WHERE event_id = ANY($1) RETURNING id
), a AS (
	DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM d)
), e AS (
	DELETE FROM events WHERE id = ANY($1) RETURNING id
)
SELECT count(*) FROM e`

// PruneEvents deletes events older than before, with their delivered or
// failed webhook deliveries and those deliveries' attempt logs. An event
// with a pending delivery is kept until the delivery is done. Idempotency
// keys older than a day, bodies abandoned by a dead node, and the rate
// windows and destinations idle for more than a day (nothing counting, no
// connection, no back-off) are deleted too, and the purges of deleted
// accounts that were cut short are finished. It returns how many events were deleted (by age). Work is
// split into short transactions. (Event IDs come from a sequence, which
// never goes back, so unlike SQLite no event needs to be kept.)
func (s *Store) PruneEvents(ctx context.Context, before time.Time) (int, error) {
	if err := s.resumePurges(ctx); err != nil {
		return 0, fmt.Errorf("postgres store: prune events: %w", err)
	}
	b := before.UnixNano()
	total := 0
	for {
		rows, err := s.pool.Query(ctx, `SELECT id FROM events e WHERE time < $1
			AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_id = e.id AND d.status = 'pending')
			ORDER BY id LIMIT $2`, b, pruneChunk)
		if err != nil {
			return total, fmt.Errorf("postgres store: prune events: %w", err)
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return total, fmt.Errorf("postgres store: prune events: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		var n int64
		if err := s.pool.QueryRow(ctx, deleteEventsSQL, ids).Scan(&n); err != nil {
			return total, mapErr(fmt.Errorf("postgres store: prune events: %w", err))
		}
		total += int(n)
		if len(ids) < pruneChunk {
			break
		}
	}
	cutoff := time.Now().Add(-idempotencyTTL).UnixNano()
	if _, err := s.pool.Exec(ctx, `DELETE FROM idempotency WHERE created < $1`, cutoff); err != nil {
		return total, mapErr(fmt.Errorf("postgres store: prune idempotency keys: %w", err))
	}
	// Batches idle since before the cutoff with no message in the queue.
	if _, err := s.pool.Exec(ctx, `DELETE FROM batches b WHERE b.updated < $1
		AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.batch_id = b.id)`, before.UnixNano()); err != nil {
		return total, mapErr(fmt.Errorf("postgres store: prune batches: %w", err))
	}
	if err := s.collectBodies(ctx); err != nil {
		return total, fmt.Errorf("postgres store: collect abandoned bodies: %w", err)
	}
	if err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error { return pruneShared(ctx, tx, time.Now()) }); err != nil {
		return total, mapErr(fmt.Errorf("postgres store: prune idle rate windows and destinations: %w", err))
	}
	return total, nil
}

// encodeTypes stores a webhook's event types as ",a,b," ("" for all), so
// that the fan-out matches a type with strpos.
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
// (store.ErrLimit); max < 1 means no limit. Count and insert run under an
// advisory lock of the account, so concurrent calls on any nodes cannot
// exceed max together.
func (s *Store) AddWebhookLimited(ctx context.Context, wh store.Webhook, max int) error {
	if wh.ID == "" || wh.URL == "" {
		return errors.New("postgres store: add webhook: empty ID or URL")
	}
	if wh.Account == "" {
		wh.Account = store.DefaultAccount
	}
	types, err := encodeTypes(wh.EventTypes)
	if err != nil {
		return fmt.Errorf("postgres store: add webhook %s: %w", wh.ID, err)
	}
	created := wh.Created
	if created.IsZero() {
		created = time.Now()
	}
	err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('herald.webhooks'), hashtext($1))`, wh.Account); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM webhooks WHERE account = $1`, wh.Account).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return fmt.Errorf("account %q has %d webhooks (limit %d): %w", wh.Account, n, max, store.ErrLimit)
			}
		}
		tag, err := tx.Exec(ctx, `INSERT INTO webhooks (`+webhookCols+`)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING`,
			wh.ID, wh.Account, wh.URL, wh.Secret, types, nanos(created), batchMax(wh.BatchMax), int64(wh.BatchWait),
			wh.PreviousSecret, nanos(wh.PreviousExpires), nanos(wh.SecretRotated))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		return nil
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: add webhook %s: %w", wh.ID, err))
	}
	return nil
}

// ListWebhooks returns the webhooks of account ordered by ID.
func (s *Store) ListWebhooks(ctx context.Context, account string) ([]store.Webhook, error) {
	return queryList(ctx, s, "list webhooks", scanWebhook,
		`SELECT `+webhookCols+` FROM webhooks WHERE account = $1 ORDER BY id`, account)
}

// DeleteWebhook removes a webhook of account and drops its pending
// deliveries; a webhook that does not exist or belongs to another account
// returns store.ErrNotFound.
func (s *Store) DeleteWebhook(ctx context.Context, account, id string) error {
	var n int64
	err := s.pool.QueryRow(ctx, `WITH h AS (
			DELETE FROM webhooks WHERE id = $1 AND account = $2 RETURNING id
		), d AS (
			DELETE FROM webhook_deliveries WHERE webhook_id = (SELECT id FROM h) AND status = 'pending'
		)
		SELECT count(*) FROM h`, id, account).Scan(&n)
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: delete webhook %s: %w", id, err))
	}
	if n == 0 {
		return fmt.Errorf("postgres store: delete webhook %s: %w", id, store.ErrNotFound)
	}
	return nil
}

const deliveryCols = `d.id, d.webhook_id, d.attempts, d.next_attempt, d.last_error, d.status`

func scanDelivery(sc pgx.Row) (store.WebhookDelivery, error) {
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

// LeaseWebhookDeliveries returns up to limit pending deliveries due at or
// before now and not leased, earliest due first, leasing them until now+d.
// Deliveries are claimed with FOR UPDATE SKIP LOCKED, so concurrent calls
// on any nodes never lease the same delivery (each is sent by one node).
func (s *Store) LeaseWebhookDeliveries(ctx context.Context, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error) {
	if limit <= 0 {
		return nil, nil
	}
	var out []store.WebhookDelivery
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `WITH c AS (
				SELECT d.id, GREATEST(d.next_attempt, d.lease_until + 1) AS ready FROM webhook_deliveries d
				WHERE d.status = 'pending' AND GREATEST(d.next_attempt, d.lease_until + 1) <= $1
				ORDER BY GREATEST(d.next_attempt, d.lease_until + 1)
				LIMIT $3
				FOR UPDATE SKIP LOCKED
			), d AS (
				UPDATE webhook_deliveries d SET lease_until = $2 FROM c WHERE d.id = c.id
				RETURNING d.id, d.webhook_id, d.attempts, d.next_attempt, d.last_error, d.status, d.event_id, c.ready
			)
			SELECT `+deliveryCols+`, `+eventColsE+` FROM d JOIN events e ON e.id = d.event_id
			ORDER BY d.ready, d.id`, nanos(now), nanos(now.Add(d)), limit)
		if err != nil {
			return err
		}
		out, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.WebhookDelivery, error) { return scanDelivery(row) })
		return err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: lease webhook deliveries: %w", err))
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
		return fmt.Errorf("postgres store: record webhook attempt %d: invalid status %q", id, status)
	}
	now := time.Now()
	nx := nanos(next)
	if status == deliveryPending && nx == 0 {
		nx = now.UnixNano()
	}
	var n int64
	err := s.pool.QueryRow(ctx, `WITH d AS (
			UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_attempt = $3, lease_until = 0, last_error = $4
			WHERE id = $1 RETURNING id
		), a AS (
			INSERT INTO webhook_attempts (delivery_id, time, http_status, error) SELECT id, $5, $6, $4 FROM d
		)
		SELECT count(*) FROM d`, id, status, nx, errText, now.UnixNano(), httpStatus).Scan(&n)
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: record webhook attempt %d: %w", id, err))
	}
	if n == 0 {
		return fmt.Errorf("postgres store: record webhook attempt %d: %w", id, store.ErrNotFound)
	}
	return nil
}

// ListWebhookDeliveries returns the most recent deliveries (newest first)
// of webhook webhookID of account, or of all the account's webhooks when
// webhookID is "", with their events. limit defaults to 100, at most 1000.
func (s *Store) ListWebhookDeliveries(ctx context.Context, account, webhookID string, limit int) ([]store.WebhookDelivery, error) {
	var a args
	q := `SELECT ` + deliveryCols + `, ` + eventColsE + `
		FROM webhook_deliveries d JOIN webhooks h ON h.id = d.webhook_id JOIN events e ON e.id = d.event_id
		WHERE h.account = ` + a.add(account)
	if webhookID != "" {
		q += ` AND d.webhook_id = ` + a.add(webhookID)
	}
	q += ` ORDER BY d.id DESC LIMIT ` + a.add(listLimit(limit))
	return queryList(ctx, s, "list webhook deliveries", scanDelivery, q, a...)
}

// queryList runs a read query and scans each row with scan.
func queryList[T any](ctx context.Context, s *Store, what string, scan func(pgx.Row) (T, error), q string, args ...any) ([]T, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("postgres store: %s: %w", what, err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (T, error) { return scan(row) })
	if err != nil {
		return nil, fmt.Errorf("postgres store: %s: %w", what, err)
	}
	return out, nil
}

// getOne reads one row with scan, mapping no row to store.ErrNotFound.
func getOne[T any](ctx context.Context, s *Store, what string, scan func(pgx.Row) (T, error), q string, args ...any) (T, error) {
	v, err := scan(s.pool.QueryRow(ctx, q, args...))
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf("postgres store: %s: %w", what, err)
	}
	return v, nil
}
