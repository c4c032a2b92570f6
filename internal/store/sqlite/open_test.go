package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// rawDB opens herald.db of dir without the store, as another process would.
func rawDB(t *testing.T, dir string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	t.Cleanup(func() { db.Close() })
	return db
}

// A database written by a newer Herald is refused with a typed error that
// names both versions, and is left exactly as it was.
func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	db := rawDB(t, dir)
	if _, err := db.Exec(`UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	var tooNew *SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Version != 99 || tooNew.Supported != len(schema) {
		t.Fatalf("Open: %v, want SchemaTooNewError 99 > %d", err, len(schema))
	}
	want := "store " + filepath.Join(dir, "herald.db") + ": schema version 99 is newer than this herald (7); upgrade herald"
	if len(schema) == 7 && err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != 99 {
		t.Errorf("schema version after the refused Open: %d %v, want 99 untouched", v, err)
	}
}

// Another process holding the write lock beyond the busy timeout makes Open
// fail with ErrBusy, not hang or fail with an opaque code.
func TestOpenBusy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	openTest(t, dir, Options{}).Close()
	db := rawDB(t, dir)
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "ROLLBACK")
	_, err = Open(dir, Options{BusyTimeout: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrBusy) {
		t.Fatalf("Open while another connection holds the write lock: %v, want ErrBusy", err)
	}
}

func TestOpenNotADatabase(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	junk := make([]byte, 8192)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	if err := os.WriteFile(filepath.Join(dir, "herald.db"), junk, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(dir, Options{Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrNotDatabase) {
		t.Fatalf("Open of a junk herald.db: %v, want ErrNotDatabase", err)
	}
}

// A data directory that cannot be created reports the errno in a PathError
// (root cannot create a directory under a regular file either).
func TestOpenDirUnderFile(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(filepath.Join(file, "data"), Options{Logger: slog.New(slog.DiscardHandler)})
	var pe *fs.PathError
	if !errors.As(err, &pe) || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Open under a file: %v, want a PathError with ENOTDIR", err)
	}
}
