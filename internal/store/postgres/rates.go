package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// rateFunctions are the functions of schema version 2 that decide a rate
// charge and a destination's new session in one statement (one round
// trip): each takes a transaction-scoped advisory lock on its key, so that
// the counts it reads next (a new snapshot per statement in PL/pgSQL)
// include every charge committed before, on any node, and commits
// asynchronously (a charge lost in a database crash only forgets a count).
// The window arithmetic is ratelimit's: a slot numbered epoch counts while
// epoch > current - slots; a refused charge waits until enough of the
// oldest slots stopped counting.
const rateFunctions = `
CREATE FUNCTION herald_take_rate(p_key text, p_limits bigint[], p_n bigint, p_epochs bigint[], p_slots integer[])
RETURNS TABLE (r_ok boolean, r_wins smallint[], r_epochs bigint[], r_counts bigint[])
LANGUAGE plpgsql AS $fn$
DECLARE
	v_ok boolean := true;
	v_used bigint[];
BEGIN
	PERFORM set_config('synchronous_commit', 'off', true);
	IF p_n > 0 AND (p_limits[1] > 0 OR p_limits[2] > 0 OR p_limits[3] > 0) THEN
		PERFORM pg_advisory_xact_lock(hashtext('herald.rate'), hashtext(p_key));
		SELECT ARRAY[coalesce(sum(s.count) FILTER (WHERE s.win = 0), 0),
		             coalesce(sum(s.count) FILTER (WHERE s.win = 1), 0),
		             coalesce(sum(s.count) FILTER (WHERE s.win = 2), 0)]
			INTO v_used FROM rate_slots s
			WHERE s.key = p_key AND s.epoch > p_epochs[s.win + 1] - p_slots[s.win + 1] AND s.epoch <= p_epochs[s.win + 1];
		FOR i IN 1..3 LOOP
			IF p_limits[i] > 0 AND v_used[i] + p_n > p_limits[i] THEN
				v_ok := false;
			END IF;
		END LOOP;
		IF v_ok THEN
			INSERT INTO rate_slots AS s (key, win, pos, epoch, count)
				SELECT p_key, w - 1, p_epochs[w] % p_slots[w], p_epochs[w], p_n FROM generate_series(1, 3) AS w
				ON CONFLICT (key, win, pos) DO UPDATE
				SET count = CASE WHEN s.epoch = excluded.epoch THEN s.count + excluded.count ELSE excluded.count END,
				    epoch = excluded.epoch;
		END IF;
	END IF;
	RETURN QUERY SELECT v_ok, coalesce(array_agg(s.win), '{}'), coalesce(array_agg(s.epoch), '{}'), coalesce(array_agg(s.count), '{}')
		FROM rate_slots s
		WHERE s.key = p_key AND s.epoch > p_epochs[s.win + 1] - p_slots[s.win + 1] AND s.epoch <= p_epochs[s.win + 1];
END
$fn$;

CREATE FUNCTION herald_dest_acquire(p_key text, p_max_conns integer, p_per_minute integer, p_node text, p_token text,
	p_now bigint, p_until bigint, p_width bigint, p_slots integer)
RETURNS TABLE (r_ok boolean, r_wait bigint, r_factor double precision, r_strikes integer, r_paused bigint, r_last bigint, r_version bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
	v_factor double precision;
	v_strikes integer;
	v_paused bigint;
	v_last bigint;
	v_version bigint;
	v_max integer;
	v_used bigint;
	v_epoch bigint;
	v_wait bigint;
BEGIN
	PERFORM set_config('synchronous_commit', 'off', true);
	SELECT d.factor, d.strikes, d.paused_until, d.last_change, d.version
		INTO v_factor, v_strikes, v_paused, v_last, v_version FROM dest_state d WHERE d.key = p_key;
	IF NOT FOUND THEN
		v_factor := 1; v_strikes := 0; v_paused := 0; v_last := 0; v_version := 0;
	END IF;
	IF v_paused > p_now THEN
		RETURN QUERY SELECT false, v_paused - p_now, v_factor, v_strikes, v_paused, v_last, v_version;
		RETURN;
	END IF;
	IF p_max_conns <= 0 AND p_per_minute <= 0 THEN
		RETURN QUERY SELECT true, 0::bigint, v_factor, v_strikes, v_paused, v_last, v_version;
		RETURN;
	END IF;
	PERFORM pg_advisory_xact_lock(hashtext('herald.dest'), hashtext(p_key));
	IF p_max_conns > 0 THEN
		v_max := greatest(1, floor(p_max_conns * v_factor)::integer);
		DELETE FROM dest_conns c WHERE c.key = p_key AND c.until < p_now;
		SELECT count(*) INTO v_used FROM dest_conns c WHERE c.key = p_key;
		IF v_used >= v_max THEN
			RETURN QUERY SELECT false, 0::bigint, v_factor, v_strikes, v_paused, v_last, v_version;
			RETURN;
		END IF;
	END IF;
	IF p_per_minute > 0 THEN
		v_max := greatest(1, floor(p_per_minute * v_factor)::integer);
		v_epoch := p_now / p_width;
		SELECT coalesce(sum(r.count), 0) INTO v_used FROM dest_rate r
			WHERE r.key = p_key AND r.epoch > v_epoch - p_slots AND r.epoch <= v_epoch;
		IF v_used + 1 > v_max THEN
			SELECT (x.epoch + p_slots) * p_width - p_now INTO v_wait FROM (
				SELECT r.epoch, sum(r.count) OVER (ORDER BY r.epoch) AS run FROM dest_rate r
				WHERE r.key = p_key AND r.epoch > v_epoch - p_slots AND r.epoch <= v_epoch) x
				WHERE x.run >= v_used + 1 - v_max ORDER BY x.epoch LIMIT 1;
			RETURN QUERY SELECT false, greatest(coalesce(v_wait, 1), 1), v_factor, v_strikes, v_paused, v_last, v_version;
			RETURN;
		END IF;
		INSERT INTO dest_rate AS r (key, pos, epoch, count) VALUES (p_key, v_epoch % p_slots, v_epoch, 1)
			ON CONFLICT (key, pos) DO UPDATE
			SET count = CASE WHEN r.epoch = excluded.epoch THEN r.count + 1 ELSE 1 END, epoch = excluded.epoch;
	END IF;
	IF p_max_conns > 0 THEN
		INSERT INTO dest_conns (key, token, owner, until) VALUES (p_key, p_token, p_node, p_until);
	END IF;
	RETURN QUERY SELECT true, 0::bigint, v_factor, v_strikes, v_paused, v_last, v_version;
END
$fn$;

CREATE FUNCTION herald_dest_release(p_key text, p_token text) RETURNS void
LANGUAGE plpgsql AS $fn$
BEGIN
	PERFORM set_config('synchronous_commit', 'off', true);
	DELETE FROM dest_conns c WHERE c.key = p_key AND c.token = p_token;
END
$fn$;
`

// rateSlots are the slots of ratelimit's windows, as the functions take
// them.
var rateSlots = func() []int32 {
	var slots []int32
	for _, w := range ratelimit.SlidingWindows() {
		slots = append(slots, int32(w.Slots))
	}
	return slots
}()

// epochs returns the current slot numbers at now for the functions.
func epochs(now time.Time) []int64 {
	e := ratelimit.Epochs(now)
	return e[:]
}

func toSlots(wins []int16, eps, counts []int64) []ratelimit.Slot {
	out := make([]ratelimit.Slot, 0, len(wins))
	for i := range wins {
		out = append(out, ratelimit.Slot{Window: int(wins[i]), Epoch: eps[i], Count: counts[i]})
	}
	return out
}

// TakeRate charges n events to key if they fit under l, in one statement
// (see store.RateCounters). Without any limit nothing is counted.
func (s *Store) TakeRate(ctx context.Context, key string, l ratelimit.Limits, n int, now time.Time) (bool, []ratelimit.Slot, error) {
	limits := []int64{int64(max(l.PerMinute, 0)), int64(max(l.PerHour, 0)), int64(max(l.PerDay, 0))}
	var ok bool
	var wins []int16
	var eps, counts []int64
	err := s.pool.QueryRow(ctx, `SELECT r_ok, r_wins, r_epochs, r_counts FROM herald_take_rate($1, $2, $3, $4, $5)`,
		key, limits, int64(n), epochs(now), rateSlots).Scan(&ok, &wins, &eps, &counts)
	if err != nil {
		return false, nil, mapErr(fmt.Errorf("postgres store: charge rate of %s: %w", key, err))
	}
	return ok, toSlots(wins, eps, counts), nil
}

// RateSlots returns key's live slots at now.
func (s *Store) RateSlots(ctx context.Context, key string, now time.Time) ([]ratelimit.Slot, error) {
	rows, err := s.pool.Query(ctx, `SELECT s.win, s.epoch, s.count FROM rate_slots s
		WHERE s.key = $1 AND s.epoch > ($2::bigint[])[s.win + 1] - ($3::integer[])[s.win + 1] AND s.epoch <= ($2::bigint[])[s.win + 1]`,
		key, epochs(now), rateSlots)
	if err != nil {
		return nil, fmt.Errorf("postgres store: rate slots of %s: %w", key, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (ratelimit.Slot, error) {
		var sl ratelimit.Slot
		var w int16
		err := r.Scan(&w, &sl.Epoch, &sl.Count)
		sl.Window = int(w)
		return sl, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: rate slots of %s: %w", key, err)
	}
	return out, nil
}

// AcquireDestination decides whether a session may start to key, in one
// statement (see store.Destinations).
func (s *Store) AcquireDestination(ctx context.Context, key string, l store.DestinationLimits, now, until time.Time) (store.DestinationGrant, error) {
	minute := ratelimit.SlidingWindows()[0]
	token := ""
	if l.MaxConnections > 0 {
		token = randomToken()
	}
	var g store.DestinationGrant
	var wait, paused, last int64
	err := s.pool.QueryRow(ctx, `SELECT r_ok, r_wait, r_factor, r_strikes, r_paused, r_last, r_version
		FROM herald_dest_acquire($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		key, int32(max(l.MaxConnections, 0)), int32(max(l.MessagesPerMinute, 0)), s.node, token, nanos(now), nanos(until),
		int64(minute.Width), int32(minute.Slots)).
		Scan(&g.OK, &wait, &g.State.Factor, &g.State.Strikes, &paused, &last, &g.State.Version)
	if err != nil {
		return store.DestinationGrant{}, mapErr(fmt.Errorf("postgres store: acquire destination %s: %w", key, err))
	}
	g.Wait = time.Duration(wait)
	g.State.PausedUntil, g.State.LastChange = fromNanos(paused), fromNanos(last)
	if g.OK {
		g.Token = token
	}
	return g, nil
}

// RenewDestination holds a connection longer; it is never shortened.
func (s *Store) RenewDestination(ctx context.Context, key, token string, until time.Time) error {
	tag, err := s.pool.Exec(ctx, `UPDATE dest_conns SET until = GREATEST(until, $3) WHERE key = $1 AND token = $2`,
		key, token, nanos(until))
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: renew destination %s: %w", key, err))
	}
	if tag.RowsAffected() == 0 || token == "" {
		return fmt.Errorf("postgres store: renew destination %s: %w", key, store.ErrLeaseLost)
	}
	return nil
}

// ReleaseDestination gives a connection back (committed asynchronously: a
// release lost in a database crash runs out like a dead node's).
func (s *Store) ReleaseDestination(ctx context.Context, key, token string) error {
	if _, err := s.pool.Exec(ctx, `SELECT herald_dest_release($1, $2)`, key, token); err != nil {
		return mapErr(fmt.Errorf("postgres store: release destination %s: %w", key, err))
	}
	return nil
}

// DestinationState returns key's back-off.
func (s *Store) DestinationState(ctx context.Context, key string) (store.DestinationState, error) {
	st := store.DestinationState{Factor: 1}
	var paused, last int64
	err := s.pool.QueryRow(ctx, `SELECT factor, strikes, paused_until, last_change, version FROM dest_state WHERE key = $1`, key).
		Scan(&st.Factor, &st.Strikes, &paused, &last, &st.Version)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return store.DestinationState{Factor: 1}, nil
	case err != nil:
		return store.DestinationState{}, fmt.Errorf("postgres store: destination state of %s: %w", key, err)
	}
	st.PausedUntil, st.LastChange = fromNanos(paused), fromNanos(last)
	return st, nil
}

// SetDestinationState replaces key's back-off if its version is still
// version, in one statement: version 0 inserts (any existing row has a
// version of at least 1), another version updates under its check.
func (s *Store) SetDestinationState(ctx context.Context, key string, version int64, st store.DestinationState) (bool, error) {
	q := `UPDATE dest_state SET factor = $2, strikes = $3, paused_until = $4, last_change = $5, version = version + 1
		WHERE key = $1 AND version = $6`
	if version == 0 {
		q = `INSERT INTO dest_state (key, factor, strikes, paused_until, last_change, version)
			VALUES ($1, $2, $3, $4, $5, $6 + 1) ON CONFLICT (key) DO NOTHING`
	}
	tag, err := s.pool.Exec(ctx, q, key, st.Factor, int32(st.Strikes), nanos(st.PausedUntil), nanos(st.LastChange), version)
	if err != nil {
		return false, mapErr(fmt.Errorf("postgres store: set destination state of %s: %w", key, err))
	}
	return tag.RowsAffected() > 0, nil
}
