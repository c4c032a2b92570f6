// Package smtpserver runs Herald's SMTP listeners (MX on port 25,
// submission with STARTTLS on 587, implicit TLS on 465): the hostile-input
// front door of the server. It speaks the protocol, refuses clients that
// talk before the greeting, enforces every limit a client controls
// (connections, line and message sizes, recipients, junk commands, errors,
// timeouts) and reads message data strictly (package message); policy and
// storage are left to a Backend.
//
// The session engine is Herald's own rather than go-smtp's server: see
// doc.go for the reasons.
package smtpserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

// ConnGate admits or refuses new connections (total and per-IP caps). It is
// satisfied by *ratelimit.ConnLimiter. Acquire returns a release function
// to call once when the connection closes, or an error to refuse it.
type ConnGate interface {
	Acquire(ip netip.Addr) (release func(), err error)
}

// Config configures a Server. Zero values take the defaults documented on
// each field.
type Config struct {
	Hostname        string      // greeting, EHLO reply and Received "by"; default "localhost"
	Mode            Mode        // kind of listener
	TLSConfig       *tls.Config // nil: no STARTTLS, and AUTH is never offered
	MaxMessageBytes int64       // SIZE advertised and enforced; default 25 MiB
	MaxRecipients   int         // per message; default 100
	MaxLineLength   int         // command line limit including CRLF; default 512 (RFC 5321)
	Conns           ConnGate    // shared connection caps; nil admits every connection

	// MaxJunkCommands bounds the commands that move no mail: NOOP, RSET,
	// VRFY, HELP, EXPN and the other unimplemented commands, unknown
	// commands, a HELO/EHLO repeated without STARTTLS in between, and
	// recipients over MaxRecipients. One more is answered 421 4.7.0 and
	// the session closed. The count restarts at every accepted message, so
	// MAIL/RCPT/DATA/BDAT work never adds up. Default 1000.
	MaxJunkCommands int
	// MaxErrors bounds the error replies (4xx/5xx) before 421 4.7.0; it
	// also restarts at every accepted message. The 452 4.5.3 for
	// recipients over MaxRecipients is not an error (RFC 5321
	// §4.5.3.1.10). Default 10.
	MaxErrors int

	IdleTimeout time.Duration // waiting for a command; default 5 minutes (RFC 5321 §4.5.3.2)
	DataTimeout time.Duration // between bytes of DATA/BDAT content; default 3 minutes
	// SessionTimeout limits a session; default 30 minutes. It is enforced
	// between transactions: one in progress when it passes may take up to
	// SessionTimeout more to finish.
	SessionTimeout time.Duration

	MaxReceivedHeaders int // loop detection; default 100

	// PregreetWait is how long the server waits before the greeting for a
	// client that talks first (Postfix postscreen's pregreet test; see
	// pregreet.go). Such a client is answered 554 5.5.1 and disconnected.
	// The wait starts with the connection (after the TLS handshake in
	// ModeSubmissions), runs while Backend.Connect decides, and ends at
	// once when the client sends something. 0: no wait, but input already
	// received when the greeting is sent is still refused.
	PregreetWait time.Duration
	// PregreetTTL is how long a client (IPv4 address, IPv6 /64) that waited
	// out PregreetWait skips the wait; default 24 hours.
	PregreetTTL time.Duration
	// Clock tells the time for PregreetTTL; default the wall clock.
	Clock clock.Clock

	Logger *slog.Logger // default: discard

	// DescribeTLS formats a TLS connection for the Received header and logs;
	// default "TLS1.3 TLS_AES_128_GCM_SHA256".
	DescribeTLS func(*tls.ConnectionState) string
}

func (c *Config) setDefaults() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 25 << 20
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 100
	}
	if c.MaxLineLength <= 0 {
		c.MaxLineLength = 512
	}
	if c.MaxJunkCommands <= 0 {
		c.MaxJunkCommands = 1000
	}
	if c.MaxErrors <= 0 {
		c.MaxErrors = 10
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 5 * time.Minute
	}
	if c.DataTimeout <= 0 {
		c.DataTimeout = 3 * time.Minute
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = 30 * time.Minute
	}
	if c.MaxReceivedHeaders <= 0 {
		c.MaxReceivedHeaders = 100
	}
	if c.PregreetWait < 0 {
		c.PregreetWait = 0
	}
	if c.PregreetTTL <= 0 {
		c.PregreetTTL = 24 * time.Hour
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DescribeTLS == nil {
		c.DescribeTLS = DescribeTLS
	}
}

// DescribeTLS is the default Config.DescribeTLS: "TLS1.3 TLS_AES_128_GCM_SHA256".
func DescribeTLS(cs *tls.ConnectionState) string {
	v := tls.VersionName(cs.Version)
	if len(v) > 4 && v[:4] == "TLS " {
		v = "TLS" + v[4:]
	}
	return v + " " + tls.CipherSuiteName(cs.CipherSuite)
}

// Rejection reasons counted in Stats.Rejections.
const (
	RejectConnLimit     = "conn_limit"     // refused by the connection gate
	RejectConnect       = "connect"        // Backend.Connect refused
	RejectAuthNoTLS     = "auth_no_tls"    // AUTH before TLS
	RejectAuth          = "auth"           // failed authentication
	RejectAuthRequired  = "auth_required"  // MAIL before AUTH on submission
	RejectSyntax        = "syntax"         // bad command, parameter or address
	RejectSequence      = "sequence"       // bad sequence of commands
	RejectLineTooLong   = "line_too_long"  // command line over the limit
	RejectMail          = "mail"           // Backend.Mail refused
	RejectRcpt          = "rcpt"           // Backend.Rcpt refused
	RejectTooManyRcpts  = "too_many_rcpts" // recipient limit
	RejectSize          = "size"           // message too big (declared or actual)
	RejectBareLF        = "bare_lf"        // bare CR or LF in data
	RejectNUL           = "nul"            // NUL in data
	RejectDataLine      = "data_line"      // text line over 998 characters
	RejectLoop          = "loop"           // too many Received headers
	RejectDeliver       = "deliver"        // Backend.Deliver failed
	RejectTooManyErrors = "too_many_errors"
	RejectTooManyCmds   = "too_many_commands" // Config.MaxJunkCommands
	RejectTimeout       = "timeout"           // idle, data or session timeout
	RejectPregreet      = "pregreet"          // talked before the greeting
)

// Stats is a snapshot of a Server's counters.
type Stats struct {
	SessionsActive   int64             // sessions open now
	SessionsTotal    uint64            // sessions admitted since start
	MessagesAccepted uint64            // messages answered with 250
	Panics           uint64            // recovered panics (should stay 0)
	Rejections       map[string]uint64 // by reason (Reject* constants)
}

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("smtpserver: server closed")

// Server accepts SMTP sessions on one or more listeners of the same Mode.
type Server struct {
	cfg Config
	b   Backend
	log *slog.Logger

	closing atomic.Bool
	wg      sync.WaitGroup // session goroutines

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*session]struct{}

	active   atomic.Int64
	total    atomic.Uint64
	accepted atomic.Uint64
	panics   atomic.Uint64

	rejMu      sync.Mutex
	rejections map[string]uint64

	greeted *greetCache // clients that passed the pregreet wait
}

// New returns a Server for cfg that hands decisions and messages to b.
func New(cfg Config, b Backend) *Server {
	cfg.setDefaults()
	return &Server{
		cfg:        cfg,
		b:          b,
		log:        cfg.Logger.With("listener", cfg.Mode.String()),
		listeners:  make(map[net.Listener]struct{}),
		sessions:   make(map[*session]struct{}),
		rejections: make(map[string]uint64),
		greeted:    newGreetCache(cfg.PregreetTTL, cfg.Clock),
	}
}

// Serve accepts connections on l until Shutdown, then returns
// ErrServerClosed. In ModeSubmissions every connection starts with a TLS
// handshake (Config.TLSConfig is then required).
func (s *Server) Serve(l net.Listener) error {
	if s.cfg.Mode == ModeSubmissions && s.cfg.TLSConfig == nil {
		return errors.New("smtpserver: submissions mode needs a TLS config")
	}
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[l] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, l)
		s.mu.Unlock()
	}()

	var backoff time.Duration
	for {
		c, err := l.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("smtpserver: accept: %w", err)
			}
			// Out of file descriptors and the like: wait and retry.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed", "err", err, "retry_in", backoff)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		s.wg.Add(1)
		go s.handle(c)
	}
}

// handle gates one connection and runs its session.
func (s *Server) handle(c net.Conn) {
	defer s.wg.Done()
	defer c.Close()
	ap := remoteAddrPort(c)
	if s.cfg.Conns != nil {
		release, err := s.cfg.Conns.Acquire(ap.Addr())
		if err != nil {
			s.reject(RejectConnLimit)
			s.log.Info("connection refused", "client", ap.String(), "reason", err.Error())
			if s.cfg.Mode != ModeSubmissions {
				// A plain-text reply would be noise to an implicit-TLS client,
				// and a handshake would cost CPU the caps exist to protect.
				_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_, _ = io.WriteString(c, "421 4.7.0 "+s.cfg.Hostname+" Too many connections, try again later\r\n")
			}
			return
		}
		defer release()
	}
	if s.closing.Load() {
		return
	}
	sess := newSession(s, c, ap)
	s.mu.Lock()
	s.sessions[sess] = struct{}{}
	s.mu.Unlock()
	s.active.Add(1)
	s.total.Add(1)
	defer func() {
		s.active.Add(-1)
		s.mu.Lock()
		delete(s.sessions, sess)
		s.mu.Unlock()
	}()
	sess.run()
	sess.release()
}

func remoteAddrPort(c net.Conn) netip.AddrPort {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		ap := ta.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(c.RemoteAddr().String())
	return ap
}

// Shutdown stops accepting connections, closes idle sessions with 421,
// lets sessions inside a mail transaction finish it, and once ctx is done
// closes whatever is left. It returns ctx.Err() if sessions had to be cut.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closing.Store(true)
	for l := range s.listeners {
		_ = l.Close()
	}
	s.mu.Unlock()

	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		// Wake sessions blocked in a read so they notice the shutdown; those
		// inside a transaction go on reading.
		s.mu.Lock()
		for sess := range s.sessions {
			_ = sess.raw.SetReadDeadline(time.Now())
		}
		s.mu.Unlock()
		select {
		case <-done:
			return nil
		case <-tick.C:
		case <-ctx.Done():
			s.mu.Lock()
			for sess := range s.sessions {
				_ = sess.raw.Close()
			}
			s.mu.Unlock()
			<-done
			return ctx.Err()
		}
	}
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	st := Stats{
		SessionsActive:   s.active.Load(),
		SessionsTotal:    s.total.Load(),
		MessagesAccepted: s.accepted.Load(),
		Panics:           s.panics.Load(),
		Rejections:       make(map[string]uint64),
	}
	s.rejMu.Lock()
	for k, v := range s.rejections {
		st.Rejections[k] = v
	}
	s.rejMu.Unlock()
	return st
}

func (s *Server) reject(reason string) {
	s.rejMu.Lock()
	s.rejections[reason]++
	s.rejMu.Unlock()
}
