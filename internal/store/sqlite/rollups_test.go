package sqlite

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store/storetest"
)

// rollupRows returns every rollup row, one string each, in key order.
func rollupRows(t *testing.T, s *Store) []string {
	t.Helper()
	var out []string
	for _, q := range []string{
		`SELECT 'c', res, account, bucket, type, n FROM rollup_counts ORDER BY 1, 2, 3, 4, 5`,
		`SELECT 'l', res, account, bucket, bin, n FROM rollup_latency ORDER BY 1, 2, 3, 4, 5`,
		`SELECT 'd', res, account, bucket, domain, attempts || ' ' || delivered || ' ' || deferred || ' ' || bounced || ' ' || tls
			FROM rollup_dest ORDER BY 1, 2, 3, 4, 5`,
	} {
		rows, err := s.rdb.Query(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		for rows.Next() {
			var a, b, c, d, e, f any
			if err := rows.Scan(&a, &b, &c, &d, &e, &f); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprint(a, b, c, d, e, f))
		}
		rows.Close()
	}
	return out
}

// rollupsStep returns the migration that creates the rollups.
func rollupsStep(t *testing.T) string {
	for _, step := range schema {
		if strings.Contains(step, "CREATE TABLE rollup_counts") {
			return step
		}
	}
	t.Fatal("no migration creates rollup_counts")
	return ""
}

// TestRollupsBackfill checks that the migration that creates the rollups
// fills them from the events already stored exactly as the writer would
// have: it runs the step again on a store whose rollups were maintained
// live, after dropping them, and compares every row.
func TestRollupsBackfill(t *testing.T) {
	s := openTest(t, t.TempDir(), Options{})
	defer s.Close()
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
	err := s.w.do(ctx, false, func(w *writer) error {
		for _, q := range []string{`DROP TABLE rollup_counts`, `DROP TABLE rollup_latency`, `DROP TABLE rollup_dest`,
			`DROP INDEX messages_received`, `DROP INDEX messages_account_received`, rollupsStep(t)} {
			if _, err := w.conn.ExecContext(ctx, q); err != nil {
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

// The rollup reads of the console's overview must be range reads of the
// rollup tables' primary keys, and the queue summary must use the
// received-time indexes: never a scan whatever the number of events.
func TestRollupQueryPlans(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	defer s.Close()
	for _, tc := range []struct {
		name, query string
		args        []any
		want        []string // steps the plan must contain
	}{
		{"event counts", qEventCounts, []any{60, "a", 0, 1, 60},
			[]string{"SEARCH rollup_counts USING PRIMARY KEY (res=? AND account=? AND bucket>? AND bucket<?)"}},
		{"latency counts", qLatencyCounts, []any{60, "a", 0, 1, 0},
			[]string{"SEARCH rollup_latency USING PRIMARY KEY (res=? AND account=? AND bucket>? AND bucket<?)"}},
		{"destination counts", qDestCounts, []any{3600, "", 0, 1, 10},
			[]string{"SEARCH rollup_dest USING PRIMARY KEY (res=? AND account=? AND bucket>? AND bucket<?)"}},
		{"oldest of an account", oldestAccountSQL, []any{"a", 0},
			[]string{"USING INDEX messages_account_received (account=?)", "INDEX messages_send_at (send_at<?)"}},
		{"oldest", oldestSQL, []any{0}, []string{"USING INDEX messages_received", "INDEX messages_send_at (send_at<?)"}},
	} {
		rows, err := s.rdb.Query("EXPLAIN QUERY PLAN "+tc.query, tc.args...)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		text := strings.Join(plan, "; ")
		t.Logf("%s: %s", tc.name, text)
		for _, w := range tc.want {
			if !strings.Contains(text, w) {
				t.Errorf("%s: plan %q lacks %q", tc.name, text, w)
			}
		}
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN") && !strings.Contains(step, "INDEX") {
				t.Errorf("%s: plan scans a table: %q", tc.name, text)
			}
		}
	}
}
