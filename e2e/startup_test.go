package e2e

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store/sqlite"
	_ "modernc.org/sqlite" // the test edits the store's database directly
)

// nobody is the unprivileged user some cases run the binary as: the tests
// run as root, and root ignores file modes and may bind any port.
const nobody = 65534

// startupBase is a directory tree the unprivileged user can traverse:
// t.TempDir's directories are mode 0700.
func startupBase(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "herald-startup-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	must(t, os.Chmod(dir, 0o755))
	return dir
}

var chmodBinOnce sync.Once

// startupBinary is the herald binary, runnable by the unprivileged user.
func startupBinary(t *testing.T) string {
	t.Helper()
	bin := heraldBinary(t)
	chmodBinOnce.Do(func() { os.Chmod(filepath.Dir(bin), 0o755) })
	return bin
}

// startupConfig writes a configuration with one SMTP listener, no other
// listener and the data directory data; extra is appended.
func startupConfig(t *testing.T, base, data, smtp, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`[server]
hostname = "startup.herald.test"
data_dir = %q
shutdown_timeout = "2s"
[smtp]
listen = [%q]
[submission]
listen = []
[submissions]
listen = []
[http]
listen = []
[dns]
resolver = "127.0.0.1:53"
%s`, data, smtp, extra)
	path := filepath.Join(base, "herald.toml")
	must(t, os.WriteFile(path, []byte(cfg), 0o644))
	return path
}

// runBinary runs herald with args (as uid when not 0) and returns its exit
// status and output. It must end by itself: a herald that starts when it
// should not is killed and fails the test.
func runBinary(t *testing.T, uid int, stdin string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, startupBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = []string{"PATH=/usr/bin:/bin"}
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("herald %s did not exit: %s", strings.Join(args, " "), errb.String())
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("herald %s: %v", strings.Join(args, " "), err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errb.String()
}

// checkFailure asserts the exit status and that stderr ends in exactly one
// "herald: " line, equal to want (or starting with it when prefix), with
// nothing else but log records and no panic.
func checkFailure(t *testing.T, code int, stderr string, wantCode int, want string, prefix bool) {
	t.Helper()
	if code != wantCode {
		t.Errorf("exit status %d, want %d", code, wantCode)
	}
	if strings.Contains(stderr, "panic:") || strings.Contains(stderr, "goroutine ") {
		t.Fatalf("stderr shows a panic:\n%s", stderr)
	}
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	last := lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "time=") { // log records only before the message
			t.Errorf("stderr has more than the one message line: %q", l)
		}
	}
	if (prefix && !strings.HasPrefix(last, want)) || (!prefix && last != want) {
		t.Errorf("stderr message\n got %q\nwant %q", last, want)
	}
}

// takePort holds a loopback port for the test.
func takePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

func setStoreVersion(t *testing.T, data string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(data, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`UPDATE schema_version SET version = ?`, v); err != nil {
		t.Fatal(err)
	}
}

// Every ordinary reason a start fails ends in one line on stderr and a
// sysexits status, never a panic: the real binary, as a new user meets it.
func TestStartupFailures(t *testing.T) {
	t.Parallel()
	root := os.Getuid() == 0
	tests := []struct {
		name string
		uid  int // run as this user (needs root)
		// prepare returns the config path and the expected message;
		// args default to "serve --config CFG".
		prepare func(t *testing.T, base string) (cfg, want string)
		args    []string
		stdin   string
		code    int
		prefix  bool // want is a prefix of the message (the rest names this machine's user)
	}{
		{name: "port taken", code: 69, prepare: func(t *testing.T, base string) (string, string) {
			addr := takePort(t)
			return startupConfig(t, base, filepath.Join(base, "data"), addr, ""),
				"herald: smtp listener " + addr + ": address already in use (is another MTA running? stop it, or change smtp.listen)"
		}},
		{name: "cert missing", code: 66, prepare: func(t *testing.T, base string) (string, string) {
			key := filepath.Join(base, "key.pem")
			must(t, os.WriteFile(key, []byte("x"), 0o600))
			cert := filepath.Join(base, "nope", "cert.pem")
			return startupConfig(t, base, filepath.Join(base, "data"), "127.0.0.1:0", fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", cert, key)),
				"herald: tls.cert_file " + cert + ": no such file or directory (fix tls.cert_file, or leave tls.cert_file and tls.key_file empty for a self-signed certificate)"
		}},
		// Root reads any file: a key_file that is a directory is
		// unreadable for everyone.
		{name: "key is a directory", code: 66, prepare: func(t *testing.T, base string) (string, string) {
			cert := filepath.Join(base, "cert.pem")
			must(t, os.WriteFile(cert, []byte("x"), 0o644))
			key := filepath.Join(base, "keydir")
			must(t, os.Mkdir(key, 0o755))
			return startupConfig(t, base, filepath.Join(base, "data"), "127.0.0.1:0", fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", cert, key)),
				"herald: tls.key_file " + key + ": is a directory (tls.key_file must name the PEM private key file, not a directory)"
		}},
		{name: "key not readable by the herald user", uid: nobody, code: 77, prefix: true, prepare: func(t *testing.T, base string) (string, string) {
			data := filepath.Join(base, "data")
			must(t, os.Mkdir(data, 0o700))
			must(t, os.Chown(data, nobody, nobody))
			cert := filepath.Join(base, "cert.pem")
			must(t, os.WriteFile(cert, []byte("x"), 0o644))
			key := filepath.Join(base, "key.pem")
			must(t, os.WriteFile(key, []byte("x"), 0o600)) // root's
			return startupConfig(t, base, data, "127.0.0.1:0", fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", cert, key)),
				"herald: tls.key_file " + key + ": permission denied (herald runs as uid 65534 (nobody): make the file readable by it"
		}},
		// mkdir under a regular file fails with ENOTDIR, for root too.
		{name: "data dir cannot be created", code: 73, prepare: func(t *testing.T, base string) (string, string) {
			file := filepath.Join(base, "file")
			must(t, os.WriteFile(file, nil, 0o644))
			data := filepath.Join(file, "data")
			return startupConfig(t, base, data, "127.0.0.1:0", ""),
				"herald: data directory " + data + ": " + file + ": not a directory (a part of the path is a file, not a directory: fix server.data_dir)"
		}},
		{name: "data dir not writable by the herald user", uid: nobody, code: 77, prepare: func(t *testing.T, base string) (string, string) {
			data := filepath.Join(base, "data")
			must(t, os.Mkdir(data, 0o755)) // root's
			return startupConfig(t, base, data, "127.0.0.1:0", ""),
				"herald: data directory " + data + ": " + filepath.Join(data, "herald.pid") + ": permission denied (herald runs as uid 65534 (nobody), which may not write there: run it as the directory's owner, or chown -R nobody " + data + ")"
		}},
		{name: "privileged port as the herald user", uid: nobody, code: 77, prepare: func(t *testing.T, base string) (string, string) {
			data := filepath.Join(base, "data")
			must(t, os.Mkdir(data, 0o700))
			must(t, os.Chown(data, nobody, nobody))
			return startupConfig(t, base, data, "127.0.0.1:1", ""),
				"herald: smtp listener 127.0.0.1:1: permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE; with systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE)"
		}},
		{name: "store from a newer herald", code: 78, prepare: func(t *testing.T, base string) (string, string) {
			data := filepath.Join(base, "data")
			cfg := startupConfig(t, base, data, "127.0.0.1:0", "")
			if code, _, errs := runBinary(t, 0, "", "domain", "add", "example.com", "--config", cfg); code != 0 {
				t.Fatalf("domain add: %d %s", code, errs)
			}
			setStoreVersion(t, data, 99)
			return cfg, "herald: store " + filepath.Join(data, "herald.db") + ": schema version 99 is newer than this herald (" + strconv.Itoa(sqlite.SchemaVersion()) + "); upgrade herald"
		}},
		{name: "store from a newer herald, CLI", code: 78, args: []string{"user", "list"}, prepare: func(t *testing.T, base string) (string, string) {
			data := filepath.Join(base, "data")
			cfg := startupConfig(t, base, data, "127.0.0.1:0", "")
			if code, _, errs := runBinary(t, 0, "", "domain", "add", "example.com", "--config", cfg); code != 0 {
				t.Fatalf("domain add: %d %s", code, errs)
			}
			setStoreVersion(t, data, 99)
			return cfg, "herald: store " + filepath.Join(data, "herald.db") + ": schema version 99 is newer than this herald (" + strconv.Itoa(sqlite.SchemaVersion()) + "); upgrade herald"
		}},
		{name: "short password", code: 65, args: []string{"user", "add", "alice@example.com"}, stdin: "hello\n",
			prepare: func(t *testing.T, base string) (string, string) {
				return startupConfig(t, base, filepath.Join(base, "data"), "127.0.0.1:0", ""),
					"herald: password too short: 5 characters, at least 12 required (auth.min_password_length; several random words make a long password that is easy to remember)"
			}},
		{name: "read-only command without a store", code: 66, args: []string{"queue", "list"},
			prepare: func(t *testing.T, base string) (string, string) {
				data := filepath.Join(base, "data")
				return startupConfig(t, base, data, "127.0.0.1:0", ""),
					"herald: data directory " + data + " holds no store (nothing was set up there: is server.data_dir right? give --config FILE or HERALD_CONFIG; herald serve or an add command creates it)"
			}},
		{name: "configuration error", code: 78, prepare: func(t *testing.T, base string) (string, string) {
			cfg := startupConfig(t, base, filepath.Join(base, "data"), "127.0.0.1:0", "[limits]\nmax_message_size = \"12XB\"\n")
			return cfg, "herald: " + cfg + ":16: limits.max_message_size: \"12XB\" is not a size"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if tt.uid != 0 && !root {
				t.Skip("running as another user needs root")
			}
			base := startupBase(t)
			cfg, want := tt.prepare(t, base)
			args := tt.args
			if args == nil {
				args = []string{"serve"}
			}
			code, _, stderr := runBinary(t, tt.uid, tt.stdin, append(args, "--config", cfg)...)
			checkFailure(t, code, stderr, tt.code, want, tt.prefix)
		})
	}
}

// A data directory on a read-only file system (mounted so: root cannot
// write there either; systemd's ProtectSystem gives the same EROFS).
func TestStartupReadOnlyDataDir(t *testing.T) {
	t.Parallel()
	base := startupBase(t)
	ro := filepath.Join(base, "ro")
	must(t, os.Mkdir(ro, 0o755))
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a read-only tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", ro).Run() })
	cfg := startupConfig(t, base, ro, "127.0.0.1:0", "")
	code, _, stderr := runBinary(t, 0, "", "serve", "--config", cfg)
	checkFailure(t, code, stderr, 73, "herald: data directory "+ro+": "+filepath.Join(ro, "herald.pid")+
		": read-only file system (the file system is read-only: put server.data_dir on a writable one (systemd: ReadWritePaths="+ro+"))", false)
	// A command that would change the store says the same.
	code, _, stderr = runBinary(t, 0, "", "domain", "add", "example.com", "--config", cfg)
	checkFailure(t, code, stderr, 73, "herald: data directory "+ro+": ", true)
}

// A second herald serve on the same data directory is refused naming the
// first one's pid, while the commands keep working beside the first; once
// the first is killed (kill -9), a new one starts at once.
func TestStartupSecondInstance(t *testing.T) {
	t.Parallel()
	base := startupBase(t)
	data := filepath.Join(base, "data")
	addr := freePort(t)
	cfg := startupConfig(t, base, data, addr, "")
	first := startProc(t, startupBinary(t), cfg, filepath.Join(base, "first.log"))
	waitListening(t, addr)

	// Another port, so that only the data directory is shared.
	other := startupConfig(t, t.TempDir(), data, "127.0.0.1:0", "")
	code, _, stderr := runBinary(t, 0, "", "serve", "--config", other)
	checkFailure(t, code, stderr, 69, fmt.Sprintf("herald: data directory %s is in use by another herald serve, pid %d (stop it first, or give this one its own server.data_dir)",
		data, first.cmd.Process.Pid), false)

	if code, out, errs := runBinary(t, 0, "", "domain", "add", "example.com", "--config", cfg); code != 0 {
		t.Fatalf("domain add while serving: %d %s %s", code, out, errs)
	}
	if code, out, errs := runBinary(t, 0, "a-long-enough-password\n", "user", "add", "alice@example.com", "--config", cfg); code != 0 {
		t.Fatalf("user add while serving: %d %s %s", code, out, errs)
	}
	if code, out, errs := runBinary(t, 0, "", "user", "list", "--config", cfg); code != 0 || !strings.Contains(out, "alice@example.com") {
		t.Fatalf("user list while serving: %d %q %s", code, out, errs)
	}

	// A crashed server leaves its pid in herald.pid but no lock.
	first.kill9()
	second := startProc(t, startupBinary(t), cfg, filepath.Join(base, "second.log"))
	waitListening(t, addr)
	second.term(t)
	log, _ := os.ReadFile(filepath.Join(base, "second.log"))
	if strings.Contains(string(log), "herald: ") {
		t.Errorf("the restart after kill -9 failed:\n%s", log)
	}
}
