package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// The rollups (store.Rollups) are maintained by the statement that inserts
// the events (enqueueSQL, updateSQL, addEventsSQL): rollupCTEs appends to
// it the upserts of the events' minute and hour buckets, under their
// account and under all accounts (''), so they commit or roll back with
// the events on whichever node wrote them.
//
// Hot rows: every node counting the same minute would update the same
// rows, and an upsert holds its row's lock until its transaction commits,
// which would serialise the nodes' transactions (and, with several keys
// locked in different orders, deadlock them). Each row therefore carries a
// shard, the writing session's backend PID modulo 8: a node's
// writer connection keeps to its own rows, two sessions meet only when
// their PIDs collide (a wait or a deadlock, which the writer retries), and
// the reads sum the shards.

// rollupCTEs returns the CTEs, to append after the others of a WITH, that
// add the rows of src to the rollups (the receiving domain computed once
// per event, not per bucket). src is a relation with the columns
// t (Unix ns), account, type, rcpt, tls and lat (accept-to-delivered
// latency in ns, NULL when unknown). The domain and bin expressions
// compute what store.RecipientDomain and store.LatencyBin do.
func rollupCTEs(src string) string {
	const shard = `(pg_backend_pid() % 8)::smallint`
	return `, rk AS (
	SELECT g.res, CASE k.k WHEN 0 THEN s.account ELSE '' END AS account, (s.t / 1000000000) / g.res * g.res AS bucket,
		s.type, s.domain, s.tls, s.lat
	FROM (SELECT *, CASE WHEN type IN ('delivered', 'deferred', 'bounced')
			THEN lower(left(reverse(split_part(reverse(rcpt), '@', 1)), 255)) END AS domain
		FROM ` + src + ` s0) s, (VALUES (60), (3600), (86400)) g(res), (VALUES (0), (1)) k(k)
), rc AS (
	INSERT INTO rollup_counts AS x (res, account, bucket, type, shard, n)
	SELECT res, account, bucket, type, ` + shard + `, count(*) FROM rk
	GROUP BY res, account, bucket, type ORDER BY res, account, bucket, type
	ON CONFLICT (res, account, bucket, type, shard) DO UPDATE SET n = x.n + excluded.n
), rl AS (
	INSERT INTO rollup_latency AS x (res, account, bucket, bin, shard, n)
	SELECT res, account, bucket,
		CASE WHEN lat < 1000000 THEN 0 ELSE LEAST(1 + floor(16 * ln(lat::float8 / 1e6) / ln(2::float8))::integer, 497) END AS bin,
		` + shard + `, count(*)
	FROM rk WHERE type = 'delivered' AND lat IS NOT NULL
	GROUP BY res, account, bucket, bin ORDER BY res, account, bucket, bin
	ON CONFLICT (res, account, bucket, bin, shard) DO UPDATE SET n = x.n + excluded.n
), rd AS (
	INSERT INTO rollup_dest AS x (res, account, bucket, domain, shard, attempts, delivered, deferred, bounced, tls)
	SELECT res, account, bucket, domain, ` + shard + `, count(*),
		count(*) FILTER (WHERE type = 'delivered'), count(*) FILTER (WHERE type = 'deferred'),
		count(*) FILTER (WHERE type = 'bounced'), count(*) FILTER (WHERE tls <> '' AND tls <> 'none')
	FROM rk WHERE type IN ('delivered', 'deferred', 'bounced')
	GROUP BY res, account, bucket, domain ORDER BY res, account, bucket, domain
	ON CONFLICT (res, account, bucket, domain, shard) DO UPDATE SET attempts = x.attempts + excluded.attempts,
		delivered = x.delivered + excluded.delivered, deferred = x.deferred + excluded.deferred,
		bounced = x.bounced + excluded.bounced, tls = x.tls + excluded.tls
)`
}

// rollupsMigration creates the rollup tables and fills them from the
// events already stored (the latency of a delivered event from its
// message's first accepted event), and indexes the queue's received time
// so that the oldest pending message is cheap to find.
var rollupsMigration = `CREATE TABLE rollup_counts (
		res     integer NOT NULL,            -- bucket width, seconds: 60, 3600 or 86400
		account text COLLATE "C" NOT NULL,   -- '' counts every account
		bucket  bigint NOT NULL,             -- bucket start, Unix seconds
		type    text COLLATE "C" NOT NULL,
		shard   smallint NOT NULL,           -- writer's backend PID % 8
		n       bigint NOT NULL,
		PRIMARY KEY (res, account, bucket, type, shard)
	);
	CREATE TABLE rollup_latency (
		res     integer NOT NULL,
		account text COLLATE "C" NOT NULL,
		bucket  bigint NOT NULL,
		bin     integer NOT NULL,            -- store.LatencyBin
		shard   smallint NOT NULL,
		n       bigint NOT NULL,
		PRIMARY KEY (res, account, bucket, bin, shard)
	);
	CREATE TABLE rollup_dest (
		res       integer NOT NULL,
		account   text COLLATE "C" NOT NULL,
		bucket    bigint NOT NULL,
		domain    text COLLATE "C" NOT NULL, -- store.RecipientDomain
		shard     smallint NOT NULL,
		attempts  bigint NOT NULL,
		delivered bigint NOT NULL,
		deferred  bigint NOT NULL,
		bounced   bigint NOT NULL,
		tls       bigint NOT NULL,
		PRIMARY KEY (res, account, bucket, domain, shard)
	);
	WITH acc AS (
		SELECT message_id, min(time) AS t FROM events
		WHERE type = 'accepted' AND message_id <> '' GROUP BY message_id
	), src AS (
		SELECT e.time AS t, e.account, e.type, e.recipient AS rcpt, e.tls,
			CASE WHEN e.type = 'delivered' THEN e.time - acc.t END AS lat
		FROM events e LEFT JOIN acc ON e.message_id <> '' AND acc.message_id = e.message_id
	)` + rollupCTEs("src") + `
	SELECT 1;
	CREATE INDEX messages_received ON messages (received);
	CREATE INDEX messages_account_received ON messages (account, received);`

// The rollup reads. $1 res, $2 account, $3 since, $4 until (bucket
// starts, Unix seconds), $5 step (0: the whole range).
const (
	qEventCounts = `SELECT CASE WHEN $5::bigint = 0 THEN 0 ELSE bucket / $5 * $5 END AS b, type, sum(n)::bigint
		FROM rollup_counts WHERE res = $1 AND account = $2 AND bucket >= $3 AND bucket < $4
		GROUP BY b, type ORDER BY b, type`
	qLatencyCounts = `SELECT CASE WHEN $5::bigint = 0 THEN 0 ELSE bucket / $5 * $5 END AS b, bin, sum(n)::bigint
		FROM rollup_latency WHERE res = $1 AND account = $2 AND bucket >= $3 AND bucket < $4
		GROUP BY b, bin ORDER BY b, bin`
	qDestCounts = `SELECT domain, sum(attempts)::bigint AS a, sum(delivered)::bigint, sum(deferred)::bigint,
		sum(bounced)::bigint, sum(tls)::bigint
		FROM rollup_dest WHERE res = $1 AND account = $2 AND bucket >= $3 AND bucket < $4
		GROUP BY domain ORDER BY a DESC, domain LIMIT $5`
)

// bucketTime is the time of a step start read back (0: the whole range).
func bucketTime(b, step int64) time.Time {
	if step == 0 {
		return time.Time{}
	}
	return time.Unix(b, 0).UTC()
}

// EventCounts returns the event counts of q; see store.Rollups.
func (s *Store) EventCounts(ctx context.Context, q store.RollupQuery) ([]store.EventCount, error) {
	res, since, until, step, err := q.Seconds()
	if err != nil {
		return nil, fmt.Errorf("postgres store: event counts: %w", err)
	}
	rows, err := s.pool.Query(ctx, qEventCounts, res, q.Account, since, until, step)
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: event counts: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.EventCount, error) {
		var b int64
		var c store.EventCount
		err := r.Scan(&b, &c.Type, &c.N)
		c.Bucket = bucketTime(b, step)
		return c, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: event counts: %w", err))
	}
	return out, nil
}

// LatencyCounts returns the latency histogram of q; see store.Rollups.
func (s *Store) LatencyCounts(ctx context.Context, q store.RollupQuery) ([]store.LatencyCount, error) {
	res, since, until, step, err := q.Seconds()
	if err != nil {
		return nil, fmt.Errorf("postgres store: latency counts: %w", err)
	}
	rows, err := s.pool.Query(ctx, qLatencyCounts, res, q.Account, since, until, step)
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: latency counts: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.LatencyCount, error) {
		var b int64
		var c store.LatencyCount
		err := r.Scan(&b, &c.Bin, &c.N)
		c.Bucket = bucketTime(b, step)
		return c, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: latency counts: %w", err))
	}
	return out, nil
}

// maxDestCounts bounds DestCounts.
const maxDestCounts = 1000

// DestCounts returns the attempts per receiving domain of q; see
// store.Rollups.
func (s *Store) DestCounts(ctx context.Context, q store.RollupQuery, limit int) ([]store.DestCount, error) {
	res, since, until, _, err := q.Seconds()
	if err != nil {
		return nil, fmt.Errorf("postgres store: destination counts: %w", err)
	}
	if limit < 1 || limit > maxDestCounts {
		limit = maxDestCounts
	}
	rows, err := s.pool.Query(ctx, qDestCounts, res, q.Account, since, until, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: destination counts: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.DestCount, error) {
		var d store.DestCount
		err := r.Scan(&d.Domain, &d.Attempts, &d.Delivered, &d.Deferred, &d.Bounced, &d.TLS)
		return d, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: destination counts: %w", err))
	}
	return out, nil
}

// CompactRollups deletes minute, hour and day buckets that start before
// minuteBefore, hourBefore and dayBefore; see store.Rollups. Rows of the past are no
// longer written, so deleting them never waits for a writer.
func (s *Store) CompactRollups(ctx context.Context, minuteBefore, hourBefore, dayBefore time.Time) (int, error) {
	total := 0
	for _, tbl := range []string{"rollup_counts", "rollup_latency", "rollup_dest"} {
		tag, err := s.pool.Exec(ctx, `DELETE FROM `+tbl+`
			WHERE (res = 60 AND bucket < $1) OR (res = 3600 AND bucket < $2) OR (res = 86400 AND bucket < $3)`,
			minuteBefore.Unix(), hourBefore.Unix(), dayBefore.Unix())
		if err != nil {
			return total, mapErr(fmt.Errorf("postgres store: compact rollups: %w", err))
		}
		total += int(tag.RowsAffected())
	}
	return total, nil
}

// AccountQueue summarises the pending queue of account; see
// store.Rollups.
func (s *Store) AccountQueue(ctx context.Context, account string) (store.AccountQueue, error) {
	var q store.AccountQueue
	var oldest *int64
	var msgs, rcpts int64
	var err error
	if account == store.AllAccounts {
		err = s.pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM messages),
			(SELECT count(*) FROM recipients r WHERE `+pendingSQL+`),
			(`+oldestSQL+`)`, time.Now().UnixNano()).Scan(&msgs, &rcpts, &oldest)
	} else {
		err = s.pool.QueryRow(ctx, `SELECT
			(SELECT count(*) FROM messages WHERE account = $1),
			(SELECT count(*) FROM recipients r WHERE r.message_id IN (SELECT id FROM messages WHERE account = $1)
				AND `+pendingSQL+`),
			(`+oldestAccountSQL+`)`, account, time.Now().UnixNano()).Scan(&msgs, &rcpts, &oldest)
	}
	if err != nil {
		return q, mapErr(fmt.Errorf("postgres store: queue of account %q: %w", account, err))
	}
	q.Messages, q.Recipients = int(msgs), int(rcpts)
	if oldest != nil {
		q.Oldest = fromNanos(*oldest)
	}
	return q, nil
}
