package sqlite

import (
	"context"
	"slices"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

// Every table of the schema is copied by herald store copy, or named in
// NotCopied with the reason; every copied table and column exists. A new
// table cannot be forgotten by the copy.
func TestCopyCoversSchema(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir(), Options{})
	defer s.Close()
	ctx := context.Background()
	rows, err := s.rdb.DB.QueryContext(ctx, `SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, n)
	}
	rows.Close()
	copied := map[string]bool{}
	for _, tb := range append(slices.Clone(store.CopyTables), store.MessageTable, store.RecipientTable) {
		copied[tb.Name] = true
		// Every column listed exists (the export names them all).
		if _, err := s.ExportRows(ctx, tb, nil, 1); err != nil {
			t.Errorf("export %s: %v", tb.Name, err)
		}
	}
	for _, n := range tables {
		if _, skip := NotCopied[n]; !copied[n] && !skip {
			t.Errorf("table %s is neither in store.CopyTables nor in NotCopied", n)
		}
	}
	for n := range NotCopied {
		if !slices.Contains(tables, n) {
			t.Errorf("NotCopied names %s, which the schema does not have", n)
		}
	}
}
