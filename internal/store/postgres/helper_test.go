package postgres

import (
	"context"
	"log/slog"
	"testing"

	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// newSchema creates an empty schema for one test, dropped when the test
// ends, and returns a DSN whose search_path selects it.
func newSchema(t testing.TB) string {
	t.Helper()
	_, dsn := pgtest.NewSchema(t)
	return dsn
}

// openTest opens a store on dsn; the test closes it.
func openTest(t testing.TB, dsn string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(context.Background(), dsn, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// openFresh opens a store on a new schema and closes it when the test
// ends.
func openFresh(t testing.TB, opts Options) *Store {
	t.Helper()
	s := openTest(t, newSchema(t), opts)
	t.Cleanup(func() { s.Close() })
	return s
}
