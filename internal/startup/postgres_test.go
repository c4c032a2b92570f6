package startup

import (
	"context"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// openPG returns StoreURL of what postgres.Open says about dsn.
func openPG(t *testing.T, dsn string, noCreate bool) error {
	t.Helper()
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{Logger: slog.New(slog.DiscardHandler), NoCreate: noCreate})
	if err == nil {
		st.Close()
		t.Fatalf("Open %s succeeded", postgres.Redact(dsn))
	}
	return StoreURL(dsn, err)
}

// Real failures of a PostgreSQL store.url are one line with their exit
// status and what to do, and never show the password.
func TestStoreURL(t *testing.T) {
	t.Parallel()
	// A port nobody listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	base, err := url.Parse(pgtest.DSN())
	if err != nil {
		t.Fatal(err)
	}
	with := func(f func(u *url.URL)) string {
		u := *base
		f(&u)
		return u.String()
	}
	schema, dsn := pgtest.NewSchema(t)
	newer := func() string {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		st.Close()
		pgtest.Exec(t, `UPDATE `+schema+`.schema_version SET version = 99`)
		return dsn
	}
	_, empty := pgtest.NewSchema(t)
	tests := []struct {
		name     string
		err      error
		code     int
		want     string
		noSecret string
	}{
		{"down", openPG(t, with(func(u *url.URL) { u.Host = closed; u.User = url.UserPassword("herald", "s3cret") }), false),
			exitcode.Unavailable, "cannot connect: connection refused (is PostgreSQL running, and are the host and port of store.url right?)", "s3cret"},
		{"no database", openPG(t, with(func(u *url.URL) { u.Path = "/herald_no_such_db" }), false),
			exitcode.Config, ": the database does not exist (create it with createdb -O USER DBNAME, or fix store.url)", ""},
		{"no such schema", openPG(t, pgtest.WithSchema(t, pgtest.DSN(), "herald_no_such_schema"), false),
			exitcode.Config, ": the schema of search_path does not exist (create it with CREATE SCHEMA, or fix search_path in store.url)", ""},
		{"no schema, reading", openPG(t, empty, true),
			exitcode.NoInput, " holds no herald store (is store.url right?", ""},
		{"newer schema", openPG(t, newer(), false),
			exitcode.Config, "schema version 99 is newer than this herald (" + strconv.Itoa(postgres.SchemaVersion()) + "); upgrade herald", ""},
	}
	for _, tt := range tests {
		if got := exitcode.Of(tt.err, -1); got != tt.code {
			t.Errorf("%s: exit status %d, want %d (%v)", tt.name, got, tt.code, tt.err)
		}
		msg := tt.err.Error()
		if !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s:\n got %q\nwant one line containing %q", tt.name, msg, tt.want)
		}
		if tt.noSecret != "" && strings.Contains(msg, tt.noSecret) {
			t.Errorf("%s: the message shows the password: %q", tt.name, msg)
		}
	}
	if msg := tests[1].err.Error(); !strings.HasPrefix(msg, "store postgres://") || !strings.Contains(msg, "/herald_no_such_db") {
		t.Errorf("no database: %q does not name the database", msg)
	}
	// Reading an empty schema created nothing in it.
	if n := pgtest.Query[int64](t, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, mustSchema(t, empty)); n != 0 {
		t.Errorf("a refused read created %d tables", n)
	}
}

// mustSchema returns the search_path of dsn.
func mustSchema(t *testing.T, dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query().Get("search_path")
}
