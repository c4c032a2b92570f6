package transport_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/local"
	"github.com/heraldmail/herald/internal/local/httproute"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
	"github.com/heraldmail/herald/internal/transport"
	"github.com/heraldmail/herald/internal/webhook"
)

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// env is one test's world: a SQLite store in a temporary directory (local
// domain example.test with user alice), Maildirs under mail/, a DNS server
// on loopback and a port P on which the test's remote MXes listen, at
// 127.0.0.x:P (holding 127.0.0.1:P keeps P unique among parallel tests),
// and a Transport over all of it with a real delivery client.
type env struct {
	t    *testing.T
	ctx  context.Context
	st   *sqlite.Store
	mail string // Maildir root
	dns  *testdns.Server
	port int
	tr   *transport.Transport
}

func newEnv(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "data"), sqlite.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := testdns.Start(t)
	res, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, ctx: context.Background(), st: st, mail: filepath.Join(dir, "mail"), dns: d,
		port: ln.Addr().(*net.TCPAddr).Port}
	client := delivery.New(delivery.Config{
		HELO:           "out.herald.test",
		Port:           e.port,
		ConnectTimeout: 2 * time.Second,
		CommandTimeout: 5 * time.Second,
		DataTimeout:    5 * time.Second,
	}, res, discard())
	t.Cleanup(client.Close)
	e.tr = transport.New(st, local.NewMaildir(e.mail), client, httproute.New(httproute.Options{Timeout: 5 * time.Second}), discard())
	e.must(st.AddDomain(e.ctx, "example.test"))
	e.must(st.AddUser(e.ctx, store.User{Address: "alice@example.test"}))
	return e
}

func (e *env) must(err error) {
	e.t.Helper()
	if err != nil {
		e.t.Fatal(err)
	}
}

// mx starts a remote MX for domain at ip:P and publishes it in DNS.
func (e *env) mx(domain, ip string) *testmx.Server {
	e.t.Helper()
	s := testmx.Start(e.t, fmt.Sprintf("%s:%d", ip, e.port), testmx.Config{})
	e.dns.AddMX(domain, "mx."+domain, 10)
	e.dns.AddA("mx."+domain, ip)
	return s
}

// mailbox returns the messages in a Maildir folder's new/ ("" is the inbox).
func (e *env) mailbox(address, folder string) []string {
	e.t.Helper()
	local, domain, _ := strings.Cut(address, "@")
	dir := filepath.Join(e.mail, domain, local, folder, "new")
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	e.must(err)
	var out []string
	for _, ent := range ents {
		b, err := os.ReadFile(filepath.Join(dir, ent.Name()))
		e.must(err)
		out = append(out, string(b))
	}
	return out
}

const body = "From: <bob@remote.test>\r\nTo: <alice@example.test>\r\nSubject: hello\r\n\r\nHello Alice.\r\n.a line with a leading dot\r\n"

// deliver hands msg's recipients (IDs 1, 2, ... in order) to the
// Transport for domain with raw as the stored message, and returns the
// attempts by recipient address.
func (e *env) deliver(msg *store.Message, domain, raw string, rcpts ...string) map[string]queue.Attempt {
	e.t.Helper()
	if msg.ID == "" {
		msg.ID = store.NewID()
	}
	var rs []store.Recipient
	byID := map[int64]string{}
	for i, r := range rcpts {
		rs = append(rs, store.Recipient{ID: int64(i + 1), Address: r})
		byID[int64(i+1)] = r
	}
	msg.Recipients = rs
	msg.Size = int64(len(raw))
	opened := 0
	var mu sync.Mutex
	attempts := e.tr.Deliver(e.ctx, msg, domain, rs, func() (io.ReadCloser, error) {
		mu.Lock()
		opened++
		mu.Unlock()
		return io.NopCloser(strings.NewReader(raw)), nil
	})
	if len(attempts) != len(rcpts) {
		e.t.Fatalf("%d attempts for %d recipients: %+v", len(attempts), len(rcpts), attempts)
	}
	out := map[string]queue.Attempt{}
	for _, a := range attempts {
		addr, ok := byID[a.RecipientID]
		if !ok {
			e.t.Fatalf("attempt for unknown recipient ID %d", a.RecipientID)
		}
		if _, dup := out[addr]; dup {
			e.t.Fatalf("two attempts for %s", addr)
		}
		out[addr] = a
	}
	return out
}

// wantAttempt fails unless a has the result, code and enhanced code.
func wantAttempt(t *testing.T, rcpt string, a queue.Attempt, res queue.Result, code int, enh smtp.EnhancedCode) {
	t.Helper()
	if a.Result != res || a.Code != code || a.Enhanced != enh {
		t.Errorf("%s: %s %d %s %q, want %s %d %s", rcpt, a.Result, a.Code, a.Enhanced, a.Text, res, code, enh)
	}
}

// A local mailbox gets the message in its Maildir inbox, preceded by
// Return-Path and Delivered-To; an unknown address is a permanent 5.1.1
// and gets nothing.
func TestLocalMailbox(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	got := e.deliver(&store.Message{Sender: "bob@remote.test"}, "example.test", body, "alice@example.test", "nobody@example.test")
	wantAttempt(t, "alice", got["alice@example.test"], queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if a := got["alice@example.test"]; a.RemoteMTA != "local" {
		t.Errorf("local delivery RemoteMTA %q, want local", a.RemoteMTA)
	}
	wantAttempt(t, "nobody", got["nobody@example.test"], queue.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	msgs := e.mailbox("alice@example.test", "")
	want := "Return-Path: <bob@remote.test>\r\nDelivered-To: alice@example.test\r\n" + body
	if len(msgs) != 1 || msgs[0] != want {
		t.Fatalf("alice's inbox holds %q, want exactly %q", msgs, want)
	}
	if msgs := e.mailbox("nobody@example.test", ""); len(msgs) != 0 {
		t.Errorf("an unknown address got %d messages", len(msgs))
	}

	// The null sender is written as Return-Path: <>.
	got = e.deliver(&store.Message{Sender: ""}, "example.test", body, "alice@example.test")
	wantAttempt(t, "alice", got["alice@example.test"], queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	found := false
	for _, m := range e.mailbox("alice@example.test", "") {
		found = found || strings.HasPrefix(m, "Return-Path: <>\r\nDelivered-To: alice@example.test\r\n")
	}
	if !found {
		t.Error("no message with Return-Path: <> for the null sender")
	}
}

// A message marked for quarantine by the inbound checks goes into the
// mailbox's .Junk folder when the user has one, else into the inbox; an
// unmarked message always goes into the inbox.
func TestQuarantineGoesToJunk(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(e.st.AddUser(e.ctx, store.User{Address: "nojunk@example.test"}))
	for _, sub := range []string{"new", "cur", "tmp"} {
		e.must(os.MkdirAll(filepath.Join(e.mail, "example.test", "alice", ".Junk", sub), 0o700))
	}
	marked := func() *store.Message {
		return &store.Message{Sender: "x@junk.test",
			Headers: []byte("Authentication-Results: mx.herald.test; dmarc=fail\r\n" + inbound.QuarantineHeader + ": dmarc policy of junk.test\r\n")}
	}
	got := e.deliver(marked(), "example.test", body, "alice@example.test", "nojunk@example.test")
	for _, r := range []string{"alice@example.test", "nojunk@example.test"} {
		wantAttempt(t, r, got[r], queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	}
	if n, m := len(e.mailbox("alice@example.test", ".Junk")), len(e.mailbox("alice@example.test", "")); n != 1 || m != 0 {
		t.Errorf("quarantined message: %d in .Junk, %d in the inbox; want 1 and 0", n, m)
	}
	if n := len(e.mailbox("nojunk@example.test", "")); n != 1 {
		t.Errorf("quarantined message for a mailbox without .Junk: %d in the inbox, want 1", n)
	}

	// The mark only counts in the fields Herald prepended.
	forged := &store.Message{Sender: "x@good.test"}
	e.deliver(forged, "example.test", inbound.QuarantineHeader+": dmarc policy of good.test\r\n"+body, "alice@example.test")
	if n, m := len(e.mailbox("alice@example.test", ".Junk")), len(e.mailbox("alice@example.test", "")); n != 1 || m != 1 {
		t.Errorf("unmarked message: %d in .Junk (want still 1), %d in the inbox (want 1)", n, m)
	}
}

// A message that already carries Delivered-To for the mailbox went round a
// forwarding loop: a permanent 5.4.6, and nothing is written.
func TestLocalLoop(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	looped := "Delivered-To: Alice@Example.test\r\n" + body
	got := e.deliver(&store.Message{Sender: "bob@remote.test"}, "example.test", looped, "alice@example.test")
	wantAttempt(t, "alice", got["alice@example.test"], queue.Permanent, 554, smtp.EnhancedCode{5, 4, 6})
	if msgs := e.mailbox("alice@example.test", ""); len(msgs) != 0 {
		t.Errorf("a looping message was delivered: %q", msgs)
	}
	// Delivered-To for another mailbox is no loop.
	e.deliver(&store.Message{Sender: "bob@remote.test"}, "example.test", "Delivered-To: list@example.test\r\n"+body, "alice@example.test")
	if msgs := e.mailbox("alice@example.test", ""); len(msgs) != 1 {
		t.Errorf("%d messages delivered after another mailbox's Delivered-To, want 1", len(msgs))
	}
}

// A mailbox the directory knows but Maildir cannot hold (a domain with an
// underscore, which addresses allow and Maildir paths refuse) is a
// permanent failure with Maildir's own reply, not retried until the
// message expires.
func TestLocalInvalidMailboxIsPermanent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.must(e.st.AddDomain(e.ctx, "under_score.test"))
	e.must(e.st.AddUser(e.ctx, store.User{Address: "carol@under_score.test"}))
	got := e.deliver(&store.Message{Sender: "bob@remote.test"}, "under_score.test", body, "carol@under_score.test")
	wantAttempt(t, "carol", got["carol@under_score.test"], queue.Permanent, 550, smtp.EnhancedCode{5, 1, 3})
}

// When the directory cannot be read, every recipient is deferred.
func TestDirectoryFailureIsTemporary(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: discard()})
	e.must(err)
	st.Close() // every read fails now
	tr := transport.New(st, local.NewMaildir(e.mail), nil, nil, discard())
	as := tr.Deliver(e.ctx, &store.Message{ID: store.NewID()}, "example.test",
		[]store.Recipient{{ID: 7, Address: "alice@example.test"}, {ID: 8, Address: "bob@example.test"}},
		func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil })
	if len(as) != 2 {
		t.Fatalf("%d attempts, want 2", len(as))
	}
	for i, a := range as {
		if a.RecipientID != int64(7+i) {
			t.Errorf("attempt %d for recipient %d", i, a.RecipientID)
		}
		wantAttempt(t, "rcpt", a, queue.Temporary, 451, smtp.EnhancedCode{4, 3, 0})
	}
	if msgs := e.mailbox("alice@example.test", ""); len(msgs) != 0 {
		t.Error("delivered without a directory")
	}
}

// posted is one request an HTTP route endpoint received.
type posted struct {
	path, messageID, signature string
	payload                    httproute.Payload
}

// HTTP routes: the message is POSTed as signed JSON; 2xx is delivered,
// 5xx, 408 and 429 are temporary, other 4xx permanent (413 as 552 5.3.4),
// and an endpoint that does not answer is temporary.
func TestHTTPRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var mu sync.Mutex
	var got []posted
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		p := posted{path: r.URL.Path, messageID: r.Header.Get(httproute.HeaderMessageID), signature: r.Header.Get(webhook.HeaderSignature)}
		if err == nil && r.Method == http.MethodPost && r.Header.Get("Content-Type") == "application/json" &&
			webhook.Verify("whsec_test", p.signature, b, time.Now(), time.Minute) == nil {
			err = json.Unmarshal(b, &p.payload)
		} else if err == nil {
			err = fmt.Errorf("bad request: %s %s, signature %q", r.Method, r.Header.Get("Content-Type"), p.signature)
		}
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), http.StatusTeapot)
			return
		}
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
	}))
	t.Cleanup(srv.Close)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close() // nothing listens there any more

	cases := []struct {
		status int
		res    queue.Result
		code   int
		enh    smtp.EnhancedCode
	}{
		{200, queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0}},
		{204, queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0}},
		{500, queue.Temporary, 451, smtp.EnhancedCode{4, 4, 0}},
		{503, queue.Temporary, 451, smtp.EnhancedCode{4, 4, 0}},
		{408, queue.Temporary, 451, smtp.EnhancedCode{4, 4, 0}},
		{429, queue.Temporary, 451, smtp.EnhancedCode{4, 4, 0}},
		{400, queue.Permanent, 550, smtp.EnhancedCode{5, 0, 0}},
		{404, queue.Permanent, 550, smtp.EnhancedCode{5, 0, 0}},
		{413, queue.Permanent, 552, smtp.EnhancedCode{5, 3, 4}},
	}
	var rcpts []string
	for _, c := range cases {
		r := fmt.Sprintf("hook%d@example.test", c.status)
		rcpts = append(rcpts, r)
		e.must(e.st.AddRoute(e.ctx, store.Route{Address: r, Action: "http", URL: fmt.Sprintf("%s/%d", srv.URL, c.status), Secret: "whsec_test"}))
	}
	e.must(e.st.AddRoute(e.ctx, store.Route{Address: "down@example.test", Action: "http", URL: down.URL + "/200", Secret: "whsec_test"}))
	// A route for Maildir delivery is no HTTP route.
	e.must(e.st.AddRoute(e.ctx, store.Route{Address: "alice@example.test", Action: "maildir"}))
	msg := &store.Message{ID: store.NewID(), Sender: "bob@remote.test"}
	res := e.deliver(msg, "example.test", body, append(rcpts, "down@example.test", "alice@example.test")...)

	for _, c := range cases {
		r := fmt.Sprintf("hook%d@example.test", c.status)
		a := res[r]
		wantAttempt(t, r, a, c.res, c.code, c.enh)
		if a.RemoteMTA != "http" {
			t.Errorf("%s: RemoteMTA %q, want http", r, a.RemoteMTA)
		}
		if c.res != queue.Delivered && !strings.Contains(a.Text, strconv.Itoa(c.status)) {
			t.Errorf("%s: text %q does not name HTTP %d", r, a.Text, c.status)
		}
	}
	wantAttempt(t, "down", res["down@example.test"], queue.Temporary, 451, smtp.EnhancedCode{4, 4, 1})
	wantAttempt(t, "alice", res["alice@example.test"], queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if n := len(e.mailbox("alice@example.test", "")); n != 1 {
		t.Errorf("alice (maildir route) has %d messages, want 1", n)
	}

	mu.Lock()
	defer mu.Unlock()
	if len(got) != len(cases) {
		t.Fatalf("the endpoint got %d requests, want %d", len(got), len(cases))
	}
	for _, p := range got {
		rcpt := "hook" + strings.TrimPrefix(p.path, "/") + "@example.test"
		if p.messageID != msg.ID || p.payload.MessageID != msg.ID || p.payload.Envelope.From != "bob@remote.test" ||
			p.payload.Envelope.To != rcpt || p.payload.Subject != "hello" || string(p.payload.Raw) != body {
			t.Errorf("POST %s: message id %q, payload %+v", p.path, p.messageID, p.payload)
		}
	}
}

// Remote domains go to the SMTP client: each recipient gets the remote
// server's verdict.
func TestRemote(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("remote.test", "127.0.0.2")
	mx.SetRcptReply("gone@remote.test", 550, [3]int{5, 1, 1}, "no such user")
	mx.SetRcptReply("busy@remote.test", 451, [3]int{4, 2, 0}, "try later")
	msg := &store.Message{ID: store.NewID(), Sender: "alice@example.test"}
	got := e.deliver(msg, "remote.test", body, "bob@remote.test", "gone@remote.test", "busy@remote.test")
	wantAttempt(t, "bob", got["bob@remote.test"], queue.Delivered, 250, got["bob@remote.test"].Enhanced)
	wantAttempt(t, "gone", got["gone@remote.test"], queue.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	wantAttempt(t, "busy", got["busy@remote.test"], queue.Temporary, 451, smtp.EnhancedCode{4, 2, 0})
	for r, a := range got {
		if a.RemoteMTA != "mx.remote.test[127.0.0.2]" {
			t.Errorf("%s: RemoteMTA %q", r, a.RemoteMTA)
		}
	}
	if a := got["gone@remote.test"]; a.Text != "no such user" {
		t.Errorf("the remote's text was not kept: %q", a.Text)
	}
	msgs := mx.Messages()
	if len(msgs) != 1 {
		t.Fatalf("the remote MX got %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	if m.From != "alice@example.test" || len(m.Rcpts) != 1 || m.Rcpts[0] != "bob@remote.test" || string(m.Body) != body {
		t.Errorf("remote got MAIL FROM %q RCPT %q body %q", m.From, m.Rcpts, m.Body)
	}
	if msgs := e.mailbox("bob@remote.test", ""); len(msgs) != 0 {
		t.Error("a remote recipient was written to a Maildir")
	}
}

// A remote server refusing the whole message at DATA fails every
// recipient it had accepted, permanently or temporarily as it said.
func TestRemoteDataReply(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for i, c := range []struct {
		code int
		enh  [3]int
		res  queue.Result
	}{
		{554, [3]int{5, 7, 1}, queue.Permanent},
		{452, [3]int{4, 3, 1}, queue.Temporary},
	} {
		domain := fmt.Sprintf("data%d.test", i)
		mx := e.mx(domain, fmt.Sprintf("127.0.0.%d", 3+i))
		mx.SetDataReply(c.code, c.enh, "not now")
		got := e.deliver(&store.Message{Sender: "alice@example.test"}, domain, body, "a@"+domain, "b@"+domain)
		for r, a := range got {
			wantAttempt(t, r, a, c.res, c.code, smtp.EnhancedCode(c.enh))
		}
	}
}
