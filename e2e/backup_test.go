package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// relayNodeConfig writes a configuration for a node named hostname on
// dataDir, relaying for loopback clients through the loopback DNS server
// with fast retries; it returns the SMTP and HTTP listen addresses.
func relayNodeConfig(t *testing.T, path, hostname, dataDir, dnsAddr string) (smtpAddr, httpAddr string) {
	t.Helper()
	smtpAddr, httpAddr = freePortOn(t, "127.0.0.1"), freePortOn(t, "127.0.0.1")
	must(t, os.WriteFile(path, []byte(fmt.Sprintf(`[server]
hostname = %q
data_dir = %q
shutdown_timeout = "2s"
[smtp]
listen = [%q]
[submission]
listen = []
[submissions]
listen = []
[http]
listen = [%q]
[relay]
allow = ["127.0.0.0/8"]
[limits]
pregreet_wait = "0"
[dns]
resolver = %q
[queue]
poll_interval = "100ms"
retry_initial = "100ms"
retry_max = "300ms"
[delivery]
port = 25
connect_timeout = "1s"
`, hostname, dataDir, smtpAddr, httpAddr, dnsAddr)), 0o644))
	return smtpAddr, httpAddr
}

// backupConfig writes a relaying node's configuration on dataDir and
// returns its SMTP address.
func backupConfig(t *testing.T, path, dataDir, dnsAddr string) string {
	t.Helper()
	smtpAddr, _ := relayNodeConfig(t, path, "backup.herald.test", dataDir, dnsAddr)
	return smtpAddr
}

// backupBody is message i: every fourth is 100 KiB, over the store's
// inline limit (64 KiB), so its body is a blob file.
func backupBody(i int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "To: <r%d@remote.test>\r\nSubject: m%d\r\nMessage-ID: <m%d@client.test>\r\n\r\n", i, i, i)
	if i%4 == 0 {
		for j := range 100 << 10 / 64 {
			fmt.Fprintf(&b, "m%d line %05d %s\r\n", i, j, strings.Repeat("x", 40))
		}
	}
	fmt.Fprintf(&b, "end of m%d\r\n", i)
	return b.String()
}

// herald backup runs while the server accepts mail for a remote whose MX
// is down (the queue is retried all along); the server is stopped, the
// backup restored into a fresh data directory, and a server there with
// the MX up delivers every message of the backup exactly once, with its
// whole body: all those acknowledged before the backup started, and as
// many in all as the manifest counts. restore is refused while a server
// holds the data directory, and into a data directory that is not empty.
func TestBackupUnderLoadRestoreDeliversOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := heraldBinary(t)
	dns := testdns.Start(t)
	mxIP := nextMXIP()
	dns.AddMX("remote.test", "mx.remote.test", 10)
	dns.AddA("mx.remote.test", mxIP)
	dir := t.TempDir()
	cfg1 := filepath.Join(dir, "herald.toml")
	smtp1 := backupConfig(t, cfg1, filepath.Join(dir, "data"), dns.Addr())
	herald := func(cfg string, args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--config", cfg)...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), out.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, out.String()
	}

	srv := startProc(t, bin, cfg1, filepath.Join(dir, "herald.log"))
	running := true
	defer func() {
		if running {
			srv.term(t)
		}
	}()
	waitGreeting(t, smtp1)

	const total, backupAt = 200, 100
	dest := filepath.Join(dir, "backup")
	type result struct {
		code int
		out  string
		took time.Duration
	}
	backupDone := make(chan result, 1)
	c := dial(t, smtp1)
	c.ok(250, "EHLO client.test")
	for i := range total {
		if i == backupAt {
			go func() {
				start := time.Now()
				cmd := exec.Command(bin, "backup", dest, "--config", cfg1)
				out, err := cmd.CombinedOutput()
				code := 0
				if ee, ok := err.(*exec.ExitError); ok {
					code = ee.ExitCode()
				} else if err != nil {
					code = -1
					out = append(out, err.Error()...)
				}
				backupDone <- result{code, string(out), time.Since(start)}
			}()
		}
		if code, msg := c.send("app@client.test", []string{fmt.Sprintf("r%d@remote.test", i)}, backupBody(i)); code != 250 {
			t.Fatalf("message %d: %d %s", i, code, msg)
		}
	}
	c.cmd("QUIT")
	bk := <-backupDone
	if bk.code != 0 {
		t.Fatalf("herald backup: exit %d\n%s", bk.code, bk.out)
	}
	t.Logf("herald backup under load took %s: %s", bk.took.Round(time.Millisecond), strings.TrimSpace(bk.out))
	var manifest struct {
		Messages int      `json:"messages"`
		Blobs    int      `json:"blobs"`
		Finished []string `json:"finished_during_backup"`
		Bytes    int64    `json:"bytes"`
	}
	mb, err := os.ReadFile(filepath.Join(dest, "manifest.json"))
	must(t, err)
	must(t, json.Unmarshal(mb, &manifest))
	if manifest.Messages < backupAt || manifest.Messages > total || len(manifest.Finished) != 0 {
		t.Fatalf("manifest: %d messages, %v finished; want %d to %d messages (all acknowledged before the backup), none finished (the MX is down)",
			manifest.Messages, manifest.Finished, backupAt, total)
	}
	if manifest.Blobs < backupAt/4 {
		t.Errorf("manifest: %d body files, want at least %d", manifest.Blobs, backupAt/4)
	}

	// restore is refused while the server holds its data directory.
	if code, out := herald(cfg1, "restore", dest, "--force"); code != 69 || !strings.Contains(out, "stop it first") {
		t.Errorf("restore onto the running server: exit %d %q, want 69", code, out)
	}
	srv.term(t)
	running = false

	// A fresh data directory on a new configuration.
	cfg2 := filepath.Join(dir, "herald2.toml")
	smtp2 := backupConfig(t, cfg2, filepath.Join(dir, "data2"), dns.Addr())
	if code, out := herald(cfg2, "restore", dest); code != 0 {
		t.Fatalf("herald restore: exit %d\n%s", code, out)
	} else {
		t.Logf("herald restore: %s", strings.TrimSpace(out))
	}
	if code, out := herald(cfg2, "restore", dest); code != 73 || !strings.Contains(out, "--force") {
		t.Errorf("second restore without --force: exit %d %q, want 73", code, out)
	}

	mx := testmx.Start(t, mxIP+":25", testmx.Config{})
	srv2 := startProc(t, bin, cfg2, filepath.Join(dir, "herald2.log"))
	defer srv2.term(t)
	waitGreeting(t, smtp2)
	mx.WaitMessages(t, manifest.Messages, 60*time.Second)
	lcfg, err := config.Load(cfg2)
	must(t, err)
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, _, err := app.OpenStore(lcfg, nil, false)
		must(t, err)
		stats, err := st.Stats(ctx)
		st.Close()
		must(t, err)
		if stats.Messages == 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "herald2.log"))
			t.Fatalf("%d messages still queued after the restore; log:\n%s", stats.Messages, tail(string(b), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
	per := make(map[string]int)
	for _, m := range mx.Messages() {
		for _, r := range m.Rcpts {
			per[r]++
		}
		var i int
		if _, err := fmt.Sscanf(m.Rcpts[0], "r%d@remote.test", &i); err != nil {
			t.Errorf("delivery to %v: not a test recipient", m.Rcpts)
			continue
		}
		// The body arrives whole (trace and signature headers come first).
		want := backupBody(i)
		_, wantBody, _ := strings.Cut(want, "\r\n\r\n")
		if !bytes.HasSuffix(m.Body, []byte(wantBody)) {
			t.Errorf("m%d delivered with a body of %d bytes, not the %d sent", i, len(m.Body), len(want))
		}
	}
	if len(mx.Messages()) != manifest.Messages || len(per) != manifest.Messages {
		t.Errorf("%d deliveries to %d recipients, want the manifest's %d", len(mx.Messages()), len(per), manifest.Messages)
	}
	for r, n := range per {
		if n != 1 {
			t.Errorf("%s delivered %d times, want once", r, n)
		}
	}
	for i := range backupAt {
		if r := fmt.Sprintf("r%d@remote.test", i); per[r] != 1 {
			t.Errorf("%s, acknowledged before the backup, delivered %d times, want once", r, per[r])
		}
	}
}

// Run as root with server.user set, herald backup and herald restore work
// as that user: the backup's files and the restored data directory are
// its own, so the server can use them.
func TestBackupRestoreAsRootOwnedByServerUser(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	base := startupBase(t)
	withUser := func(path string) string {
		cfg := strings.Replace(readFile(t, path), "[server]\n", "[server]\nuser = \"nobody\"\n", 1)
		must(t, os.WriteFile(path, []byte(cfg), 0o644))
		return path
	}
	cfg := withUser(startupConfig(t, base, filepath.Join(base, "data"), freePortOn(t, "127.0.0.1"), ""))
	for _, args := range [][]string{{"domain", "add", "example.com"}, {"user", "add", "alice@example.com"}} {
		if code, out, errs := runBinary(t, 0, "a-long-enough-password\n", append(args, "--config", cfg)...); code != 0 {
			t.Fatalf("%v: %d %s %s", args, code, out, errs)
		}
	}
	backups := filepath.Join(base, "backups")
	must(t, os.Mkdir(backups, 0o700))
	must(t, os.Chown(backups, nobody, nobody))
	dest := filepath.Join(backups, "bk")
	if code, out, errs := runBinary(t, 0, "", "backup", dest, "--config", cfg); code != 0 {
		t.Fatalf("backup as root: %d %s %s", code, out, errs)
	}
	ownedByNobody := func(root string) {
		t.Helper()
		n := 0
		must(t, filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := os.Lstat(p)
			if err != nil {
				return err
			}
			if st := fi.Sys().(*syscall.Stat_t); st.Uid != nobody {
				t.Errorf("%s is owned by uid %d, want nobody (%d)", p, st.Uid, nobody)
			}
			n++
			return nil
		}))
		if n < 3 {
			t.Errorf("%s holds %d entries, want the store", root, n)
		}
	}
	ownedByNobody(dest)

	cfg2Dir := filepath.Join(base, "two")
	must(t, os.Mkdir(cfg2Dir, 0o755))
	data2 := filepath.Join(base, "data2")
	cfg2 := withUser(startupConfig(t, cfg2Dir, data2, freePortOn(t, "127.0.0.1"), ""))
	if code, out, errs := runBinary(t, 0, "", "restore", dest, "--config", cfg2); code != 0 {
		t.Fatalf("restore as root: %d %s %s", code, out, errs)
	}
	ownedByNobody(data2)
	if code, out, errs := runBinary(t, nobody, "", "user", "list", "--config", cfg2); code != 0 || !strings.Contains(out, "alice@example.com") {
		t.Errorf("user list as nobody on the restored data directory: %d %q %s", code, out, errs)
	}
}
