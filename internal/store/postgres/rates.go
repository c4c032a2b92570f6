package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// The rate windows of a key and the state of a destination are one row
// each, and a charge or a new session is one statement: an UPDATE whose
// WHERE holds the check ("the live slots plus n stay within the limit",
// "fewer live connections than the cap"). In READ COMMITTED an UPDATE
// that waited for the row's lock evaluates its WHERE again on the latest
// committed version, so the check and the count are atomic against every
// node without an explicit lock, and a refusal writes nothing. The first
// use of a key inserts its row (INSERT ... ON CONFLICT DO UPDATE with the
// same check, for nodes racing to create it). The connections of a
// destination are arrays in step (token, owner, until), pruned of those
// that ran out by every session started; the minute of a destination and
// the windows of a key are rings of slots. These statements commit
// asynchronously (a charge or a connection lost in a database crash only
// forgets a count or runs out), sent with BEGIN, SET LOCAL and COMMIT in
// one round trip.

var windows = ratelimit.SlidingWindows()

// Each window's slots are a ring, as in ratelimit.Windows: slot number e
// of a window with S slots is kept at position e % S + 1 of its arrays
// (numbers and counts), which a later slot number reuses; a position
// whose number is not live counts nothing. So a charge only assigns array
// elements, and only the check sums.

// liveSum is the count of the live slots of the ring (e, c) at the slot
// number cur.
func liveSum(e, c, cur string, slots int) string {
	return fmt.Sprintf(`(SELECT coalesce(sum(u.c), 0)::bigint FROM unnest(%s, %s) AS u(e, c) WHERE u.e > %s - %d AND u.e <= %s)`,
		e, c, cur, slots, cur)
}

// charge returns the SET items counting n at slot number cur in ring (e,
// c) of the row alias r: the position pos gets cur, and its count grows
// if it held cur already, else restarts at n.
func charge(alias, e, c, pos, cur, n string) string {
	return fmt.Sprintf(`%s[%s] = %s, %s[%s] = CASE WHEN %s.%s[%s] = %s THEN %s.%s[%s] + %s ELSE %s END`,
		e, pos, cur, c, pos, alias, e, pos, cur, alias, c, pos, n, n)
}

// ring is the SQL of a new ring of slots elements holding v at position
// pos (1-based) and zeros elsewhere.
func ring(slots int, pos, v string) string {
	return fmt.Sprintf(`array_fill(0::bigint, ARRAY[%s - 1]) || %s || array_fill(0::bigint, ARRAY[%d - %s])`, pos, v, slots, pos)
}

// upsert is a statement that changes the row of key $1 of a table: it is
// run as an UPDATE whose WHERE holds the check (in READ COMMITTED the
// check is evaluated again on the latest version of the row once it is
// locked), and, for a key without a row yet, as an INSERT ... ON CONFLICT
// DO UPDATE with the same SET and check (a plain UPDATE is the cheaper of
// the two under contention: ON CONFLICT repeats its speculative insertion
// when the row changed meanwhile).
type upsert struct {
	table, alias, cols, values, set, where, returning string
}

func (u upsert) update() string {
	return `UPDATE ` + u.table + ` AS ` + u.alias + ` SET ` + u.set + `
		WHERE ` + u.alias + `.key = $1 AND ` + u.where + `
		RETURNING ` + u.returning
}

func (u upsert) insert() string {
	return `INSERT INTO ` + u.table + ` AS ` + u.alias + ` (` + u.cols + `) VALUES (` + u.values + `)
		ON CONFLICT (key) DO UPDATE SET ` + u.set + `
		WHERE ` + u.where + `
		RETURNING ` + u.returning
}

// takeRate charges $2 events to key $1 at the slot numbers $3..$5 (at the
// positions $10..$12) under the limits $6..$8 (0: none) at the time $9.
var takeRate = func() upsert {
	var set, where, rings []string
	for i, w := range windows {
		e, c := fmt.Sprintf("e%d", i), fmt.Sprintf("c%d", i)
		cur, lim, pos := fmt.Sprintf("$%d::bigint", 3+i), fmt.Sprintf("$%d::bigint", 6+i), fmt.Sprintf("$%d::integer", 10+i)
		set = append(set, charge("r", e, c, pos, cur, "$2::bigint"))
		where = append(where, fmt.Sprintf("(%s = 0 OR %s + $2::bigint <= %s)", lim, liveSum("r."+e, "r."+c, cur, w.Slots), lim))
		rings = append(rings, ring(w.Slots, pos, cur), ring(w.Slots, pos, "$2::bigint"))
	}
	return upsert{table: "rate_windows", alias: "r", cols: "key, e0, c0, e1, c1, e2, c2, touched",
		values: "$1, " + strings.Join(rings, ", ") + ", $9::bigint", set: strings.Join(set, ",\n\t\t\t") + ", touched = $9::bigint",
		where: strings.Join(where, " AND "), returning: "r.e0, r.c0, r.e1, r.c1, r.e2, r.c2"}
}()

var qTakeRateUpdate, qTakeRateInsert = takeRate.update(), takeRate.insert()

// rateSlots returns the live slots at now among a row's arrays.
func rateSlots(now time.Time, arrays [6][]int64) []ratelimit.Slot {
	var out []ratelimit.Slot
	for w := range 3 {
		e, c := arrays[2*w], arrays[2*w+1]
		for i := range min(len(e), len(c)) {
			if s := (ratelimit.Slot{Window: w, Epoch: e[i], Count: c[i]}); ratelimit.Live(s, now) {
				out = append(out, s)
			}
		}
	}
	return out
}

// asyncBatch returns a batch that runs its statements in a transaction
// committed asynchronously; queue them, then call end.
func asyncBatch() *pgx.Batch {
	b := &pgx.Batch{}
	b.Queue(`BEGIN`)
	b.Queue(`SET LOCAL synchronous_commit = off`)
	return b
}

// runAsync sends b (from asyncBatch) with COMMIT and passes the results of
// the statements queued after asyncBatch to read.
func (s *Store) runAsync(ctx context.Context, b *pgx.Batch, read func(br pgx.BatchResults) error) error {
	b.Queue(`COMMIT`)
	br := s.pool.SendBatch(ctx, b)
	_, err := br.Exec()
	if err == nil {
		_, err = br.Exec()
	}
	if err == nil {
		err = read(br)
	}
	if err == nil {
		_, err = br.Exec()
	}
	if cerr := br.Close(); err == nil {
		err = cerr
	}
	return err
}

// TakeRate charges n events to key if they fit under l, in one statement
// (see store.RateCounters). Without any limit nothing is counted.
func (s *Store) TakeRate(ctx context.Context, key string, l ratelimit.Limits, n int, now time.Time) (bool, []ratelimit.Slot, error) {
	lim := [3]int64{int64(max(l.PerMinute, 0)), int64(max(l.PerHour, 0)), int64(max(l.PerDay, 0))}
	never := false
	for _, x := range lim {
		never = never || x > 0 && int64(n) > x
	}
	if n <= 0 || lim == [3]int64{} || never {
		slots, err := s.RateSlots(ctx, key, now)
		return !never, slots, err
	}
	ep := ratelimit.Epochs(now)
	var pos [3]int32
	for i, w := range windows {
		pos[i] = int32(ep[i]%int64(w.Slots)) + 1
	}
	args := []any{key, int64(n), ep[0], ep[1], ep[2], lim[0], lim[1], lim[2], nanos(now), pos[0], pos[1], pos[2]}
	// The UPDATE; when it changes nothing, the row tells why: it does not
	// exist (the INSERT), n does not fit (refused), or another node
	// inserted it meanwhile (again).
	q := qTakeRateUpdate
	for range maxCharges {
		var arrays [6][]int64
		ok := true
		b := asyncBatch()
		b.Queue(q, args...)
		err := s.runAsync(ctx, b, func(br pgx.BatchResults) error {
			err := br.QueryRow().Scan(&arrays[0], &arrays[1], &arrays[2], &arrays[3], &arrays[4], &arrays[5])
			if errors.Is(err, pgx.ErrNoRows) {
				ok, err = false, nil
			}
			return err
		})
		if err != nil {
			return false, nil, mapErr(fmt.Errorf("postgres store: charge rate of %s: %w", key, err))
		}
		if ok {
			return true, rateSlots(now, arrays), nil
		}
		slots, exists, err := s.rateSlots(ctx, key, now)
		switch {
		case err != nil:
			return false, nil, err
		case !exists:
			q = qTakeRateInsert
		case !ratelimit.Fits(slots, l, n, now):
			return false, slots, nil
		default:
			q = qTakeRateUpdate
		}
	}
	slots, _, err := s.rateSlots(ctx, key, now)
	return false, slots, err
}

// maxCharges bounds the statements of one charge or one new session when
// other nodes keep changing the row between them.
const maxCharges = 4

// RateSlots returns key's live slots at now.
func (s *Store) RateSlots(ctx context.Context, key string, now time.Time) ([]ratelimit.Slot, error) {
	slots, _, err := s.rateSlots(ctx, key, now)
	return slots, err
}

// rateSlots is RateSlots, reporting whether key has a row.
func (s *Store) rateSlots(ctx context.Context, key string, now time.Time) ([]ratelimit.Slot, bool, error) {
	var arrays [6][]int64
	err := s.pool.QueryRow(ctx, `SELECT e0, c0, e1, c1, e2, c2 FROM rate_windows WHERE key = $1`, key).
		Scan(&arrays[0], &arrays[1], &arrays[2], &arrays[3], &arrays[4], &arrays[5])
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("postgres store: rate slots of %s: %w", key, err)
	}
	return rateSlots(now, arrays), true, nil
}

// keepConns is the expression of a connection array (arr, in step with
// conn_tokens and conn_until) without the connections that ran out before
// $now or whose token is $drop.
func keepConns(arr, now, drop string) string {
	return fmt.Sprintf(`ARRAY(SELECT u.v FROM unnest(%s, d.conn_tokens, d.conn_until) WITH ORDINALITY AS u(v, t, x, o)
			WHERE u.x >= %s AND u.t <> %s ORDER BY u.o)`, arr, now, drop)
}

// acquire starts a session to destination $1 with the limits $2 (sessions
// at once) and $3 (a minute; 0: none) for node $4 under token $5 at $6
// (Unix ns), holding the connection until $7; $8 is the minute window's
// current slot number and $9 its position in the ring.
var acquire = func() upsert {
	w := windows[0]
	add := func(v string) string {
		return fmt.Sprintf(`|| CASE WHEN $2::integer > 0 THEN ARRAY[%s] ELSE '{}' END`, v)
	}
	return upsert{table: "destinations", alias: "d", cols: "key, conn_tokens, conn_owners, conn_until, rate_e, rate_c, touched",
		values: `$1,
			CASE WHEN $2::integer > 0 THEN ARRAY[$5::text] ELSE '{}' END,
			CASE WHEN $2::integer > 0 THEN ARRAY[$4::text] ELSE '{}' END,
			CASE WHEN $2::integer > 0 THEN ARRAY[$7::bigint] ELSE '{}' END,
			` + ring(w.Slots, "$9::integer", "CASE WHEN $3::integer > 0 THEN $8::bigint ELSE 0 END") + `,
			` + ring(w.Slots, "$9::integer", "CASE WHEN $3::integer > 0 THEN 1::bigint ELSE 0 END") + `,
			$6::bigint`,
		set: `conn_tokens = ` + keepConns("d.conn_tokens", "$6::bigint", "''") + add("$5::text") + `,
			conn_owners = ` + keepConns("d.conn_owners", "$6::bigint", "''") + add("$4::text") + `,
			conn_until = ` + keepConns("d.conn_until", "$6::bigint", "''") + add("$7::bigint") + `,
			rate_e[$9::integer] = CASE WHEN $3::integer > 0 THEN $8::bigint ELSE d.rate_e[$9::integer] END,
			rate_c[$9::integer] = CASE WHEN $3::integer <= 0 THEN d.rate_c[$9::integer]
				WHEN d.rate_e[$9::integer] = $8::bigint THEN d.rate_c[$9::integer] + 1 ELSE 1 END,
			touched = $6::bigint`,
		where: `d.paused_until <= $6::bigint
			AND ($2::integer <= 0 OR (SELECT count(*) FROM unnest(d.conn_until) AS u(x) WHERE u.x >= $6::bigint)
				< greatest(1, floor($2::integer * d.factor)))
			AND ($3::integer <= 0 OR ` + liveSum("d.rate_e", "d.rate_c", "$8::bigint", w.Slots) + `
				< greatest(1, floor($3::integer * d.factor)))`,
		returning: "d.factor, d.strikes, d.paused_until, d.last_change, d.version"}
}()

var qAcquireUpdate, qAcquireInsert = acquire.update(), acquire.insert()

// destRow is a destinations row as AcquireDestination explains a refusal
// with it.
type destRow struct {
	state      store.DestinationState
	connUntil  []int64
	rateE      []int64
	rateC      []int64
	paused     int64
	lastChange int64
}

func (s *Store) readDestination(ctx context.Context, key string) (destRow, bool, error) {
	var r destRow
	r.state.Factor = 1
	err := s.pool.QueryRow(ctx, `SELECT factor, strikes, paused_until, last_change, version, conn_until, rate_e, rate_c
		FROM destinations WHERE key = $1`, key).
		Scan(&r.state.Factor, &r.state.Strikes, &r.paused, &r.lastChange, &r.state.Version, &r.connUntil, &r.rateE, &r.rateC)
	if errors.Is(err, pgx.ErrNoRows) {
		return destRow{state: store.DestinationState{Factor: 1}}, false, nil
	}
	if err != nil {
		return destRow{}, false, err
	}
	r.state.PausedUntil, r.state.LastChange = fromNanos(r.paused), fromNanos(r.lastChange)
	return r, true, nil
}

// AcquireDestination decides whether a session may start to key, in one
// statement (see store.Destinations); a refusal reads the row once more to
// say why.
func (s *Store) AcquireDestination(ctx context.Context, key string, l store.DestinationLimits, now, until time.Time) (store.DestinationGrant, error) {
	var g store.DestinationGrant
	if l.MaxConnections <= 0 && l.MessagesPerMinute <= 0 {
		// Nothing to count: only the pause applies.
		r, _, err := s.readDestination(ctx, key)
		if err != nil {
			return g, fmt.Errorf("postgres store: acquire destination %s: %w", key, err)
		}
		g.State = r.state
		if now.Before(r.state.PausedUntil) {
			g.Wait = r.state.PausedUntil.Sub(now)
			return g, nil
		}
		g.OK = true
		return g, nil
	}
	token := ""
	if l.MaxConnections > 0 {
		token = randomToken()
	}
	cur := ratelimit.Epochs(now)[0]
	args := []any{key, int32(max(l.MaxConnections, 0)), int32(max(l.MessagesPerMinute, 0)), s.node, token,
		nanos(now), nanos(until), cur, int32(cur%int64(windows[0].Slots)) + 1}
	q := qAcquireUpdate
	for range maxCharges {
		var paused, last int64
		b := asyncBatch()
		b.Queue(q, args...)
		err := s.runAsync(ctx, b, func(br pgx.BatchResults) error {
			err := br.QueryRow().Scan(&g.State.Factor, &g.State.Strikes, &paused, &last, &g.State.Version)
			if err == nil {
				g.OK = true
			} else if errors.Is(err, pgx.ErrNoRows) {
				err = nil
			}
			return err
		})
		if err != nil {
			return store.DestinationGrant{}, mapErr(fmt.Errorf("postgres store: acquire destination %s: %w", key, err))
		}
		if g.OK {
			g.Token = token
			g.State.PausedUntil, g.State.LastChange = fromNanos(paused), fromNanos(last)
			return g, nil
		}
		// Nothing changed: no row yet (the INSERT), refused (why), or
		// another node inserted it meanwhile (again).
		r, exists, err := s.readDestination(ctx, key)
		if err != nil {
			return store.DestinationGrant{}, fmt.Errorf("postgres store: acquire destination %s: %w", key, err)
		}
		if !exists {
			q = qAcquireInsert
			continue
		}
		if g = refusal(r, l, now); !g.OK {
			return g, nil
		}
		g, q = store.DestinationGrant{}, qAcquireUpdate
	}
	return store.DestinationGrant{State: store.DestinationState{Factor: 1}}, nil // busy: the row kept changing
}

// refusal explains why the row r refuses a session under l at now (OK
// when it would not).
func refusal(r destRow, l store.DestinationLimits, now time.Time) store.DestinationGrant {
	g := store.DestinationGrant{State: r.state}
	if now.Before(r.state.PausedUntil) {
		g.Wait = r.state.PausedUntil.Sub(now)
		return g
	}
	eff := l.Effective(r.state.Factor)
	live := 0
	for _, x := range r.connUntil {
		if x >= nanos(now) {
			live++
		}
	}
	if eff.MaxConnections > 0 && live >= eff.MaxConnections {
		return g // busy
	}
	if eff.MessagesPerMinute > 0 {
		var slots []ratelimit.Slot
		for i := range min(len(r.rateE), len(r.rateC)) {
			slots = append(slots, ratelimit.Slot{Window: 0, Epoch: r.rateE[i], Count: r.rateC[i]})
		}
		if ok, wait := ratelimit.Check(slots, ratelimit.Limits{PerMinute: eff.MessagesPerMinute}, 1, now); !ok {
			g.Wait = wait
			return g
		}
	}
	g.OK = true
	return g
}

// RenewDestination holds a connection longer; it is never shortened.
func (s *Store) RenewDestination(ctx context.Context, key, token string, until time.Time) error {
	if token == "" {
		return fmt.Errorf("postgres store: renew destination %s: %w", key, store.ErrLeaseLost)
	}
	tag, err := s.pool.Exec(ctx, `UPDATE destinations AS d
		SET conn_until = ARRAY(SELECT CASE WHEN u.t = $2 THEN GREATEST(u.x, $3) ELSE u.x END
			FROM unnest(d.conn_tokens, d.conn_until) WITH ORDINALITY AS u(t, x, o) ORDER BY u.o)
		WHERE d.key = $1 AND $2 = ANY(d.conn_tokens)`, key, token, nanos(until))
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: renew destination %s: %w", key, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres store: renew destination %s: %w", key, store.ErrLeaseLost)
	}
	return nil
}

// qRelease gives back the connection $2 of destination $1.
var qRelease = `UPDATE destinations AS d SET
		conn_tokens = ` + keepConns("d.conn_tokens", "0", "$2") + `,
		conn_owners = ` + keepConns("d.conn_owners", "0", "$2") + `,
		conn_until = ` + keepConns("d.conn_until", "0", "$2") + `
	WHERE d.key = $1 AND $2 = ANY(d.conn_tokens)`

// ReleaseDestination gives a connection back (committed asynchronously: a
// release lost in a database crash runs out like a dead node's).
func (s *Store) ReleaseDestination(ctx context.Context, key, token string) error {
	if token == "" {
		return nil
	}
	b := asyncBatch()
	b.Queue(qRelease, key, token)
	err := s.runAsync(ctx, b, func(br pgx.BatchResults) error {
		_, err := br.Exec()
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: release destination %s: %w", key, err))
	}
	return nil
}

// releaseDestinationsSQL gives back every connection node $1 holds.
const releaseDestinationsSQL = `UPDATE destinations AS d SET
		conn_tokens = ARRAY(SELECT u.v FROM unnest(d.conn_tokens, d.conn_owners) WITH ORDINALITY AS u(v, w, o) WHERE u.w <> $1 ORDER BY u.o),
		conn_until = ARRAY(SELECT u.v FROM unnest(d.conn_until, d.conn_owners) WITH ORDINALITY AS u(v, w, o) WHERE u.w <> $1 ORDER BY u.o),
		conn_owners = ARRAY(SELECT u.w FROM unnest(d.conn_owners) WITH ORDINALITY AS u(w, o) WHERE u.w <> $1 ORDER BY u.o)
	WHERE $1 = ANY(d.conn_owners)`

// DestinationState returns key's back-off.
func (s *Store) DestinationState(ctx context.Context, key string) (store.DestinationState, error) {
	r, _, err := s.readDestination(ctx, key)
	if err != nil {
		return store.DestinationState{}, fmt.Errorf("postgres store: destination state of %s: %w", key, err)
	}
	return r.state, nil
}

// SetDestinationState replaces key's back-off if its version is still
// version, in one statement.
func (s *Store) SetDestinationState(ctx context.Context, key string, version int64, st store.DestinationState) (bool, error) {
	q := `UPDATE destinations SET factor = $2, strikes = $3, paused_until = $4, last_change = $5, version = version + 1, touched = $7
		WHERE key = $1 AND version = $6`
	if version == 0 {
		q = `INSERT INTO destinations AS d (key, factor, strikes, paused_until, last_change, version, touched)
			VALUES ($1, $2, $3, $4, $5, 1, $7)
			ON CONFLICT (key) DO UPDATE SET factor = excluded.factor, strikes = excluded.strikes, paused_until = excluded.paused_until,
				last_change = excluded.last_change, version = 1, touched = excluded.touched
			WHERE d.version = $6`
	}
	tag, err := s.pool.Exec(ctx, q, key, st.Factor, int32(st.Strikes), nanos(st.PausedUntil), nanos(st.LastChange), version,
		time.Now().UnixNano())
	if err != nil {
		return false, mapErr(fmt.Errorf("postgres store: set destination state of %s: %w", key, err))
	}
	return tag.RowsAffected() > 0, nil
}

// pruneShared drops the rows of keys idle for more than a day: rate
// windows with nothing counting any more, and destinations holding no
// connection and not backed off.
func pruneShared(ctx context.Context, tx pgx.Tx, now time.Time) error {
	before := nanos(now.Add(-25 * time.Hour))
	if _, err := tx.Exec(ctx, `DELETE FROM rate_windows WHERE touched < $1`, before); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `DELETE FROM destinations WHERE touched < $1 AND factor >= 1 AND strikes = 0 AND paused_until < $2
		AND NOT EXISTS (SELECT 1 FROM unnest(conn_until) AS u(x) WHERE u.x >= $2)`, before, nanos(now))
	return err
}
