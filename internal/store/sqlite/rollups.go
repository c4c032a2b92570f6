package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// The rollups (store.Rollups) are maintained by the writer: every
// operation that inserts events adds them to the batch's accumulator
// (rollAcc), which is written, one upsert per distinct bucket, just before
// the batch commits, and dropped when the batch rolls back. A batch of
// many events of the same minute and account therefore costs a handful of
// upserts, not one per event.

// rollupRes are the bucket widths, in seconds, every event is counted in.
var rollupRes = [3]int64{60, 3600, 86400}

type rollKey struct {
	res     int64
	account string
	bucket  int64
	typ     string
}

type latKey struct {
	res     int64
	account string
	bucket  int64
	bin     int
}

type destKey struct {
	res     int64
	account string
	bucket  int64
	domain  string
}

type destVal struct{ attempts, delivered, deferred, bounced, tls int64 }

// rollAcc accumulates the rollup increments of the current batch.
type rollAcc struct {
	counts map[rollKey]int64
	lat    map[latKey]int64
	dest   map[destKey]destVal
}

func (a *rollAcc) reset() {
	if a.counts == nil {
		a.counts, a.lat, a.dest = make(map[rollKey]int64), make(map[latKey]int64), make(map[destKey]destVal)
		return
	}
	clear(a.counts)
	clear(a.lat)
	clear(a.dest)
}

// add counts one event of time t (Unix ns). latency is used for a
// delivered event when hasLat.
func (a *rollAcc) add(t int64, account, typ, rcpt, tls string, latency time.Duration, hasLat bool) {
	if a.counts == nil {
		a.reset()
	}
	sec := t / int64(time.Second)
	attempt := store.IsAttempt(typ)
	var domain string
	var dv destVal
	if attempt {
		domain = store.RecipientDomain(rcpt)
		dv.attempts = 1
		switch typ {
		case store.EventDelivered:
			dv.delivered = 1
		case store.EventDeferred:
			dv.deferred = 1
		case store.EventBounced:
			dv.bounced = 1
		}
		if store.TLSUsed(tls) {
			dv.tls = 1
		}
	}
	bin := -1
	if typ == store.EventDelivered && hasLat {
		bin = store.LatencyBin(latency)
	}
	for _, res := range rollupRes {
		b := sec / res * res
		for _, acct := range [2]string{account, store.AllAccounts} {
			a.counts[rollKey{res, acct, b, typ}]++
			if attempt {
				k := destKey{res, acct, b, domain}
				v := a.dest[k]
				v.attempts += dv.attempts
				v.delivered += dv.delivered
				v.deferred += dv.deferred
				v.bounced += dv.bounced
				v.tls += dv.tls
				a.dest[k] = v
			}
			if bin >= 0 {
				a.lat[latKey{res, acct, b, bin}]++
			}
		}
	}
}

// Rollup upserts of the writer.
const (
	qRollCount = `INSERT INTO rollup_counts (res, account, bucket, type, n) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT DO UPDATE SET n = n + excluded.n`
	qRollLat = `INSERT INTO rollup_latency (res, account, bucket, bin, n) VALUES (?, ?, ?, ?, ?)
		ON CONFLICT DO UPDATE SET n = n + excluded.n`
	qRollDest = `INSERT INTO rollup_dest (res, account, bucket, domain, attempts, delivered, deferred, bounced, tls)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT DO UPDATE SET attempts = attempts + excluded.attempts, delivered = delivered + excluded.delivered,
			deferred = deferred + excluded.deferred, bounced = bounced + excluded.bounced, tls = tls + excluded.tls`
)

// flushRollups writes the batch's accumulated increments.
func (w *writer) flushRollups() error {
	a := &w.roll
	for k, n := range a.counts {
		if _, err := w.st.rollCount.Exec(k.res, k.account, k.bucket, k.typ, n); err != nil {
			return fmt.Errorf("rollups: %w", err)
		}
	}
	for k, n := range a.lat {
		if _, err := w.st.rollLat.Exec(k.res, k.account, k.bucket, k.bin, n); err != nil {
			return fmt.Errorf("rollups: %w", err)
		}
	}
	for k, v := range a.dest {
		if _, err := w.st.rollDest.Exec(k.res, k.account, k.bucket, k.domain, v.attempts, v.delivered, v.deferred,
			v.bounced, v.tls); err != nil {
			return fmt.Errorf("rollups: %w", err)
		}
	}
	return nil
}

// The rollup reads. ?1 res, ?2 account, ?3 since, ?4 until (bucket
// starts, Unix seconds), ?5 step (0: the whole range).
const (
	qEventCounts = `SELECT CASE WHEN ?5 = 0 THEN 0 ELSE bucket / ?5 * ?5 END AS b, type, sum(n)
		FROM rollup_counts WHERE res = ?1 AND account = ?2 AND bucket >= ?3 AND bucket < ?4
		GROUP BY b, type ORDER BY b, type`
	qLatencyCounts = `SELECT CASE WHEN ?5 = 0 THEN 0 ELSE bucket / ?5 * ?5 END AS b, bin, sum(n)
		FROM rollup_latency WHERE res = ?1 AND account = ?2 AND bucket >= ?3 AND bucket < ?4
		GROUP BY b, bin ORDER BY b, bin`
	qDestCounts = `SELECT domain, sum(attempts) AS a, sum(delivered), sum(deferred), sum(bounced), sum(tls)
		FROM rollup_dest WHERE res = ?1 AND account = ?2 AND bucket >= ?3 AND bucket < ?4
		GROUP BY domain ORDER BY a DESC, domain LIMIT ?5`
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
		return nil, fmt.Errorf("sqlite store: event counts: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, qEventCounts, res, q.Account, since, until, step)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: event counts: %w", err)
	}
	defer rows.Close()
	var out []store.EventCount
	for rows.Next() {
		var b int64
		var c store.EventCount
		if err := rows.Scan(&b, &c.Type, &c.N); err != nil {
			return nil, fmt.Errorf("sqlite store: event counts: %w", err)
		}
		c.Bucket = bucketTime(b, step)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: event counts: %w", err)
	}
	return out, nil
}

// LatencyCounts returns the latency histogram of q; see store.Rollups.
func (s *Store) LatencyCounts(ctx context.Context, q store.RollupQuery) ([]store.LatencyCount, error) {
	res, since, until, step, err := q.Seconds()
	if err != nil {
		return nil, fmt.Errorf("sqlite store: latency counts: %w", err)
	}
	rows, err := s.rdb.QueryContext(ctx, qLatencyCounts, res, q.Account, since, until, step)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: latency counts: %w", err)
	}
	defer rows.Close()
	var out []store.LatencyCount
	for rows.Next() {
		var b int64
		var c store.LatencyCount
		if err := rows.Scan(&b, &c.Bin, &c.N); err != nil {
			return nil, fmt.Errorf("sqlite store: latency counts: %w", err)
		}
		c.Bucket = bucketTime(b, step)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: latency counts: %w", err)
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
		return nil, fmt.Errorf("sqlite store: destination counts: %w", err)
	}
	if limit < 1 || limit > maxDestCounts {
		limit = maxDestCounts
	}
	rows, err := s.rdb.QueryContext(ctx, qDestCounts, res, q.Account, since, until, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: destination counts: %w", err)
	}
	defer rows.Close()
	var out []store.DestCount
	for rows.Next() {
		var d store.DestCount
		if err := rows.Scan(&d.Domain, &d.Attempts, &d.Delivered, &d.Deferred, &d.Bounced, &d.TLS); err != nil {
			return nil, fmt.Errorf("sqlite store: destination counts: %w", err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: destination counts: %w", err)
	}
	return out, nil
}

// CompactRollups deletes minute, hour and day buckets that start before
// minuteBefore, hourBefore and dayBefore; see store.Rollups.
func (s *Store) CompactRollups(ctx context.Context, minuteBefore, hourBefore, dayBefore time.Time) (int, error) {
	var n int64
	err := s.w.do(ctx, false, func(w *writer) error {
		n = 0
		for _, tbl := range []string{"rollup_counts", "rollup_latency", "rollup_dest"} {
			for _, p := range []struct {
				res    int64
				before time.Time
			}{{60, minuteBefore}, {3600, hourBefore}, {86400, dayBefore}} {
				r, err := w.conn.ExecContext(context.Background(),
					`DELETE FROM `+tbl+` WHERE res = ? AND bucket < ?`, p.res, p.before.Unix())
				if err != nil {
					return err
				}
				k, err := r.RowsAffected()
				if err != nil {
					return err
				}
				n += k
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite store: compact rollups: %w", err)
	}
	return int(n), nil
}

// AccountQueue summarises the pending queue of account; see
// store.Rollups.
func (s *Store) AccountQueue(ctx context.Context, account string) (store.AccountQueue, error) {
	var q store.AccountQueue
	var oldest sql.NullInt64
	var err error
	if account == store.AllAccounts {
		err = s.rdb.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM messages),
			(SELECT count(*) FROM recipients WHERE status IN ('queued', 'deferred')),
			(`+oldestSQL+`)`, time.Now().UnixNano()).Scan(&q.Messages, &q.Recipients, &oldest)
	} else {
		err = s.rdb.QueryRowContext(ctx, `SELECT
			(SELECT count(*) FROM messages WHERE account = ?1),
			(SELECT count(*) FROM recipients WHERE message_id IN (SELECT id FROM messages WHERE account = ?1)
				AND status IN ('queued', 'deferred')),
			(`+oldestAccountSQL+`)`, account, time.Now().UnixNano()).Scan(&q.Messages, &q.Recipients, &oldest)
	}
	if err != nil {
		return q, fmt.Errorf("sqlite store: queue of account %q: %w", account, err)
	}
	if oldest.Valid {
		q.Oldest = fromNanos(oldest.Int64)
	}
	return q, nil
}

// rollupsMigration creates the rollup tables and fills them from the
// events already stored (the latency of a delivered event from its
// message's first accepted event). The domain and latency-bin
// expressions compute what store.RecipientDomain and store.LatencyBin do.
const rollupsMigration = `CREATE TABLE rollup_counts (
		res     INTEGER NOT NULL, -- bucket width, seconds: 60, 3600 or 86400
		account TEXT NOT NULL,    -- '' counts every account
		bucket  INTEGER NOT NULL, -- bucket start, Unix seconds
		type    TEXT NOT NULL,
		n       INTEGER NOT NULL,
		PRIMARY KEY (res, account, bucket, type)
	) WITHOUT ROWID;
	CREATE TABLE rollup_latency (
		res     INTEGER NOT NULL,
		account TEXT NOT NULL,
		bucket  INTEGER NOT NULL,
		bin     INTEGER NOT NULL, -- store.LatencyBin
		n       INTEGER NOT NULL,
		PRIMARY KEY (res, account, bucket, bin)
	) WITHOUT ROWID;
	CREATE TABLE rollup_dest (
		res       INTEGER NOT NULL,
		account   TEXT NOT NULL,
		bucket    INTEGER NOT NULL,
		domain    TEXT NOT NULL, -- store.RecipientDomain
		attempts  INTEGER NOT NULL,
		delivered INTEGER NOT NULL,
		deferred  INTEGER NOT NULL,
		bounced   INTEGER NOT NULL,
		tls       INTEGER NOT NULL,
		PRIMARY KEY (res, account, bucket, domain)
	) WITHOUT ROWID;
	INSERT INTO rollup_counts (res, account, bucket, type, n)
	SELECT g.res, CASE k.k WHEN 0 THEN e.account ELSE '' END AS acct, (e.time / 1000000000) / g.res * g.res AS b,
		e.type, count(*)
	FROM events e, (SELECT 60 AS res UNION ALL SELECT 3600 UNION ALL SELECT 86400) g, (SELECT 0 AS k UNION ALL SELECT 1) k
	GROUP BY g.res, acct, b, e.type;
	WITH acc AS (
		SELECT message_id, min(time) AS t FROM events
		WHERE type = 'accepted' AND message_id != '' GROUP BY message_id
	), d AS (
		SELECT e.time, e.account, (e.time - acc.t) / 1e6 AS ms
		FROM events e JOIN acc ON acc.message_id = e.message_id
		WHERE e.type = 'delivered' AND e.message_id != ''
	)
	INSERT INTO rollup_latency (res, account, bucket, bin, n)
	SELECT g.res, CASE k.k WHEN 0 THEN d.account ELSE '' END AS acct, (d.time / 1000000000) / g.res * g.res AS b,
		CASE WHEN d.ms < 1 THEN 0 ELSE min(1 + CAST(floor(16 * log2(d.ms)) AS INTEGER), 497) END AS bin, count(*)
	FROM d, (SELECT 60 AS res UNION ALL SELECT 3600 UNION ALL SELECT 86400) g, (SELECT 0 AS k UNION ALL SELECT 1) k
	GROUP BY g.res, acct, b, bin;
	INSERT INTO rollup_dest (res, account, bucket, domain, attempts, delivered, deferred, bounced, tls)
	SELECT g.res, CASE k.k WHEN 0 THEN e.account ELSE '' END AS acct, (e.time / 1000000000) / g.res * g.res AS b,
		lower(substr(substr(e.recipient, length(rtrim(e.recipient, replace(e.recipient, '@', ''))) + 1), 1, 255)) AS dom,
		count(*), sum(e.type = 'delivered'), sum(e.type = 'deferred'), sum(e.type = 'bounced'),
		sum(e.tls != '' AND e.tls != 'none')
	FROM events e, (SELECT 60 AS res UNION ALL SELECT 3600 UNION ALL SELECT 86400) g, (SELECT 0 AS k UNION ALL SELECT 1) k
	WHERE e.type IN ('delivered', 'deferred', 'bounced')
	GROUP BY g.res, acct, b, dom;`
