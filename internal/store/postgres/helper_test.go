package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// defaultTestDSN is the development and CI database (trust authentication).
const defaultTestDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// testDSN returns the database the tests use: HERALD_TEST_POSTGRES, or the
// default. The tests never skip: CI must run them (.ci/run starts the
// server).
func testDSN() string {
	if d := os.Getenv("HERALD_TEST_POSTGRES"); d != "" {
		return d
	}
	return defaultTestDSN
}

var adminOnce struct {
	sync.Mutex
	conn *pgx.Conn
}

// admin runs a statement on a connection of the test binary's own.
func admin(t testing.TB, sql string, args ...any) {
	t.Helper()
	adminOnce.Lock()
	defer adminOnce.Unlock()
	ctx := context.Background()
	if adminOnce.conn == nil || adminOnce.conn.IsClosed() {
		c, err := pgx.Connect(ctx, testDSN())
		if err != nil {
			t.Fatalf("PostgreSQL at %s (HERALD_TEST_POSTGRES) is not reachable: %v\n"+
				"start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", Redact(testDSN()), err)
		}
		adminOnce.conn = c
	}
	if _, err := adminOnce.conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// newSchema creates an empty schema for one test, dropped when the test
// ends, and returns a DSN whose search_path selects it.
func newSchema(t testing.TB) string {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name := "herald_test_" + hex.EncodeToString(b[:])
	admin(t, `CREATE SCHEMA `+pgx.Identifier{name}.Sanitize())
	t.Cleanup(func() { admin(t, `DROP SCHEMA `+pgx.Identifier{name}.Sanitize()+` CASCADE`) })
	u, err := url.Parse(testDSN())
	if err != nil {
		t.Fatalf("HERALD_TEST_POSTGRES must be a URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", name)
	u.RawQuery = q.Encode()
	return u.String()
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
