package delivery_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// env is one test's world: a DNS server and a port P that every remote MX
// of the test listens on (at 127.0.0.x:P). Holding 127.0.0.1:P keeps P
// unique among parallel tests.
type env struct {
	t    *testing.T
	dns  *testdns.Server
	res  resolve.Resolver
	port int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := testdns.Start(t)
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dns: d, res: r, port: ln.Addr().(*net.TCPAddr).Port}
}

// mx starts a remote MX named host at ip:P and publishes its A record.
func (e *env) mx(host, ip string, cfg testmx.Config) *testmx.Server {
	e.t.Helper()
	s := testmx.Start(e.t, fmt.Sprintf("%s:%d", ip, e.port), cfg)
	e.dns.AddA(host, ip)
	return s
}

func (e *env) client(mod func(*delivery.Config)) *delivery.Client {
	cfg := delivery.Config{
		HELO:           "out.herald.test",
		Port:           e.port,
		ConnectTimeout: time.Second,
		CommandTimeout: 2 * time.Second,
		DataTimeout:    2 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	c := delivery.New(cfg, e.res, nil)
	e.t.Cleanup(c.Close)
	return c
}

const body = "Subject: hi\r\n\r\nhello\r\n.leading dot\r\n"

func request(domain string, rcpts ...string) *delivery.Request {
	req := &delivery.Request{
		MessageID: "m1",
		Sender:    "alice@herald.test",
		Domain:    domain,
		Size:      int64(len(body)),
		Body: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(body)), nil
		},
	}
	for i, r := range rcpts {
		req.Recipients = append(req.Recipients, delivery.Recipient{ID: int64(i + 1), Address: r})
	}
	return req
}

func deliver(t *testing.T, c *delivery.Client, req *delivery.Request) []delivery.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := c.Deliver(ctx, req)
	if len(res) != len(req.Recipients) {
		t.Fatalf("got %d results for %d recipients", len(res), len(req.Recipients))
	}
	for i, r := range res {
		if r.RecipientID != req.Recipients[i].ID {
			t.Fatalf("result %d is for recipient %d, want %d", i, r.RecipientID, req.Recipients[i].ID)
		}
	}
	return res
}

func expect(t *testing.T, r delivery.Result, st delivery.Status, code int, enh smtp.EnhancedCode) {
	t.Helper()
	if r.Status != st || r.Code != code || r.Enhanced != enh {
		t.Fatalf("result = %v %d %s %q (remote %q), want %v %d %s", r.Status, r.Code, r.Enhanced, r.Text, r.RemoteMTA, st, code, enh)
	}
}

func TestMXPreferenceFirstDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.dns.AddMX("example.test", "mx1.example.test", 10)
	e.dns.AddMX("example.test", "mx2.example.test", 20)
	e.dns.AddA("mx1.example.test", "127.0.0.2") // nothing listens there
	mx2 := e.mx("mx2.example.test", "127.0.0.3", testmx.Config{})
	c := e.client(nil)

	res := deliver(t, c, request("example.test", "bob@example.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if res[0].RemoteMTA != "mx2.example.test[127.0.0.3]" || res[0].TLS != "none" {
		t.Fatalf("remote %q tls %q", res[0].RemoteMTA, res[0].TLS)
	}
	msgs := mx2.WaitMessages(t, 1, time.Second)
	m := msgs[0]
	if m.From != "alice@herald.test" || len(m.Rcpts) != 1 || m.Rcpts[0] != "bob@example.test" {
		t.Fatalf("envelope %q -> %q", m.From, m.Rcpts)
	}
	if string(m.Body) != body {
		t.Fatalf("body %q, want %q", m.Body, body)
	}
	if m.Helo != "out.herald.test" || m.MailOpts.Size != int64(len(body)) || m.MailOpts.Body != gosmtp.Body8BitMIME {
		t.Fatalf("helo %q size %d body %q", m.Helo, m.MailOpts.Size, m.MailOpts.Body)
	}
}

func TestImplicitMX(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("plain.test", "127.0.0.2", testmx.Config{})
	res := deliver(t, e.client(nil), request("plain.test", "bob@plain.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if res[0].RemoteMTA != "plain.test[127.0.0.2]" {
		t.Fatalf("remote %q", res[0].RemoteMTA)
	}
	mx.WaitMessages(t, 1, time.Second)
}

func TestDNSOutcomes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.dns.SetNullMX("null.test")
	e.dns.AddA("null.test", "127.0.0.2")
	e.dns.SetServfail("broken.test")
	e.dns.AddMX("brokenmx.test", "mx.brokenmx.test", 10)
	e.dns.SetServfail("mx.brokenmx.test")
	c := e.client(nil)

	res := deliver(t, c, request("null.test", "a@null.test", "b@null.test"))
	for _, r := range res {
		expect(t, r, delivery.Permanent, 556, smtp.EnhancedCode{5, 1, 10})
	}
	res = deliver(t, c, request("nxdomain.test", "a@nxdomain.test"))
	expect(t, res[0], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 2})
	res = deliver(t, c, request("broken.test", "a@broken.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 4, 3})
	res = deliver(t, c, request("brokenmx.test", "a@brokenmx.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 4, 4})
}

func TestMixedRecipientsAndDSN(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.dns.AddMX("mixed.test", "mx.mixed.test", 10)
	mx := e.mx("mx.mixed.test", "127.0.0.2", testmx.Config{DSN: true})
	mx.SetRcptReply("later@mixed.test", 451, [3]int{4, 2, 0}, "mailbox busy")
	mx.SetRcptReply("gone@mixed.test", 550, [3]int{5, 1, 1}, "no such user")
	c := e.client(nil)

	req := request("mixed.test", "ok@mixed.test", "later@mixed.test", "gone@mixed.test")
	req.Ret, req.EnvID = "HDRS", "env+1"
	req.Recipients[0].Notify = "SUCCESS,FAILURE"
	req.Recipients[0].ORCPT = "rfc822;Orig@Mixed.test"
	res := deliver(t, c, req)
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	expect(t, res[1], delivery.Temporary, 451, smtp.EnhancedCode{4, 2, 0})
	expect(t, res[2], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	if res[2].Text != "no such user" || res[2].RemoteMTA != "mx.mixed.test[127.0.0.2]" {
		t.Fatalf("rejection text %q remote %q", res[2].Text, res[2].RemoteMTA)
	}
	m := mx.WaitMessages(t, 1, time.Second)[0]
	if len(m.Rcpts) != 1 || m.Rcpts[0] != "ok@mixed.test" {
		t.Fatalf("rcpts %q", m.Rcpts)
	}
	if m.MailOpts.Return != gosmtp.DSNReturnHeaders || m.MailOpts.EnvelopeID != "env+1" {
		t.Fatalf("MAIL DSN params: ret %q envid %q", m.MailOpts.Return, m.MailOpts.EnvelopeID)
	}
	ro := m.RcptOpts[0]
	if len(ro.Notify) != 2 || ro.Notify[0] != gosmtp.DSNNotifySuccess || ro.OriginalRecipient != "Orig@Mixed.test" {
		t.Fatalf("RCPT DSN params: %+v", ro)
	}

	// All recipients refused: no DATA, nothing recorded, results final.
	res = deliver(t, c, request("mixed.test", "later@mixed.test", "gone@mixed.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 2, 0})
	expect(t, res[1], delivery.Permanent, 550, smtp.EnhancedCode{5, 1, 1})
	// A third message still goes through on the same connection.
	deliver(t, c, request("mixed.test", "ok@mixed.test"))
	msgs := mx.WaitMessages(t, 2, time.Second)
	if len(msgs) != 2 || mx.Connections() != 1 {
		t.Fatalf("%d messages on %d connections, want 2 on 1", len(msgs), mx.Connections())
	}
}

func TestDataReplies(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("data.test", "127.0.0.2", testmx.Config{})
	c := e.client(nil)

	mx.SetDataReply(554, [3]int{5, 6, 0}, "content rejected")
	res := deliver(t, c, request("data.test", "a@data.test", "b@data.test"))
	for _, r := range res {
		expect(t, r, delivery.Permanent, 554, smtp.EnhancedCode{5, 6, 0})
	}
	mx.SetDataReply(452, [3]int{4, 3, 1}, "disk full")
	res = deliver(t, c, request("data.test", "a@data.test"))
	expect(t, res[0], delivery.Temporary, 452, smtp.EnhancedCode{4, 3, 1})
	if n := len(mx.Messages()); n != 0 {
		t.Fatalf("%d messages recorded, want 0", n)
	}
}

func TestSTARTTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("tls.test", "127.0.0.2", testmx.Config{STARTTLS: true, Hostnames: []string{"tls.test"}})

	res := deliver(t, e.client(func(c *delivery.Config) { c.RootCAs = mx.CertPool() }), request("tls.test", "a@tls.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "opportunistic TLS1.3 TLS_") || !strings.HasSuffix(res[0].TLS, "(verified)") {
		t.Fatalf("TLS = %q, want opportunistic TLS1.3 ... (verified)", res[0].TLS)
	}
	// Opportunistic TLS with an untrusted certificate: still encrypted.
	res = deliver(t, e.client(nil), request("tls.test", "a@tls.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasSuffix(res[0].TLS, "(unverified)") {
		t.Fatalf("TLS = %q, want unverified", res[0].TLS)
	}
	// RequireTLS refuses the unverified certificate.
	res = deliver(t, e.client(func(c *delivery.Config) { c.RequireTLS = true }), request("tls.test", "a@tls.test"))
	if res[0].Status != delivery.Temporary {
		t.Fatalf("RequireTLS with untrusted cert: %+v", res[0])
	}
	for _, m := range mx.WaitMessages(t, 2, time.Second) {
		if !m.TLS {
			t.Fatal("message received without TLS")
		}
	}
	if n := len(mx.Messages()); n != 2 {
		t.Fatalf("%d messages, want 2", n)
	}
}

func TestRequireTLSWithoutSTARTTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("plain.test", "127.0.0.2", testmx.Config{})
	res := deliver(t, e.client(func(c *delivery.Config) { c.RequireTLS = true }), request("plain.test", "a@plain.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 7, 4})
	if len(mx.Messages()) != 0 {
		t.Fatal("message sent in clear despite RequireTLS")
	}
	if res[0].RemoteMTA != "" {
		t.Errorf("our own TLS refusal attributed to %q", res[0].RemoteMTA)
	}
}

func TestFaults(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		stage testmx.Stage
		fault testmx.Fault
		code  int
		enh   smtp.EnhancedCode
	}{
		{"drop mid-DATA", testmx.StageData, testmx.FaultDrop, 451, smtp.EnhancedCode{4, 4, 2}},
		{"421 after DATA", testmx.StageData, testmx.Fault421, 421, smtp.EnhancedCode{4, 3, 2}},
		{"hang after DATA", testmx.StageData, testmx.FaultHang, 451, smtp.EnhancedCode{4, 4, 2}},
		{"garbage after DATA", testmx.StageData, testmx.FaultGarbage, 451, smtp.EnhancedCode{4, 4, 2}},
		{"drop at RCPT", testmx.StageRcpt, testmx.FaultDrop, 451, smtp.EnhancedCode{4, 4, 2}},
		{"421 at MAIL", testmx.StageMail, testmx.Fault421, 421, smtp.EnhancedCode{4, 3, 2}},
		{"hang at greeting", testmx.StageGreeting, testmx.FaultHang, 451, smtp.EnhancedCode{4, 4, 2}},
		{"garbage greeting", testmx.StageGreeting, testmx.FaultGarbage, 451, smtp.EnhancedCode{4, 4, 2}},
		{"drop at EHLO", testmx.StageEHLO, testmx.FaultDrop, 451, smtp.EnhancedCode{4, 4, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			mx := e.mx("fault.test", "127.0.0.2", testmx.Config{})
			mx.SetFault(tc.stage, tc.fault)
			c := e.client(func(c *delivery.Config) {
				c.CommandTimeout, c.DataTimeout = 300*time.Millisecond, 300*time.Millisecond
			})
			start := time.Now()
			res := deliver(t, c, request("fault.test", "a@fault.test", "b@fault.test"))
			for _, r := range res {
				expect(t, r, delivery.Temporary, tc.code, tc.enh)
			}
			if el := time.Since(start); el > 2*time.Second {
				t.Fatalf("took %v", el)
			}
			if len(mx.Messages()) != 0 {
				t.Fatal("server recorded a message")
			}
		})
	}
}

func Test421GreetingNextMX(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.dns.AddMX("busy.test", "mx1.busy.test", 10)
	e.dns.AddMX("busy.test", "mx2.busy.test", 20)
	mx1 := e.mx("mx1.busy.test", "127.0.0.2", testmx.Config{})
	mx1.SetFault(testmx.StageGreeting, testmx.Fault421)
	mx2 := e.mx("mx2.busy.test", "127.0.0.3", testmx.Config{})
	res := deliver(t, e.client(nil), request("busy.test", "a@busy.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if mx1.Connections() != 1 || len(mx2.WaitMessages(t, 1, time.Second)) != 1 {
		t.Fatalf("mx1 connections %d, mx2 messages %d", mx1.Connections(), len(mx2.Messages()))
	}

	// Both busy: temporary with the last greeting.
	mx2.SetFault(testmx.StageGreeting, testmx.Fault421)
	res = deliver(t, e.client(nil), request("busy.test", "a@busy.test"))
	expect(t, res[0], delivery.Temporary, 421, smtp.EnhancedCode{4, 3, 2})
	// The refusal is the remote's (the throttle counts it), not ours.
	if res[0].RemoteMTA != "mx2.busy.test[127.0.0.3]" {
		t.Errorf("greeting refusal RemoteMTA %q, want mx2.busy.test[127.0.0.3]", res[0].RemoteMTA)
	}
}

func TestConnectionReuse(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("reuse.test", "127.0.0.2", testmx.Config{STARTTLS: true})
	c := e.client(func(c *delivery.Config) { c.MaxMessagesPerConnection = 2 })
	for i := range 3 {
		res := deliver(t, c, request("reuse.test", fmt.Sprintf("r%d@reuse.test", i)))
		expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
		if !strings.Contains(res[0].TLS, "TLS1.3") {
			t.Fatalf("message %d: TLS %q", i, res[0].TLS)
		}
	}
	msgs := mx.WaitMessages(t, 3, time.Second)
	if got := []int{msgs[0].Conn, msgs[1].Conn, msgs[2].Conn}; got[0] != 1 || got[1] != 1 || got[2] != 2 {
		t.Fatalf("connections per message %v, want [1 1 2]", got)
	}
	if n := mx.Connections(); n != 2 {
		t.Fatalf("%d connections, want 2", n)
	}
}

func TestReuseAfterRemoteClosedIdle(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("stale.test", "127.0.0.2", testmx.Config{})
	c := e.client(nil)
	deliver(t, c, request("stale.test", "a@stale.test"))
	mx.Close() // the pooled connection is now dead
	mx2 := testmx.Start(t, mx.Addr(), testmx.Config{})
	res := deliver(t, c, request("stale.test", "b@stale.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	mx2.WaitMessages(t, 1, time.Second)
}

func TestStaticRoute(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := testmx.Start(t, fmt.Sprintf("127.0.0.2:%d", e.port), testmx.Config{})
	e.dns.AddMX("routed.test", "elsewhere.test", 10) // ignored
	c := e.client(func(c *delivery.Config) {
		c.Routes = map[string]string{"routed.test": mx.Addr()}
		c.Port = 1 // MX delivery would fail
	})
	res := deliver(t, c, request("routed.test", "a@routed.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if res[0].RemoteMTA != "127.0.0.2[127.0.0.2]" {
		t.Fatalf("remote %q", res[0].RemoteMTA)
	}
	mx.WaitMessages(t, 1, time.Second)
}

func TestSmarthostAuthSTARTTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	relay := e.mx("relay.test", "127.0.0.2", testmx.Config{
		STARTTLS: true, Hostnames: []string{"relay.test"}, AuthUser: "herald", AuthPass: "s3cret",
	})
	smarthost := fmt.Sprintf("relay.test:%d", e.port)
	c := e.client(func(c *delivery.Config) {
		c.Smarthost, c.SmarthostUsername, c.SmarthostPassword = smarthost, "herald", "s3cret"
		c.RootCAs = relay.CertPool()
	})
	res := deliver(t, c, request("anywhere.example", "x@anywhere.example"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasSuffix(res[0].TLS, "(verified)") {
		t.Fatalf("TLS %q", res[0].TLS)
	}
	m := relay.WaitMessages(t, 1, time.Second)[0]
	if m.AuthUser != "herald" || !m.TLS {
		t.Fatalf("auth user %q tls %v", m.AuthUser, m.TLS)
	}

	bad := e.client(func(c *delivery.Config) {
		c.Smarthost, c.SmarthostUsername, c.SmarthostPassword = smarthost, "herald", "wrong"
		c.RootCAs = relay.CertPool()
	})
	res = deliver(t, bad, request("anywhere.example", "x@anywhere.example"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 7, 8})
}

func TestPerDestinationLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("slow.test", "127.0.0.2", testmx.Config{})
	mx.SetFault(testmx.StageMail, testmx.FaultHang)
	c := e.client(func(c *delivery.Config) { c.MaxPerDestination, c.CommandTimeout = 1, time.Second })

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.Deliver(context.Background(), request("slow.test", "a@slow.test"))
	}()
	mx.WaitConnections(t, 1, 2*time.Second) // the first delivery holds the slot
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	res := c.Deliver(ctx, request("slow.test", "b@slow.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 4, 5})
	if mx.Connections() != 1 {
		t.Fatalf("%d connections despite the limit of 1", mx.Connections())
	}
	wg.Wait()
}

func TestBodyErrorAndSMTPUTF8(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	mx := e.mx("local.test", "127.0.0.2", testmx.Config{})
	c := e.client(nil)

	req := request("local.test", "a@local.test")
	req.Body = func() (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(strings.NewReader("Subject: x\r\n"), errReader{})), nil
	}
	res := deliver(t, c, req)
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 3, 0})

	req = request("local.test", "a@local.test")
	req.SMTPUTF8 = true
	res = deliver(t, c, req)
	expect(t, res[0], delivery.Permanent, 550, smtp.EnhancedCode{5, 6, 7})
	if len(mx.Messages()) != 0 {
		t.Fatal("a message was recorded")
	}
	// The connection survives the refused SMTPUTF8 message.
	deliver(t, c, request("local.test", "a@local.test"))
	mx.WaitMessages(t, 1, time.Second)
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, fmt.Errorf("disk error") }

func TestEqualPreferenceSpread(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	e.dns.AddMX("spread.test", "a.spread.test", 10)
	e.dns.AddMX("spread.test", "b.spread.test", 10)
	e.dns.AddMX("spread.test", "c.spread.test", 20)
	a := e.mx("a.spread.test", "127.0.0.2", testmx.Config{})
	b := e.mx("b.spread.test", "127.0.0.3", testmx.Config{})
	cc := e.mx("c.spread.test", "127.0.0.4", testmx.Config{})
	c := e.client(func(c *delivery.Config) { c.IdleTimeout = -1 }) // no reuse
	const n = 20
	for range n {
		expect(t, deliver(t, c, request("spread.test", "x@spread.test"))[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	}
	na, nb := len(a.Messages()), len(b.Messages())
	if na == 0 || nb == 0 || na+nb != n || len(cc.Messages()) != 0 {
		t.Fatalf("messages a=%d b=%d c=%d: want both equal-preference MXes used, never the backup", na, nb, len(cc.Messages()))
	}
}

func TestIPv6MX(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skip("no IPv6 loopback:", err)
	}
	ln.Close()
	e := newEnv(t)
	e.dns.AddMX("six.test", "mx.six.test", 10)
	e.dns.AddA("mx.six.test", "127.0.0.9") // refused: the IPv6 address is tried next
	e.dns.AddAAAA("mx.six.test", "::1")
	mx := testmx.Start(t, fmt.Sprintf("[::1]:%d", e.port), testmx.Config{})
	res := deliver(t, e.client(nil), request("six.test", "x@six.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if res[0].RemoteMTA != "mx.six.test[::1]" {
		t.Fatalf("remote %q", res[0].RemoteMTA)
	}
	mx.WaitMessages(t, 1, time.Second)
}

// brokenTLSServer is a minimal SMTP server on 127.0.0.2:P that offers
// STARTTLS and then answers it with startTLSReply; for "220" it sends bytes
// that are not TLS. It records whether a message arrived in clear.
func brokenTLSServer(t *testing.T, port int, startTLSReply string) (conns *atomic.Int32, got chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.2:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	conns, got = new(atomic.Int32), make(chan string, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				r := bufio.NewReader(c)
				fmt.Fprintf(c, "220 broken ESMTP\r\n")
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					cmd := strings.ToUpper(strings.TrimSpace(line))
					switch {
					case strings.HasPrefix(cmd, "EHLO"):
						fmt.Fprintf(c, "250-broken\r\n250 STARTTLS\r\n")
					case cmd == "STARTTLS":
						if startTLSReply == "220" {
							fmt.Fprintf(c, "220 go ahead\r\nthis is no TLS record at all\r\n")
							return
						}
						fmt.Fprintf(c, "%s\r\n", startTLSReply)
					case cmd == "DATA":
						fmt.Fprintf(c, "354 go\r\n")
						var sb strings.Builder
						for {
							l, err := r.ReadString('\n')
							if err != nil {
								return
							}
							if l == ".\r\n" {
								break
							}
							sb.WriteString(strings.TrimPrefix(l, ".")) // undo dot-stuffing
						}
						got <- sb.String()
						fmt.Fprintf(c, "250 2.0.0 ok\r\n")
					case cmd == "QUIT":
						fmt.Fprintf(c, "221 bye\r\n")
						return
					default:
						fmt.Fprintf(c, "250 ok\r\n")
					}
				}
			}()
		}
	}()
	return conns, got
}

func TestOpportunisticTLSFallback(t *testing.T) {
	t.Parallel()
	for _, reply := range []string{"454 4.7.0 TLS not available", "220"} {
		t.Run(reply, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			e.dns.AddA("broken.test", "127.0.0.2")
			conns, got := brokenTLSServer(t, e.port, reply)
			res := deliver(t, e.client(nil), request("broken.test", "a@broken.test"))
			expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
			if res[0].TLS != "none" {
				t.Fatalf("TLS %q", res[0].TLS)
			}
			if b := <-got; b != body {
				t.Fatalf("body %q", b)
			}
			want := int32(1)
			if reply == "220" {
				want = 2 // the failed handshake costs a connection
			}
			if n := conns.Load(); n != want {
				t.Fatalf("%d connections, want %d", n, want)
			}
			// With RequireTLS the message is never sent in clear.
			res = deliver(t, e.client(func(c *delivery.Config) { c.RequireTLS = true }), request("broken.test", "a@broken.test"))
			if res[0].Status != delivery.Temporary {
				t.Fatalf("RequireTLS: %+v", res[0])
			}
			select {
			case b := <-got:
				t.Fatalf("message sent in clear despite RequireTLS: %q", b)
			default:
			}
		})
	}
}

func TestSmarthostImplicitTLS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	relay := e.mx("relay.test", "127.0.0.2", testmx.Config{
		ImplicitTLS: true, Hostnames: []string{"relay.test"}, AuthUser: "u", AuthPass: "p",
	})
	c := e.client(func(c *delivery.Config) {
		c.Smarthost, c.SmarthostTLS = fmt.Sprintf("relay.test:%d", e.port), "implicit"
		c.SmarthostUsername, c.SmarthostPassword = "u", "p"
		c.RootCAs = relay.CertPool()
	})
	res := deliver(t, c, request("anywhere.example", "x@anywhere.example"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasSuffix(res[0].TLS, "(verified)") {
		t.Fatalf("TLS %q", res[0].TLS)
	}
	if m := relay.WaitMessages(t, 1, time.Second)[0]; m.AuthUser != "u" || !m.TLS {
		t.Fatalf("auth %q tls %v", m.AuthUser, m.TLS)
	}
	// An untrusted certificate is refused for the smarthost.
	c2 := e.client(func(c *delivery.Config) {
		c.Smarthost, c.SmarthostTLS = fmt.Sprintf("relay.test:%d", e.port), "implicit"
	})
	res = deliver(t, c2, request("anywhere.example", "x@anywhere.example"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 7, 5})
}
