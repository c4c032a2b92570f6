package main

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
)

// cli runs commands against one data directory.
type cli struct {
	t       *testing.T
	cfgPath string
	dataDir string
}

func newCLI(t *testing.T, extra string) *cli {
	t.Helper()
	dir := t.TempDir()
	c := &cli{t: t, cfgPath: filepath.Join(dir, "herald.toml"), dataDir: filepath.Join(dir, "data")}
	cfg := "[server]\nhostname = \"host.example\"\ndata_dir = \"" + c.dataDir + "\"\n" + extra
	if err := os.WriteFile(c.cfgPath, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return c
}

// run executes a command with stdin and returns exit code, stdout, stderr.
func (c *cli) run(stdin string, args ...string) (int, string, string) {
	c.t.Helper()
	var out, errb bytes.Buffer
	full := append([]string{}, args...)
	if args[0] != "config" && args[0] != "sendmail" {
		full = append(full, "--config", c.cfgPath)
	}
	if args[0] == "sendmail" {
		full = append([]string{"sendmail", "--config", c.cfgPath}, args[1:]...)
	}
	code := run(full, strings.NewReader(stdin), &out, &errb)
	return code, out.String(), errb.String()
}

func (c *cli) ok(stdin string, args ...string) string {
	c.t.Helper()
	code, out, errs := c.run(stdin, args...)
	if code != 0 {
		c.t.Fatalf("herald %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

func (c *cli) fails(wantCode int, wantErr string, args ...string) {
	c.t.Helper()
	code, out, errs := c.run("", args...)
	if code != wantCode || !strings.Contains(errs, wantErr) {
		c.t.Fatalf("herald %s: exit %d, stderr %q (stdout %q); want exit %d and %q", strings.Join(args, " "), code, errs, out, wantCode, wantErr)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	if out := c.ok("", "config", "check", c.cfgPath); !strings.Contains(out, "OK") {
		t.Errorf("config check output %q", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(bad, []byte("[server]\nhostname = \"x.example\"\n\n[limits]\nmax_message_size = \"12XB\"\n[smtp]\nlisen = []\n"), 0o644)
	c.fails(78, "bad.toml:5: limits.max_message_size", "config", "check", bad)
	c.fails(78, "\nherald: "+bad+":7:", "config", "check", bad) // one "herald:" line per problem
	c.fails(2, "herald config check FILE", "config", "check")
	// The shipped example is valid.
	c.ok("", "config", "check", "../../herald.example.toml")
}

func TestUnknownCommand(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.fails(2, "unknown command", "frobnicate")
}

func TestDirectoryCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "Example.COM")
	c.fails(1, "already exists", "domain", "add", "example.com")
	c.fails(1, "invalid domain", "domain", "add", "bad..domain")
	if out := c.ok("", "domain", "list"); strings.TrimSpace(out) != "example.com" {
		t.Errorf("domain list = %q", out)
	}
	c.ok("s3cret-password\n", "user", "add", "Alice@example.com", "--send-as", "example.com,alias@other.test")
	c.fails(65, "empty password", "user", "add", "bob@example.com")
	c.fails(1, "invalid address", "user", "add", "not-an-address")
	out := c.ok("", "user", "list")
	if !strings.Contains(out, "alice@example.com") || !strings.Contains(out, "@example.com,alias@other.test") {
		t.Errorf("user list = %q (a bare domain grant is stored as @domain)", out)
	}
	c.ok("", "user", "send-as", "alice@example.com", "@news.example.com", "CEO@Example.com")
	c.fails(1, "neither an address nor @domain", "user", "send-as", "alice@example.com", "bad..domain")
	c.fails(1, "not found", "user", "send-as", "nobody@example.com", "@example.com")
	if out := c.ok("", "user", "list"); !strings.Contains(out, "@news.example.com,ceo@example.com") {
		t.Errorf("user list after send-as = %q", out)
	}
	c.ok("", "user", "send-as", "alice@example.com")
	if out := c.ok("", "user", "list"); !strings.Contains(out, "(itself and its aliases)") {
		t.Errorf("user list after clearing send-as = %q", out)
	}
	c.ok("new-password\n", "user", "passwd", "alice@example.com")
	c.fails(1, "not found", "user", "passwd", "nobody@example.com")

	// The stored hash verifies the new password.
	st := c.store()
	u, err := st.GetUser(context.Background(), "alice@example.com")
	st.Close()
	if err != nil || !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
		t.Fatalf("stored user %+v %v", u, err)
	}

	c.ok("", "alias", "add", "team@example.com", "alice@example.com", "ext@remote.test")
	c.ok("", "alias", "add", "@example.com", "alice@example.com")
	c.fails(1, "invalid target", "alias", "add", "x@example.com", "nope")
	out = c.ok("", "alias", "list")
	if !strings.Contains(out, "team@example.com -> alice@example.com, ext@remote.test") || !strings.Contains(out, "@example.com -> alice@example.com") {
		t.Errorf("alias list = %q", out)
	}
	c.ok("", "alias", "del", "team@example.com")
	c.fails(1, "not found", "alias", "del", "team@example.com")
	c.ok("", "user", "del", "alice@example.com")
	c.ok("", "domain", "del", "example.com")
	if out := c.ok("", "domain", "list"); out != "" {
		t.Errorf("domain list after del = %q", out)
	}
	c.fails(2, "usage", "domain", "frob")
}

func (c *cli) store() interface {
	store.Store
} {
	c.t.Helper()
	cfg, err := config.Load(c.cfgPath)
	if err != nil {
		c.t.Fatal(err)
	}
	st, _, err := openStore(cfg, createStore)
	if err != nil {
		c.t.Fatal(err)
	}
	return st
}

// onlyQueued returns the ID of the one message in the queue.
func (c *cli) onlyQueued() string {
	c.t.Helper()
	st := c.store()
	defer st.Close()
	ms, err := st.List(context.Background(), "", 10)
	if err != nil || len(ms) != 1 {
		c.t.Fatalf("queue holds %d messages (%v), want 1", len(ms), err)
	}
	return ms[0].ID
}

func TestSendmailAndQueueCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	msg := "To: Bob <bob@remote.test>, carol@remote.test\nCc: dave@remote.test\nBcc: secret@remote.test\nSubject: from cron\n\nline one\n.\nafter dot\n"
	code, _, errs := c.run(msg, "sendmail", "-t", "-i", "-f", "cron@host.example", "-F", "Cron Daemon", "-oem")
	if code != 0 {
		t.Fatalf("sendmail: %d %s", code, errs)
	}
	if errs != "" {
		t.Fatalf("sendmail printed %q on success; like sendmail(1) it must print nothing", errs)
	}
	id := c.onlyQueued()

	out := c.ok("", "queue", "list")
	if !strings.Contains(out, id) || !strings.Contains(out, "cron@host.example") || !strings.Contains(out, "1 message(s)") {
		t.Fatalf("queue list:\n%s", out)
	}
	out = c.ok("", "queue", "show", id)
	for _, r := range []string{"bob@remote.test", "carol@remote.test", "dave@remote.test", "secret@remote.test"} {
		if !strings.Contains(out, r) {
			t.Errorf("queue show lacks recipient %s:\n%s", r, out)
		}
	}
	st := c.store()
	rc, err := st.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	st.Close()
	b := string(body)
	for _, want := range []string{"From: \"Cron Daemon\" <cron@host.example>\r\n", "Message-ID: <", "Date: ", "Subject: from cron\r\n", "\r\n.\r\nafter dot\r\n"} {
		if !strings.Contains(b, want) {
			t.Errorf("queued message lacks %q:\n%q", want, b)
		}
	}
	if strings.Contains(b, "Bcc") || strings.Contains(b, "secret@") {
		t.Errorf("Bcc leaked into the message:\n%s", b)
	}
	if strings.Contains(strings.ReplaceAll(b, "\r\n", ""), "\n") {
		t.Errorf("bare LF in queued message: %q", b)
	}

	c.ok("", "queue", "retry", id)
	c.ok("", "queue", "delete", id)
	c.fails(1, "not found", "queue", "show", id)
	if out := c.ok("", "queue", "list"); !strings.Contains(out, "0 message(s)") {
		t.Errorf("queue list after delete:\n%s", out)
	}
}

func TestSendmailDotEndsWithoutI(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	code, _, errs := c.run("Subject: x\n\nkept\n.\ndropped\n", "sendmail", "someone@remote.test")
	if code != 0 {
		t.Fatalf("sendmail: %s", errs)
	}
	id := c.onlyQueued()
	st := c.store()
	defer st.Close()
	rc, err := st.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	if !strings.Contains(string(body), "kept") || strings.Contains(string(body), "dropped") {
		t.Errorf("a lone dot must end the message without -i:\n%s", body)
	}
	m, err := st.Get(context.Background(), id)
	if err != nil || m.Sender == "" || !strings.HasSuffix(m.Sender, "@host.example") {
		t.Errorf("default sender %q %v", m.Sender, err)
	}
	c.fails(2, "no recipients", "sendmail")
	c.fails(2, "not supported", "sendmail", "-Z")
}

func TestTrace(t *testing.T) {
	t.Parallel()
	logPath := filepath.Join(t.TempDir(), "herald.log")
	c := newCLI(t, "[log]\nfile = \""+logPath+"\"\n")
	log := `time=1 level=INFO msg=connect session=s1 client=127.0.0.1:5000
time=2 level=INFO msg=mail session=s1 from=a@b.test
time=3 level=INFO msg=queued session=s1 id=ABC123 from=a@b.test
time=4 level=INFO msg=connect session=s2 client=127.0.0.1:5001
time=5 level=INFO msg="delivery attempt" id=ABC123 rcpt=x@y.test result=delivered
`
	os.WriteFile(logPath, []byte(log), 0o644)
	out := c.ok("", "trace", "ABC123")
	if strings.Count(out, "\n") != 4 || strings.Contains(out, "s2") {
		t.Errorf("trace output:\n%s", out)
	}
	c.fails(1, "no log lines", "trace", "NOPE")
}

func TestRouteCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	out := c.ok("", "route", "add", "hook@example.com", "https://app.example/inbound")
	if !strings.Contains(out, "secret (for Herald-Signature): whsec_") {
		t.Errorf("route add output %q", out)
	}
	c.fails(1, "invalid URL", "route", "add", "x@example.com", "ftp://nope")
	if out := c.ok("", "route", "list"); !strings.Contains(out, "hook@example.com -> http https://app.example/inbound") {
		t.Errorf("route list %q", out)
	}
	c.ok("", "route", "del", "hook@example.com")
	c.fails(1, "not found", "route", "del", "hook@example.com")
}

func TestDomainPolicyCommand(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	if out := c.ok("", "domain", "policy", "example.com"); !strings.Contains(out, "dmarc default") {
		t.Errorf("policy show %q", out)
	}
	out := c.ok("", "domain", "policy", "example.com", "--dmarc", "monitor", "--spf-reject", "on")
	if !strings.Contains(out, "dmarc monitor, spf-reject on") {
		t.Errorf("policy set %q", out)
	}
	c.fails(2, "--dmarc must be", "domain", "policy", "example.com", "--dmarc", "bogus")
	c.fails(1, "not found", "domain", "policy", "nope.example")
	if out := c.ok("", "domain", "policy", "example.com", "--dmarc", "default"); !strings.Contains(out, "dmarc default") || !strings.Contains(out, "spf-reject on") {
		t.Errorf("policy reset %q", out)
	}
	if out := c.ok("", "domain", "policy", "example.com"); !strings.Contains(out, "mta-sts testing (default)") {
		t.Errorf("MTA-STS default %q", out)
	}
	if out := c.ok("", "domain", "policy", "example.com", "--mta-sts", "enforce"); !strings.Contains(out, "mta-sts enforce") || !strings.Contains(out, "spf-reject on") {
		t.Errorf("MTA-STS set %q", out)
	}
	c.fails(2, "--mta-sts must be", "domain", "policy", "example.com", "--mta-sts", "strict")
}
