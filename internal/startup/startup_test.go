package startup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

func listenErr(en syscall.Errno) error {
	return &net.OpError{Op: "listen", Net: "tcp", Err: os.NewSyscallError("bind", en)}
}

func pathErr(op, path string, en syscall.Errno) error {
	return &fs.PathError{Op: op, Path: path, Err: en}
}

// The exit status and the advice for each kind of failure, including those
// a test running as root cannot provoke for real (EACCES, EROFS, ENOSPC,
// EIO): errors as the kernel reports them, wrapped as the standard library
// wraps them.
func TestDescriptions(t *testing.T) {
	t.Parallel()
	me, _ := whoami()
	tests := []struct {
		name string
		err  error
		code int
		want string
	}{
		{"port in use", Listener("smtp", "127.0.0.1:2525", listenErr(syscall.EADDRINUSE)), exitcode.Unavailable,
			"smtp listener 127.0.0.1:2525: address already in use (is another MTA running? stop it, or change smtp.listen)"},
		{"http port in use", Listener("http", "127.0.0.1:8025", listenErr(syscall.EADDRINUSE)), exitcode.Unavailable,
			"http listener 127.0.0.1:8025: address already in use (is another program using it? stop it, or change http.listen)"},
		{"ACME https port in use", Listener("acme_https", ":443", listenErr(syscall.EADDRINUSE)), exitcode.Unavailable,
			"acme_https listener :443: address already in use (is another program using it? stop it, or change acme.https_address)"},
		{"ACME http port not allowed", Listener("acme_http", ":80", listenErr(syscall.EACCES)), exitcode.NoPerm,
			"acme_http listener :80: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE"},
		{"privileged port", Listener("smtp", "0.0.0.0:25", listenErr(syscall.EACCES)), exitcode.NoPerm,
			"smtp listener 0.0.0.0:25: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE"},
		{"address not here", Listener("submission", "192.0.2.1:587", listenErr(syscall.EADDRNOTAVAIL)), exitcode.Unavailable,
			"submission listener 192.0.2.1:587: cannot assign requested address (no interface has this address: fix submission.listen"},
		{"listen host unknown", Listener("smtp", "mx.invalid:25", &net.OpError{Op: "listen", Net: "tcp", Err: &net.DNSError{Err: "no such host", Name: "mx.invalid"}}),
			exitcode.Config, "(use an IP address in smtp.listen)"},
		{"data dir permission", DataDir("/var/lib/herald", pathErr("mkdir", "/var/lib/herald", syscall.EACCES)), exitcode.NoPerm,
			"data directory /var/lib/herald: permission denied (herald runs as " + me + ", which may not write there"},
		{"data dir read-only", DataDir("/var/lib/herald", pathErr("open", "/var/lib/herald/herald.pid", syscall.EROFS)), exitcode.CantCreat,
			"data directory /var/lib/herald: /var/lib/herald/herald.pid: read-only file system (the file system is read-only: put server.data_dir on a writable one (systemd: ReadWritePaths=/var/lib/herald)"},
		{"data dir full", DataDir("/d", pathErr("write", "/d/herald.pid", syscall.ENOSPC)), exitcode.CantCreat, "no space left on device (the disk or quota is full"},
		{"data dir io error", DataDir("/d", pathErr("write", "/d/x", syscall.EIO)), exitcode.IOErr, "input/output error (the disk reported an I/O error"},
		{"second server", Lock("/d", &pidlock.HeldError{Path: "/d/herald.pid", PID: 4242}), exitcode.Unavailable,
			"data directory /d is in use by another herald serve, pid 4242 (stop it first, or give this one its own server.data_dir)"},
		{"second server, pid not yet written", Lock("/d", &pidlock.HeldError{Path: "/d/herald.pid"}), exitcode.Unavailable,
			"data directory /d is in use by another herald serve (stop it first"},
		{"store full", Store("/d", fmt.Errorf("%w: sqlite store: create: disk full", store.ErrStorageFull)), exitcode.CantCreat, "the disk or quota is full"},
		{"store newer", Store("/d", &sqlite.SchemaTooNewError{Path: "/d/herald.db", Version: 9, Supported: 7}), exitcode.Config,
			"store /d/herald.db: schema version 9 is newer than this herald (7); upgrade herald"},
		{"no store", NoStore("/d"), exitcode.NoInput, "data directory /d holds no store"},
		{"cert unreadable", TLS("/etc/c.pem", "/etc/k.pem", "/d", pathErr("open", "/etc/k.pem", syscall.EACCES)), exitcode.NoPerm,
			"tls.key_file /etc/k.pem: permission denied (herald runs as " + me + ": make the file readable by it"},
		{"cert missing", TLS("/etc/c.pem", "/etc/k.pem", "/d", pathErr("open", "/etc/c.pem", syscall.ENOENT)), exitcode.NoInput,
			"tls.cert_file /etc/c.pem: no such file or directory (fix tls.cert_file, or leave tls.cert_file and tls.key_file empty for a self-signed certificate)"},
		{"self-signed dir read-only", TLS("", "", "/d", pathErr("mkdir", "/d/tls", syscall.EROFS)), exitcode.CantCreat, "data directory /d: /d/tls: read-only file system"},
		{"resolv.conf missing", Resolver("", pathErr("open", "/etc/resolv.conf", syscall.ENOENT)), exitcode.OSFile,
			"dns resolver /etc/resolv.conf: no such file or directory (set dns.resolver"},
		{"log file permission", LogFile("/var/log/herald.log", pathErr("open", "/var/log/herald.log", syscall.EACCES)), exitcode.NoPerm,
			"log file /var/log/herald.log: permission denied (herald runs as " + me},
		{"log dir missing", LogFile("/nope/herald.log", pathErr("open", "/nope/herald.log", syscall.ENOENT)), exitcode.CantCreat,
			"log file /nope/herald.log: no such file or directory (log.file must be a file herald can create"},
		{"VERP key content", KeyFile("VERP key", "/d/verp.key", "/d", errors.New("verp: key /d/verp.key has 3 bytes, want 32")), exitcode.DataErr,
			"VERP key /d/verp.key: verp: key /d/verp.key has 3 bytes, want 32 (move it away to generate a new one)"},
	}
	for _, tt := range tests {
		if got := exitcode.Of(tt.err, -1); got != tt.code {
			t.Errorf("%s: exit status %d, want %d (%v)", tt.name, got, tt.code, tt.err)
		}
		if msg := tt.err.Error(); !strings.Contains(msg, tt.want) || strings.Contains(msg, "\n") {
			t.Errorf("%s:\n got %q\nwant one line containing %q", tt.name, msg, tt.want)
		}
	}
	// The original error stays reachable.
	if err := Listener("smtp", "x", listenErr(syscall.EADDRINUSE)); !errors.Is(err, syscall.EADDRINUSE) {
		t.Error("Listener hides the errno")
	}
}

// A store locked by another process past the busy timeout: a real
// SQLITE_BUSY, described as "try again" (EX_TEMPFAIL).
func TestStoreBusy(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := sqlite.Open(dir, sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	_, err = sqlite.Open(dir, sqlite.Options{BusyTimeout: 20 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	got := Store(dir, err)
	want := "store " + filepath.Join(dir, "herald.db") + ": locked by another process (try again; if it persists, see which process holds it: fuser "
	if exitcode.Of(got, -1) != exitcode.TempFail || !strings.HasPrefix(got.Error(), want) {
		t.Errorf("busy store: %d %q, want %d %q", exitcode.Of(got, -1), got, exitcode.TempFail, want)
	}
	conn.ExecContext(ctx, "ROLLBACK")
}

// SQLite refusing to write: the probe finds the cause (here a herald.db
// that is a directory, which fails for root too).
func TestStoreCannotWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "herald.db"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := sqlite.Open(dir, sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, sqlite.ErrReadOnly) {
		t.Fatalf("Open with herald.db a directory: %v, want ErrReadOnly", err)
	}
	got := Store(dir, err)
	if exitcode.Of(got, -1) != exitcode.CantCreat || !strings.Contains(got.Error(), filepath.Join(dir, "herald.db")+": is a directory") {
		t.Errorf("herald.db a directory: %d %q", exitcode.Of(got, -1), got)
	}
}
