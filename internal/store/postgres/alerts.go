package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// AlertStates returns every stored alert state (see store.Alerts).
func (s *Store) AlertStates(ctx context.Context) ([]store.AlertState, error) {
	rows, err := s.pool.Query(ctx, `SELECT key, rule, firing, version, since, value, detail FROM alert_states ORDER BY key`)
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: alert states: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AlertState, error) {
		var st store.AlertState
		var since int64
		err := r.Scan(&st.Key, &st.Rule, &st.Firing, &st.Version, &since, &st.Value, &st.Detail)
		st.Since = fromNanos(since)
		return st, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: alert states: %w", err))
	}
	return out, nil
}

// TransitionAlert changes an alert's state if its version is still from
// (see store.Alerts). The compare-and-set and the history row are one
// statement: of several nodes presenting the same version, one wins.
func (s *Store) TransitionAlert(ctx context.Context, st store.AlertState, from int64) (store.AlertState, bool, error) {
	st.Key = store.ClipText(st.Key, store.MaxAlertKey)
	st.Detail = store.ClipText(st.Detail, store.MaxAlertDetail)
	st.Version = from + 1
	var change string
	if from == 0 {
		change = `INSERT INTO alert_states (key, rule, firing, version, since, value, detail)
			VALUES ($1, $2, $3, 1, $4, $5, $6) ON CONFLICT (key) DO NOTHING RETURNING key`
	} else {
		change = `UPDATE alert_states SET rule = $2, firing = $3, version = version + 1, since = $4, value = $5, detail = $6
			WHERE key = $1 AND version = $8 RETURNING key`
	}
	q := `WITH c AS (` + change + `)
		INSERT INTO alert_history (key, rule, firing, time, value, detail, node)
		SELECT $1, $2, $3, $4, $5, $6, $7 FROM c`
	args := []any{st.Key, st.Rule, st.Firing, nanos(st.Since), st.Value, st.Detail, s.node}
	if from != 0 {
		args = append(args, from)
	}
	tag, err := s.pool.Exec(ctx, q, args...)
	if err != nil {
		return store.AlertState{}, false, mapErr(fmt.Errorf("postgres store: alert %s transition: %w", st.Key, err))
	}
	if tag.RowsAffected() == 0 {
		return store.AlertState{}, false, nil
	}
	return st, true, nil
}

// AlertHistory returns the newest transitions (see store.Alerts).
func (s *Store) AlertHistory(ctx context.Context, rule string, limit int) ([]store.AlertEvent, error) {
	limit = max(1, min(limit, 10000))
	q := `SELECT id, key, rule, firing, time, value, detail, node FROM alert_history`
	args := []any{limit}
	if rule != "" {
		q += ` WHERE rule = $2`
		args = append(args, rule)
	}
	q += ` ORDER BY id DESC LIMIT $1`
	rows, err := s.pool.Query(ctx, q, args...)
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: alert history: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AlertEvent, error) {
		var e store.AlertEvent
		var t int64
		err := r.Scan(&e.ID, &e.Key, &e.Rule, &e.Firing, &t, &e.Value, &e.Detail, &e.Node)
		e.Time = fromNanos(t)
		return e, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: alert history: %w", err))
	}
	return out, nil
}

// PruneAlertHistory deletes old transitions (see store.Alerts).
func (s *Store) PruneAlertHistory(ctx context.Context, before time.Time) (int, error) {
	tag, err := s.pool.Exec(ctx, `DELETE FROM alert_history WHERE time < $1`, nanos(before))
	if err != nil {
		return 0, mapErr(fmt.Errorf("postgres store: prune alert history: %w", err))
	}
	if _, err := s.pool.Exec(ctx, `DELETE FROM alert_states WHERE NOT firing AND since < $1`, nanos(before)); err != nil {
		return 0, mapErr(fmt.Errorf("postgres store: prune alert states: %w", err))
	}
	return int(tag.RowsAffected()), nil
}

// SilenceAlert stores or removes a silence (see store.Alerts).
func (s *Store) SilenceAlert(ctx context.Context, sl store.AlertSilence) error {
	var err error
	if sl.Until.IsZero() {
		_, err = s.pool.Exec(ctx, `DELETE FROM alert_silences WHERE rule = $1`, sl.Rule)
	} else {
		_, err = s.pool.Exec(ctx, `INSERT INTO alert_silences (rule, until, reason, created) VALUES ($1, $2, $3, $4)
			ON CONFLICT (rule) DO UPDATE SET until = excluded.until, reason = excluded.reason, created = excluded.created`,
			sl.Rule, nanos(sl.Until), store.ClipText(sl.Reason, store.MaxAlertDetail), nanos(sl.Created))
	}
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: silence alert %s: %w", sl.Rule, err))
	}
	return nil
}

// AlertSilences returns the silences in force (see store.Alerts).
func (s *Store) AlertSilences(ctx context.Context, now time.Time) ([]store.AlertSilence, error) {
	rows, err := s.pool.Query(ctx, `SELECT rule, until, reason, created FROM alert_silences WHERE until > $1 ORDER BY rule`, nanos(now))
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: alert silences: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.AlertSilence, error) {
		var sl store.AlertSilence
		var until, created int64
		err := r.Scan(&sl.Rule, &until, &sl.Reason, &created)
		sl.Until, sl.Created = fromNanos(until), fromNanos(created)
		return sl, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: alert silences: %w", err))
	}
	return out, nil
}

// FailingWebhooks returns webhooks whose deliveries fail (see
// store.AlertInputs).
func (s *Store) FailingWebhooks(ctx context.Context, limit int) ([]store.WebhookFailure, error) {
	limit = max(1, min(limit, 10000))
	rows, err := s.pool.Query(ctx, `WITH f AS (SELECT id, webhook_id, last_error FROM webhook_deliveries WHERE status = 'pending' AND attempts > 0)
		SELECT f.webhook_id, coalesce(min(w.account), ''), count(*),
			coalesce((SELECT min(a.time) FROM webhook_attempts a JOIN f f2 ON a.delivery_id = f2.id WHERE f2.webhook_id = f.webhook_id), 0) AS first,
			(array_agg(f.last_error ORDER BY f.id DESC))[1]
		FROM f LEFT JOIN webhooks w ON w.id = f.webhook_id
		GROUP BY f.webhook_id ORDER BY first, f.webhook_id LIMIT $1`, limit)
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: failing webhooks: %w", err))
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.WebhookFailure, error) {
		var f store.WebhookFailure
		var first int64
		var n int64
		err := r.Scan(&f.WebhookID, &f.Account, &n, &first, &f.LastError)
		f.Pending, f.FailingSince = int(n), fromNanos(first)
		return f, err
	})
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: failing webhooks: %w", err))
	}
	return out, nil
}
