package app

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// goodConfig starts: every listener on a fresh loopback port, the data
// directory dir. The resolver is never asked during New.
func goodConfig(dir string) *config.Config {
	cfg := config.Default()
	cfg.Server.DataDir = dir
	cfg.Server.ShutdownTimeout = 2 * time.Second
	for _, l := range []*config.ListenConfig{&cfg.SMTP, &cfg.Submission, &cfg.Submissions, &cfg.HTTP.ListenConfig} {
		l.Listen = []string{"127.0.0.1:0"}
	}
	cfg.DNS.Resolver = "127.0.0.1:53"
	cfg.Limits.QueueMinFree = 0
	return cfg
}

func quiet() Options { return Options{Logger: slog.New(slog.DiscardHandler)} }

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// takenAddr returns a loopback address a listener of the test holds.
func takenAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// stop runs a built node with a cancelled context: it serves nothing and
// closes everything, as at the end of a normal run.
func stop(t *testing.T, a *App) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := a.Run(ctx); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// waitGoroutines waits (bounded) until no more goroutines run than
// baseline, and fails listing them otherwise.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines still run after the failed New, %d before:\n%s", runtime.NumGoroutine(), baseline, buf[:n])
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// rawStore prepares a store in dir and returns its database for changes a
// real store would not make.
func rawStore(t *testing.T, dir string) *sql.DB {
	t.Helper()
	st, err := sqlite.Open(dir, sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func exec(t *testing.T, db *sql.DB, q string) {
	t.Helper()
	if _, err := db.Exec(q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

// Every error return of New: the error is one line with the right exit
// status, and what New opened before failing is closed again: the
// listeners it bound can be bound again, the data directory lock is free
// (a second New on the same directory succeeds), and no goroutine is left
// (the store writer, database/sql openers...). Not parallel: it counts
// goroutines.
func TestNewFailsCleanly(t *testing.T) {
	type env struct {
		cfg  *config.Config
		opts Options
		dir  string // data directory
		file string // a regular file, for paths that root cannot create either
	}
	tests := []struct {
		name    string
		setup   func(t *testing.T, e *env)
		code    int
		want    string // in the message
		dirOK   bool   // the data directory is usable: a second New with a good config must succeed
		rebinds func(e *env) []string
	}{
		{name: "log file under a regular file", code: exitcode.CantCreat, dirOK: true,
			setup: func(t *testing.T, e *env) {
				e.opts.Logger = nil
				e.cfg.Log.File = filepath.Join(e.file, "herald.log")
			}, want: "log file {file}/herald.log: not a directory"},
		{name: "data dir under a regular file", code: exitcode.CantCreat,
			setup: func(t *testing.T, e *env) { e.cfg.Server.DataDir = filepath.Join(e.file, "data") },
			want:  "data directory {file}/data: {file}: not a directory (a part of the path is a file"},
		{name: "store schema newer", code: exitcode.Config,
			setup: func(t *testing.T, e *env) {
				exec(t, rawStore(t, e.dir), `UPDATE schema_version SET version = 99`)
			}, want: "store {dir}/herald.db: schema version 99 is newer than this herald"},
		{name: "store not a database", code: exitcode.DataErr,
			setup: func(t *testing.T, e *env) {
				must(t, os.MkdirAll(e.dir, 0o700))
				must(t, os.WriteFile(filepath.Join(e.dir, "herald.db"), []byte(strings.Repeat("junk", 2048)), 0o600))
			}, want: "store {dir}/herald.db: not a herald database, or damaged"},
		{name: "releasing leases fails", code: exitcode.Software,
			setup: func(t *testing.T, e *env) {
				db := rawStore(t, e.dir)
				exec(t, db, `INSERT INTO recipients (message_id, address, notify, orcpt, status, attempts, next_attempt,
					lease_until, last_reply, remote_mta, delay_warned, updated_at) VALUES ('m', 'a@b.test', '', '', 'queued', 0, 0, 1, '', '', 0, 0)`)
				exec(t, db, `CREATE TRIGGER frozen BEFORE UPDATE OF lease_until ON recipients BEGIN SELECT RAISE(ABORT, 'leases are frozen'); END`)
			}, want: "store {dir}/herald.db: constraint failed: leases are frozen"},
		{name: "tls cert missing", code: exitcode.NoInput, dirOK: true,
			setup: func(t *testing.T, e *env) {
				e.cfg.TLS.CertFile = e.file + ".missing"
				e.cfg.TLS.KeyFile = e.file
			}, want: "tls.cert_file {file}.missing: no such file or directory (fix tls.cert_file"},
		{name: "tls key is a directory", code: exitcode.NoInput, dirOK: true,
			setup: func(t *testing.T, e *env) {
				e.cfg.TLS.CertFile = e.file // read first: content does not matter
				e.cfg.TLS.KeyFile = t.TempDir()
			}, want: ": is a directory (tls.key_file must name the PEM private key file, not a directory)"},
		{name: "tls files not PEM", code: exitcode.Config, dirOK: true,
			setup: func(t *testing.T, e *env) {
				must(t, os.WriteFile(e.file, []byte("not a certificate"), 0o600))
				e.cfg.TLS.CertFile, e.cfg.TLS.KeyFile = e.file, e.file
			}, want: "failed to find any PEM data in certificate input (they must be a PEM certificate chain and its private key)"},
		{name: "dns resolver", code: exitcode.Config, dirOK: true,
			setup: func(t *testing.T, e *env) { e.cfg.DNS.Resolver = "no-port" },
			want:  "dns.resolver no-port: address no-port: missing port in address (give \"ip:port\""},
		{name: "VERP key is a directory", code: exitcode.CantCreat,
			setup: func(t *testing.T, e *env) { must(t, os.MkdirAll(filepath.Join(e.dir, "verp.key"), 0o700)) },
			want:  "VERP key {dir}/verp.key: is a directory"},
		{name: "smtp port taken", code: exitcode.Unavailable, dirOK: true,
			setup: func(t *testing.T, e *env) { e.cfg.SMTP.Listen = []string{takenAddr(t)} },
			want:  "smtp listener {smtp}: address already in use (is another MTA running? stop it, or change smtp.listen)"},
		{name: "second smtp address taken", code: exitcode.Unavailable, dirOK: true,
			setup:   func(t *testing.T, e *env) { e.cfg.SMTP.Listen = []string{freeAddr(t), takenAddr(t)} },
			want:    "smtp listener {smtp1}: address already in use",
			rebinds: func(e *env) []string { return e.cfg.SMTP.Listen[:1] }},
		{name: "submission port taken after smtp bound", code: exitcode.Unavailable, dirOK: true,
			setup: func(t *testing.T, e *env) {
				e.cfg.SMTP.Listen = []string{freeAddr(t)}
				e.cfg.Submission.Listen = []string{takenAddr(t)}
			}, want: "submission listener {submission}: address already in use",
			rebinds: func(e *env) []string { return e.cfg.SMTP.Listen }},
		{name: "submissions port taken", code: exitcode.Unavailable, dirOK: true,
			setup: func(t *testing.T, e *env) {
				e.cfg.SMTP.Listen = []string{freeAddr(t)}
				e.cfg.Submission.Listen = []string{freeAddr(t)}
				e.cfg.Submissions.Listen = []string{takenAddr(t)}
			}, want: "submissions listener {submissions}: address already in use",
			rebinds: func(e *env) []string { return append(e.cfg.SMTP.Listen, e.cfg.Submission.Listen...) }},
		{name: "http port taken after every SMTP listener", code: exitcode.Unavailable, dirOK: true,
			setup: func(t *testing.T, e *env) {
				e.cfg.SMTP.Listen = []string{freeAddr(t)}
				e.cfg.Submission.Listen = []string{freeAddr(t)}
				e.cfg.Submissions.Listen = []string{freeAddr(t)}
				e.cfg.HTTP.Listen = []string{takenAddr(t)}
			}, want: "http listener {http}: address already in use (is another program using it? stop it, or change http.listen)",
			rebinds: func(e *env) []string {
				return append(append(append([]string{}, e.cfg.SMTP.Listen...), e.cfg.Submission.Listen...), e.cfg.Submissions.Listen...)
			}},
		{name: "pre-bound listeners are closed too", code: exitcode.Unavailable, dirOK: true,
			setup: func(t *testing.T, e *env) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				e.opts.Listeners = map[string][]net.Listener{"http": {ln}}
				e.cfg.HTTP.Listen = []string{ln.Addr().String()} // for rebinds
				e.cfg.SMTP.Listen = []string{takenAddr(t)}
			}, want: "smtp listener {smtp}: address already in use",
			rebinds: func(e *env) []string { return e.cfg.HTTP.Listen }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			e := &env{dir: filepath.Join(base, "data"), file: filepath.Join(base, "file"), opts: quiet()}
			must(t, os.WriteFile(e.file, nil, 0o600))
			e.cfg = goodConfig(e.dir)
			tt.setup(t, e)
			want := strings.NewReplacer("{dir}", e.dir, "{file}", e.file, "{smtp}", first(e.cfg.SMTP.Listen), "{smtp1}", last(e.cfg.SMTP.Listen),
				"{submission}", first(e.cfg.Submission.Listen), "{submissions}", first(e.cfg.Submissions.Listen), "{http}", first(e.cfg.HTTP.Listen)).Replace(tt.want)

			baseline := runtime.NumGoroutine()
			a, err := New(e.cfg, e.opts)
			if err == nil {
				stop(t, a)
				t.Fatal("New succeeded")
			}
			if a != nil {
				t.Errorf("New returned an App with its error")
			}
			if got := exitcode.Of(err, -1); got != tt.code || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "\n") {
				t.Errorf("New: exit status %d, %q\nwant status %d and one line containing %q", got, err, tt.code, want)
			}
			waitGoroutines(t, baseline)
			if tt.rebinds != nil {
				for _, addr := range tt.rebinds(e) {
					ln, err := net.Listen("tcp", addr)
					if err != nil {
						t.Errorf("%s is still bound after the failed New: %v", addr, err)
						continue
					}
					ln.Close()
				}
			}
			if _, err := os.Stat(e.dir); err == nil {
				lock, err := pidlock.Acquire(filepath.Join(e.dir, "herald.pid"))
				if err != nil {
					t.Fatalf("data directory lock still held after the failed New: %v", err)
				}
				lock.Release()
			}
			if tt.dirOK {
				a, err := New(goodConfig(e.dir), quiet())
				if err != nil {
					t.Fatalf("a second New on the same data directory: %v", err)
				}
				stop(t, a)
			}
		})
	}
}

// A second node on a data directory in use is refused with the first one's
// pid, without touching its store; once the first stops, a node starts.
func TestNewRefusesSecondNode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	a, err := New(goodConfig(dir), quiet())
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	_, err = New(goodConfig(dir), quiet())
	want := fmt.Sprintf("data directory %s is in use by another herald serve, pid %d (stop it first", dir, os.Getpid())
	var held *pidlock.HeldError
	if exitcode.Of(err, -1) != exitcode.Unavailable || !strings.Contains(fmt.Sprint(err), want) || !errors.As(err, &held) {
		t.Errorf("second New: status %d, %v\nwant %d and %q", exitcode.Of(err, -1), err, exitcode.Unavailable, want)
	}
	waitGoroutines(t, baseline)
	// The first node still works: its store answers.
	if _, err := a.Store().ListDomains(context.Background()); err != nil {
		t.Errorf("first node's store after the refused second: %v", err)
	}
	stop(t, a)
	b, err := New(goodConfig(dir), quiet())
	if err != nil {
		t.Fatalf("New after the first node stopped: %v", err)
	}
	if pid, _ := os.ReadFile(filepath.Join(dir, "herald.pid")); strings.TrimSpace(string(pid)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("herald.pid holds %q, want %d", pid, os.Getpid())
	}
	stop(t, b)
	if pid, _ := os.ReadFile(filepath.Join(dir, "herald.pid")); len(pid) != 0 {
		t.Errorf("herald.pid holds %q after a clean stop, want it empty", pid)
	}
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func last(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// On a shared PostgreSQL store a second node under the name of a running
// one is refused (exit 69, the holder named), with everything it opened
// closed again; the first node keeps working, and once it stops the name
// is free. Not parallel: it counts goroutines.
func TestNewRefusesSameNodeID(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	node := func() *config.Config {
		cfg := goodConfig(filepath.Join(t.TempDir(), "data"))
		cfg.Store.URL, cfg.Server.NodeID = dsn, "mx1"
		return cfg
	}
	a, err := New(node(), quiet())
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	_, err = New(node(), quiet())
	want := `server.node_id "mx1" is in use by another running herald (client 127.0.0.1, herald mx1 lock, since `
	if exitcode.Of(err, -1) != exitcode.Unavailable || !strings.Contains(fmt.Sprint(err), want) || !errors.Is(err, postgres.ErrNodeInUse) {
		t.Errorf("second node mx1: status %d, %v\nwant %d and %q", exitcode.Of(err, -1), err, exitcode.Unavailable, want)
	}
	waitGoroutines(t, baseline)
	if _, err := a.Store().ListDomains(context.Background()); err != nil {
		t.Errorf("first node's store after the refused second: %v", err)
	}
	stop(t, a)
	b, err := New(node(), quiet())
	if err != nil {
		t.Fatalf("New after the first node stopped: %v", err)
	}
	stop(t, b)
}
