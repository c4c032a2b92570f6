// Package e2e holds Herald's end-to-end tests: the real composition root
// (internal/app) or the real binary, real TCP on loopback, real TLS, a real
// DNS server (testdns) and scriptable remote MXes (testmx) on 127.0.0.x:25.
package e2e

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
	"github.com/heraldmail/herald/internal/webhook"
)

// herald is one running node.
type herald struct {
	t       *testing.T
	app     *app.App
	cfg     *config.Config
	addrs   map[string][]string
	dns     *testdns.Server
	stop    func()
	dataDir string
}

// mxAddr hands every test its own loopback address for remote MXes, so
// parallel tests never share a port-25 listener.
var mxAddr atomic.Int32

// A random start keeps two test processes on one machine (other
// worktrees, a developer's run beside CI) off each other's addresses.
func init() { mxAddr.Store(10 + rand.Int32N(50_000)) }

// nextMXIP returns a fresh 127.0.0.x address.
func nextMXIP() string {
	n := mxAddr.Add(1)
	return fmt.Sprintf("127.0.%d.%d", n/250, n%250+1)
}

// startHerald starts a node with test-friendly settings: listeners on
// ephemeral loopback ports, a loopback DNS server, fast retries.
func startHerald(t *testing.T, mutate func(*config.Config)) *herald {
	t.Helper()
	return startHeraldWith(t, mutate, nil)
}

// startHeraldWith is startHerald with a hook on the delivery settings
// (trusted test CAs).
func startHeraldWith(t *testing.T, mutate func(*config.Config), dmut func(*delivery.Config)) *herald {
	t.Helper()
	dns := testdns.Start(t)
	cfg := config.Default()
	cfg.Server.Hostname = "mx.herald.test"
	cfg.Delivery.HeloName = "mx.herald.test"
	cfg.Server.DataDir = t.TempDir()
	cfg.Server.ShutdownTimeout = 2 * time.Second
	for _, l := range []*config.ListenConfig{&cfg.SMTP, &cfg.Submission, &cfg.Submissions, &cfg.HTTP.ListenConfig} {
		l.Listen = []string{"127.0.0.1:0"}
	}
	cfg.DNS.Resolver = dns.Addr()
	cfg.DNS.Timeout = time.Second
	cfg.Queue.RetryInitial = 50 * time.Millisecond
	cfg.Queue.RetryMax = 100 * time.Millisecond
	cfg.Queue.PollInterval = 10 * time.Millisecond
	cfg.Queue.ThrottleBackoff = 50 * time.Millisecond
	cfg.Delivery.ConnectTimeout = 2 * time.Second
	cfg.Delivery.CommandTimeout = 5 * time.Second
	cfg.Auth.FailureDelay = time.Millisecond
	cfg.Limits.QueueMinFree = 1 << 20
	cfg.Limits.PregreetWait = 10 * time.Millisecond // the real default is 1s per new client
	cfg.Platform.WebhookAllowPrivate = true         // the test receivers listen on loopback
	cfg.Alerts.Enabled = false                      // alert mail would join the queues the tests watch (TestAlerts turns it on)
	if mutate != nil {
		mutate(cfg)
	}
	logFile := filepath.Join(t.TempDir(), "herald.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
	a, err := app.New(cfg, app.Options{Logger: log, Delivery: func(d *delivery.Config) {
		d.Port = 25
		if dmut != nil {
			dmut(d)
		}
	}, Webhook: func(w *webhook.Options) {
		w.PollInterval = 20 * time.Millisecond
		w.Backoff = []time.Duration{50 * time.Millisecond}
		w.Jitter = -1
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h := &herald{t: t, app: a, cfg: cfg, addrs: a.Addrs(), dns: dns, dataDir: cfg.Server.DataDir}
	var stopped bool
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("herald stopped with error: %v", err)
		}
		f.Close()
		if t.Failed() || os.Getenv("HERALD_E2E_LOG") != "" {
			if b, err := os.ReadFile(logFile); err == nil {
				t.Logf("herald log:\n%s", b)
			}
		}
	}
	t.Cleanup(h.stop)
	return h
}

func (h *herald) addr(name string) string { return h.addrs[name][0] }

// setup adds local domains and users (password "secret-<local part>").
func (h *herald) addDomain(d string) {
	if err := h.app.Store().AddDomain(context.Background(), d); err != nil {
		h.t.Fatal(err)
	}
}

func (h *herald) addUser(addr string, sendAs ...string) string {
	pw := "secret-" + strings.Split(addr, "@")[0]
	hash, err := auth.HashPassword(pw)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := h.app.Store().AddUser(context.Background(), store.User{Address: addr, PasswordHash: hash, SendAs: sendAs}); err != nil {
		h.t.Fatal(err)
	}
	return pw
}

// remoteMX starts a test MX for domain on a fresh 127.0.x.y:25 and
// publishes MX and A records for it.
func (h *herald) remoteMX(domain string, cfg testmx.Config) *testmx.Server {
	ip := nextMXIP()
	mx := testmx.Start(h.t, ip+":25", cfg)
	host := "mx." + domain
	h.dns.AddMX(domain, host, 10)
	h.dns.AddA(host, ip)
	return mx
}

// maildir returns the files delivered to a local mailbox's new/ folder.
func (h *herald) maildir(mailbox string) []string {
	local, domain, _ := strings.Cut(strings.ToLower(mailbox), "@")
	dir := filepath.Join(h.dataDir, "mail", domain, local, "new")
	ents, _ := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err == nil {
			out = append(out, string(b))
		}
	}
	return out
}

// waitMaildir waits until mailbox holds n messages.
func (h *herald) waitMaildir(mailbox string, n int) []string {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got := h.maildir(mailbox)
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("mailbox %s has %d messages, want %d", mailbox, len(got), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitQueueEmpty waits until no recipient is pending.
func (h *herald) waitQueueEmpty() {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st, err := h.app.Store().Stats(context.Background())
		if err == nil && st.Recipients == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("queue not empty: %+v %v", st, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// client is a minimal SMTP client that exposes every reply code, for
// asserting exact server behaviour.
type client struct {
	t    *testing.T
	conn net.Conn
	tp   *textproto.Conn
}

func dial(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return wrapClient(t, conn)
}

func newTextproto(conn net.Conn) *textproto.Conn { return textproto.NewConn(conn) }

func dialTLS(t *testing.T, addr string) *client {
	t.Helper()
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, tp: textproto.NewConn(conn)}
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// reply reads one (possibly multi-line) reply.
func (c *client) reply() (int, string) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	code, msg, err := c.tp.ReadResponse(0)
	if err != nil && code == 0 {
		c.t.Fatalf("reading reply: %v", err)
	}
	return code, msg
}

func (c *client) expect(want int) string {
	c.t.Helper()
	code, msg := c.reply()
	if code != want {
		c.t.Fatalf("got %d %s, want %d", code, msg, want)
	}
	return msg
}

// cmd sends a command and returns the reply.
func (c *client) cmd(format string, args ...any) (int, string) {
	c.t.Helper()
	if err := c.tp.PrintfLine(format, args...); err != nil {
		c.t.Fatalf("send: %v", err)
	}
	return c.reply()
}

// ok sends a command and requires the given code.
func (c *client) ok(want int, format string, args ...any) string {
	c.t.Helper()
	code, msg := c.cmd(format, args...)
	if code != want {
		c.t.Fatalf("%s: got %d %s, want %d", fmt.Sprintf(format, args...), code, msg, want)
	}
	return msg
}

func (c *client) startTLS() {
	c.t.Helper()
	c.ok(220, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		c.t.Fatalf("TLS handshake: %v", err)
	}
	c.conn = tc
	c.tp = textproto.NewConn(tc)
}

func (c *client) authPlain(user, pass string) (int, string) {
	c.t.Helper()
	return c.cmd("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass)))
}

// raw writes bytes as they are (for smuggling and pipelining tests).
func (c *client) raw(s string) {
	c.t.Helper()
	if _, err := c.conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// send runs a whole transaction and returns the final reply.
func (c *client) send(from string, to []string, body string) (int, string) {
	c.t.Helper()
	c.ok(250, "MAIL FROM:<%s>", from)
	for _, r := range to {
		c.ok(250, "RCPT TO:<%s>", r)
	}
	c.ok(354, "DATA")
	c.raw(body)
	if !strings.HasSuffix(body, "\r\n") {
		c.raw("\r\n")
	}
	c.raw(".\r\n")
	return c.reply()
}

// submit logs in on the submission port with STARTTLS and sends one
// message; it returns the queue ID from the 250 reply.
func (h *herald) submit(user, pass, from string, to []string, body string) string {
	h.t.Helper()
	c := h.login(user, pass)
	code, msg := c.send(from, to, body)
	if code != 250 {
		h.t.Fatalf("DATA: %d %s", code, msg)
	}
	c.cmd("QUIT")
	return queueID(msg)
}

// login opens an authenticated submission session.
func (h *herald) login(user, pass string) *client {
	h.t.Helper()
	c := dial(h.t, h.addr("submission"))
	c.ok(250, "EHLO client.test")
	c.startTLS()
	c.ok(250, "EHLO client.test")
	if code, msg := c.authPlain(user, pass); code != 235 {
		h.t.Fatalf("AUTH %s: %d %s", user, code, msg)
	}
	return c
}

// queueID extracts the last word of "2.0.0 Ok: queued as ID".
func queueID(msg string) string {
	f := strings.Fields(msg)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// testBody is a message without a From field: submission adds one from
// the envelope sender (which the user may use).
func testBody(subject string) string {
	return "To: <someone@remote.test>\r\nSubject: " + subject +
		"\r\nMessage-ID: <" + subject + "@example.com>\r\n\r\nHello from the e2e test.\r\n"
}

// headerBlock returns the header section of a message.
func headerBlock(msg string) string {
	h, _, _ := strings.Cut(msg, "\r\n\r\n")
	return h
}
