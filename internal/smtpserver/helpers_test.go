package smtpserver

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
)

var (
	certOnce sync.Once
	testCert tls.Certificate
	testPool *x509.CertPool
)

// testTLS returns a server config with a self-signed certificate for
// localhost and 127.0.0.1, and a client config trusting it.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	certOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1),
			Subject:      pkix.Name{CommonName: "localhost"},
			DNSNames:     []string{"localhost"},
			IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			panic(err)
		}
		testCert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		c, _ := x509.ParseCertificate(der)
		testPool = x509.NewCertPool()
		testPool.AddCert(c)
	})
	return &tls.Config{Certificates: []tls.Certificate{testCert}},
		&tls.Config{RootCAs: testPool, ServerName: "localhost"}
}

type delivered struct {
	env  Envelope
	conn Conn
	body string
}

// fakeBackend records calls and keeps delivered bodies in memory.
type fakeBackend struct {
	mu         sync.Mutex
	connectErr error
	onConnect  func() // called at the start of Connect, if set
	users      map[string]string
	rejectRcpt map[string]bool
	mails      []Envelope
	delivers   int
	messages   []delivered
	// readErrs holds the error each failed Deliver got from the body (a
	// clean io.EOF on a cut-off body would have committed it).
	readErrs []error
}

func newBackend() *fakeBackend {
	return &fakeBackend{users: map[string]string{"alice": "secret"}, rejectRcpt: map[string]bool{}}
}

func (b *fakeBackend) Connect(ctx context.Context, c *Conn) error {
	if b.onConnect != nil {
		b.onConnect()
	}
	return b.connectErr
}

func (b *fakeBackend) Authenticate(ctx context.Context, c *Conn, user, pass string) error {
	if c.TLS == nil {
		panic("Authenticate without TLS")
	}
	if p, ok := b.users[user]; ok && p == pass {
		return nil
	}
	e := smtp.ErrAuthFailed
	return &e
}

func (b *fakeBackend) Mail(ctx context.Context, c *Conn, env *Envelope) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.mails = append(b.mails, *env)
	return nil
}

func (b *fakeBackend) Rcpt(ctx context.Context, c *Conn, env *Envelope, r Rcpt) error {
	if b.rejectRcpt[r.Address] {
		e := smtp.ErrNoSuchUser
		return &e
	}
	return nil
}

func (b *fakeBackend) Deliver(ctx context.Context, c *Conn, env *Envelope, body io.Reader) (string, error) {
	b.mu.Lock()
	b.delivers++
	b.mu.Unlock()
	data, err := io.ReadAll(body)
	if err != nil {
		b.mu.Lock()
		b.readErrs = append(b.readErrs, err)
		b.mu.Unlock()
		return "", err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	e := *env
	e.Recipients = append([]Rcpt(nil), env.Recipients...)
	b.messages = append(b.messages, delivered{env: e, conn: *c, body: string(data)})
	return fmt.Sprintf("Q%d", len(b.messages)), nil
}

// failed returns the errors that ended the Deliver calls that did not
// store a message.
func (b *fakeBackend) failed() []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]error(nil), b.readErrs...)
}

func (b *fakeBackend) snapshot() (delivers int, msgs []delivered, mails []Envelope) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.delivers, append([]delivered(nil), b.messages...), append([]Envelope(nil), b.mails...)
}

// startServer runs a server on 127.0.0.1 and stops it at the end of the
// test, failing the test if a panic was recovered.
func startServer(t testing.TB, cfg Config, b Backend) (*Server, string) {
	t.Helper()
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.test"
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 5 * time.Second
	}
	if cfg.Logger == nil && os.Getenv("SMTPSERVER_LOG") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	srv := New(cfg, b)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		if p := srv.Stats().Panics; p != 0 {
			t.Errorf("%d panics recovered", p)
		}
	})
	return srv, l.Addr().String()
}

// client is a minimal SMTP client for tests.
type client struct {
	t    testing.TB
	conn net.Conn
	r    *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

func dialTLS(t testing.TB, addr string, cfg *tls.Config) *client {
	t.Helper()
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, conn: c, r: bufio.NewReader(c)}
}

func (c *client) send(s string) {
	c.t.Helper()
	if _, err := io.WriteString(c.conn, s); err != nil {
		c.t.Fatalf("write %q: %v", s, err)
	}
}

// reply reads one (possibly multi-line) reply and returns its lines joined
// with "\n".
func (c *client) reply() string {
	c.t.Helper()
	var lines []string
	for {
		l, err := c.r.ReadString('\n')
		if err != nil {
			c.t.Fatalf("reading reply (after %q): %v", lines, err)
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// cmd sends a command line and checks that the reply starts with want.
func (c *client) cmd(line, want string) string {
	c.t.Helper()
	c.send(line + "\r\n")
	r := c.reply()
	if !strings.HasPrefix(r, want) {
		c.t.Fatalf("%q: got %q, want prefix %q", line, r, want)
	}
	return r
}

func (c *client) expect(want string) string {
	c.t.Helper()
	r := c.reply()
	if !strings.HasPrefix(r, want) {
		c.t.Fatalf("got %q, want prefix %q", r, want)
	}
	return r
}

// expectClosed checks that the server closed the connection.
func (c *client) expectClosed() {
	c.t.Helper()
	if l, err := c.r.ReadString('\n'); err == nil || !errors.Is(err, io.EOF) && !isReset(err) {
		c.t.Fatalf("connection still open: read %q, %v", l, err)
	}
}

func isReset(err error) bool {
	var ne *net.OpError
	return errors.As(err, &ne)
}

func (c *client) startTLS(cfg *tls.Config) {
	c.t.Helper()
	c.cmd("STARTTLS", "220 2.0.0")
	c.upgrade(cfg)
}

// upgrade runs the client TLS handshake on the connection.
func (c *client) upgrade(cfg *tls.Config) *client {
	c.t.Helper()
	tc := tls.Client(c.conn, cfg)
	if err := tc.Handshake(); err != nil {
		c.t.Fatal(err)
	}
	c.conn, c.r = tc, bufio.NewReader(tc)
	return c
}

func dialErr(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return c, err
}

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// gate is a ConnGate with a total cap, for tests.
type gate struct {
	mu    sync.Mutex
	max   int
	inUse int
}

func (g *gate) Acquire(ip netip.Addr) (func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.inUse >= g.max {
		return nil, errors.New("too many connections")
	}
	g.inUse++
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.inUse--
			g.mu.Unlock()
		})
	}, nil
}

func (g *gate) used() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.inUse
}

// waitFor polls cond until it holds or the bounded wait ends.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
