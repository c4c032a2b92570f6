package smtpserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/smtp"
)

// saslLineLimit is the RFC 4954 §4 limit for AUTH lines.
const saslLineLimit = 12288

// maxDiscard bounds how much of an over-long command line is skipped to
// resynchronise before the connection is closed instead.
const maxDiscard = 64 << 10

var (
	errLineTooLong  = errors.New("line too long")
	errLineOverflow = errors.New("line far too long")
	errBadLine      = errors.New("invalid characters in line")
	errTxAborted    = &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Message: "Transaction aborted"}
	errDeliverEnded = errors.New("smtpserver: Deliver returned before the end of the message")
)

type session struct {
	srv *Server
	cfg *Config
	raw net.Conn      // the accepted connection
	dc  *deadlineConn // raw with per-read deadlines
	// conn is dc or a TLS connection over it; br and bw sit on top.
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer

	c          Conn
	log        *slog.Logger
	ctx        context.Context
	sessionEnd time.Time // Config.SessionTimeout after the connection

	extended bool      // EHLO (not HELO) was used
	env      *Envelope // current transaction, nil outside one
	bdat     *bdatState
	busy     atomic.Bool // inside a mail transaction (read by Shutdown)

	commands int  // commands read, for the log
	errors   int  // error replies since the last accepted message (Config.MaxErrors)
	junk     int  // junk commands since the last accepted message (Config.MaxJunkCommands)
	closing  bool // the session ends after the current command
	// carry holds input read from the connection into a reader that was
	// swapped out (growReader, shrinkReader), read before the connection.
	carry *bytes.Reader
}

// carried is the number of bytes in s.carry.
func (s *session) carried() int {
	if s.carry == nil {
		return 0
	}
	return s.carry.Len()
}

type bdatState struct {
	cp   *message.ChunkPipe
	done chan deliverResult
	size int64 // content bytes announced so far
}

type deliverResult struct {
	queueID string
	err     error
}

func newSession(srv *Server, c net.Conn, ap netip.AddrPort) *session {
	var idb [6]byte
	_, _ = rand.Read(idb[:])
	s := &session{
		srv:        srv,
		cfg:        &srv.cfg,
		raw:        c,
		sessionEnd: time.Now().Add(srv.cfg.SessionTimeout),
	}
	s.c = Conn{ID: hex.EncodeToString(idb[:]), Mode: srv.cfg.Mode, RemoteAddr: ap}
	s.dc = &deadlineConn{Conn: c, s: s, timeout: srv.cfg.IdleTimeout}
	s.setConn(s.dc)
	s.log = srv.log.With("session", s.c.ID, "client", ap.String())
	return s
}

// The buffered readers and writers of ended sessions are reused: a
// session per message (MX traffic) otherwise allocates 8 KiB for them.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReader(nil) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriter(nil) }}
)

// setConn puts the buffered reader and writer on top of c. After STARTTLS
// the plain-text ones are dropped, not reused: their buffers may hold what
// the client sent before the handshake.
func (s *session) setConn(c net.Conn) {
	s.conn = c
	s.bw = writerPool.Get().(*bufio.Writer)
	s.bw.Reset(c)
	s.br = readerPool.Get().(*bufio.Reader)
	s.br.Reset(flushReader{s})
}

// release returns the session's reader and writer to their pools once the
// session is over and nothing uses them any more.
func (s *session) release() {
	s.br.Reset(nil)
	s.bw.Reset(nil)
	putReader(s.br)
	writerPool.Put(s.bw)
	s.br, s.bw, s.carry = nil, nil, nil
}

// dataReaderSize is the read buffer of a session while it reads a message
// (DATA): a 100 KB message takes two reads instead of 25. Between
// messages a session holds a 4 KiB buffer, which bounds an idle
// connection's memory.
const dataReaderSize = 64 << 10

var dataReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, dataReaderSize) }}

// putReader returns a reset reader to the pool of its size.
func putReader(r *bufio.Reader) {
	if r.Size() >= dataReaderSize {
		dataReaderPool.Put(r)
	} else {
		readerPool.Put(r)
	}
}

// growReader puts a data-sized reader in place of the session's reader
// for a message.
func (s *session) growReader() {
	if s.br.Size() < dataReaderSize {
		s.swapReader(dataReaderPool.Get().(*bufio.Reader))
	}
}

// shrinkReader gives the data-sized reader back after a message.
func (s *session) shrinkReader() {
	if s.br.Size() >= dataReaderSize {
		s.swapReader(readerPool.Get().(*bufio.Reader))
	}
}

// swapReader makes next the session's reader. What the old one had
// buffered (input the client pipelined) is read first, through s.carry.
func (s *session) swapReader(next *bufio.Reader) {
	old := s.br
	s.carryBuffered(old)
	old.Reset(nil)
	putReader(old)
	next.Reset(flushReader{s})
	s.br = next
}

// carryBuffered moves what br has buffered, and what s.carry still holds,
// into a new s.carry.
func (s *session) carryBuffered(br *bufio.Reader) {
	var pre []byte
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		pre = append(pre, b...)
	}
	if s.carry != nil && s.carry.Len() > 0 {
		rest := make([]byte, s.carry.Len())
		_, _ = s.carry.Read(rest)
		pre = append(pre, rest...)
	}
	s.carry = nil
	if len(pre) > 0 {
		s.carry = bytes.NewReader(pre)
	}
}

func (s *session) run() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s.ctx = ctx
	start := time.Now()
	defer func() {
		if r := recover(); r != nil {
			s.srv.panics.Add(1)
			s.log.Error("panic in session", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			s.reply(421, smtp.EnhancedCode{4, 3, 0}, s.cfg.Hostname+" Internal error, closing connection")
		}
		cancel() // a Deliver still running sees the end of the session
		s.abortBDAT(message.ErrConnection)
		_ = s.bw.Flush()
		s.log.Info("disconnect", "duration", time.Since(start).Round(time.Millisecond),
			"commands", s.commands, "errors", s.errors)
	}()
	s.log.Info("connect", "mode", s.cfg.Mode.String())

	if s.cfg.Mode == ModeSubmissions {
		if !s.startTLS() {
			return
		}
	}
	greetAt := time.Now()
	wait := s.cfg.PregreetWait > 0 && !s.srv.greeted.passed(s.c.RemoteAddr.Addr())
	if wait {
		greetAt = greetAt.Add(s.cfg.PregreetWait)
	}
	if err := s.srv.b.Connect(ctx, &s.c); err != nil {
		s.srv.reject(RejectConnect)
		e := s.smtpError(err, &smtp.Error{Code: 421, Enhanced: smtp.EnhancedCode{4, 3, 0}, Message: "Service not available, try again later"})
		s.log.Info("connection refused by policy", "reply", e.Error())
		s.replyError(e)
		return
	}
	if !s.pregreet(greetAt, wait) {
		return
	}
	s.reply(220, smtp.EnhancedCode{}, s.cfg.Hostname+" ESMTP Herald")

	for !s.closing {
		line, err := s.readLine(s.cfg.MaxLineLength)
		if err != nil {
			if !s.readFailed(err) {
				return
			}
			continue
		}
		s.commands++
		if !s.busy.Load() && !time.Now().Before(s.sessionEnd) {
			// A command pipelined past the session limit, between
			// transactions: the limit is enforced here, not inside one.
			s.srv.reject(RejectTimeout)
			s.log.Info("timeout", "during", "session")
			s.reply(421, smtp.EnhancedCode{4, 4, 2}, s.cfg.Hostname+" Session time limit exceeded, closing connection")
			return
		}
		s.dispatch(line)
		if s.closing {
			return
		}
		if s.errors >= s.cfg.MaxErrors {
			s.srv.reject(RejectTooManyErrors)
			s.log.Info("too many errors")
			s.reply(421, smtp.EnhancedCode{4, 7, 0}, s.cfg.Hostname+" Too many errors, closing connection")
			return
		}
		if s.srv.closing.Load() && !s.busy.Load() {
			s.reply(421, smtp.EnhancedCode{4, 3, 2}, s.cfg.Hostname+" Service shutting down, closing connection")
			return
		}
	}
}

// readFailed answers a failed command read; it reports whether the
// session can go on.
func (s *session) readFailed(err error) bool {
	switch {
	case errors.Is(err, errLineTooLong):
		s.srv.reject(RejectLineTooLong)
		s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Line too long")
		return s.errors < s.cfg.MaxErrors || s.tooManyErrors()
	case errors.Is(err, errLineOverflow):
		s.srv.reject(RejectLineTooLong)
		s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Line too long, closing connection")
		return false
	case errors.Is(err, errBadLine):
		s.srv.reject(RejectSyntax)
		s.reply(500, smtp.EnhancedCode{5, 5, 2}, "Invalid characters in command (NUL, control or invalid UTF-8)")
		return s.errors < s.cfg.MaxErrors || s.tooManyErrors()
	}
	s.connFailed(err, "reading command")
	return false
}

func (s *session) tooManyErrors() bool {
	s.srv.reject(RejectTooManyErrors)
	s.log.Info("too many errors")
	s.reply(421, smtp.EnhancedCode{4, 7, 0}, s.cfg.Hostname+" Too many errors, closing connection")
	return false
}

// connFailed handles a connection error: a timeout or shutdown gets a 421,
// anything else just ends the session. It never echoes addresses.
func (s *session) connFailed(err error, during string) {
	s.closing = true
	switch {
	case errors.Is(err, errShuttingDown):
		s.reply(421, smtp.EnhancedCode{4, 3, 2}, s.cfg.Hostname+" Service shutting down, closing connection")
	case isTimeout(err):
		s.srv.reject(RejectTimeout)
		msg := " Idle timeout, closing connection"
		if !time.Now().Before(s.readEnd()) {
			msg = " Session time limit exceeded, closing connection"
		}
		s.log.Info("timeout", "during", during)
		s.reply(421, smtp.EnhancedCode{4, 4, 2}, s.cfg.Hostname+msg)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		s.log.Debug("client closed connection", "during", during)
	default:
		s.log.Info("connection error", "during", during, "err", err)
	}
}

// readEnd is the latest time a read may wait until. Outside a mail
// transaction it is the session limit. A transaction in progress when the
// limit passes may take up to Config.SessionTimeout more to finish, so a
// relay streaming mail for longer than the limit is closed between two
// messages, never in the middle of one, and no session lasts more than
// twice the limit.
func (s *session) readEnd() time.Time {
	if s.busy.Load() {
		return s.sessionEnd.Add(s.cfg.SessionTimeout)
	}
	return s.sessionEnd
}

// readLine reads one line of at most limit bytes including CRLF and
// returns it without the line ending. An over-long line is skipped.
func (s *session) readLine(limit int) (string, error) {
	var line []byte
	tooLong, discarded := false, 0
	for {
		frag, err := s.br.ReadSlice('\n')
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return "", err
		}
		if !tooLong && len(line)+len(frag) > limit {
			tooLong, line = true, nil
		}
		if tooLong {
			discarded += len(frag)
			if discarded > maxDiscard {
				return "", errLineOverflow
			}
		} else {
			line = append(line, frag...)
		}
		if err == nil {
			break
		}
	}
	if tooLong {
		return "", errLineTooLong
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	if !validLine(line) {
		return "", errBadLine
	}
	return string(line), nil
}

// reply writes one reply line, counting it toward Config.MaxErrors if it
// is an error (4xx or 5xx). Enhanced codes are left out when zero.
func (s *session) reply(code int, enh smtp.EnhancedCode, text string) {
	if code >= 400 {
		s.errors++
	}
	s.write(code, enh, text)
}

// write writes one reply line without counting it as an error.
func (s *session) write(code int, enh smtp.EnhancedCode, text string) {
	text = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, text)
	if enh == (smtp.EnhancedCode{}) {
		fmt.Fprintf(s.bw, "%d %s\r\n", code, text)
	} else {
		fmt.Fprintf(s.bw, "%d %s %s\r\n", code, enh, text)
	}
	if code == 221 || code == 421 || s.closing {
		_ = s.bw.Flush()
	}
}

func (s *session) replyError(e *smtp.Error) {
	s.reply(e.Code, e.Enhanced, e.Message)
	if e.Code == 421 {
		s.closing = true
	}
}

// smtpError returns the *smtp.Error in err, or fallback (logging err).
func (s *session) smtpError(err error, fallback *smtp.Error) *smtp.Error {
	if e, ok := smtp.AsError(err); ok {
		return e
	}
	s.log.Error("backend error", "err", err)
	return fallback
}

// junkCommand counts a command that moves no mail (see
// Config.MaxJunkCommands). Over the limit it answers 421 and reports false:
// the command must not run.
func (s *session) junkCommand() bool {
	s.junk++
	if s.junk <= s.cfg.MaxJunkCommands {
		return true
	}
	s.srv.reject(RejectTooManyCmds)
	s.log.Info("too many junk commands", "limit", s.cfg.MaxJunkCommands, "commands", s.commands)
	s.reply(421, smtp.EnhancedCode{4, 7, 0}, s.cfg.Hostname+" Too many commands without mail, closing connection")
	s.closing = true
	return false
}

var errLocal = &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing, try again later"}

func (s *session) dispatch(line string) {
	verb, arg, _ := strings.Cut(line, " ")
	verb = strings.ToUpper(verb)
	switch verb {
	case "EHLO", "HELO":
		if s.c.HELO != "" && !s.junkCommand() { // a repeat; the first after STARTTLS is not
			return
		}
	case "RSET", "NOOP", "VRFY", "HELP", "EXPN", "TURN", "ETRN", "SEND", "SOML", "SAML":
		if !s.junkCommand() {
			return
		}
	case "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "BDAT", "QUIT":
	default: // unknown
		if !s.junkCommand() {
			return
		}
	}
	switch verb {
	case "EHLO":
		s.cmdHelo(arg, true)
	case "HELO":
		s.cmdHelo(arg, false)
	case "STARTTLS":
		s.cmdStartTLS(arg)
	case "AUTH":
		s.cmdAuth(arg)
	case "MAIL":
		s.cmdMail(arg)
	case "RCPT":
		s.cmdRcpt(arg)
	case "DATA":
		s.cmdData(arg)
	case "BDAT":
		s.cmdBdat(arg)
	case "RSET":
		s.resetTx()
		s.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "NOOP":
		s.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK")
	case "QUIT":
		s.reply(221, smtp.EnhancedCode{2, 0, 0}, s.cfg.Hostname+" Bye")
		s.closing = true
	case "VRFY":
		s.reply(252, smtp.EnhancedCode{2, 5, 0}, "Cannot VRFY user, but will accept message and attempt delivery")
	case "HELP":
		s.reply(214, smtp.EnhancedCode{2, 0, 0}, "See RFC 5321")
	case "EXPN", "TURN", "ETRN", "SEND", "SOML", "SAML":
		s.reply(502, smtp.EnhancedCode{5, 5, 1}, "Command not implemented")
	default:
		s.srv.reject(RejectSyntax)
		s.reply(500, smtp.EnhancedCode{5, 5, 1}, "Command unrecognized")
	}
}

func (s *session) badSequence(msg string) {
	s.srv.reject(RejectSequence)
	s.reply(503, smtp.EnhancedCode{5, 5, 1}, msg)
}

func (s *session) syntax(e *smtp.Error) {
	s.srv.reject(RejectSyntax)
	s.replyError(e)
}

func (s *session) cmdHelo(arg string, extended bool) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f[0]) > 255 {
		s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Domain or address literal required"})
		return
	}
	s.resetTx()
	s.c.HELO, s.extended = f[0], extended
	if !extended {
		s.reply(250, smtp.EnhancedCode{}, s.cfg.Hostname)
		return
	}
	lines := []string{s.cfg.Hostname + " Hello " + f[0], "PIPELINING", "8BITMIME", "SMTPUTF8",
		"SIZE " + strconv.FormatInt(s.cfg.MaxMessageBytes, 10), "ENHANCEDSTATUSCODES"}
	if s.cfg.TLSConfig != nil && s.c.TLS == nil && s.cfg.Mode != ModeSubmissions {
		lines = append(lines, "STARTTLS")
	}
	if s.c.TLS != nil {
		lines = append(lines, "AUTH PLAIN LOGIN")
	}
	lines = append(lines, "CHUNKING", "DSN")
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		s.bw.WriteString("250" + sep + l + "\r\n")
	}
}

func (s *session) cmdStartTLS(arg string) {
	switch {
	case arg != "":
		s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "STARTTLS takes no parameters"})
	case s.c.TLS != nil:
		s.badSequence("TLS already active")
	case s.cfg.TLSConfig == nil:
		s.reply(502, smtp.EnhancedCode{5, 5, 1}, "STARTTLS not available")
	default:
		s.reply(220, smtp.EnhancedCode{2, 0, 0}, "Ready to start TLS")
		if err := s.bw.Flush(); err != nil {
			s.connFailed(err, "STARTTLS")
			return
		}
		// CVE-2011-0411: anything the client pipelined after STARTTLS was
		// sent in clear text and must not be executed inside TLS.
		if n := s.br.Buffered() + s.carried(); n > 0 {
			s.log.Warn("discarded data pipelined after STARTTLS", "bytes", n)
			_, _ = s.br.Discard(s.br.Buffered())
			s.carry = nil
		}
		if !s.startTLS() {
			s.closing = true
			return
		}
		// RFC 3207 §4.2: forget everything learnt before TLS.
		s.resetTx()
		s.c.HELO, s.c.AuthUser, s.extended = "", "", false
	}
}

// startTLS performs the server handshake over the raw connection.
func (s *session) startTLS() bool {
	tc := tls.Server(s.dc, s.cfg.TLSConfig)
	if err := tc.HandshakeContext(s.ctx); err != nil {
		s.log.Info("TLS handshake failed", "err", err)
		return false
	}
	cs := tc.ConnectionState()
	s.c.TLS = &cs
	s.setConn(tc)
	s.log.Info("tls", "tls", s.cfg.DescribeTLS(&cs), "sni", cs.ServerName)
	return true
}

func (s *session) cmdAuth(arg string) {
	switch {
	case s.c.TLS == nil:
		s.srv.reject(RejectAuthNoTLS)
		e := smtp.ErrAuthRequiresTLS
		s.replyError(&e)
		return
	case s.c.HELO == "":
		s.badSequence("Send EHLO first")
		return
	case s.c.AuthUser != "":
		s.badSequence("Already authenticated")
		return
	case s.env != nil:
		s.badSequence("AUTH not allowed during a mail transaction")
		return
	}
	user, err := s.authenticate(arg)
	if err != nil {
		if errors.Is(err, errSASLConn) {
			return
		}
		s.srv.reject(RejectAuth)
		e := s.smtpError(err, &smtp.Error{Code: 454, Enhanced: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"})
		s.log.Info("auth failed", "user", user, "reply", e.Error())
		s.replyError(e)
		return
	}
	s.c.AuthUser = user
	s.log.Info("auth ok", "user", user)
	s.reply(235, smtp.EnhancedCode{2, 7, 0}, "Authentication successful")
}

func (s *session) cmdMail(arg string) {
	switch {
	case s.c.HELO == "":
		s.badSequence("Send EHLO first")
		return
	case s.env != nil:
		s.badSequence("Nested MAIL command")
		return
	case s.cfg.Mode != ModeMX && s.c.AuthUser == "":
		s.srv.reject(RejectAuthRequired)
		s.reply(530, smtp.EnhancedCode{5, 7, 0}, "Authentication required")
		return
	}
	rest, ok := cutPrefixFold(arg, "FROM:")
	if !ok {
		s.syntax(errSyntaxMail)
		return
	}
	path, ptext, err := parsePath(rest)
	if err != nil {
		s.syntax(errBadAddress)
		return
	}
	env := &Envelope{}
	if path != "" {
		a, err := smtp.ParseAddress(path)
		if err != nil {
			s.syntax(s.smtpError(err, errBadAddress))
			return
		}
		env.From = a.String()
	}
	params, err := parseParams(ptext)
	if err != nil {
		s.syntax(err.(*smtp.Error))
		return
	}
	for _, p := range params {
		switch p.key {
		case "SIZE":
			n, err := strconv.ParseInt(p.value, 10, 64)
			if err != nil || n < 0 {
				if !allDigits(p.value) {
					s.syntax(errBadParam)
					return
				}
				n = 1 << 62 // digits too many to parse: certainly too big
			}
			if n > s.cfg.MaxMessageBytes {
				s.srv.reject(RejectSize)
				s.replyError(ptrErr(smtp.ErrMessageTooBig))
				return
			}
			env.Size = n
		case "BODY":
			switch strings.ToUpper(p.value) {
			case "7BIT":
			case "8BITMIME":
				env.Body8Bit = true
			default:
				s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported BODY value"})
				return
			}
		case "SMTPUTF8":
			if p.value != "" {
				s.syntax(errBadParam)
				return
			}
			env.SMTPUTF8 = true
		case "RET":
			v := strings.ToUpper(p.value)
			if v != "FULL" && v != "HDRS" {
				s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "RET must be FULL or HDRS"})
				return
			}
			env.Ret = v
		case "ENVID":
			v, ok := decodeXtext(p.value)
			if !ok || v == "" || len(v) > 100 {
				s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Invalid ENVID"})
				return
			}
			env.EnvID = v
		case "AUTH":
			// RFC 4954 §5: accepted and not trusted.
		default:
			s.syntax(&smtp.Error{Code: 555, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported MAIL parameter " + p.key})
			return
		}
	}
	if !env.SMTPUTF8 && !smtp.IsASCII(env.From) {
		s.syntax(errNeedUTF8)
		return
	}
	if err := s.srv.b.Mail(s.ctx, &s.c, env); err != nil {
		s.srv.reject(RejectMail)
		e := s.smtpError(err, errLocal)
		s.log.Info("mail rejected", "from", env.From, "reply", e.Error())
		s.replyError(e)
		return
	}
	s.env = env
	s.busy.Store(true)
	// The accepted message's line names the sender again: one line per
	// message at info, as the delivery side logs one per attempt.
	s.log.Debug("mail", "from", env.From, "size", env.Size, "user", s.c.AuthUser)
	s.reply(250, smtp.EnhancedCode{2, 1, 0}, "Sender OK")
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func ptrErr(e smtp.Error) *smtp.Error { return &e }

func (s *session) cmdRcpt(arg string) {
	switch {
	case s.env == nil:
		s.badSequence("Need MAIL command first")
		return
	case s.bdat != nil:
		s.badSequence("RCPT not allowed during BDAT transfer")
		return
	}
	rest, ok := cutPrefixFold(arg, "TO:")
	if !ok {
		s.syntax(errSyntaxRcpt)
		return
	}
	path, ptext, err := parsePath(rest)
	if err != nil || path == "" {
		s.syntax(errBadAddress)
		return
	}
	if strings.EqualFold(path, "postmaster") {
		path = "postmaster@" + s.cfg.Hostname
	}
	a, err := smtp.ParseAddress(path)
	if err != nil {
		s.syntax(s.smtpError(err, errBadAddress))
		return
	}
	r := Rcpt{Address: a.String()}
	params, err := parseParams(ptext)
	if err != nil {
		s.syntax(err.(*smtp.Error))
		return
	}
	for _, p := range params {
		switch p.key {
		case "NOTIFY":
			v, ok := validNotify(p.value)
			if !ok {
				s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Invalid NOTIFY value"})
				return
			}
			r.Notify = v
		case "ORCPT":
			if !validORCPT(p.value) {
				s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Invalid ORCPT value"})
				return
			}
			// Kept decoded ("rfc822;addr"): the form DSNs print and the
			// delivery client re-encodes for the next hop.
			typ, addr, _ := strings.Cut(p.value, ";")
			dec, ok := decodeXtext(addr)
			if !ok {
				s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Invalid ORCPT value"})
				return
			}
			r.ORCPT = typ + ";" + dec
		default:
			s.syntax(&smtp.Error{Code: 555, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported RCPT parameter " + p.key})
			return
		}
	}
	if !s.env.SMTPUTF8 && !smtp.IsASCII(r.Address) {
		s.syntax(errNeedUTF8)
		return
	}
	if len(s.env.Recipients) >= s.cfg.MaxRecipients {
		// RFC 5321 §4.5.3.1.10: the client goes on with the recipients
		// accepted so far and sends the rest later, so this is not an error;
		// it is junk, so that thousands of them still end the session.
		if !s.junkCommand() {
			return
		}
		s.srv.reject(RejectTooManyRcpts)
		e := smtp.ErrTooManyRcpts
		s.write(e.Code, e.Enhanced, e.Message)
		return
	}
	if err := s.srv.b.Rcpt(s.ctx, &s.c, s.env, r); err != nil {
		s.srv.reject(RejectRcpt)
		e := s.smtpError(err, errLocal)
		s.log.Info("rcpt rejected", "from", s.env.From, "rcpt", r.Address, "reply", e.Error())
		s.replyError(e)
		return
	}
	s.env.Recipients = append(s.env.Recipients, r)
	s.reply(250, smtp.EnhancedCode{2, 1, 5}, "Recipient OK")
}

func (s *session) limits() message.Limits {
	return message.Limits{MaxBytes: s.cfg.MaxMessageBytes, MaxReceived: s.cfg.MaxReceivedHeaders}
}

// needRecipients checks that a message may start now.
func (s *session) needRecipients() bool {
	switch {
	case s.env == nil:
		s.badSequence("Need MAIL command first")
	case len(s.env.Recipients) == 0:
		s.badSequence("Need RCPT command first")
	default:
		return true
	}
	return false
}

func (s *session) cmdData(arg string) {
	if arg != "" {
		s.syntax(&smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "DATA takes no parameters"})
		return
	}
	if s.bdat != nil {
		s.badSequence("DATA not allowed during BDAT transfer")
		return
	}
	if !s.needRecipients() {
		return
	}
	s.reply(354, smtp.EnhancedCode{}, "End data with <CR><LF>.<CR><LF>")
	s.dc.timeout = s.cfg.DataTimeout
	defer func() { s.dc.timeout = s.cfg.IdleTimeout }()

	s.growReader()
	defer s.shrinkReader()
	dr := message.NewDataReader(s.br, s.limits())
	body := io.MultiReader(strings.NewReader(s.receivedHeader(s.env, time.Now())), dr)
	qid, err := s.srv.b.Deliver(s.ctx, &s.c, s.env, body)
	_ = dr.Drain()
	s.finishMessage(qid, err, dr.Violation(), dr.IOErr(), dr.Consumed(), dr.Size())
}

// finishMessage answers the end of a message (DATA or BDAT LAST) and ends
// the transaction.
func (s *session) finishMessage(qid string, err error, violation *smtp.Error, ioErr error, consumed bool, size int64) {
	env := s.env
	defer s.resetTx()
	switch {
	case violation != nil:
		s.srv.reject(violationReason(violation))
		s.log.Info("message rejected", "from", env.From, "size", size, "reply", violation.Error())
		s.replyError(violation)
	case ioErr != nil:
		s.connFailed(ioErr, "reading message")
	case err != nil:
		s.srv.reject(RejectDeliver)
		e := s.smtpError(err, errLocal)
		s.log.Info("message not accepted", "from", env.From, "size", size, "reply", e.Error())
		s.replyError(e)
	case !consumed:
		s.srv.reject(RejectDeliver)
		s.log.Error("backend accepted a message without reading it to the end", "queue_id", qid)
		s.replyError(errLocal)
	default:
		s.srv.accepted.Add(1)
		// As Postfix: a delivered message forgives earlier errors and junk,
		// so a long session of real mail is never cut by these counts.
		s.errors, s.junk = 0, 0
		s.log.Info("message accepted", "id", qid, "from", env.From, "rcpts", len(env.Recipients), "size", size, "user", s.c.AuthUser)
		s.reply(250, smtp.EnhancedCode{2, 0, 0}, "OK queued as "+qid)
	}
}

func violationReason(e *smtp.Error) string {
	switch e {
	case message.ErrBareLineFeed:
		return RejectBareLF
	case message.ErrNUL:
		return RejectNUL
	case message.ErrLineTooLong:
		return RejectDataLine
	case message.ErrMessageTooBig:
		return RejectSize
	case message.ErrLoopDetected:
		return RejectLoop
	}
	return RejectDeliver
}

func (s *session) cmdBdat(arg string) {
	f := strings.Fields(arg)
	last := len(f) == 2 && strings.EqualFold(f[1], "LAST")
	var size int64 = -1
	if len(f) == 1 || last {
		if n, err := strconv.ParseInt(f[0], 10, 64); err == nil && n >= 0 {
			size = n
		}
	}
	if size < 0 {
		// The chunk length is unknown: the stream cannot be resynchronised.
		s.srv.reject(RejectSyntax)
		s.reply(501, smtp.EnhancedCode{5, 5, 4}, "Syntax: BDAT size [LAST], closing connection")
		s.closing = true
		return
	}
	s.dc.timeout = s.cfg.DataTimeout
	defer func() { s.dc.timeout = s.cfg.IdleTimeout }()
	// The chunk must arrive whole: an end of input before size octets is
	// io.ErrUnexpectedEOF, never the clean end of a (short) chunk.
	chunk := &chunkReader{r: s.br, n: size}
	discard := func() bool {
		if _, err := io.Copy(io.Discard, chunk); err != nil {
			s.connFailed(err, "reading BDAT chunk")
			return false
		}
		return true
	}
	if s.env == nil || len(s.env.Recipients) == 0 {
		if discard() {
			s.needRecipients()
		}
		return
	}
	if s.bdat == nil {
		s.startBDAT()
	}
	b := s.bdat
	if size > s.cfg.MaxMessageBytes-b.size { // not b.size+size: it could overflow
		if discard() {
			s.finishMessage("", nil, message.ErrMessageTooBig, nil, false, b.size)
		}
		return
	}
	b.size += size
	// Copy the chunk into the pipe that Deliver reads, telling read errors
	// (the client) from write errors (a violation, or Deliver returned).
	var readErr error
	_, err := io.Copy(b.cp, readerFunc(func(p []byte) (int, error) {
		n, err := chunk.Read(p)
		if err != nil && err != io.EOF {
			readErr = err
		}
		return n, err
	}))
	if readErr != nil {
		// Deliver must fail, not see the end of a message it would commit.
		s.abortBDAT(message.ErrConnection)
		s.connFailed(readErr, "reading BDAT chunk")
		return
	}
	if err != nil {
		if !discard() {
			return
		}
		last = true
	}
	if !last {
		s.reply(250, smtp.EnhancedCode{2, 0, 0}, strconv.FormatInt(size, 10)+" octets received")
		return
	}
	_ = b.cp.Close()
	res := <-b.done
	s.bdat = nil
	s.finishMessage(res.queueID, res.err, b.cp.Violation(), nil, b.cp.Consumed(), b.cp.Size())
}

// chunkReader reads exactly n octets of a BDAT chunk from r. An end of
// input before the last octet is io.ErrUnexpectedEOF: a chunk cut short by
// a disconnect must abort the transaction, not complete it.
type chunkReader struct {
	r io.Reader
	n int64 // octets still to read
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.n {
		p = p[:c.n]
	}
	n, err := c.r.Read(p)
	c.n -= int64(n)
	if errors.Is(err, io.EOF) {
		if c.n > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	return n, err
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// startBDAT starts Deliver on a pipe that the BDAT chunks feed.
func (s *session) startBDAT() {
	b := &bdatState{cp: message.NewChunkPipe(s.limits()), done: make(chan deliverResult, 1)}
	s.bdat = b
	c, env := s.c, s.env // Deliver runs beside the session: give it copies
	envCopy := *env
	envCopy.Recipients = append([]Rcpt(nil), env.Recipients...)
	body := io.MultiReader(strings.NewReader(s.receivedHeader(env, time.Now())), b.cp.Reader())
	s.srv.wg.Add(1)
	go func() {
		defer s.srv.wg.Done()
		var res deliverResult
		defer func() {
			if r := recover(); r != nil {
				s.srv.panics.Add(1)
				s.log.Error("panic in Deliver", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				res = deliverResult{err: errLocal}
			}
			b.cp.CloseReader(errDeliverEnded)
			b.done <- res
		}()
		res.queueID, res.err = s.srv.b.Deliver(s.ctx, &c, &envCopy, body)
	}()
}

// abortBDAT stops a BDAT transfer in progress, making Deliver's body
// fail with err, and waits for Deliver.
func (s *session) abortBDAT(err error) {
	if s.bdat == nil {
		return
	}
	s.bdat.cp.Abort(err)
	<-s.bdat.done
	s.bdat = nil
}

// resetTx ends the current transaction, if any.
func (s *session) resetTx() {
	s.abortBDAT(errTxAborted)
	s.env = nil
	s.busy.Store(false)
}

// errSASLConn marks an AUTH exchange ended by a connection failure, already
// handled.
var errSASLConn = errors.New("connection failed during AUTH")

func decodeSASL(s string) ([]byte, error) {
	if s == "=" {
		return []byte{}, nil
	}
	return base64.StdEncoding.DecodeString(s)
}
