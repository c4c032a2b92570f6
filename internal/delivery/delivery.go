// Package delivery delivers queued messages to remote SMTP servers: it
// routes a domain (smarthost, static route, MX with implicit-MX and null-MX
// rules), connects with opportunistic or required TLS, runs one transaction
// for all recipients of the domain, and returns one Result per recipient.
// Connections are limited per destination domain and in total, and idle
// connections are kept for a short time for the next message to the same
// host.
package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/delivery/mtasts"
	"github.com/heraldmail/herald/internal/delivery/smtpout"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/tlsrpt"
)

// Status is the outcome of a delivery attempt for one recipient.
type Status int

// Outcomes of an attempt.
const (
	Temporary Status = iota // try again later
	Delivered               // the remote answered 250 to the final dot
	Permanent               // bounce
)

// String returns "delivered", "temporary" or "permanent".
func (s Status) String() string {
	switch s {
	case Delivered:
		return "delivered"
	case Permanent:
		return "permanent"
	default:
		return "temporary"
	}
}

// Request is one message to deliver to recipients of one domain.
type Request struct {
	MessageID  string
	Sender     string // "" is the null sender
	Ret, EnvID string // DSN RET (FULL|HDRS) and ENVID (decoded), passed on if the server supports DSN
	SMTPUTF8   bool
	Size       int64
	Recipients []Recipient // all in Domain
	Domain     string
	// Body opens the message content (CRLF lines). It may be called
	// several times, once per attempt or host.
	Body func() (io.ReadCloser, error)
}

// Recipient is one envelope recipient.
type Recipient struct {
	ID      int64
	Address string
	Notify  string // DSN NOTIFY, e.g. "SUCCESS,FAILURE" or "NEVER"; "" = not given
	ORCPT   string // DSN ORCPT as "type;address" (address decoded), or a bare address
}

// Result is the outcome for one recipient.
type Result struct {
	RecipientID int64
	Status      Status
	Code        int
	Enhanced    smtp.EnhancedCode
	Text        string // the remote reply text, or our own
	RemoteMTA   string // host[ip] that answered; "" if none did
	// TLS is "none", the session's TLS as "<policy> <version> <cipher>
	// (verified|unverified)", e.g. "dane TLS1.3 TLS_AES_128_GCM_SHA256
	// (verified)", or the reason a TLS policy refused every host, e.g.
	// "mta-sts: certificate not valid for mx1.example.com".
	TLS string
	// TLSPolicy is the policy that applied (PolicyOpportunistic,
	// PolicyRequired, PolicyMTASTS, PolicyMTASTSTesting, PolicyDANE,
	// PolicyDANEUnusable); "" when no host was reached.
	TLSPolicy string
	// TLSFailure is the TLS policy failure of this attempt, if any: why it
	// was deferred or, in MTA-STS testing mode, what would have failed.
	TLSFailure string
	// DSNPassedOn is set for a delivered recipient when the next hop
	// supports DSN: NOTIFY went with the message, so success notices are
	// the next hop's job (RFC 3461 §5.2.2), not ours.
	DSNPassedOn bool
}

// Config configures a Client.
type Config struct {
	HELO                     string        // EHLO name (default "localhost")
	Port                     int           // remote port for MX delivery (default 25)
	ConnectTimeout           time.Duration // default 30s
	CommandTimeout           time.Duration // per command/reply and body stall; default 5m
	DataTimeout              time.Duration // wait after the final dot; default 10m
	IdleTimeout              time.Duration // keep idle connections this long; default 30s, <0 disables reuse
	MaxPerDestination        int           // concurrent deliveries per domain; default 10
	MaxTotal                 int           // concurrent deliveries in all; default 100
	MaxMessagesPerConnection int           // default 100
	Smarthost                string        // "host:port": relay everything there (TLS required)
	SmarthostUsername        string
	SmarthostPassword        string
	SmarthostTLS             string            // "starttls" (default) or "implicit"
	Routes                   map[string]string // domain -> "host:port"
	RequireTLS               bool              // refuse hosts without STARTTLS and a verified certificate
	RootCAs                  *x509.CertPool    // nil = system roots (also for MTA-STS)
	// MTASTS, when set, applies recipient domains' MTA-STS policies
	// (RFC 8461) to MX delivery; nil disables MTA-STS.
	MTASTS PolicySource
	// DisableDANE turns DANE (RFC 7672) off. DANE applies only when the
	// resolver implements resolve.TLSAResolver and its TLSA answers carry
	// the AD bit (a DNSSEC-validating resolver).
	DisableDANE bool
	// TLSReport receives the TLS outcome of each new MX session (TLS-RPT,
	// RFC 8460); nil = none.
	TLSReport              TLSReporter
	SourceIPv4, SourceIPv6 netip.Addr // local addresses to connect from (optional)
}

// Client delivers messages. It is safe for concurrent use.
type Client struct {
	cfg Config
	r   resolve.Resolver
	log *slog.Logger

	total chan struct{}

	mu     sync.Mutex
	perDom map[string]*domSem
	idle   map[string][]*session
	closed bool

	// noPipelining sends MAIL, RCPT and DATA in lock-step even to a server
	// that offers PIPELINING (set by tests and benchmarks only).
	noPipelining bool
}

type domSem struct {
	ch   chan struct{}
	refs int
}

// New returns a Client using r for DNS.
func New(cfg Config, r resolve.Resolver, log *slog.Logger) *Client {
	if cfg.HELO == "" {
		cfg.HELO = "localhost"
	}
	if cfg.Port == 0 {
		cfg.Port = 25
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.CommandTimeout <= 0 {
		cfg.CommandTimeout = 5 * time.Minute
	}
	if cfg.DataTimeout <= 0 {
		cfg.DataTimeout = 10 * time.Minute
	}
	if cfg.IdleTimeout == 0 {
		cfg.IdleTimeout = 30 * time.Second
	}
	if cfg.MaxPerDestination <= 0 {
		cfg.MaxPerDestination = 10
	}
	if cfg.MaxTotal <= 0 {
		cfg.MaxTotal = 100
	}
	if cfg.MaxMessagesPerConnection <= 0 {
		cfg.MaxMessagesPerConnection = 100
	}
	if cfg.SmarthostTLS == "" {
		cfg.SmarthostTLS = "starttls"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{
		cfg: cfg, r: r, log: log,
		total:  make(chan struct{}, cfg.MaxTotal),
		perDom: map[string]*domSem{},
		idle:   map[string][]*session{},
	}
}

// Close closes the idle connections; later deliveries do not keep any.
func (c *Client) Close() {
	c.mu.Lock()
	c.closed = true
	idle := c.idle
	c.idle = map[string][]*session{}
	c.mu.Unlock()
	for _, list := range idle {
		for _, s := range list {
			if s.timer.Stop() { // else the idle timer is closing it
				s.conn.Quit() //nolint:errcheck // closing anyway
			}
		}
	}
}

// Deliver makes one attempt to deliver req and returns one Result per
// recipient, in the order of req.Recipients.
func (c *Client) Deliver(ctx context.Context, req *Request) []Result {
	if len(req.Recipients) == 0 {
		return nil
	}
	d := &attempt{c: c, req: req, res: make([]Result, len(req.Recipients)), done: make([]bool, len(req.Recipients))}
	for i, rc := range req.Recipients {
		d.res[i] = Result{RecipientID: rc.ID, Status: Temporary, TLS: "none"}
	}
	release, err := c.acquire(ctx, req.Domain)
	if err != nil {
		d.finishAll(Temporary, 451, smtp.EnhancedCode{4, 4, 5}, "delivery not started: "+err.Error(), "", "none")
		return d.res
	}
	defer release()
	if strings.ContainsAny(req.Sender, "\r\n<> ") {
		d.finishAll(Permanent, 501, smtp.EnhancedCode{5, 1, 7}, "invalid sender address", "", "none")
		return d.res
	}
	d.run(ctx)
	for i, r := range d.res {
		c.log.LogAttrs(ctx, slog.LevelDebug, "delivery",
			slog.String("msgid", req.MessageID), slog.String("rcpt", req.Recipients[i].Address),
			slog.String("status", r.Status.String()), slog.Int("code", r.Code),
			slog.String("enhanced", r.Enhanced.String()), slog.String("text", r.Text),
			slog.String("remote", r.RemoteMTA), slog.String("tls", r.TLS))
	}
	return d.res
}

// acquire takes a slot in the total and the per-domain semaphores.
func (c *Client) acquire(ctx context.Context, domain string) (func(), error) {
	c.mu.Lock()
	ds := c.perDom[domain]
	if ds == nil {
		ds = &domSem{ch: make(chan struct{}, c.cfg.MaxPerDestination)}
		c.perDom[domain] = ds
	}
	ds.refs++
	c.mu.Unlock()
	unref := func() {
		c.mu.Lock()
		ds.refs--
		if ds.refs == 0 {
			delete(c.perDom, domain)
		}
		c.mu.Unlock()
	}
	select {
	case ds.ch <- struct{}{}:
	case <-ctx.Done():
		unref()
		return nil, fmt.Errorf("waiting for a connection slot for %s: %w", domain, ctx.Err())
	}
	select {
	case c.total <- struct{}{}:
	case <-ctx.Done():
		<-ds.ch
		unref()
		return nil, fmt.Errorf("waiting for a connection slot: %w", ctx.Err())
	}
	return func() {
		<-c.total
		<-ds.ch
		unref()
	}, nil
}

// target is one host to try: a name and port, and how to talk to it.
type target struct {
	host      string // name for DNS, TLS verification and RemoteMTA
	port      int
	ips       []netip.Addr // pre-resolved (IP literal), else looked up
	smarthost bool
}

func (t target) key() string { return t.host + ":" + strconv.Itoa(t.port) }

// attempt is the state of one Deliver call.
type attempt struct {
	c    *Client
	req  *Request
	res  []Result
	done []bool
	mx   bool // routed by MX (or implicit MX): TLS policies apply

	tlsPolicy, tlsFailure string // copied into results by finish
}

func (d *attempt) finishAll(st Status, code int, enh smtp.EnhancedCode, text, remote, tlsDesc string) {
	for i := range d.res {
		if !d.done[i] {
			d.finish(i, st, code, enh, text, remote, tlsDesc)
		}
	}
}

// finish records the outcome of recipient i. Texts may quote the remote
// (replies, certificate names in TLS errors): they are bounded and
// stripped of control characters before anything stores or shows them.
func (d *attempt) finish(i int, st Status, code int, enh smtp.EnhancedCode, text, remote, tlsDesc string) {
	d.res[i].Status, d.res[i].Code, d.res[i].Enhanced, d.res[i].Text = st, code, enh, smtpout.SafeText(text)
	d.res[i].RemoteMTA, d.res[i].TLS = remote, smtpout.SafeText(tlsDesc)
	d.res[i].TLSPolicy, d.res[i].TLSFailure = d.tlsPolicy, smtpout.SafeText(d.tlsFailure)
	d.done[i] = true
}

// finishErr finishes the pending recipients from a remote reply error or,
// for any other error, with a temporary 451 4.4.2.
func (d *attempt) finishErr(err error, remote, tlsDesc string) {
	if e, ok := smtp.AsError(err); ok {
		d.finishAll(statusOf(e.Code), e.Code, e.Enhanced, e.Message, remote, tlsDesc)
		return
	}
	d.finishAll(Temporary, 451, smtp.EnhancedCode{4, 4, 2}, "connection lost: "+err.Error(), remote, tlsDesc)
}

func statusOf(code int) Status {
	switch {
	case code >= 200 && code < 300:
		return Delivered
	case code >= 500:
		return Permanent
	default:
		return Temporary
	}
}

func (d *attempt) run(ctx context.Context) {
	targets, perr := d.route(ctx)
	if perr != nil {
		d.finishAll(statusOf(perr.Code), perr.Code, perr.Enhanced, perr.Message, "", "none")
		return
	}
	var sts *mtasts.Policy
	if d.mx {
		sts = d.stsPolicy(ctx)
	}
	var last *smtp.Error
	lastTLS := "none" // the latest TLS policy failure, if any
	lastRemote := ""  // the host that gave last, if it was a remote reply
	for _, t := range targets {
		if ctx.Err() != nil {
			break
		}
		var pol *hostPolicy
		if d.mx {
			var oe *openError
			pol, oe = d.policyFor(ctx, t, sts)
			if oe != nil {
				last, lastTLS, lastRemote = oe.reply, oe.tlsFail, ""
				d.tlsPolicy, d.tlsFailure = pol.kind, oe.tlsFail
				d.report(pol, t.host, "", false, oe.rptType, oe.tlsFail)
				d.c.log.Info("delivery: host refused by TLS policy", slog.String("host", t.host), slog.String("reason", oe.tlsFail))
				continue
			}
		} else {
			pol = &hostPolicy{kind: PolicyOpportunistic}
		}
		if pol.kind == PolicyOpportunistic && (d.c.cfg.RequireTLS || t.smarthost) {
			pol.kind = PolicyRequired
		}
		if s := d.c.takeIdle(ctx, t.key()+"|"+pol.kind); s != nil {
			d.tlsPolicy, d.tlsFailure = s.policy, s.tlsFailure
			if !d.transact(ctx, s) {
				return
			}
			// The pooled connection was gone: open a new one.
		}
		ips := t.ips
		if ips == nil {
			var err error
			ips, err = d.c.r.LookupIP(ctx, t.host)
			if err != nil {
				last, lastRemote = &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 4}, Message: "cannot resolve " + t.host + ": " + err.Error()}, ""
				continue
			}
		}
		for _, ip := range ips {
			s, err := d.c.open(ctx, t, ip, false, pol)
			if err != nil && errors.Is(err, errTLSHandshake) && !d.c.cfg.RequireTLS && !t.smarthost && !pol.requireTLS() {
				// Opportunistic TLS failed: try the same address in clear
				// (in MTA-STS testing mode the session reports it).
				s, err = d.c.open(ctx, t, ip, true, pol)
			}
			if err != nil {
				var oe *openError
				if errors.As(err, &oe) {
					last, lastRemote = oe.reply, oe.remote
					if oe.tlsFail != "" {
						lastTLS = oe.tlsFail
						d.tlsPolicy, d.tlsFailure = pol.kind, oe.tlsFail
						d.report(pol, t.host, ip.String(), false, oe.rptType, oe.tlsFail)
					}
				}
				d.c.log.Debug("delivery: host failed", slog.String("host", t.host), slog.String("ip", ip.String()), slog.String("err", err.Error()))
				continue
			}
			if d.mx {
				d.reportSession(pol, t, ip, s)
			}
			d.tlsPolicy, d.tlsFailure = s.policy, s.tlsFailure
			d.transact(ctx, s)
			return
		}
	}
	if ctx.Err() != nil {
		last, lastRemote = &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 7}, Message: "delivery interrupted: " + ctx.Err().Error()}, ""
	}
	if last == nil {
		last = &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 4}, Message: "no host to deliver to"}
	}
	code, enh := last.Code, last.Enhanced
	if code >= 500 { // a 5xx greeting: skipped like Postfix, the domain is tried later
		code, enh = 451, smtp.EnhancedCode{4, enh[1], enh[2]}
	}
	d.finishAll(Temporary, code, enh, last.Message, lastRemote, lastTLS)
}

// route returns the hosts to try in order, or a final error for everyone.
func (d *attempt) route(ctx context.Context) ([]target, *smtp.Error) {
	cfg := d.c.cfg
	if cfg.Smarthost != "" {
		t, err := parseHostPort(cfg.Smarthost)
		if err != nil {
			return nil, &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 5}, Message: "bad smarthost: " + err.Error()}
		}
		t.smarthost = true
		return []target{t}, nil
	}
	if r, ok := cfg.Routes[strings.ToLower(d.req.Domain)]; ok {
		t, err := parseHostPort(r)
		if err != nil {
			return nil, &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 5}, Message: "bad route: " + err.Error()}
		}
		return []target{t}, nil
	}
	domain := d.req.Domain
	mxs, err := d.c.r.LookupMX(ctx, domain)
	switch {
	case errors.Is(err, resolve.ErrNotFound):
		ips, err := d.c.r.LookupIP(ctx, domain)
		switch {
		case errors.Is(err, resolve.ErrNotFound):
			return nil, &smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 1, 2}, Message: "domain " + domain + " has no mail server (no MX, A or AAAA record)"}
		case err != nil:
			return nil, &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 3}, Message: "DNS failure: " + err.Error()}
		}
		d.mx = true
		return []target{{host: strings.ToLower(domain), port: cfg.Port, ips: ips}}, nil
	case err != nil:
		return nil, &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 3}, Message: "DNS failure: " + err.Error()}
	}
	if len(mxs) == 1 && mxs[0].Host == "" {
		return nil, &smtp.Error{Code: 556, Enhanced: smtp.EnhancedCode{5, 1, 10}, Message: "domain " + domain + " does not accept mail (null MX)"}
	}
	d.mx = true
	shuffleEqualPref(mxs)
	out := make([]target, 0, len(mxs))
	for _, mx := range mxs {
		if mx.Host == "" {
			continue
		}
		out = append(out, target{host: mx.Host, port: cfg.Port})
	}
	return out, nil
}

// shuffleEqualPref randomises the order within runs of equal preference of
// a preference-sorted list (RFC 5321 §5.1).
func shuffleEqualPref(mxs []resolve.MX) {
	for i := 0; i < len(mxs); {
		j := i + 1
		for j < len(mxs) && mxs[j].Pref == mxs[i].Pref {
			j++
		}
		run := mxs[i:j]
		rand.Shuffle(len(run), func(a, b int) { run[a], run[b] = run[b], run[a] })
		i = j
	}
}

func parseHostPort(s string) (target, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return target{}, err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p <= 0 || p > 65535 {
		return target{}, fmt.Errorf("bad port in %q", s)
	}
	t := target{host: strings.ToLower(strings.TrimSuffix(host, ".")), port: p}
	if ip, err := netip.ParseAddr(host); err == nil {
		t.ips = []netip.Addr{ip.Unmap()}
	}
	return t, nil
}

// session is an open, greeted connection to one host.
type session struct {
	conn    *smtpout.Conn
	key     string
	remote  string // host[ip]
	tlsDesc string
	// policy is the TLS policy label; tlsFailure and rptType describe a
	// failure tolerated by it (MTA-STS testing).
	policy, tlsFailure, rptType string
	msgs                        int
	timer                       *time.Timer // closes the connection when idle too long
	// resetDue marks a pooled session taken without the RSET that checks
	// it is alive: the RSET goes first in the next pipelined envelope.
	resetDue bool
}

// errTLSHandshake marks an open failure caused by a failed TLS handshake
// after STARTTLS; the connection is unusable, but the host may work in clear.
var errTLSHandshake = errors.New("TLS handshake failed")

// openError is a failure to open a session; it carries the synthesized
// reply to report if no other host works.
type openError struct {
	reply *smtp.Error
	cause error
	// For TLS policy failures: the reason (Result.TLS) and the TLS-RPT
	// result type.
	tlsFail, rptType string
	// remote is the host[ip] whose reply this is; "" when the failure is
	// ours (connection, TLS handshake or policy), so the throttle and DSNs
	// can tell a remote refusal (421 at the greeting) from our own.
	remote string
}

func (e *openError) Error() string { return e.reply.Error() }
func (e *openError) Unwrap() error { return e.cause }

// open connects to ip, reads the greeting, says EHLO and does TLS (unless
// noTLS) and AUTH for the smarthost. Any failure is returned as an
// *openError so the next host can be tried.
func (c *Client) open(ctx context.Context, t target, ip netip.Addr, noTLS bool, pol *hostPolicy) (*session, error) {
	s, err := c.open1(ctx, t, ip, noTLS, pol)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (c *Client) open1(ctx context.Context, t target, ip netip.Addr, noTLS bool, pol *hostPolicy) (*session, *openError) {
	remote := fmt.Sprintf("%s[%s]", t.host, ip)
	fail := func(code int, enh smtp.EnhancedCode, format string, args ...any) *openError {
		return &openError{reply: &smtp.Error{Code: code, Enhanced: enh, Message: remote + ": " + fmt.Sprintf(format, args...)}}
	}
	dialer := net.Dialer{Timeout: c.cfg.ConnectTimeout}
	if ip.Is4() && c.cfg.SourceIPv4.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: c.cfg.SourceIPv4.AsSlice()}
	} else if ip.Is6() && c.cfg.SourceIPv6.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: c.cfg.SourceIPv6.AsSlice()}
	}
	nc, err := dialer.DialContext(ctx, "tcp", netip.AddrPortFrom(ip, uint16(t.port)).String())
	if err != nil {
		return nil, fail(451, smtp.EnhancedCode{4, 4, 1}, "connect failed: %v", err)
	}
	conn := smtpout.NewConn(nc, c.cfg.CommandTimeout, c.cfg.DataTimeout)
	s := &session{conn: conn, key: t.key() + "|" + pol.kind, remote: remote, tlsDesc: "none", policy: pol.kind}
	ok := false
	defer func() {
		if !ok {
			conn.Close()
		}
	}()
	requireTLS := c.cfg.RequireTLS || t.smarthost || pol.requireTLS()
	policyFailure := func(err error, oe *openError) *openError {
		res, why := classifyCertError(t.host, err)
		oe.tlsFail, oe.rptType = pol.label()+": "+why, res
		return oe
	}
	if t.smarthost && c.cfg.SmarthostTLS == "implicit" {
		if err := conn.ClientTLS(ctx, c.tlsConfig(t.host, true)); err != nil {
			return nil, fail(451, smtp.EnhancedCode{4, 7, 5}, "%v", err)
		}
	}
	if _, err := conn.Greet(ctx); err != nil {
		if e, isReply := smtp.AsError(err); isReply {
			oe := fail(e.Code, e.Enhanced, "greeting: %s", e.Message)
			oe.remote = remote
			return nil, oe
		}
		return nil, fail(451, smtp.EnhancedCode{4, 4, 2}, "reading greeting: %v", err)
	}
	if err := conn.Hello(ctx, c.cfg.HELO); err != nil {
		return nil, replyFail(fail, remote, "EHLO", err)
	}
	if conn.TLS() == nil {
		if _, offered := conn.Ext("STARTTLS"); offered && !noTLS {
			var verr error
			err := conn.StartTLS(ctx, c.tlsConfigFor(t, pol, &verr), c.cfg.HELO)
			_, isReply := smtp.AsError(err)
			switch {
			case err == nil:
			case isReply && !requireTLS && conn.TLS() == nil && !is421(err):
				// STARTTLS refused (e.g. 454): go on in clear, RFC 3207.
			case verr != nil:
				// The policy's certificate check failed: never in clear.
				oe := fail(451, smtp.EnhancedCode{4, 7, 5}, "STARTTLS: %v", verr)
				oe.cause = verr
				return nil, policyFailure(verr, oe)
			case conn.TLS() == nil && !isReply:
				oe := replyFail(fail, remote, "STARTTLS", err)
				oe.cause = errTLSHandshake
				if pol.kind != PolicyOpportunistic && pol.kind != PolicyRequired {
					oe.tlsFail = pol.label() + ": TLS handshake with " + t.host + " failed"
					oe.rptType = tlsrpt.ResultValidationFailure
				}
				return nil, oe
			default:
				oe := replyFail(fail, remote, "STARTTLS", err)
				if pol.requireTLS() {
					oe.tlsFail = pol.label() + ": STARTTLS refused by " + t.host
					oe.rptType = tlsrpt.ResultSTARTTLSNotSupported
				}
				return nil, oe
			}
		} else if requireTLS {
			oe := fail(451, smtp.EnhancedCode{4, 7, 4}, "STARTTLS not offered and TLS is required")
			if pol.requireTLS() {
				oe.tlsFail = pol.label() + ": STARTTLS not offered by " + t.host
				oe.rptType = tlsrpt.ResultSTARTTLSNotSupported
			}
			return nil, oe
		}
	}
	if st := conn.TLS(); st != nil {
		verified := c.verify(t.host, st) == nil
		switch pol.kind {
		case PolicyDANE, PolicyMTASTS:
			verified = true // checked during the handshake
		case PolicyMTASTSTesting:
			s.tlsFailure, s.rptType = pol.failure, pol.rptType
			if err := c.verify(t.host, st); err != nil && s.tlsFailure == "" {
				res, why := classifyCertError(t.host, err)
				s.tlsFailure, s.rptType = "mta-sts: "+why, res
			}
		}
		s.tlsDesc = describeWith(pol.kind, st, verified)
	} else if pol.kind == PolicyMTASTSTesting {
		s.tlsFailure, s.rptType = pol.failure, pol.rptType
		if s.tlsFailure == "" {
			s.tlsFailure, s.rptType = "mta-sts: no TLS with "+t.host, tlsrpt.ResultSTARTTLSNotSupported
		}
	}
	if t.smarthost && c.cfg.SmarthostUsername != "" {
		if err := conn.AuthPlain(ctx, c.cfg.SmarthostUsername, c.cfg.SmarthostPassword); err != nil {
			return nil, replyFail(fail, remote, "AUTH", err)
		}
	}
	ok = true
	return s, nil
}

// replyFail builds the openError of a failed stage; a reply from the
// server is marked as coming from remote.
func replyFail(fail func(int, smtp.EnhancedCode, string, ...any) *openError, remote, stage string, err error) *openError {
	if e, ok := smtp.AsError(err); ok {
		oe := fail(e.Code, e.Enhanced, "%s: %s", stage, e.Message)
		oe.remote = remote
		return oe
	}
	return fail(451, smtp.EnhancedCode{4, 4, 2}, "%s: %v", stage, err)
}

// tlsConfig returns the client TLS configuration for host. Opportunistic
// TLS accepts any certificate (the verification result is only recorded).
func (c *Client) tlsConfig(host string, verify bool) *tls.Config {
	cfg := &tls.Config{ServerName: host, RootCAs: c.cfg.RootCAs, MinVersion: tls.VersionTLS12}
	if !verify {
		cfg.InsecureSkipVerify = true //nolint:gosec // opportunistic TLS, RFC 7435
		cfg.MinVersion = tls.VersionTLS10
	}
	if _, err := netip.ParseAddr(host); err == nil {
		cfg.ServerName = ""
		if verify {
			cfg.InsecureSkipVerify = true //nolint:gosec // verified by VerifyConnection
			cfg.VerifyConnection = func(st tls.ConnectionState) error { return c.verify(host, &st) }
		}
	}
	return cfg
}

// verify checks the peer chain of st against the roots and host.
func (c *Client) verify(host string, st *tls.ConnectionState) error {
	if len(st.PeerCertificates) == 0 {
		return errors.New("no peer certificate")
	}
	inter := x509.NewCertPool()
	for _, cert := range st.PeerCertificates[1:] {
		inter.AddCert(cert)
	}
	_, err := st.PeerCertificates[0].Verify(x509.VerifyOptions{DNSName: host, Roots: c.cfg.RootCAs, Intermediates: inter})
	return err
}

func describeTLS(st *tls.ConnectionState, verified bool) string {
	v := "unverified"
	if verified {
		v = "verified"
	}
	return fmt.Sprintf("%s %s (%s)", strings.ReplaceAll(tls.VersionName(st.Version), " ", ""), tls.CipherSuiteName(st.CipherSuite), v)
}

// takeIdle returns a pooled session for key that still answers RSET. For
// a server that offers PIPELINING the RSET is not sent here but marked
// due, to go in one write with the next envelope (RFC 2920 allows RSET in
// a pipeline): a round trip less per message.
func (c *Client) takeIdle(ctx context.Context, key string) *session {
	for {
		c.mu.Lock()
		list := c.idle[key]
		if len(list) == 0 {
			c.mu.Unlock()
			return nil
		}
		s := list[len(list)-1]
		c.idle[key] = list[:len(list)-1]
		if len(c.idle[key]) == 0 {
			delete(c.idle, key)
		}
		c.mu.Unlock()
		if !s.timer.Stop() {
			continue // the idle timer already closes it
		}
		if _, ok := s.conn.Ext("PIPELINING"); ok && !c.noPipelining {
			s.resetDue = true
			return s
		}
		if err := s.conn.Reset(ctx); err != nil {
			s.conn.Close()
			continue
		}
		return s
	}
}

// release pools s for reuse or closes it.
func (c *Client) release(s *session, healthy bool) {
	if !healthy {
		s.conn.Close()
		return
	}
	if s.msgs >= c.cfg.MaxMessagesPerConnection || c.cfg.IdleTimeout < 0 {
		s.conn.Quit() //nolint:errcheck // closing anyway
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.conn.Quit() //nolint:errcheck // closing anyway
		return
	}
	s.timer = time.AfterFunc(c.cfg.IdleTimeout, func() {
		c.mu.Lock()
		list := c.idle[s.key]
		for i, x := range list {
			if x == s {
				c.idle[s.key] = append(list[:i:i], list[i+1:]...)
				break
			}
		}
		if len(c.idle[s.key]) == 0 {
			delete(c.idle, s.key)
		}
		c.mu.Unlock()
		s.conn.Quit() //nolint:errcheck // closing anyway
	})
	c.idle[s.key] = append(c.idle[s.key], s)
	c.mu.Unlock()
}

// transact runs MAIL, RCPT and DATA on s and records the results. It
// returns stale, with nothing recorded, when s came from the pool with its
// RSET due and did not answer it: the caller tries a new connection.
func (d *attempt) transact(ctx context.Context, s *session) (stale bool) {
	healthy := false
	defer func() { d.c.release(s, healthy) }()
	req, conn := d.req, s.conn
	s.msgs++
	remote, tlsDesc := s.remote, s.tlsDesc

	if req.SMTPUTF8 {
		if _, ok := conn.Ext("SMTPUTF8"); !ok {
			d.finishAll(Permanent, 550, smtp.EnhancedCode{5, 6, 7}, remote+" does not support SMTPUTF8, required by this message", remote, tlsDesc)
			healthy = true
			return
		}
	}
	if req.Size > 0 {
		if v, ok := conn.Ext("SIZE"); ok {
			if max, err := strconv.ParseInt(v, 10, 64); err == nil && max > 0 && req.Size > max {
				d.finishAll(Permanent, 552, smtp.EnhancedCode{5, 3, 4}, fmt.Sprintf("message size %d exceeds %s's limit %d", req.Size, remote, max), remote, tlsDesc)
				healthy = true
				return
			}
		}
	}
	body, err := req.Body()
	if err != nil {
		d.finishAll(Temporary, 451, smtp.EnhancedCode{4, 3, 0}, "local error opening message: "+err.Error(), "", tlsDesc)
		healthy = true
		return
	}
	defer body.Close()

	// With PIPELINING, DATA went with the envelope and got its 354.
	_, pipelining := conn.Ext("PIPELINING")
	pipelining = pipelining && !d.c.noPipelining
	var accepted []int
	var ok, reusable bool
	if pipelining {
		resetDue := s.resetDue
		s.resetDue = false
		accepted, ok, reusable, stale = d.envelopePipelined(ctx, conn, resetDue, remote, tlsDesc)
	} else {
		accepted, ok, reusable = d.envelopeLockStep(ctx, conn, remote, tlsDesc)
	}
	if !ok {
		healthy = reusable
		return stale
	}
	var rep *smtpout.Reply
	if pipelining {
		rep, err = conn.Body(ctx, body)
	} else {
		rep, err = conn.Data(ctx, body)
	}
	switch {
	case err == nil && rep.Code == 250:
		enh := rep.Enhanced
		if enh == (smtp.EnhancedCode{}) {
			enh = smtp.EnhancedCode{2, 0, 0}
		}
		_, dsnExt := conn.Ext("DSN")
		for _, i := range accepted {
			d.finish(i, Delivered, rep.Code, enh, rep.Text(), remote, tlsDesc)
			d.res[i].DSNPassedOn = dsnExt
		}
		healthy = true
	case err == nil: // a 2xx other than 250: do not claim delivery
		d.finishAll(Temporary, 451, smtp.EnhancedCode{4, 5, 0}, fmt.Sprintf("unexpected reply %d %s", rep.Code, rep.Text()), remote, tlsDesc)
	case errors.Is(err, smtpout.ErrBody):
		d.finishAll(Temporary, 451, smtp.EnhancedCode{4, 3, 0}, "local error reading message: "+err.Error(), "", tlsDesc)
	default:
		d.finishErr(err, remote, tlsDesc)
		_, isReply := smtp.AsError(err)
		healthy = isReply && !is421(err)
	}
	return false
}

// envelopeLockStep sends MAIL and each RCPT, waiting for every reply, and
// records the refusals. It returns the indexes of the accepted recipients
// and ok when DATA is to follow; when not, everything is recorded and
// healthy says whether the connection may be reused.
func (d *attempt) envelopeLockStep(ctx context.Context, conn *smtpout.Conn, remote, tlsDesc string) (accepted []int, ok, healthy bool) {
	req := d.req
	if err := conn.Mail(ctx, req.Sender, d.mailParams(conn)...); err != nil {
		d.finishErr(err, remote, tlsDesc)
		_, isReply := smtp.AsError(err)
		return nil, false, isReply && !is421(err)
	}
	accepted = make([]int, 0, len(req.Recipients))
	for i, rc := range req.Recipients {
		if strings.ContainsAny(rc.Address, "\r\n<>") {
			d.finish(i, Permanent, 501, smtp.EnhancedCode{5, 1, 3}, "invalid recipient address", "", tlsDesc)
			continue
		}
		err := conn.Rcpt(ctx, rc.Address, rcptParams(conn, rc)...)
		if err == nil {
			accepted = append(accepted, i)
			continue
		}
		e, isReply := smtp.AsError(err)
		if !isReply || e.Code == 421 {
			d.finishErr(err, remote, tlsDesc) // connection gone: all pending temporary
			return nil, false, false
		}
		d.finish(i, statusOf(e.Code), e.Code, e.Enhanced, e.Message, remote, tlsDesc)
	}
	if len(accepted) == 0 {
		return nil, false, conn.Reset(ctx) == nil
	}
	return accepted, true, false
}

// envelopePipelined sends MAIL, every RCPT and DATA in one write (RFC 2920)
// and reads their replies in order, recording refusals like
// envelopeLockStep. ok means DATA got 354 with at least one recipient
// accepted, and the body is to follow. EHLO, STARTTLS and AUTH came
// before, each waited for; the body's final dot is waited for after.
//
// With resetDue, RSET goes first; if it is not answered with 2xx the
// connection is closed and stale returned, with nothing recorded.
func (d *attempt) envelopePipelined(ctx context.Context, conn *smtpout.Conn, resetDue bool, remote, tlsDesc string) (accepted []int, ok, healthy, stale bool) {
	req := d.req
	lines := make([]string, 0, len(req.Recipients)+3)
	if resetDue {
		lines = append(lines, "RSET")
	}
	lines = append(lines, withParams("MAIL FROM:<"+req.Sender+">", d.mailParams(conn)))
	idx := make([]int, 0, len(req.Recipients)) // recipient of lines[1+k]
	for i, rc := range req.Recipients {
		if strings.ContainsAny(rc.Address, "\r\n<>") {
			d.finish(i, Permanent, 501, smtp.EnhancedCode{5, 1, 3}, "invalid recipient address", "", tlsDesc)
			continue
		}
		lines = append(lines, withParams("RCPT TO:<"+rc.Address+">", rcptParams(conn, rc)))
		idx = append(idx, i)
	}
	if len(idx) == 0 {
		// Nothing sent: every recipient refused locally. (The RSET is
		// due again when the session is next taken from the pool.)
		return nil, false, true, false
	}
	lines = append(lines, "DATA")
	reps, err := conn.Pipeline(ctx, lines)
	if resetDue {
		if len(reps) == 0 || reps[0].Code/100 != 2 {
			for i := range d.res {
				d.done[i] = false // the local refusals are recorded again
			}
			return nil, false, false, true
		}
		reps = reps[1:]
	}
	// A transaction broken off by 421 or a lost connection: what the
	// replies read so far refused stays refused, the rest is that error.
	broken := func() (accepted []int, ok, healthy, stale bool) {
		d.finishErr(err, remote, tlsDesc)
		return nil, false, false, false
	}
	if len(reps) == 0 {
		return broken()
	}
	if mail := reps[0]; mail.Code/100 != 2 {
		// MAIL refused: the RCPTs and DATA fail too, and Pipeline has read
		// their replies, so the connection is in a known state.
		d.finishErr(mail.Error(), remote, tlsDesc)
		if err != nil || mail.Code == 421 {
			return nil, false, false, false
		}
		return nil, false, d.endRefusedData(ctx, conn, reps[len(reps)-1]), false
	}
	for k, rep := range reps[1:] {
		if k >= len(idx) {
			break // the DATA reply
		}
		i := idx[k]
		if rep.Code/100 == 2 {
			accepted = append(accepted, i)
			continue
		}
		if rep.Code == 421 {
			break // err is the 421 when more replies were due
		}
		e := rep.Error()
		d.finish(i, statusOf(e.Code), e.Code, e.Enhanced, e.Message, remote, tlsDesc)
	}
	if err != nil {
		return broken()
	}
	data := reps[len(reps)-1]
	if len(accepted) == 0 {
		return nil, false, d.endRefusedData(ctx, conn, data), false
	}
	if data.Code/100 != 3 { // like Data, any 3xx invites the body
		d.finishErr(data.Error(), remote, tlsDesc)
		return nil, false, data.Code != 421, false
	}
	return accepted, true, false, false
}

// endRefusedData ends a pipelined transaction in which no recipient was
// accepted: the server should have refused DATA (554 or 503); if it said
// 354 all the same, a lone dot ends the empty message (RFC 2920 section
// 3.1) and its reply is ignored. RSET then clears the transaction. It
// reports whether the connection may be reused.
func (d *attempt) endRefusedData(ctx context.Context, conn *smtpout.Conn, data *smtpout.Reply) bool {
	if data.Code == 421 {
		return false
	}
	if data.Code/100 == 3 {
		if _, err := conn.EmptyData(ctx); err != nil {
			if _, isReply := smtp.AsError(err); !isReply || is421(err) {
				return false
			}
		}
	}
	return conn.Reset(ctx) == nil
}

func withParams(s string, params []string) string {
	for _, p := range params {
		s += " " + p
	}
	return s
}

func is421(err error) bool {
	e, ok := smtp.AsError(err)
	return ok && e.Code == 421
}

// mailParams builds the MAIL FROM parameters the server supports.
func (d *attempt) mailParams(conn *smtpout.Conn) []string {
	req := d.req
	var p []string
	if _, ok := conn.Ext("8BITMIME"); ok {
		p = append(p, "BODY=8BITMIME")
	}
	if _, ok := conn.Ext("SIZE"); ok && req.Size > 0 {
		p = append(p, "SIZE="+strconv.FormatInt(req.Size, 10))
	}
	if req.SMTPUTF8 {
		p = append(p, "SMTPUTF8")
	}
	if _, ok := conn.Ext("DSN"); ok {
		if ret := strings.ToUpper(req.Ret); ret == "FULL" || ret == "HDRS" {
			p = append(p, "RET="+ret)
		}
		if req.EnvID != "" && smtp.IsASCII(req.EnvID) {
			p = append(p, "ENVID="+smtpout.EncodeXtext(req.EnvID))
		}
	}
	return p
}

// rcptParams builds the RCPT TO parameters the server supports.
func rcptParams(conn *smtpout.Conn, rc Recipient) []string {
	if _, ok := conn.Ext("DSN"); !ok {
		return nil
	}
	var p []string
	if n := strings.ToUpper(strings.ReplaceAll(rc.Notify, " ", "")); n != "" && validNotify(n) {
		p = append(p, "NOTIFY="+n)
	}
	if rc.ORCPT != "" {
		typ, addr, ok := strings.Cut(rc.ORCPT, ";")
		if !ok {
			typ, addr = "rfc822", rc.ORCPT
		}
		if strings.EqualFold(typ, "rfc822") && smtp.IsASCII(addr) && addr != "" {
			p = append(p, "ORCPT=rfc822;"+smtpout.EncodeXtext(addr))
		}
	}
	return p
}

func validNotify(n string) bool {
	if n == "NEVER" {
		return true
	}
	for v := range strings.SplitSeq(n, ",") {
		if v != "SUCCESS" && v != "FAILURE" && v != "DELAY" {
			return false
		}
	}
	return true
}
