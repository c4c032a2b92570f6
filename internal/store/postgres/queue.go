package postgres

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

const msgCols = `m.id, m.sender, m.received, m.size, m.ret, m.envid, m.client_ip, m.helo, m.auth_user, m.source, m.smtputf8,
	m.account, m.tags, m.metadata, m.batch_id, m.send_at, m.headers`

const rcptCols = `r.id, r.address, r.notify, r.orcpt, r.status, r.attempts, r.next_attempt, r.last_reply, r.remote_mta,
	r.delay_warned, r.updated_at`

// pendingSQL is the condition of a recipient still to be delivered;
// readySQL is when it can next be leased (due, and its lease, if any,
// expired). recipients_ready indexes readySQL under pendingSQL.
const (
	pendingSQL = `r.status IN ('queued', 'deferred')`
	readySQL   = `GREATEST(r.next_attempt, r.lease_until + 1)`
)

// validID reports whether id is usable as a queue ID (the SQLite store's
// rule, so that queues copy between the backends).
func validID(id string) bool {
	if id == "" || len(id) > 200 || id[0] == '.' || id == "tmp" {
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

// enqueueSQL stores a message, its recipients (IDs in input order: nextval
// runs after the sort), one accepted event per recipient with its webhook
// deliveries and their rollups, and the last chunk of a chunked body, in
// one statement. It
// returns the recipient IDs, and whether the body's earlier chunks ($27:
// there are some) are still pending. A duplicate ID, or chunks collected
// as abandoned, insert nothing and return no IDs.
var enqueueSQL = `WITH m AS (
	INSERT INTO messages (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8,
		account, tags, metadata, headers, body_id, body, batch_id, send_at)
	SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $28, $29
	WHERE (NOT $27::boolean OR EXISTS (SELECT 1 FROM pending_bodies WHERE id = $16))
		AND ($28 = '' OR EXISTS (SELECT 1 FROM batches WHERE id = $28 AND account = $12 AND state <> 'cancelled'))
	ON CONFLICT DO NOTHING
	RETURNING id
), r AS (
	INSERT INTO recipients (id, message_id, address, notify, orcpt, status, attempts, next_attempt,
		lease_until, lease_owner, lease_token, updated_at)
	SELECT nextval('recipients_id_seq'), m.id, u.address, u.notify, u.orcpt, 'queued', 0, GREATEST($3, $29), $21, $22, $23, $24
	FROM m, unnest($18::text[], $19::text[], $20::text[]) WITH ORDINALITY AS u(address, notify, orcpt, ord)
	ORDER BY u.ord
	RETURNING id, address
), e AS (
	INSERT INTO events (time, type, account, message_id, recipient, sender, tags, metadata)
	SELECT $24, 'accepted', $12, $1, r.address, $2, $13, $14 FROM r ORDER BY r.id
	RETURNING id
), f AS (
	INSERT INTO webhook_deliveries (webhook_id, event_id, next_attempt)
	SELECT w.id, e.id, $24 FROM e JOIN webhooks w
		ON w.account = $12 AND (w.event_types = '' OR strpos(w.event_types, ',accepted,') > 0)
)` + rollupCTEs(`(SELECT $24::bigint AS t, $12::text AS account, 'accepted'::text AS type, r.address AS rcpt,
	''::text AS tls, NULL::bigint AS lat FROM r)`) + `, c AS (
	INSERT INTO body_chunks (body_id, seq, data) SELECT $16, $25, $26 FROM m WHERE $26::bytea IS NOT NULL
), p AS (
	DELETE FROM pending_bodies WHERE id = $16 AND EXISTS (SELECT 1 FROM m)
), b AS (
	UPDATE batches SET messages = messages + 1, recipients = recipients + cardinality($18::text[]),
		updated = GREATEST(updated, $24)
	WHERE id = $28 AND EXISTS (SELECT 1 FROM m)
)
SELECT coalesce((SELECT array_agg(id ORDER BY id) FROM r), '{}'),
	EXISTS (SELECT 1 FROM pending_bodies WHERE id = $16),
	$28 = '' OR EXISTS (SELECT 1 FROM batches WHERE id = $28 AND account = $12 AND state <> 'cancelled')`

// Enqueue stores msg and body durably; see store.Queue. The batch's
// synchronous commit also makes the chunks written before it durable. An
// empty msg.Account is set to store.DefaultAccount. One accepted event per
// recipient is written in the same transaction. A message not leased at
// once wakes the other nodes; a leased one is created under a new token
// of this node, which is returned.
func (s *Store) Enqueue(ctx context.Context, msg *store.Message, b store.Body, leaseUntil time.Time) (string, error) {
	bd, ok := b.(*body)
	if !ok || bd.s != s {
		return "", errors.New("postgres store: enqueue: body not from this store")
	}
	if bd.done {
		return "", errBodyDone
	}
	if bd.err != nil {
		bd.Abort()
		return "", bd.err
	}
	if !validID(msg.ID) {
		bd.Abort()
		return "", fmt.Errorf("postgres store: enqueue: invalid queue ID %q", msg.ID)
	}
	if len(msg.Recipients) == 0 {
		bd.Abort()
		return "", fmt.Errorf("postgres store: enqueue %s: no recipients", msg.ID)
	}
	if err := ctx.Err(); err != nil {
		bd.Abort()
		return "", err
	}
	bd.done = true
	defer bd.release()
	if msg.Account == "" {
		msg.Account = store.DefaultAccount
	}
	tags, meta, err := encodeTagsMeta(msg.Tags, msg.Metadata)
	if err != nil {
		bd.discard()
		return "", fmt.Errorf("postgres store: enqueue %s: %w", msg.ID, err)
	}
	msg.Size = bd.size + int64(len(msg.Headers))
	headers := msg.Headers
	if headers == nil {
		headers = []byte{}
	}
	var inline, tail []byte
	var bodyID *int64
	if bd.chunked {
		bodyID, tail = &bd.id, bd.buf
	} else {
		inline = bd.buf
		if inline == nil {
			inline = []byte{}
		}
	}
	pendingBody := bd.seq > 0
	var token, owner string
	if !leaseUntil.IsZero() {
		token, owner = randomToken(), s.node
	}
	n := len(msg.Recipients)
	addrs, notifies, orcpts := make([]string, n), make([]string, n), make([]string, n)
	for i, r := range msg.Recipients {
		addrs[i], notifies[i], orcpts[i] = r.Address, r.Notify, r.ORCPT
	}
	now := time.Now()
	received := nanos(msg.Received)
	var ids []int64
	err = s.write(context.Background(), leaseUntil.IsZero(), func(pb *pgx.Batch) {
		pb.Queue(enqueueSQL, msg.ID, msg.Sender, received, msg.Size, msg.Ret, msg.EnvID,
			msg.ClientIP, msg.HELO, msg.AuthUser, msg.Source, msg.SMTPUTF8, msg.Account, tags, meta, headers,
			bodyID, inline, addrs, notifies, orcpts, nanos(leaseUntil), owner, token, now.UnixNano(), bd.seq, tail,
			pendingBody, msg.BatchID, nanos(msg.SendAt))
	}, func(br pgx.BatchResults) error {
		var stillPending, batchOK bool
		if err := br.QueryRow().Scan(&ids, &stillPending, &batchOK); err != nil {
			return err
		}
		switch {
		case len(ids) == 0 && !batchOK:
			return clean(fmt.Errorf("batch %s of account %s: unknown or cancelled: %w", msg.BatchID, msg.Account, store.ErrBatchState))
		case len(ids) == 0 && pendingBody && !stillPending:
			// Collected as abandoned: cannot happen within a day.
			return clean(fmt.Errorf("body %d was collected before its message was enqueued", bd.id))
		case len(ids) == 0:
			return clean(fmt.Errorf("message %s: %w", msg.ID, store.ErrExists))
		case len(ids) != n:
			return fmt.Errorf("stored %d of %d recipients", len(ids), n)
		}
		return nil
	})
	if err != nil {
		if pendingBody && !errors.Is(err, errCommitUnknown) {
			s.deleteBody(bd.id)
		}
		return "", fmt.Errorf("postgres store: enqueue %s: %w", msg.ID, err)
	}
	if token != "" && !bd.chunked {
		// For the worker this message is handed to.
		data := make([]byte, 0, len(headers)+len(inline))
		s.handoff.Put(msg.ID, append(append(data, headers...), inline...), leaseUntil)
	}
	for i := range msg.Recipients {
		r := &msg.Recipients[i]
		r.ID = ids[i]
		r.Status = store.StatusQueued
		r.Attempts = 0
		r.NextAttempt = msg.Start()
		r.LastReply, r.RemoteMTA, r.DelayWarned = "", "", false
		r.UpdatedAt = now
	}
	return token, nil
}

// leaseScan is how many due recipients a lease round considers per
// message still wanted (they are read, not locked: a message with several
// due recipients takes several).
const leaseScan = 4

// leaseRounds bounds the rounds of one Lease call.
const leaseRounds = 4

// leaseCandidatesSQL locks, with SKIP LOCKED, up to $3 messages with due
// recipients among the first $2 due recipients (earliest first, from the
// recipients_ready index) whose messages are not in $4, and returns their
// IDs in due order. The candidates are collected into an array first, so
// the messages are fetched by primary key whatever the planner thinks of
// a join. Only the messages returned are locked: a message another
// transaction holds is skipped, never waited for, and none is locked
// without being leased.
const leaseCandidatesSQL = `WITH c AS (
	SELECT array_agg(message_id ORDER BY ready) AS ids FROM (
		SELECT r.message_id, min(` + readySQL + `) AS ready FROM (
			SELECT r.message_id, r.next_attempt, r.lease_until FROM recipients r
			WHERE ` + pendingSQL + ` AND ` + readySQL + ` <= $1 AND r.message_id <> ALL($4)
			ORDER BY ` + readySQL + `
			LIMIT $2
		) r GROUP BY r.message_id
	) g
)
SELECT m.id FROM c, messages m
WHERE m.id = ANY (c.ids)
ORDER BY array_position(c.ids, m.id)
LIMIT $3
FOR NO KEY UPDATE OF m SKIP LOCKED`

// leaseSQL leases the due recipients of the locked messages $1 to node $4
// until $3, each message under its token in $2 (the condition is checked
// again: a recipient leased since the candidates were read is left alone).
const leaseSQL = `WITH t AS (SELECT * FROM unnest($1::text[], $2::text[]) AS t(mid, tok))
UPDATE recipients r SET lease_until = $3, lease_owner = $4, lease_token = t.tok
FROM t WHERE r.message_id = t.mid AND ` + pendingSQL + ` AND ` + readySQL + ` <= $5
RETURNING r.message_id, ` + rcptCols

// leaseMessagesSQL reads the messages $1 just leased, with their inline
// bodies.
const leaseMessagesSQL = `SELECT ` + msgCols + `, m.body FROM messages m WHERE m.id = ANY($1)`

// renewSQL extends the lease $2 of message $1 until $3, never shortening it.
const renewSQL = `UPDATE recipients r SET lease_until = GREATEST(r.lease_until, $3)
	WHERE r.message_id = $1 AND r.lease_token = $2 AND ` + pendingSQL

// nextDueSQL is the earliest time a pending recipient can be leased (the
// minimum of recipients_ready).
const nextDueSQL = `SELECT min(` + readySQL + `) FROM recipients r WHERE ` + pendingSQL

// Lease returns up to limit messages with due recipients, earliest due
// first, each with all its due recipients leased to this node until now+d
// under a new token. Messages are claimed with FOR NO KEY UPDATE SKIP
// LOCKED on their rows, in the order of the recipients_ready index, so
// concurrent calls on any nodes never wait for each other and never lease
// a recipient twice. A round that finds candidates leased meanwhile is
// followed by another, so a call returns nothing only when nothing due is
// unclaimed. The lease is committed asynchronously: losing it in a
// database crash makes the recipients due again (at-least-once). Inline
// bodies come with the messages and are kept for the workers' OpenBody.
func (s *Store) Lease(ctx context.Context, now time.Time, d time.Duration, limit int) ([]store.Lease, error) {
	if limit <= 0 {
		return nil, nil
	}
	n, u := nanos(now), nanos(now.Add(d))
	until := now.Add(d)
	var out []store.Lease
	var keep map[string][]byte
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		out, keep = out[:0], make(map[string][]byte)
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		seen := []string{}
		for round := 0; round < leaseRounds && len(out) < limit; round++ {
			want := limit - len(out)
			rows, err := tx.Query(ctx, leaseCandidatesSQL, n, min(want*leaseScan, 10000), want, seen)
			if err != nil {
				return err
			}
			ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
			if err != nil {
				return err
			}
			if len(ids) == 0 {
				break
			}
			seen = append(seen, ids...)
			got, err := s.leaseMessages(ctx, tx, ids, n, u, until, keep)
			if err != nil {
				return err
			}
			out = append(out, got...)
			if len(ids) < want {
				break // no more candidates (or all claimed by others)
			}
		}
		return nil
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: lease: %w", err))
	}
	// The workers these messages go to read their bodies from memory.
	for id, b := range keep {
		s.handoff.Put(id, b, until)
	}
	return out, nil
}

// leaseMessages leases the due recipients of the locked messages ids and
// reads the messages, in one round trip. The inline bodies of the leased
// messages (header fields first) are added to keep.
func (s *Store) leaseMessages(ctx context.Context, tx pgx.Tx, ids []string, n, u int64, until time.Time, keep map[string][]byte) ([]store.Lease, error) {
	tokens := make([]string, len(ids))
	for i := range tokens {
		tokens[i] = randomToken()
	}
	bt := &pgx.Batch{}
	bt.Queue(leaseSQL, ids, tokens, u, s.node, n)
	// Inline bodies come along for the workers (see readcache.Handoff).
	bt.Queue(leaseMessagesSQL, ids)
	res := tx.SendBatch(ctx, bt)
	defer res.Close()
	rcpts := make(map[string][]store.Recipient, len(ids))
	rows, err := res.Query()
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var mid string
		var r store.Recipient
		if err := scanRecipient(rows, &r, &mid); err != nil {
			rows.Close()
			return nil, err
		}
		rcpts[mid] = append(rcpts[mid], r)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	msgs := make(map[string]*store.Message, len(ids))
	bodies := make(map[string][]byte, len(ids))
	rows, err = res.Query()
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var body []byte
		m, err := scanMessage(rows, &body)
		if err != nil {
			rows.Close()
			return nil, err
		}
		msgs[m.ID] = m
		if body != nil {
			bodies[m.ID] = append(m.Headers[:len(m.Headers):len(m.Headers)], body...)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []store.Lease
	for i, id := range ids {
		m, rs := msgs[id], rcpts[id]
		if m == nil || len(rs) == 0 {
			continue // leased by another node since the candidates were read
		}
		slices.SortFunc(rs, func(a, b store.Recipient) int { return cmp.Compare(a.ID, b.ID) })
		m.Recipients = rs
		out = append(out, store.Lease{Message: m, Until: until, Token: tokens[i]})
	}
	if err := res.Close(); err != nil {
		return nil, err
	}
	for _, l := range out {
		if b, ok := bodies[l.Message.ID]; ok {
			keep[l.Message.ID] = b
		}
	}
	return out, nil
}

// Renew extends the lease token of message id until the given time (never
// shortening it); see store.Queue. It returns an error wrapping
// store.ErrLeaseLost when no pending recipient of id holds token any more.
// A renewal is committed asynchronously, as a lease is.
func (s *Store) Renew(ctx context.Context, id, token string, until time.Time) error {
	if token == "" {
		return fmt.Errorf("postgres store: renew %s: no token: %w", id, store.ErrLeaseLost)
	}
	var n int64
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		tag, err := tx.Exec(ctx, renewSQL, id, token, nanos(until))
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: renew %s: %w", id, err))
	}
	if n == 0 {
		return fmt.Errorf("postgres store: renew %s: %w", id, store.ErrLeaseLost)
	}
	return nil
}

// lockMessageSQL locks a message row against the other writers of its
// recipients (Update, Lease, Retry, Delete on every node), so that the
// statements after it in the transaction read its recipients as they are.
const lockMessageSQL = `SELECT 1 FROM messages WHERE id = $1 FOR NO KEY UPDATE`

// updateSQL checks and records outcomes, all or none: every outcome's
// recipient must be leased under token $14 (or, for "", have no live lease
// at $13). If so it writes the outcomes and their events with webhook
// deliveries and rollups. It returns whether the message exists, how many outcomes
// name unknown recipients and how many recipients are not held, and how
// many were updated.
var updateSQL = `WITH o AS (
	SELECT * FROM unnest($2::bigint[], $3::text[], $4::integer[], $5::bigint[], $6::text[], $7::text[], $8::boolean[],
		$9::text[], $10::text[], $11::text[], $12::text[]) WITH ORDINALITY
		AS o(rid, status, inc, next, reply, mta, dw, tls, enh, bounce, typ, ord)
), m AS (
	SELECT account, sender, tags, metadata, received FROM messages WHERE id = $1
), chk AS (
	SELECT count(*) FILTER (WHERE r.id IS NULL) AS unknown,
		count(*) FILTER (WHERE r.id IS NOT NULL AND NOT CASE WHEN $14 = '' THEN r.lease_until = 0 OR r.lease_until < $13
			ELSE r.lease_token = $14 END) AS lost
	FROM o LEFT JOIN recipients r ON r.id = o.rid AND r.message_id = $1
), u AS (
	UPDATE recipients r SET status = o.status, attempts = r.attempts + o.inc, next_attempt = o.next,
		lease_until = 0, lease_owner = '', lease_token = '', last_reply = o.reply, remote_mta = o.mta,
		delay_warned = r.delay_warned OR o.dw, updated_at = $13
	FROM o WHERE r.id = o.rid AND r.message_id = $1
		AND EXISTS (SELECT 1 FROM m) AND (SELECT unknown = 0 AND lost = 0 FROM chk)
	RETURNING r.address, r.attempts, o.typ, o.mta, o.reply, o.enh, o.tls, o.bounce, o.ord
), e AS (
	INSERT INTO events (time, type, account, message_id, recipient, sender, remote_mta, reply, enhanced, tls, bounce,
		attempt, tags, metadata)
	SELECT $13, u.typ, m.account, $1, u.address, m.sender, u.mta, u.reply, u.enh, u.tls, u.bounce, u.attempts, m.tags, m.metadata
	FROM u, m WHERE u.typ <> '' ORDER BY u.ord
	RETURNING id, type, account
), f AS (
	INSERT INTO webhook_deliveries (webhook_id, event_id, next_attempt)
	SELECT w.id, e.id, $13 FROM e JOIN webhooks w
		ON w.account = e.account AND (w.event_types = '' OR strpos(w.event_types, ',' || e.type || ',') > 0)
)` + rollupCTEs(`(SELECT $13::bigint AS t, m.account, u.typ AS type, u.address AS rcpt, u.tls,
	CASE WHEN u.typ = 'delivered' AND m.received > 0 THEN $13::bigint - m.received END AS lat FROM u, m WHERE u.typ <> '')`) + `
SELECT EXISTS (SELECT 1 FROM m), (SELECT unknown FROM chk), (SELECT lost FROM chk), (SELECT count(*) FROM u)`

// deleteDoneSQL deletes a message, its recipients and body chunks when
// none of its recipients is pending any more.
const deleteDoneSQL = `WITH m AS (
	DELETE FROM messages WHERE id = $1
		AND NOT EXISTS (SELECT 1 FROM recipients r WHERE r.message_id = $1 AND ` + pendingSQL + `)
	RETURNING body_id
), r AS (
	DELETE FROM recipients WHERE message_id = $1 AND EXISTS (SELECT 1 FROM m)
), c AS (
	DELETE FROM body_chunks WHERE body_id = (SELECT body_id FROM m)
)
SELECT count(*) FROM m`

// deleteMessageSQL deletes a message with its recipients and body chunks
// and returns how many messages it deleted.
const deleteMessageSQL = `WITH m AS (
	DELETE FROM messages WHERE id = $1 RETURNING body_id
), r AS (
	DELETE FROM recipients WHERE message_id = $1
), c AS (
	DELETE FROM body_chunks WHERE body_id = (SELECT body_id FROM m)
)
SELECT count(*) FROM m`

// Update records outcomes of recipients of message id leased under token
// ("" for recipients without a live lease), releasing their leases, all or
// none, in the writer's batch; see store.Queue. Each outcome
// counts as an attempt unless its status is queued; a pending outcome
// with a zero NextAttempt is due at once. Every outcome but queued writes
// its event. When no recipient is pending any more the message and its
// body are deleted.
func (s *Store) Update(ctx context.Context, id, token string, outcomes []store.Outcome) error {
	s.handoff.Drop(id)
	k := len(outcomes)
	rids, nexts := make([]int64, k), make([]int64, k)
	statuses, replies, mtas := make([]string, k), make([]string, k), make([]string, k)
	tlss, enhs, bounces, types := make([]string, k), make([]string, k), make([]string, k), make([]string, k)
	incs, dws := make([]int32, k), make([]bool, k)
	now := time.Now()
	for i, o := range outcomes {
		switch o.Status {
		case store.StatusQueued, store.StatusDeferred, store.StatusDelivered, store.StatusFailed, store.StatusExpired:
		default:
			return fmt.Errorf("postgres store: update %s: invalid status %q", id, o.Status)
		}
		next := nanos(o.NextAttempt)
		if !o.Status.Final() && next == 0 {
			next = now.UnixNano()
		}
		if o.Status != store.StatusQueued {
			incs[i] = 1
		}
		rids[i], nexts[i], statuses[i] = o.RecipientID, next, string(o.Status)
		replies[i], mtas[i], dws[i] = o.Reply, o.RemoteMTA, o.DelayWarned
		tlss[i], enhs[i], bounces[i], types[i] = o.TLS, o.Enhanced, o.Bounce, outcomeEvent(o.Status)
	}
	err := s.write(ctx, false, func(pb *pgx.Batch) {
		pb.Queue(lockMessageSQL, id)
		pb.Queue(updateSQL, id, rids, statuses, incs, nexts, replies, mtas, dws, tlss, enhs, bounces, types,
			now.UnixNano(), token)
		pb.Queue(deleteDoneSQL, id)
	}, func(br pgx.BatchResults) error {
		if _, err := br.Exec(); err != nil {
			return err
		}
		var found bool
		var unknown, lost, updated int64
		if err := br.QueryRow().Scan(&found, &unknown, &lost, &updated); err != nil {
			return err
		}
		var deleted int64
		if err := br.QueryRow().Scan(&deleted); err != nil {
			return err
		}
		switch {
		case !found && token != "":
			return clean(fmt.Errorf("message %s is gone: %w: %w", id, store.ErrLeaseLost, store.ErrNotFound))
		case !found:
			return clean(fmt.Errorf("message %s: %w", id, store.ErrNotFound))
		case unknown > 0 && token != "":
			return clean(fmt.Errorf("%d recipients of message %s are not leased under this token: %w", unknown, id, store.ErrLeaseLost))
		case unknown > 0:
			return clean(fmt.Errorf("%d recipients of message %s: %w", unknown, id, store.ErrNotFound))
		case lost > 0 && token != "":
			return clean(fmt.Errorf("%d recipients of message %s are not leased under this token: %w", lost, id, store.ErrLeaseLost))
		case lost > 0:
			return clean(fmt.Errorf("%d recipients of message %s are leased: %w", lost, id, store.ErrLeaseLost))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("postgres store: update %s: %w", id, err)
	}
	return nil
}

// NextDue returns the earliest time at which a pending recipient can be
// leased: its NextAttempt, or the end of its lease if it is leased (so that
// a scheduler wakes up to take over work whose lease expired, whichever
// node held it). It returns the zero time if nothing is pending.
func (s *Store) NextDue(ctx context.Context) (time.Time, error) {
	var n *int64
	err := s.pool.QueryRow(ctx, nextDueSQL).Scan(&n)
	if err != nil {
		return time.Time{}, fmt.Errorf("postgres store: next due: %w", err)
	}
	if n == nil {
		return time.Time{}, nil
	}
	return fromNanos(*n), nil
}

// Get returns message id with all its recipients.
func (s *Store) Get(ctx context.Context, id string) (*store.Message, error) {
	msgs, err := s.queryMessages(ctx, `SELECT `+msgCols+`, `+rcptCols+`
		FROM messages m JOIN recipients r ON r.message_id = m.id
		WHERE m.id = $1 ORDER BY r.id`, id)
	if err != nil {
		return nil, fmt.Errorf("postgres store: get %s: %w", id, err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("postgres store: get %s: %w", id, store.ErrNotFound)
	}
	return msgs[0], nil
}

// List returns up to limit messages after queue ID after, in queue ID order
// (queue IDs are time-ordered).
func (s *Store) List(ctx context.Context, after string, limit int) ([]*store.Message, error) {
	if limit <= 0 {
		return nil, nil
	}
	msgs, err := s.queryMessages(ctx, `WITH p AS (SELECT id FROM messages WHERE id > $1 ORDER BY id LIMIT $2)
		SELECT `+msgCols+`, `+rcptCols+`
		FROM p JOIN messages m ON m.id = p.id JOIN recipients r ON r.message_id = m.id
		ORDER BY m.id, r.id`, after, limit)
	if err != nil {
		return nil, fmt.Errorf("postgres store: list: %w", err)
	}
	return msgs, nil
}

// queryMessages reads rows of msgCols and rcptCols ordered by message: one
// statement, so one consistent snapshot.
func (s *Store) queryMessages(ctx context.Context, q string, args ...any) ([]*store.Message, error) {
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var msgs []*store.Message
	for rows.Next() {
		m := &store.Message{}
		var r store.Recipient
		if err := scanMessageRecipient(rows, m, &r); err != nil {
			return nil, err
		}
		if len(msgs) > 0 && msgs[len(msgs)-1].ID == m.ID {
			last := msgs[len(msgs)-1]
			last.Recipients = append(last.Recipients, r)
			continue
		}
		m.Recipients = []store.Recipient{r}
		msgs = append(msgs, m)
	}
	return msgs, rows.Err()
}

// scanMessage reads msgCols, and then into extra the columns after them.
// Headers (the prepended fields) come back too: delivery decisions such as
// quarantine filing depend on them.
func scanMessage(sc pgx.Row, extra ...any) (*store.Message, error) {
	m := &store.Message{}
	var received, sendAt int64
	var tags, meta string
	err := sc.Scan(append([]any{&m.ID, &m.Sender, &received, &m.Size, &m.Ret, &m.EnvID, &m.ClientIP, &m.HELO,
		&m.AuthUser, &m.Source, &m.SMTPUTF8, &m.Account, &tags, &meta, &m.BatchID, &sendAt, &m.Headers}, extra...)...)
	if err != nil {
		return nil, err
	}
	return m, finishMessage(m, received, sendAt, tags, meta)
}

func finishMessage(m *store.Message, received, sendAt int64, tags, meta string) error {
	m.Received, m.SendAt = fromNanos(received), fromNanos(sendAt)
	var err error
	if m.Tags, m.Metadata, err = decodeTagsMeta(tags, meta); err != nil {
		return fmt.Errorf("message %s: %w", m.ID, err)
	}
	return nil
}

// scanMessageRecipient reads msgCols followed by rcptCols.
func scanMessageRecipient(sc pgx.Row, m *store.Message, r *store.Recipient) error {
	var received, sendAt, next, updated int64
	var tags, meta, status string
	err := sc.Scan(&m.ID, &m.Sender, &received, &m.Size, &m.Ret, &m.EnvID, &m.ClientIP, &m.HELO,
		&m.AuthUser, &m.Source, &m.SMTPUTF8, &m.Account, &tags, &meta, &m.BatchID, &sendAt, &m.Headers,
		&r.ID, &r.Address, &r.Notify, &r.ORCPT, &status, &r.Attempts, &next, &r.LastReply, &r.RemoteMTA,
		&r.DelayWarned, &updated)
	if err != nil {
		return err
	}
	r.Status, r.NextAttempt, r.UpdatedAt = store.Status(status), fromNanos(next), fromNanos(updated)
	return finishMessage(m, received, sendAt, tags, meta)
}

// scanRecipient reads the message ID and rcptCols.
func scanRecipient(sc pgx.Row, r *store.Recipient, mid *string) error {
	var status string
	var next, updated int64
	if err := sc.Scan(mid, &r.ID, &r.Address, &r.Notify, &r.ORCPT, &status, &r.Attempts, &next,
		&r.LastReply, &r.RemoteMTA, &r.DelayWarned, &updated); err != nil {
		return err
	}
	r.Status, r.NextAttempt, r.UpdatedAt = store.Status(status), fromNanos(next), fromNanos(updated)
	return nil
}

// Retry makes every pending recipient of message id due at now and wakes
// the nodes. Leases are kept, so a delivery in progress is not duplicated.
func (s *Store) Retry(ctx context.Context, id string, now time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `WITH m AS (SELECT id FROM messages WHERE id = $1 FOR NO KEY UPDATE)
			UPDATE recipients r SET next_attempt = $2, updated_at = $3
			WHERE r.message_id = (SELECT id FROM m) AND `+pendingSQL, id, nanos(now), time.Now().UnixNano())
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return fmt.Errorf("message %s: %w", id, store.ErrNotFound)
		}
		return s.notify(ctx, tx)
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: retry %s: %w", id, err))
	}
	return nil
}

// notify wakes the other handles when tx commits.
func (s *Store) notify(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, $2)`, s.channel, s.instance)
	return err
}

// Delete removes message id and its body whatever its state. A delivery in
// progress on any node finds the body gone (store.ErrNotFound) and its
// outcome refused.
func (s *Store) Delete(ctx context.Context, id string) error {
	s.handoff.Drop(id)
	var n int64
	err := s.pool.QueryRow(ctx, deleteMessageSQL, id).Scan(&n)
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: delete %s: %w", id, err))
	}
	if n == 0 {
		return fmt.Errorf("postgres store: delete %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// ReleaseLeases clears the leases held by this node (at start-up: what was
// in flight when it stopped is due again, on any node) and wakes the
// nodes. Other nodes' leases are never touched.
func (s *Store) ReleaseLeases(ctx context.Context) error {
	s.handoff.Clear()
	var err error
	for range maxBatchRetries {
		err = pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, releaseDestinationsSQL, s.node); err != nil {
				return err
			}
			tag, err := tx.Exec(ctx, `UPDATE recipients SET lease_until = 0, lease_owner = '', lease_token = ''
				WHERE lease_owner = $1 AND lease_until <> 0`, s.node)
			if err != nil || tag.RowsAffected() == 0 {
				return err
			}
			return s.notify(ctx, tx)
		})
		if !retryable(err) {
			break
		}
	}
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: release leases of %s: %w", s.node, err))
	}
	return nil
}

// Stats summarises the pending queue.
func (s *Store) Stats(ctx context.Context) (store.QueueStats, error) {
	var st store.QueueStats
	var oldest *int64
	var msgs, rcpts int64
	err := s.pool.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM messages),
		(SELECT count(*) FROM recipients r WHERE `+pendingSQL+`),
		(`+oldestSQL+`)`, time.Now().UnixNano()).Scan(&msgs, &rcpts, &oldest)
	if err != nil {
		return st, fmt.Errorf("postgres store: stats: %w", err)
	}
	st.Messages, st.Recipients = int(msgs), int(rcpts)
	if oldest != nil {
		st.Oldest = fromNanos(*oldest)
	}
	return st, nil
}
