package postgres

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// Every table of the schema is copied by herald store copy, or named in
// NotCopied with the reason; every copied table and column exists. A new
// table cannot be forgotten by the copy.
func TestCopyCoversSchema(t *testing.T) {
	t.Parallel()
	s := openFresh(t, Options{})
	ctx := context.Background()
	rows, err := s.pool.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	copied := map[string]bool{}
	for _, tb := range append(slices.Clone(store.CopyTables), store.MessageTable, store.RecipientTable) {
		copied[tb.Name] = true
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
