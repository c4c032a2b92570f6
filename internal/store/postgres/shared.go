package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// Secret returns the secret called name, storing initial first when there
// is none (see store.Secrets). The insert and the read are two statements,
// so that the read sees a winner that committed while the insert waited.
func (s *Store) Secret(ctx context.Context, name string, initial []byte) ([]byte, error) {
	if len(initial) > 0 {
		if _, err := s.pool.Exec(ctx, `INSERT INTO secrets (name, value, created) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
			name, initial, time.Now().UnixNano()); err != nil {
			return nil, mapErr(fmt.Errorf("postgres store: secret %s: %w", name, err))
		}
	}
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM secrets WHERE name = $1`, name).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("postgres store: secret %s: %w", name, err)
	}
	return v, nil
}

// AddDMARCReport keeps a report once (see store.DMARCReports).
func (s *Store) AddDMARCReport(ctx context.Context, r store.DMARCReport) error {
	d := normDomain(r.Domain)
	if d == "" {
		return errors.New("postgres store: add DMARC report: no domain")
	}
	tag, err := s.pool.Exec(ctx, `INSERT INTO dmarc_reports (domain, reporter, report_id, begin_at, end_at, received, data)
		VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
		d, r.Reporter, r.ReportID, nanos(r.Begin), nanos(r.End), nanos(r.Received), r.Data)
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: add DMARC report %s from %s: %w", r.ReportID, r.Reporter, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres store: add DMARC report %s from %s: %w", r.ReportID, r.Reporter, store.ErrExists)
	}
	return nil
}

// ListDMARCReports returns the reports of domain ("" for all).
func (s *Store) ListDMARCReports(ctx context.Context, domain string) ([]store.DMARCReport, error) {
	const cols = `SELECT domain, reporter, report_id, begin_at, end_at, received, data FROM dmarc_reports`
	const order = ` ORDER BY begin_at, domain, reporter COLLATE "C", report_id COLLATE "C"`
	var rows pgx.Rows
	var err error
	if domain == "" {
		rows, err = s.pool.Query(ctx, cols+order)
	} else {
		rows, err = s.pool.Query(ctx, cols+` WHERE domain = $1`+order, normDomain(domain))
	}
	if err != nil {
		return nil, fmt.Errorf("postgres store: list DMARC reports: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.DMARCReport, error) {
		var r store.DMARCReport
		var b, e, rcv int64
		err := row.Scan(&r.Domain, &r.Reporter, &r.ReportID, &b, &e, &rcv, &r.Data)
		r.Begin, r.End, r.Received = fromNanos(b), fromNanos(e), fromNanos(rcv)
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: list DMARC reports: %w", err)
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

// AddTLSCounts adds counts to the day's counters in one transaction (one
// round trip).
func (s *Store) AddTLSCounts(ctx context.Context, counts []store.TLSCount) error {
	if len(counts) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		pb := &pgx.Batch{}
		for _, c := range counts {
			pb.Queue(`INSERT INTO tlsrpt_counts AS t (day, domain, key, policy_type, policy_string, mx_patterns,
					result, sending_ip, mx_host, receiving_ip, info, count) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
				ON CONFLICT (day, domain, key) DO UPDATE SET count = t.count + excluded.count`,
				nanos(utcDay(c.Day)), normDomain(c.Domain), c.Key(), c.PolicyType, jsonList(c.PolicyString), jsonList(c.MXPatterns),
				c.Result, c.SendingIP, c.MXHost, c.ReceivingIP, c.Info, c.Count)
		}
		return tx.SendBatch(ctx, pb).Close()
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: add TLS-RPT counts: %w", err))
	}
	return nil
}

// TLSCountDays returns the days before before with counts.
func (s *Store) TLSCountDays(ctx context.Context, before time.Time) ([]time.Time, error) {
	rows, err := s.pool.Query(ctx, `SELECT DISTINCT day FROM tlsrpt_counts WHERE day < $1 ORDER BY day`, nanos(before))
	if err != nil {
		return nil, fmt.Errorf("postgres store: TLS-RPT days: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (time.Time, error) {
		var d int64
		err := r.Scan(&d)
		return fromNanos(d), err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: TLS-RPT days: %w", err)
	}
	return out, nil
}

// TLSCounts returns the counters of day.
func (s *Store) TLSCounts(ctx context.Context, day time.Time) ([]store.TLSCount, error) {
	d := utcDay(day)
	rows, err := s.pool.Query(ctx, `SELECT domain, policy_type, policy_string, mx_patterns, result, sending_ip, mx_host,
		receiving_ip, info, count FROM tlsrpt_counts WHERE day = $1 ORDER BY domain, key`, nanos(d))
	if err != nil {
		return nil, fmt.Errorf("postgres store: TLS-RPT counts: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (store.TLSCount, error) {
		c := store.TLSCount{Day: d}
		var ps, mx string
		err := r.Scan(&c.Domain, &c.PolicyType, &ps, &mx, &c.Result, &c.SendingIP, &c.MXHost, &c.ReceivingIP, &c.Info, &c.Count)
		c.PolicyString, c.MXPatterns = fromJSONList(ps), fromJSONList(mx)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("postgres store: TLS-RPT counts: %w", err)
	}
	return out, nil
}

// ClaimTLSReport claims the sending of a report in one statement: the
// claim row is inserted, or taken over if it is not done and ran out.
func (s *Store) ClaimTLSReport(ctx context.Context, domain string, day, now, until time.Time) (string, error) {
	token := randomToken()
	tag, err := s.pool.Exec(ctx, `INSERT INTO tlsrpt_claims AS c (day, domain, token, until, done) VALUES ($1, $2, $3, $4, false)
		ON CONFLICT (day, domain) DO UPDATE SET token = excluded.token, until = excluded.until
		WHERE NOT c.done AND c.until < $5`,
		nanos(utcDay(day)), normDomain(domain), token, nanos(until), nanos(now))
	if err != nil {
		return "", mapErr(fmt.Errorf("postgres store: claim TLS-RPT report of %s: %w", domain, err))
	}
	if tag.RowsAffected() == 0 {
		return "", nil
	}
	return token, nil
}

// FinishTLSReport marks a claimed report sent and drops its counts, in one
// transaction.
func (s *Store) FinishTLSReport(ctx context.Context, domain string, day time.Time, token string) error {
	d, dn := nanos(utcDay(day)), normDomain(domain)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE tlsrpt_claims SET done = true WHERE day = $1 AND domain = $2 AND token = $3 AND NOT done AND $3 <> ''`,
			d, dn, token)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrLeaseLost
		}
		_, err = tx.Exec(ctx, `DELETE FROM tlsrpt_counts WHERE day = $1 AND domain = $2`, d, dn)
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: finish TLS-RPT report of %s: %w", domain, err))
	}
	return nil
}

// PruneTLSReports deletes the counts and claims of days before before.
func (s *Store) PruneTLSReports(ctx context.Context, before time.Time) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM tlsrpt_counts WHERE day < $1`, nanos(before)); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM tlsrpt_claims WHERE day < $1`, nanos(before))
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: prune TLS-RPT data: %w", err))
	}
	return nil
}
