package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/pidlock"
)

// herald backup and herald restore through the command line: a queued
// message with a blob body and the directory come back in another data
// directory; the refusals have their exit statuses.
func TestBackupRestoreCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	c.ok("a-long-enough-password\n", "user", "add", "alice@example.com")
	msg := "To: bob@remote.test\nSubject: queued\n\n" + strings.Repeat("a line of the body\n", 20000)
	if code, _, errs := c.run(msg, "sendmail", "-t", "-f", "cron@example.com"); code != 0 {
		t.Fatalf("sendmail: %d %q", code, errs)
	}
	id := c.onlyQueued()
	st := c.store()
	wantBody := readAll(t, st, id)
	st.Close()

	dest := filepath.Join(t.TempDir(), "backup")
	c.fails(2, "herald backup DEST", "backup")
	out := c.ok("", "backup", dest)
	if !strings.Contains(out, "1 queued messages (1 recipients pending, 1 body files)") {
		t.Errorf("backup said %q", out)
	}
	c.fails(73, "not empty", "backup", dest)

	r := newCLI(t, "")
	out = r.ok("", "restore", dest)
	if !strings.Contains(out, "1 queued messages") {
		t.Errorf("restore said %q", out)
	}
	if got := r.onlyQueued(); got != id {
		t.Errorf("restored queue holds %s, want %s", got, id)
	}
	rst := r.store()
	if got := readAll(t, rst, id); !bytes.Equal(got, wantBody) {
		t.Errorf("restored body: %d bytes, want %d", len(got), len(wantBody))
	}
	rst.Close()
	if out := r.ok("", "user", "list"); !strings.Contains(out, "alice@example.com") {
		t.Errorf("restored users: %q", out)
	}
	r.fails(73, "--force", "restore", dest)
	r.ok("", "restore", dest, "--force")

	lock, err := pidlock.Acquire(filepath.Join(r.dataDir, "herald.pid"))
	if err != nil {
		t.Fatal(err)
	}
	r.fails(69, "stop it first", "restore", dest, "--force")
	lock.Release()

	// A changed byte in the database copy: refused before anything is written.
	bad := filepath.Join(t.TempDir(), "bad")
	if err := os.CopyFS(bad, os.DirFS(dest)); err != nil {
		t.Fatal(err)
	}
	db, err := os.ReadFile(filepath.Join(bad, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	db[len(db)/2] ^= 1
	if err := os.WriteFile(filepath.Join(bad, "herald.db"), db, 0o600); err != nil {
		t.Fatal(err)
	}
	fresh := newCLI(t, "")
	fresh.fails(65, "does not match the manifest", "restore", bad)
	if _, err := os.Stat(fresh.dataDir); !os.IsNotExist(err) {
		t.Errorf("a refused restore created the data directory (%v)", err)
	}
	fresh.fails(2, "herald restore SRC", "restore")
}

// With the store in PostgreSQL, backup and restore say how to use
// pg_dump and pg_restore instead, without showing the password.
func TestBackupPostgresPointsToPgDump(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "[store]\nurl = \"postgres://herald:pw-s3cret@127.0.0.1:5432/herald\"\n")
	dest := filepath.Join(t.TempDir(), "bk")
	code, _, errs := c.run("", "backup", dest)
	if code != 69 || !strings.Contains(errs, "pg_dump --format=custom --file="+filepath.Join(dest, "herald.dump")+" 'postgres://herald:") ||
		strings.Contains(errs, "pw-s3cret") || strings.Count(errs, "\n") != 1 {
		t.Errorf("backup with store.url: exit %d %q, want 69, one line with the pg_dump command and no password", code, errs)
	}
	code, _, errs = c.run("", "restore", dest)
	if code != 69 || !strings.Contains(errs, "pg_restore --clean --if-exists --dbname=") || strings.Contains(errs, "pw-s3cret") {
		t.Errorf("restore with store.url: exit %d %q, want 69 and the pg_restore command", code, errs)
	}
	if _, err := os.Stat(dest); !os.IsNotExist(err) {
		t.Errorf("backup with store.url created %s (%v)", dest, err)
	}
}
