// Package testmx is a scriptable remote SMTP server for tests. It listens on
// a chosen loopback address (e.g. "127.0.0.2:25" or "127.0.0.1:0"), records
// every accepted transaction, and can be told to answer chosen recipients or
// DATA with chosen replies, to offer STARTTLS with a generated certificate,
// to require AUTH PLAIN, or to misbehave at a chosen stage (421, hang, send
// garbage, drop the connection).
package testmx

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// Stage is a point of the SMTP dialogue where a fault can be injected.
type Stage int

// Stages at which SetFault can act. StageData acts after the 354 reply,
// while or after the body is read.
const (
	StageGreeting Stage = iota + 1
	StageEHLO
	StageMail
	StageRcpt
	StageData
)

// Fault is a misbehaviour.
type Fault int

// Faults. FaultDrop closes the TCP connection without a reply (at
// StageData after reading a few bytes of the body); Fault421 sends a 421
// reply and closes; FaultHang never answers; FaultGarbage sends a line that
// is not SMTP and then stays silent.
const (
	FaultNone Fault = iota
	FaultDrop
	Fault421
	FaultHang
	FaultGarbage
)

// Config configures a Server.
type Config struct {
	// Hostnames the TLS certificate is valid for (default "localhost").
	Hostnames []string
	// STARTTLS offers STARTTLS with a certificate generated for Hostnames.
	STARTTLS bool
	// ImplicitTLS makes every connection start with a TLS handshake (like
	// port 465), with the same generated certificate.
	ImplicitTLS bool
	// Certificate, when set, is served (with its chain) for STARTTLS or
	// implicit TLS instead of a generated one; CertPool then returns nil.
	Certificate *tls.Certificate
	// DSN and SMTPUTF8 advertise those extensions.
	DSN, SMTPUTF8 bool
	// AuthUser and AuthPass, when set, offer AUTH PLAIN (after TLS only)
	// and require it before MAIL.
	AuthUser, AuthPass string
	// DataDelay makes the server wait that long after the body before it
	// replies: a slow remote, whose transactions overlap (PeakTransactions).
	DataDelay time.Duration
}

// Message is one accepted transaction.
type Message struct {
	Conn     int // 1-based number of the TCP connection it came on
	Helo     string
	From     string
	MailOpts gosmtp.MailOptions
	Rcpts    []string
	RcptOpts []gosmtp.RcptOptions
	Body     []byte
	TLS      bool
	AuthUser string
}

// Server is a running test MX.
type Server struct {
	t    testing.TB
	cfg  Config
	ln   net.Listener
	srv  *gosmtp.Server
	pool *x509.CertPool
	// tlsConfig serves STARTTLS or implicit TLS.
	tlsConfig *tls.Config
	done      chan struct{}
	ch        *chanListener

	closeOnce sync.Once

	mu        sync.Mutex
	conns     int
	rcptReply map[string]*gosmtp.SMTPError
	dataReply *gosmtp.SMTPError
	faults    map[Stage]Fault
	msgs      []Message
	changed   chan struct{}
	rawConns  []net.Conn
	active    int // transactions between MAIL and their end
	peak      int
}

// Start listens on addr and serves until the test ends.
func Start(t testing.TB, addr string, cfg Config) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("testmx: listen %s: %v", addr, err)
	}
	s := &Server{
		t: t, cfg: cfg, ln: ln, done: make(chan struct{}),
		rcptReply: map[string]*gosmtp.SMTPError{},
		faults:    map[Stage]Fault{},
		changed:   make(chan struct{}),
	}
	s.ch = &chanListener{addr: ln.Addr(), conns: make(chan net.Conn), done: s.done}
	s.srv = gosmtp.NewServer(gosmtp.BackendFunc(s.newSession))
	s.srv.Domain = "testmx.local"
	s.srv.ReadTimeout = 10 * time.Second
	s.srv.WriteTimeout = 10 * time.Second
	s.srv.EnableDSN = cfg.DSN
	s.srv.EnableSMTPUTF8 = cfg.SMTPUTF8
	s.srv.ErrorLog = log.New(io.Discard, "", 0)
	if cfg.STARTTLS || cfg.ImplicitTLS {
		names := cfg.Hostnames
		if len(names) == 0 {
			names = []string{"localhost"}
		}
		var cert tls.Certificate
		if cfg.Certificate != nil {
			cert = *cfg.Certificate
		} else {
			cert, s.pool = generateCert(t, names)
		}
		s.tlsConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		if cfg.STARTTLS {
			s.srv.TLSConfig = s.tlsConfig
		}
	}
	go s.srv.Serve(s.ch) //nolint:errcheck // ends at Close
	go s.acceptLoop()
	t.Cleanup(s.Close)
	return s
}

// Close stops the server and closes its connections; it is also called
// when the test ends.
func (s *Server) Close() {
	s.closeOnce.Do(s.close)
}

func (s *Server) close() {
	close(s.done)
	s.ln.Close()
	s.srv.Close()
	s.mu.Lock()
	for _, c := range s.rawConns {
		c.Close()
	}
	s.mu.Unlock()
}

// Addr returns the listening address ("127.0.0.2:25").
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Port returns the listening port.
func (s *Server) Port() int { return s.ln.Addr().(*net.TCPAddr).Port }

// CertPool returns a pool holding the certificate served with STARTTLS
// (nil without STARTTLS), for clients that should verify it.
func (s *Server) CertPool() *x509.CertPool { return s.pool }

// Connections returns how many TCP connections were accepted so far.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// PeakTransactions returns the most transactions that were in progress
// at once (from an accepted MAIL to the reply after DATA, RSET or the end
// of the connection), over every connection.
func (s *Server) PeakTransactions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak
}

// SetRcptReply makes RCPT TO:<rcpt> answer with code, enhanced code and
// text. Code 0 restores the default 250.
func (s *Server) SetRcptReply(rcpt string, code int, enhanced [3]int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == 0 {
		delete(s.rcptReply, strings.ToLower(rcpt))
		return
	}
	s.rcptReply[strings.ToLower(rcpt)] = &gosmtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: text}
}

// SetDataReply makes the reply after DATA's final dot code (a non-2xx code
// means the message is not recorded). Code 0 restores the default 250.
func (s *Server) SetDataReply(code int, enhanced [3]int, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == 0 {
		s.dataReply = nil
		return
	}
	s.dataReply = &gosmtp.SMTPError{Code: code, EnhancedCode: enhanced, Message: text}
}

// SetFault makes every later connection misbehave at stage (FaultNone
// clears it).
func (s *Server) SetFault(stage Stage, f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults[stage] = f
}

func (s *Server) fault(stage Stage) Fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.faults[stage]
}

// Messages returns a copy of the transactions accepted so far.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// WaitConnections waits until at least n TCP connections were accepted;
// the test fails after timeout.
func (s *Server) WaitConnections(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	s.wait(t, timeout, func() bool { return s.conns >= n }, "connections")
}

// wait blocks until cond (called with s.mu held) is true.
func (s *Server) wait(t testing.TB, timeout time.Duration, cond func() bool, what string) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		if cond() {
			s.mu.Unlock()
			return
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-timer.C:
			t.Fatalf("testmx %s: still waiting for %s after %v", s.Addr(), what, timeout)
		}
	}
}

// WaitMessages waits until at least n messages were accepted and returns
// them; the test fails after timeout.
func (s *Server) WaitMessages(t testing.TB, n int, timeout time.Duration) []Message {
	t.Helper()
	s.wait(t, timeout, func() bool { return len(s.msgs) >= n }, fmt.Sprintf("%d messages", n))
	return s.Messages()
}

func (s *Server) record(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	close(s.changed)
	s.changed = make(chan struct{})
}

// idConn numbers accepted connections.
type idConn struct {
	net.Conn
	id int
}

func (s *Server) acceptLoop() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns++
		id := s.conns
		close(s.changed)
		s.changed = make(chan struct{})
		f := s.faults[StageGreeting]
		if f != FaultNone {
			s.rawConns = append(s.rawConns, c)
		}
		s.mu.Unlock()
		if f != FaultNone {
			go s.misbehave(c, f)
			continue
		}
		var nc net.Conn = &idConn{Conn: c, id: id}
		if s.cfg.ImplicitTLS {
			nc = tls.Server(nc, s.tlsConfig)
		}
		select {
		case s.ch.conns <- nc:
		case <-s.done:
			c.Close()
			return
		}
	}
}

// misbehave applies fault f on raw connection c.
func (s *Server) misbehave(c net.Conn, f Fault) {
	switch f {
	case FaultDrop:
		c.Close()
		return
	case Fault421:
		io.WriteString(c, "421 4.3.2 testmx: service not available\r\n") //nolint:errcheck
		c.Close()
		return
	case FaultGarbage:
		io.WriteString(c, "this is not smtp\x00\r\n") //nolint:errcheck
	}
	<-s.done
	c.Close()
}

// errFault is returned to go-smtp after the connection was already handled.
var errFault = errors.New("testmx: injected fault")

// applyFault injects the fault scheduled for stage on the go-smtp
// connection; it returns true if one was applied.
func (s *Server) applyFault(c *gosmtp.Conn, stage Stage) bool {
	f := s.fault(stage)
	if f == FaultNone {
		return false
	}
	nc := c.Conn()
	switch f {
	case FaultDrop:
		rawConn(nc).Close()
	case Fault421:
		io.WriteString(nc, "421 4.3.2 testmx: closing\r\n") //nolint:errcheck
		rawConn(nc).Close()
	case FaultGarbage:
		io.WriteString(nc, "garbage garbage\r\n") //nolint:errcheck
		<-s.done
	case FaultHang:
		<-s.done
	}
	return true
}

func rawConn(nc net.Conn) net.Conn {
	if tc, ok := nc.(*tls.Conn); ok {
		return tc.NetConn()
	}
	return nc
}

func connID(nc net.Conn) int {
	if ic, ok := rawConn(nc).(*idConn); ok {
		return ic.id
	}
	return 0
}

func (s *Server) newSession(c *gosmtp.Conn) (gosmtp.Session, error) {
	if s.applyFault(c, StageEHLO) {
		return nil, errFault
	}
	_, isTLS := c.TLSConnectionState()
	return &session{s: s, c: c, msg: Message{Conn: connID(c.Conn()), Helo: c.Hostname(), TLS: isTLS}}, nil
}

type session struct {
	s      *Server
	c      *gosmtp.Conn
	user   string
	msg    Message
	active bool // counted in Server.active
}

// begin counts a transaction in progress; end stops counting it.
func (ss *session) begin() {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if !ss.active {
		ss.active = true
		ss.s.active++
		ss.s.peak = max(ss.s.peak, ss.s.active)
	}
}

func (ss *session) end() {
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	if ss.active {
		ss.active = false
		ss.s.active--
	}
}

func (ss *session) AuthMechanisms() []string {
	if ss.s.cfg.AuthUser == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (ss *session) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain || ss.s.cfg.AuthUser == "" {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != ss.s.cfg.AuthUser || pass != ss.s.cfg.AuthPass || (identity != "" && identity != user) {
			return gosmtp.ErrAuthFailed
		}
		ss.user = user
		return nil
	}), nil
}

func (ss *session) Mail(from string, opts *gosmtp.MailOptions) error {
	if ss.s.applyFault(ss.c, StageMail) {
		return errFault
	}
	if ss.s.cfg.AuthUser != "" && ss.user == "" {
		return gosmtp.ErrAuthRequired
	}
	ss.msg.From = from
	if opts != nil {
		ss.msg.MailOpts = *opts
	}
	ss.begin()
	return nil
}

func (ss *session) Rcpt(to string, opts *gosmtp.RcptOptions) error {
	if ss.s.applyFault(ss.c, StageRcpt) {
		return errFault
	}
	ss.s.mu.Lock()
	rep := ss.s.rcptReply[strings.ToLower(to)]
	ss.s.mu.Unlock()
	if rep != nil {
		return rep
	}
	ss.msg.Rcpts = append(ss.msg.Rcpts, to)
	var o gosmtp.RcptOptions
	if opts != nil {
		o = *opts
	}
	ss.msg.RcptOpts = append(ss.msg.RcptOpts, o)
	return nil
}

func (ss *session) Data(r io.Reader) error {
	defer ss.end()
	if f := ss.s.fault(StageData); f != FaultNone {
		if f == FaultDrop {
			io.ReadFull(r, make([]byte, 8)) //nolint:errcheck
		} else {
			io.Copy(io.Discard, r) //nolint:errcheck
		}
		ss.s.applyFault(ss.c, StageData)
		return errFault
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, r); err != nil {
		return err
	}
	if d := ss.s.cfg.DataDelay; d > 0 {
		time.Sleep(d) // a slow remote
	}
	ss.s.mu.Lock()
	rep := ss.s.dataReply
	ss.s.mu.Unlock()
	if rep != nil {
		return rep
	}
	m := ss.msg
	m.Body = buf.Bytes()
	m.AuthUser = ss.user
	_, m.TLS = ss.c.TLSConnectionState()
	m.Rcpts = append([]string(nil), m.Rcpts...)
	m.RcptOpts = append([]gosmtp.RcptOptions(nil), m.RcptOpts...)
	ss.s.record(m)
	return nil
}

func (ss *session) Reset() {
	ss.end()
	ss.msg = Message{Conn: ss.msg.Conn, Helo: ss.msg.Helo, TLS: ss.msg.TLS}
}

func (ss *session) Logout() error {
	ss.end()
	return nil
}

// chanListener hands accepted connections to go-smtp.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// generateCert makes a self-signed ECDSA certificate for names (DNS names
// or IP literals) and a pool trusting it.
func generateCert(t testing.TB, names []string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testmx: key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testmx: certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("testmx: parse certificate: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}
