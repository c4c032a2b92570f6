package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// AlertStates returns every stored alert state (see store.Alerts).
func (s *Store) AlertStates(ctx context.Context) ([]store.AlertState, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT key, rule, firing, version, since, value, detail FROM alert_states ORDER BY key`)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: alert states: %w", err)
	}
	defer rows.Close()
	var out []store.AlertState
	for rows.Next() {
		var st store.AlertState
		var since int64
		if err := rows.Scan(&st.Key, &st.Rule, &st.Firing, &st.Version, &since, &st.Value, &st.Detail); err != nil {
			return nil, fmt.Errorf("sqlite store: alert states: %w", err)
		}
		st.Since = fromNanos(since)
		out = append(out, st)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: alert states: %w", err)
	}
	return out, nil
}

// TransitionAlert changes an alert's state if its version is still from
// (see store.Alerts).
func (s *Store) TransitionAlert(ctx context.Context, st store.AlertState, from int64) (store.AlertState, bool, error) {
	st.Key = store.ClipText(st.Key, store.MaxAlertKey)
	st.Detail = store.ClipText(st.Detail, store.MaxAlertDetail)
	st.Version = from + 1
	node := s.node
	if node == "" {
		node = "local"
	}
	won := false
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		won = false
		var res sql.Result
		var err error
		if from == 0 {
			res, err = w.conn.ExecContext(bg, `INSERT INTO alert_states (key, rule, firing, version, since, value, detail)
				VALUES (?, ?, ?, 1, ?, ?, ?) ON CONFLICT (key) DO NOTHING`,
				st.Key, st.Rule, b2i(st.Firing), nanos(st.Since), st.Value, st.Detail)
		} else {
			res, err = w.conn.ExecContext(bg, `UPDATE alert_states SET rule = ?, firing = ?, version = version + 1, since = ?, value = ?, detail = ?
				WHERE key = ? AND version = ?`,
				st.Rule, b2i(st.Firing), nanos(st.Since), st.Value, st.Detail, st.Key, from)
		}
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return err
		}
		if _, err := w.conn.ExecContext(bg, `INSERT INTO alert_history (key, rule, firing, time, value, detail, node) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			st.Key, st.Rule, b2i(st.Firing), nanos(st.Since), st.Value, st.Detail, node); err != nil {
			return err
		}
		won = true
		return nil
	})
	if err != nil {
		return store.AlertState{}, false, fmt.Errorf("sqlite store: alert %s transition: %w", st.Key, err)
	}
	if !won {
		return store.AlertState{}, false, nil
	}
	return st, true, nil
}

// AlertHistory returns the newest transitions (see store.Alerts).
func (s *Store) AlertHistory(ctx context.Context, rule string, limit int) ([]store.AlertEvent, error) {
	limit = max(1, min(limit, 10000))
	q := `SELECT id, key, rule, firing, time, value, detail, node FROM alert_history`
	args := []any{}
	if rule != "" {
		q += ` WHERE rule = ?`
		args = append(args, rule)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit)
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: alert history: %w", err)
	}
	defer rows.Close()
	var out []store.AlertEvent
	for rows.Next() {
		var e store.AlertEvent
		var t int64
		if err := rows.Scan(&e.ID, &e.Key, &e.Rule, &e.Firing, &t, &e.Value, &e.Detail, &e.Node); err != nil {
			return nil, fmt.Errorf("sqlite store: alert history: %w", err)
		}
		e.Time = fromNanos(t)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: alert history: %w", err)
	}
	return out, nil
}

// PruneAlertHistory deletes old transitions (see store.Alerts).
func (s *Store) PruneAlertHistory(ctx context.Context, before time.Time) (int, error) {
	var n int64
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `DELETE FROM alert_history WHERE time < ?`, nanos(before))
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		_, err = w.conn.ExecContext(bg, `DELETE FROM alert_states WHERE firing = 0 AND since < ?`, nanos(before))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("sqlite store: prune alert history: %w", err)
	}
	return int(n), nil
}

// SilenceAlert stores or removes a silence (see store.Alerts).
func (s *Store) SilenceAlert(ctx context.Context, sl store.AlertSilence) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		if sl.Until.IsZero() {
			_, err := w.conn.ExecContext(bg, `DELETE FROM alert_silences WHERE rule = ?`, sl.Rule)
			return err
		}
		_, err := w.conn.ExecContext(bg, `INSERT INTO alert_silences (rule, until, reason, created) VALUES (?, ?, ?, ?)
			ON CONFLICT (rule) DO UPDATE SET until = excluded.until, reason = excluded.reason, created = excluded.created`,
			sl.Rule, nanos(sl.Until), store.ClipText(sl.Reason, store.MaxAlertDetail), nanos(sl.Created))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: silence alert %s: %w", sl.Rule, err)
	}
	return nil
}

// AlertSilences returns the silences in force (see store.Alerts).
func (s *Store) AlertSilences(ctx context.Context, now time.Time) ([]store.AlertSilence, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT rule, until, reason, created FROM alert_silences WHERE until > ? ORDER BY rule`, nanos(now))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: alert silences: %w", err)
	}
	defer rows.Close()
	var out []store.AlertSilence
	for rows.Next() {
		var sl store.AlertSilence
		var until, created int64
		if err := rows.Scan(&sl.Rule, &until, &sl.Reason, &created); err != nil {
			return nil, fmt.Errorf("sqlite store: alert silences: %w", err)
		}
		sl.Until, sl.Created = fromNanos(until), fromNanos(created)
		out = append(out, sl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: alert silences: %w", err)
	}
	return out, nil
}

// FailingWebhooks returns webhooks whose deliveries fail (see
// store.AlertInputs).
func (s *Store) FailingWebhooks(ctx context.Context, limit int) ([]store.WebhookFailure, error) {
	limit = max(1, min(limit, 10000))
	rows, err := s.rdb.QueryContext(ctx, `SELECT d.webhook_id, coalesce(w.account, ''), count(DISTINCT d.id),
			(SELECT min(a.time) FROM webhook_attempts a JOIN webhook_deliveries d2 ON a.delivery_id = d2.id
				WHERE d2.webhook_id = d.webhook_id AND d2.status = 'pending' AND d2.attempts > 0),
			(SELECT d3.last_error FROM webhook_deliveries d3 WHERE d3.webhook_id = d.webhook_id AND d3.status = 'pending' AND d3.attempts > 0
				ORDER BY d3.id DESC LIMIT 1)
		FROM webhook_deliveries d LEFT JOIN webhooks w ON w.id = d.webhook_id
		WHERE d.status = 'pending' AND d.attempts > 0
		GROUP BY d.webhook_id ORDER BY 4, 1 LIMIT ?`, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: failing webhooks: %w", err)
	}
	defer rows.Close()
	var out []store.WebhookFailure
	for rows.Next() {
		var f store.WebhookFailure
		var first sql.NullInt64
		if err := rows.Scan(&f.WebhookID, &f.Account, &f.Pending, &first, &f.LastError); err != nil {
			return nil, fmt.Errorf("sqlite store: failing webhooks: %w", err)
		}
		f.FailingSince = fromNanos(first.Int64)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: failing webhooks: %w", err)
	}
	return out, nil
}
