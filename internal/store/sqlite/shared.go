package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Secret returns the secret called name, storing initial first when there
// is none (see store.Secrets).
func (s *Store) Secret(ctx context.Context, name string, initial []byte) ([]byte, error) {
	var v []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	switch {
	case err == nil:
		return v, nil
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("sqlite store: secret %s: %w", name, err)
	case len(initial) == 0:
		return nil, fmt.Errorf("sqlite store: secret %s: %w", name, store.ErrNotFound)
	}
	err = s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		if _, err := w.conn.ExecContext(bg, `INSERT INTO secrets (name, value, created) VALUES (?, ?, ?) ON CONFLICT DO NOTHING`,
			name, initial, time.Now().UnixNano()); err != nil {
			return err
		}
		return w.conn.QueryRowContext(bg, `SELECT value FROM secrets WHERE name = ?`, name).Scan(&v)
	})
	if err != nil {
		return nil, fmt.Errorf("sqlite store: secret %s: %w", name, err)
	}
	return v, nil
}

// AddDMARCReport keeps a report once (see store.DMARCReports).
func (s *Store) AddDMARCReport(ctx context.Context, r store.DMARCReport) error {
	d := normDomain(r.Domain)
	if d == "" {
		return errors.New("sqlite store: add DMARC report: no domain")
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), `INSERT INTO dmarc_reports
			(domain, reporter, report_id, begin_at, end_at, received, data) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`,
			d, r.Reporter, r.ReportID, nanos(r.Begin), nanos(r.End), nanos(r.Received), r.Data)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return clean(store.ErrExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add DMARC report %s from %s: %w", r.ReportID, r.Reporter, err)
	}
	return nil
}

// ListDMARCReports returns the reports of domain ("" for all).
func (s *Store) ListDMARCReports(ctx context.Context, domain string) ([]store.DMARCReport, error) {
	const cols = `SELECT domain, reporter, report_id, begin_at, end_at, received, data FROM dmarc_reports`
	const order = ` ORDER BY begin_at, domain, reporter, report_id`
	var rows *sql.Rows
	var err error
	if domain == "" {
		rows, err = s.rdb.QueryContext(ctx, cols+order)
	} else {
		rows, err = s.rdb.QueryContext(ctx, cols+` WHERE domain = ?`+order, normDomain(domain))
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite store: list DMARC reports: %w", err)
	}
	defer rows.Close()
	var out []store.DMARCReport
	for rows.Next() {
		var r store.DMARCReport
		var b, e, rcv int64
		if err := rows.Scan(&r.Domain, &r.Reporter, &r.ReportID, &b, &e, &rcv, &r.Data); err != nil {
			return nil, fmt.Errorf("sqlite store: list DMARC reports: %w", err)
		}
		r.Begin, r.End, r.Received = fromNanos(b), fromNanos(e), fromNanos(rcv)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: list DMARC reports: %w", err)
	}
	return out, nil
}

// utcDay is t's UTC midnight.
func utcDay(t time.Time) time.Time { return t.UTC().Truncate(24 * time.Hour) }

func jsonList(l []string) string {
	if len(l) == 0 {
		return "[]"
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func fromJSONList(s string) []string {
	var l []string
	_ = json.Unmarshal([]byte(s), &l)
	if len(l) == 0 {
		return nil
	}
	return l
}

// AddTLSCounts adds counts to the day's counters, atomically.
func (s *Store) AddTLSCounts(ctx context.Context, counts []store.TLSCount) error {
	if len(counts) == 0 {
		return nil
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		for _, c := range counts {
			if _, err := w.conn.ExecContext(bg, `INSERT INTO tlsrpt_counts (day, domain, key, policy_type, policy_string, mx_patterns,
					result, sending_ip, mx_host, receiving_ip, info, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
				ON CONFLICT (day, domain, key) DO UPDATE SET count = count + excluded.count`,
				nanos(utcDay(c.Day)), normDomain(c.Domain), c.Key(), c.PolicyType, jsonList(c.PolicyString), jsonList(c.MXPatterns),
				c.Result, c.SendingIP, c.MXHost, c.ReceivingIP, c.Info, c.Count); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add TLS-RPT counts: %w", err)
	}
	return nil
}

// TLSCountDays returns the days before before with counts.
func (s *Store) TLSCountDays(ctx context.Context, before time.Time) ([]time.Time, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT DISTINCT day FROM tlsrpt_counts WHERE day < ? ORDER BY day`, nanos(before))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: TLS-RPT days: %w", err)
	}
	defer rows.Close()
	var out []time.Time
	for rows.Next() {
		var d int64
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("sqlite store: TLS-RPT days: %w", err)
		}
		out = append(out, fromNanos(d))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: TLS-RPT days: %w", err)
	}
	return out, nil
}

// TLSCounts returns the counters of day.
func (s *Store) TLSCounts(ctx context.Context, day time.Time) ([]store.TLSCount, error) {
	rows, err := s.rdb.QueryContext(ctx, `SELECT domain, policy_type, policy_string, mx_patterns, result, sending_ip, mx_host,
		receiving_ip, info, count FROM tlsrpt_counts WHERE day = ? ORDER BY domain, key`, nanos(utcDay(day)))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: TLS-RPT counts: %w", err)
	}
	defer rows.Close()
	var out []store.TLSCount
	for rows.Next() {
		c := store.TLSCount{Day: utcDay(day)}
		var ps, mx string
		if err := rows.Scan(&c.Domain, &c.PolicyType, &ps, &mx, &c.Result, &c.SendingIP, &c.MXHost, &c.ReceivingIP, &c.Info, &c.Count); err != nil {
			return nil, fmt.Errorf("sqlite store: TLS-RPT counts: %w", err)
		}
		c.PolicyString, c.MXPatterns = fromJSONList(ps), fromJSONList(mx)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: TLS-RPT counts: %w", err)
	}
	return out, nil
}

// ClaimTLSReport claims the sending of a report (see store.TLSReports).
func (s *Store) ClaimTLSReport(ctx context.Context, domain string, day, now, until time.Time) (string, error) {
	token := newToken()
	claimed := false
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), `INSERT INTO tlsrpt_claims (day, domain, token, until, done)
			VALUES (?, ?, ?, ?, 0)
			ON CONFLICT (day, domain) DO UPDATE SET token = excluded.token, until = excluded.until
			WHERE done = 0 AND until < ?`,
			nanos(utcDay(day)), normDomain(domain), token, nanos(until), nanos(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		claimed = n > 0
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sqlite store: claim TLS-RPT report of %s: %w", domain, err)
	}
	if !claimed {
		return "", nil
	}
	return token, nil
}

// FinishTLSReport marks a claimed report sent and drops its counts.
func (s *Store) FinishTLSReport(ctx context.Context, domain string, day time.Time, token string) error {
	d, dn := nanos(utcDay(day)), normDomain(domain)
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `UPDATE tlsrpt_claims SET done = 1 WHERE day = ? AND domain = ? AND token = ? AND done = 0 AND ? != ''`,
			d, dn, token, token)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return clean(store.ErrLeaseLost)
		}
		_, err = w.conn.ExecContext(bg, `DELETE FROM tlsrpt_counts WHERE day = ? AND domain = ?`, d, dn)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: finish TLS-RPT report of %s: %w", domain, err)
	}
	return nil
}

// PruneTLSReports deletes the counts and claims of days before before.
func (s *Store) PruneTLSReports(ctx context.Context, before time.Time) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		if _, err := w.conn.ExecContext(bg, `DELETE FROM tlsrpt_counts WHERE day < ?`, nanos(before)); err != nil {
			return err
		}
		_, err := w.conn.ExecContext(bg, `DELETE FROM tlsrpt_claims WHERE day < ?`, nanos(before))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: prune TLS-RPT data: %w", err)
	}
	return nil
}
