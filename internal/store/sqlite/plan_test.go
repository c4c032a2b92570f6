package sqlite

import (
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// The statements of the lease protocol run for every delivery (Lease,
// Renew, Update): their plans must use an index or the primary key, never
// scan the recipients table.
func TestLeaseQueryPlans(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	defer s.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db")+"?_pragma=query_only(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, tc := range []struct {
		name, query string
		nargs       int
		want        string // a step the plan must contain
	}{
		{"due messages", qDueMsgs, 1, "USING INDEX recipients_ready"},
		{"lease recipients", qLeaseRcpts, 5, "USING INDEX recipients_message"},
		{"update recipient", qUpdRcpt, 11, "USING INTEGER PRIMARY KEY"},
		{"recipient exists", qRcptExists, 2, "USING INTEGER PRIMARY KEY"},
		{"renew", qRenew, 3, "USING INDEX recipients_message"},
		{"count pending", qCountPending, 1, "USING INDEX recipients_message"},
	} {
		args := make([]any, tc.nargs)
		for i := range args {
			args[i] = int64(1)
		}
		rows, err := db.Query("EXPLAIN QUERY PLAN "+tc.query, args...)
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
		if !strings.Contains(text, tc.want) {
			t.Errorf("%s: plan %q lacks %q", tc.name, text, tc.want)
		}
		for _, step := range plan {
			if strings.HasPrefix(step, "SCAN recipients") {
				t.Errorf("%s: plan scans recipients: %q", tc.name, text)
			}
		}
	}
}
