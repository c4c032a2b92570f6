package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Started as root with server.user set, herald serve binds port 25, hands
// its data directory and log file to the user and runs as it: mail is
// accepted and delivered into mailboxes the user owns, and SIGHUP after a
// logrotate-style rename reopens the log file as that user.
func TestServeAsRootSwitchesUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base := startupBase(t)
	data := filepath.Join(base, "data")
	logDir := filepath.Join(base, "log")
	must(t, os.Mkdir(logDir, 0o755))
	must(t, os.Chown(logDir, nobody, nobody)) // as the package's /var/log/herald
	logPath := filepath.Join(logDir, "herald.log")
	addr := nextMXIP() + ":25" // a privileged port: bound while still root
	cfg := startupConfig(t, base, data, addr, fmt.Sprintf(`[limits]
pregreet_wait = "0"
[log]
file = %q
`, logPath))
	cfg = strings.Replace(readFile(t, cfg), "[server]\n", "[server]\nuser = \"nobody\"\n", 1)
	cfgPath := filepath.Join(base, "herald.toml")
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	// The store is created by root, before serve starts.
	for _, args := range [][]string{{"domain", "add", "example.com"}, {"user", "add", "alice@example.com"}} {
		if code, out, errs := runBinary(t, 0, "a-long-enough-password\n", append(args, "--config", cfgPath)...); code != 0 {
			t.Fatalf("%v: %d %s %s", args, code, out, errs)
		}
	}

	p := startProc(t, startupBinary(t), cfgPath, filepath.Join(base, "stderr.log"))
	defer p.term(t)
	waitListening(t, addr) // bound as root; the switch follows before Run
	waitFor(t, "herald serve running as nobody (real, effective, saved and file-system uids)", 15*time.Second, func() bool {
		return procUID(t, p.cmd.Process.Pid) == "65534\t65534\t65534\t65534"
	})

	c := dial(t, addr)
	c.ok(250, "EHLO client.example")
	if code, msg := c.send("bob@sender.example", []string{"alice@example.com"}, testBody("as nobody")); code != 250 {
		t.Fatalf("message refused: %d %s", code, msg)
	}
	c.cmd("QUIT")
	newDir := filepath.Join(data, "mail", "example.com", "alice", "new")
	waitFor(t, "the message in alice's mailbox", 15*time.Second, func() bool {
		ents, _ := os.ReadDir(newDir)
		return len(ents) == 1
	})
	ents, _ := os.ReadDir(newDir)
	for _, p := range []string{filepath.Join(newDir, ents[0].Name()), filepath.Join(data, "herald.db"), data} {
		if uid := fileUID(t, p); uid != nobody {
			t.Errorf("%s belongs to uid %d, want nobody", p, uid)
		}
	}

	must(t, os.Rename(logPath, logPath+".1"))
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, "a new log file after SIGHUP", 15*time.Second, func() bool {
		b, err := os.ReadFile(logPath)
		return err == nil && strings.Contains(string(b), "reloaded")
	})
	if uid := fileUID(t, logPath); uid != nobody {
		t.Errorf("the reopened log file belongs to uid %d, want nobody", uid)
	}
	if old := readFile(t, logPath+".1"); !strings.Contains(old, "switched to an unprivileged user") {
		t.Errorf("the rotated log lacks the switch:\n%s", old)
	}
}

// A configured server.user that does not exist stops herald serve started
// as root before it accepts anything (exit 67, one line).
func TestServeAsRootUnknownUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base := startupBase(t)
	cfgPath := startupConfig(t, base, filepath.Join(base, "data"), "127.0.0.1:0", "")
	cfg := strings.Replace(readFile(t, cfgPath), "[server]\n", "[server]\nuser = \"no-such-herald-user\"\n", 1)
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	code, _, stderr := runBinary(t, 0, "", "serve", "--config", cfgPath)
	checkFailure(t, code, stderr, 67, `herald: server.user "no-such-herald-user": no such user (create it (useradd --system --home-dir /var/lib/herald no-such-herald-user) or set server.user to an existing unprivileged user)`, false)
}

func procUID(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no Uid line in /proc status")
	return ""
}

func fileUID(t *testing.T, path string) int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return int(st.Uid)
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// waitFor polls cond until it holds, failing the test after timeout.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("still waiting for %s after %s", what, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
