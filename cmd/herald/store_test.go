package main

import (
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// oneLine checks that stderr is exactly one "herald: " line holding want.
func oneLine(t *testing.T, what, stderr, want string) {
	t.Helper()
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "herald: ") || !strings.Contains(stderr, want) {
		t.Errorf("%s: stderr %q, want one line \"herald: ...%s...\"", what, stderr, want)
	}
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("%s: stderr shows a panic: %s", what, stderr)
	}
}

// Commands that read, or change what must already exist, refuse a data
// directory without a store, say so, and create nothing; commands that add
// create it and say so.
func TestReadCommandsNeedAStore(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "[dns]\nresolver = \"127.0.0.1:53\"\n")
	for _, args := range [][]string{
		{"domain", "list"}, {"user", "list"}, {"alias", "list"}, {"queue", "list"}, {"queue", "show", "X"},
		{"account", "list"}, {"apikey", "list", "default"}, {"dkim", "list"}, {"dkim", "record", "example.com", "s1"},
		{"route", "list"}, {"dns", "check", "example.com"},
		// Changing what must exist needs an existing store too.
		{"user", "passwd", "a@example.com"}, {"user", "del", "a@example.com"}, {"alias", "del", "a@example.com"},
		{"domain", "del", "example.com"}, {"domain", "policy", "example.com", "--dmarc", "monitor"},
		{"domain", "assign", "example.com", "default"}, {"account", "limits", "default", "--per-day", "5"},
		{"queue", "retry", "X"}, {"queue", "delete", "X"}, {"dkim", "activate", "example.com", "s1"},
	} {
		code, _, errs := c.run("", args...)
		if code != 66 {
			t.Errorf("herald %s: exit %d, want 66 (EX_NOINPUT)", strings.Join(args, " "), code)
		}
		oneLine(t, strings.Join(args, " "), errs, "data directory "+c.dataDir+" holds no store")
		if _, err := os.Stat(c.dataDir); !os.IsNotExist(err) {
			t.Fatalf("herald %s created the data directory (%v)", strings.Join(args, " "), err)
		}
	}
	code, out, errs := c.run("", "domain", "add", "example.com")
	if code != 0 || !strings.Contains(out, "added") || !strings.Contains(errs, "created a new store in "+c.dataDir) {
		t.Fatalf("domain add on a new data directory: %d %q %q", code, out, errs)
	}
	if _, _, errs := c.run("", "domain", "add", "example.net"); strings.Contains(errs, "created") {
		t.Errorf("second command says it created the store again: %q", errs)
	}
	if out := c.ok("", "domain", "list"); out != "example.com\nexample.net\n" {
		t.Errorf("domain list = %q", out)
	}
}

func TestStoreTroubles(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		prepare func(t *testing.T, c *cli)
		args    []string
		code    int
		want    string
	}{
		{"data dir under a regular file", func(t *testing.T, c *cli) {
			// mkdir fails with ENOTDIR, even for root.
			must(t, os.WriteFile(filepath.Dir(c.dataDir)+"/file", nil, 0o644))
			c.setDataDir(t, filepath.Dir(c.dataDir)+"/file/data")
		}, []string{"domain", "add", "example.com"}, 73, "/file: not a directory (a part of the path is a file, not a directory: fix server.data_dir)"},
		{"read under a regular file", func(t *testing.T, c *cli) {
			must(t, os.WriteFile(filepath.Dir(c.dataDir)+"/file", nil, 0o644))
			c.setDataDir(t, filepath.Dir(c.dataDir)+"/file/data")
		}, []string{"queue", "list"}, 73, "not a directory"},
		{"newer schema, reading", func(t *testing.T, c *cli) {
			c.ok("", "domain", "add", "example.com")
			setSchemaVersion(t, c.dataDir, 99)
		}, []string{"domain", "list"}, 78, "schema version 99 is newer than this herald (" + strconv.Itoa(sqlite.SchemaVersion()) + "); upgrade herald"},
		{"newer schema, writing", func(t *testing.T, c *cli) {
			c.ok("", "domain", "add", "example.com")
			setSchemaVersion(t, c.dataDir, 99)
		}, []string{"user", "add", "a@example.com"}, 78, "schema version 99 is newer than this herald (" + strconv.Itoa(sqlite.SchemaVersion()) + "); upgrade herald"},
		{"newer schema, sendmail", func(t *testing.T, c *cli) {
			c.ok("", "domain", "add", "example.com")
			setSchemaVersion(t, c.dataDir, 99)
		}, []string{"sendmail", "x@example.com"}, 78, "upgrade herald"},
		{"not a database", func(t *testing.T, c *cli) {
			must(t, os.MkdirAll(c.dataDir, 0o750))
			must(t, os.WriteFile(filepath.Join(c.dataDir, "herald.db"), []byte(strings.Repeat("not sqlite ", 1000)), 0o600))
		}, []string{"user", "list"}, 65, "herald.db: not a herald database, or damaged (restore it from a backup"},
		{"config file missing", func(t *testing.T, c *cli) {
			c.cfgPath = filepath.Join(t.TempDir(), "nope.toml")
		}, []string{"user", "list"}, 78, "nope.toml: no such file or directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCLI(t, "")
			tt.prepare(t, c)
			code, _, errs := c.run("a-long-enough-password\n", tt.args...)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tt.code, errs)
			}
			oneLine(t, tt.name, errs, tt.want)
		})
	}
}

// The server's lock on the data directory refuses a second server only:
// the commands keep working while herald serve runs.
func TestCommandsWorkWhileServerHoldsTheDataDirectory(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	// What a running herald serve holds: the pid lock and an open store.
	lock, err := pidlock.Acquire(filepath.Join(c.dataDir, "herald.pid"))
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Release()
	st, err := sqlite.Open(c.dataDir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c.ok("a-long-enough-password\n", "user", "add", "alice@example.com")
	if out := c.ok("", "user", "list"); !strings.Contains(out, "alice@example.com") {
		t.Errorf("user list = %q", out)
	}
	c.ok("", "queue", "list")
}

func TestPasswordPolicy(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	refused := func(pw string, want string, args ...string) {
		t.Helper()
		code, _, errs := c.run(pw+"\n", args...)
		if code != 65 {
			t.Errorf("herald %s with %q: exit %d, want 65 (EX_DATAERR); %s", strings.Join(args, " "), pw, code, errs)
		}
		oneLine(t, strings.Join(args, " "), errs, want)
	}
	refused("short", "password too short: 5 characters, at least 12 required (auth.min_password_length", "user", "add", "alice@example.com")
	// Eleven characters, 22 bytes: characters count, not bytes.
	refused(strings.Repeat("é", 11), "11 characters, at least 12", "user", "add", "alice@example.com")
	if out := c.ok("", "user", "list"); out != "" {
		t.Fatalf("a refused password still created the user: %q", out)
	}
	c.ok(strings.Repeat("é", 12)+"\n", "user", "add", "alice@example.com")
	refused("0123456789a", "11 characters", "user", "passwd", "alice@example.com")
	c.ok("0123456789ab\n", "user", "passwd", "alice@example.com")

	strict := newCLI(t, "[auth]\nmin_password_length = 16\n")
	strict.ok("", "domain", "add", "example.com")
	code, _, errs := strict.run("fifteen-chars-x\n", "user", "add", "bob@example.com")
	if code != 65 || !strings.Contains(errs, "15 characters, at least 16 required") {
		t.Errorf("configured minimum 16: exit %d %q", code, errs)
	}
}

// setDataDir rewrites the CLI's configuration with another data directory.
func (c *cli) setDataDir(t *testing.T, dir string) {
	t.Helper()
	c.dataDir = dir
	must(t, os.WriteFile(c.cfgPath, []byte("[server]\nhostname = \"host.example\"\ndata_dir = \""+dir+"\"\n"), 0o644))
}

// setSchemaVersion marks the store as written by another version.
func setSchemaVersion(t *testing.T, dir string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_version SET version = ?`, v); err != nil {
		t.Fatal(err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
