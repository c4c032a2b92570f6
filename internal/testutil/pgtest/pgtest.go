// Package pgtest gives tests a PostgreSQL schema of their own: the
// database is HERALD_TEST_POSTGRES, by default the development and CI
// server (postgres://postgres@127.0.0.1:5432/test, trust authentication).
// Tests that need PostgreSQL never skip: CI must run them (.ci/run starts
// the server); an unreachable server fails them with what to do.
package pgtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"sync"
	"testing"

	"github.com/jackc/pgx/v5"
)

// DefaultDSN is the database used when HERALD_TEST_POSTGRES is unset.
const DefaultDSN = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// DSN returns the test database: HERALD_TEST_POSTGRES, or DefaultDSN.
func DSN() string {
	if d := os.Getenv("HERALD_TEST_POSTGRES"); d != "" {
		return d
	}
	return DefaultDSN
}

var admin struct {
	sync.Mutex
	conn *pgx.Conn
}

// Exec runs a statement on the test binary's own connection to DSN.
func Exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	admin.Lock()
	defer admin.Unlock()
	ctx := context.Background()
	if admin.conn == nil || admin.conn.IsClosed() {
		c, err := pgx.Connect(ctx, DSN())
		if err != nil {
			t.Fatalf("PostgreSQL (HERALD_TEST_POSTGRES, default %s) is not reachable: %v\n"+
				"start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start", DefaultDSN, err)
		}
		admin.conn = c
	}
	if _, err := admin.conn.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// Query runs a query returning one value on the test binary's connection.
func Query[T any](t testing.TB, sql string, args ...any) T {
	t.Helper()
	Exec(t, "SELECT 1") // connects
	admin.Lock()
	defer admin.Unlock()
	var v T
	if err := admin.conn.QueryRow(context.Background(), sql, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return v
}

// NewSchema creates an empty schema for one test, dropped (with all it
// holds) when the test ends, and returns its name and a DSN whose
// search_path selects it.
func NewSchema(t testing.TB) (name, dsn string) {
	t.Helper()
	var b [6]byte
	_, _ = rand.Read(b[:])
	name = "herald_test_" + hex.EncodeToString(b[:])
	Exec(t, `CREATE SCHEMA `+pgx.Identifier{name}.Sanitize())
	t.Cleanup(func() { Exec(t, `DROP SCHEMA `+pgx.Identifier{name}.Sanitize()+` CASCADE`) })
	return name, WithSchema(t, DSN(), name)
}

// WithSchema returns dsn with its search_path set to schema.
func WithSchema(t testing.TB, dsn, schema string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("HERALD_TEST_POSTGRES must be a URL: %v", err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
