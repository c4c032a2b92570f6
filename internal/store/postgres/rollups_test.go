package postgres

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store/storetest"
)

// rollupRows returns every rollup row, shards summed, one string each, in
// key order.
func rollupRows(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT 'c', res, account, bucket, type, sum(n)::text FROM rollup_counts GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5`,
		`SELECT 'l', res, account, bucket, bin::text, sum(n)::text FROM rollup_latency GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5`,
		`SELECT 'd', res, account, bucket, domain, sum(attempts) || ' ' || sum(delivered) || ' ' || sum(deferred) || ' ' ||
			sum(bounced) || ' ' || sum(tls) FROM rollup_dest GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5`,
	} {
		rows, err := s.pool.Query(context.Background(), q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var a, c, e, f string
			var b int32
			var d int64
			if err := rows.Scan(&a, &b, &c, &d, &e, &f); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(a, " ", b, " ", c, " ", d, " ", e, " ", f))
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestRollupsBackfill checks that the migration that creates the rollups
// fills them from the events already stored exactly as the event inserts
// would have: it runs the step again on a store whose rollups were
// maintained live, after dropping them, and compares every row.
func TestRollupsBackfill(t *testing.T) {
	s := openFresh(t, Options{})
	ctx := context.Background()
	evs := storetest.BackfillEvents()
	for i := 0; i < len(evs); i += 37 {
		if err := s.AddEvents(ctx, evs[i:min(i+37, len(evs))]); err != nil {
			t.Fatalf("AddEvents: %v", err)
		}
	}
	live := rollupRows(t, s)
	if len(live) < 100 {
		t.Fatalf("only %d rollup rows", len(live))
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		for _, q := range []string{`DROP TABLE rollup_counts, rollup_latency, rollup_dest`,
			`DROP INDEX messages_received, messages_account_received`, rollupsMigration} {
			if _, err := tx.Exec(ctx, q); err != nil {
				return fmt.Errorf("%.40s: %w", q, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	back := rollupRows(t, s)
	if !slices.Equal(live, back) {
		for i := range max(len(live), len(back)) {
			var l, b string
			if i < len(live) {
				l = live[i]
			}
			if i < len(back) {
				b = back[i]
			}
			if l != b {
				t.Errorf("row %d: live %q, backfilled %q", i, l, b)
			}
		}
	}
}
