// Package smtpout is Herald's outbound SMTP client connection: greeting,
// EHLO (HELO fallback), STARTTLS with any EHLO name, AUTH PLAIN, MAIL, RCPT,
// DATA with dot-stuffing, RSET and QUIT, one at a time or pipelined
// (RFC 2920, Pipeline). Every remote reply other than 2xx/3xx
// is returned as an *smtp.Error carrying the remote code, enhanced code and
// text; any other error means the connection is unusable.
//
// It replaces go-smtp's client, which cannot send STARTTLS after an EHLO
// with a chosen name, re-sends EHLO after every RSET, and sets no deadline
// while the message body is written.
package smtpout

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/heraldmail/herald/internal/smtp"
)

// Limits on what a remote may send in one reply.
const (
	maxLineLen    = 2000
	maxReplyLines = 100
)

// ErrProtocol marks a reply that is not valid SMTP.
var ErrProtocol = errors.New("smtpout: protocol error")

// Reply is one SMTP reply.
type Reply struct {
	Code     int
	Enhanced smtp.EnhancedCode // zero when the remote sent none
	Lines    []string          // text lines without code and enhanced code
}

// MaxTextLen bounds the bytes of Reply.Text and SafeText (before their
// "..." mark).
const MaxTextLen = 1000

// Text returns the reply text lines joined by spaces, made safe by
// SafeText. A reply may otherwise hold up to 100 lines of 2,000 bytes.
func (r *Reply) Text() string { return SafeText(strings.Join(r.Lines, " ")) }

// SafeText makes text that a remote controls (a reply, an error quoting a
// certificate's names) safe to store, log, show in a terminal and put into
// a DSN or a header: control characters (C0 including a bare CR or LF, DEL
// and C1) become spaces, invalid UTF-8 bytes '?', and it is cut to
// MaxTextLen bytes on a character boundary, marked with "...".
func SafeText(s string) string {
	var b strings.Builder
	for i, c := range s {
		switch {
		case c < 0x20 || c == 0x7f || (c >= 0x80 && c < 0xa0):
			c = ' '
		case c == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				c = '?'
			}
		}
		if b.Len()+utf8.RuneLen(c) > MaxTextLen {
			return b.String() + "..."
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Error returns the reply as an *smtp.Error; a missing enhanced code is
// filled in as class.0.0.
func (r *Reply) Error() *smtp.Error {
	e := r.Enhanced
	if e == (smtp.EnhancedCode{}) {
		e = smtp.EnhancedCode{r.Code / 100, 0, 0}
	}
	return &smtp.Error{Code: r.Code, Enhanced: e, Message: r.Text()}
}

// Conn is one client connection to an SMTP server. It is not safe for
// concurrent use.
type Conn struct {
	raw  net.Conn // the TCP connection, closed on context cancellation
	tc   *timedConn
	conn net.Conn // raw or the TLS connection over it
	r    *bufio.Reader
	w    *bufio.Writer

	// CommandTimeout bounds each read and write of a command and its reply
	// (and each write of the body). DataTimeout bounds the wait for the
	// reply after the final dot.
	CommandTimeout, DataTimeout time.Duration

	ext     map[string]string
	tls     *tls.ConnectionState
	greeted bool
}

// timedConn sets a fresh deadline before every Read and Write, so a stalled
// peer is detected whatever the layer above (TLS, bufio) does.
type timedConn struct {
	net.Conn
	rt, wt time.Duration
}

func (c *timedConn) Read(p []byte) (int, error) {
	if c.rt > 0 {
		c.Conn.SetReadDeadline(time.Now().Add(c.rt)) //nolint:errcheck // surfaces on Read
	}
	return c.Conn.Read(p)
}

func (c *timedConn) Write(p []byte) (int, error) {
	if c.wt > 0 {
		c.Conn.SetWriteDeadline(time.Now().Add(c.wt)) //nolint:errcheck // surfaces on Write
	}
	return c.Conn.Write(p)
}

// NewConn wraps an established TCP connection. Nothing is read until Greet.
func NewConn(nc net.Conn, commandTimeout, dataTimeout time.Duration) *Conn {
	if commandTimeout <= 0 {
		commandTimeout = 5 * time.Minute
	}
	if dataTimeout <= 0 {
		dataTimeout = 10 * time.Minute
	}
	tc := &timedConn{Conn: nc, rt: commandTimeout, wt: commandTimeout}
	c := &Conn{raw: nc, tc: tc, CommandTimeout: commandTimeout, DataTimeout: dataTimeout}
	c.setConn(tc)
	return c
}

// writeBufferSize is the write buffer of an outbound connection: a body
// goes out in writes of this size (one write for most messages). A node
// holds few outbound connections (one per destination and concurrent
// delivery), so they get more than the inbound sessions' 4 KiB.
const writeBufferSize = 32 << 10

func (c *Conn) setConn(nc net.Conn) {
	c.conn = nc
	c.r = bufio.NewReaderSize(nc, 4096)
	c.w = bufio.NewWriterSize(nc, writeBufferSize)
}

// watch closes the connection if ctx ends before the returned stop is called.
func (c *Conn) watch(ctx context.Context) (stop func() bool) {
	return context.AfterFunc(ctx, func() { c.raw.Close() })
}

// wrapErr adds the context error when the connection was closed because of it.
func wrapErr(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := smtp.AsError(err); ok {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%w (%w)", err, ctx.Err())
	}
	return err
}

// Close closes the connection without QUIT.
func (c *Conn) Close() error { return c.raw.Close() }

// RemoteAddr returns the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.raw.RemoteAddr() }

// TLS returns the TLS state after a successful StartTLS (or for an
// implicit-TLS connection wrapped with ClientTLS), else nil.
func (c *Conn) TLS() *tls.ConnectionState { return c.tls }

// Ext reports whether the server advertised extension name (upper case) in
// its last EHLO reply, and the extension's parameters.
func (c *Conn) Ext(name string) (string, bool) {
	v, ok := c.ext[name]
	return v, ok
}

func (c *Conn) readLine() (string, error) {
	var buf []byte
	for {
		part, err := c.r.ReadSlice('\n')
		buf = append(buf, part...)
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			if len(buf) > maxLineLen {
				return "", fmt.Errorf("%w: reply line too long", ErrProtocol)
			}
			continue
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("smtpout: reading reply: %w", err)
	}
	if len(buf) > maxLineLen {
		return "", fmt.Errorf("%w: reply line too long", ErrProtocol)
	}
	return strings.TrimRight(string(buf), "\r\n"), nil
}

// ReadReply reads one (possibly multi-line) reply.
func (c *Conn) ReadReply() (*Reply, error) {
	rep := &Reply{}
	for i := 0; ; i++ {
		if i >= maxReplyLines {
			return nil, fmt.Errorf("%w: too many reply lines", ErrProtocol)
		}
		line, err := c.readLine()
		if err != nil {
			return nil, err
		}
		if len(line) < 3 || line[0] < '2' || line[0] > '5' {
			return nil, fmt.Errorf("%w: bad reply %q", ErrProtocol, truncate(line))
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || (i > 0 && code != rep.Code) {
			return nil, fmt.Errorf("%w: bad reply %q", ErrProtocol, truncate(line))
		}
		rep.Code = code
		more := false
		text := ""
		if len(line) > 3 {
			switch line[3] {
			case '-':
				more = true
			case ' ':
			default:
				return nil, fmt.Errorf("%w: bad reply %q", ErrProtocol, truncate(line))
			}
			text = line[4:]
		}
		rep.Lines = append(rep.Lines, text)
		if !more {
			break
		}
	}
	parseEnhanced(rep)
	return rep, nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// parseEnhanced moves a leading enhanced status code matching the reply's
// class out of the text lines.
func parseEnhanced(rep *Reply) {
	first, _, _ := strings.Cut(rep.Lines[0], " ")
	parts := strings.Split(first, ".")
	if len(parts) != 3 {
		return
	}
	var e smtp.EnhancedCode
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return
		}
		e[i] = n
	}
	if e[0] != rep.Code/100 || (e[0] != 2 && e[0] != 4 && e[0] != 5) {
		return
	}
	rep.Enhanced = e
	for i, l := range rep.Lines {
		rep.Lines[i] = strings.TrimPrefix(strings.TrimPrefix(l, first), " ")
	}
}

// cmd sends one command line and reads the reply. A reply whose first digit
// differs from want (2 or 3) is returned as an *smtp.Error.
func (c *Conn) cmd(ctx context.Context, want int, line string) (*Reply, error) {
	if strings.ContainsAny(line, "\r\n") {
		return nil, fmt.Errorf("smtpout: CR or LF in command")
	}
	stop := c.watch(ctx)
	defer stop()
	if _, err := c.w.WriteString(line + "\r\n"); err != nil {
		return nil, wrapErr(ctx, fmt.Errorf("smtpout: writing command: %w", err))
	}
	if err := c.w.Flush(); err != nil {
		return nil, wrapErr(ctx, fmt.Errorf("smtpout: writing command: %w", err))
	}
	rep, err := c.ReadReply()
	if err != nil {
		return nil, wrapErr(ctx, err)
	}
	if rep.Code/100 != want {
		return rep, rep.Error()
	}
	return rep, nil
}

// MaxPipeline bounds the commands that Pipeline sends in one burst.
const MaxPipeline = 1000

// Pipeline sends lines in one write (RFC 2920 command pipelining) and then
// reads one reply per line, in order. Use it only when the server
// advertised PIPELINING, and only for commands that may be pipelined (MAIL,
// RCPT, RSET, and DATA as the last one); EHLO, STARTTLS, AUTH and the
// body's final dot are synchronisation points and go through their own
// methods.
//
// It returns the replies read, whatever their codes. The error is non-nil
// when fewer replies than lines came back: the connection failed (it is
// then unusable), or a reply was 421, after which the server closes the
// connection and nothing more is read (the 421 is the last reply returned
// and the error is its *smtp.Error). Nothing is sent if a line holds CR or
// LF or there are more than MaxPipeline lines.
func (c *Conn) Pipeline(ctx context.Context, lines []string) ([]*Reply, error) {
	if len(lines) > MaxPipeline {
		return nil, fmt.Errorf("smtpout: %d commands to pipeline, at most %d", len(lines), MaxPipeline)
	}
	for _, l := range lines {
		if strings.ContainsAny(l, "\r\n") {
			return nil, fmt.Errorf("smtpout: CR or LF in command")
		}
	}
	stop := c.watch(ctx)
	defer stop()
	for _, l := range lines {
		c.w.WriteString(l)      //nolint:errcheck // bufio keeps the first error for Flush
		c.w.WriteString("\r\n") //nolint:errcheck // as above
	}
	if err := c.w.Flush(); err != nil {
		return nil, wrapErr(ctx, fmt.Errorf("smtpout: writing commands: %w", err))
	}
	reps := make([]*Reply, 0, len(lines))
	for range lines {
		rep, err := c.ReadReply()
		if err != nil {
			return reps, wrapErr(ctx, err)
		}
		reps = append(reps, rep)
		if rep.Code == 421 && len(reps) < len(lines) {
			return reps, rep.Error()
		}
	}
	return reps, nil
}

// Greet reads the server's greeting; anything but 220 is an *smtp.Error.
func (c *Conn) Greet(ctx context.Context) (*Reply, error) {
	stop := c.watch(ctx)
	defer stop()
	rep, err := c.ReadReply()
	if err != nil {
		return nil, wrapErr(ctx, err)
	}
	c.greeted = true
	if rep.Code != 220 {
		return rep, rep.Error()
	}
	return rep, nil
}

// Hello sends EHLO name, falling back to HELO when EHLO is refused with
// 500/502, and records the advertised extensions.
func (c *Conn) Hello(ctx context.Context, name string) error {
	rep, err := c.cmd(ctx, 2, "EHLO "+name)
	if e, ok := smtp.AsError(err); ok && (e.Code == 500 || e.Code == 502) {
		c.ext = map[string]string{}
		_, err = c.cmd(ctx, 2, "HELO "+name)
		return err
	}
	if err != nil {
		return err
	}
	c.ext = map[string]string{}
	for _, l := range rep.Lines[1:] {
		k, v, _ := strings.Cut(l, " ")
		c.ext[strings.ToUpper(k)] = v
	}
	return nil
}

// StartTLS sends STARTTLS, performs the handshake with cfg and repeats EHLO.
func (c *Conn) StartTLS(ctx context.Context, cfg *tls.Config, name string) error {
	if _, err := c.cmd(ctx, 2, "STARTTLS"); err != nil {
		return err
	}
	if c.r.Buffered() > 0 {
		return fmt.Errorf("%w: data after STARTTLS reply", ErrProtocol)
	}
	if err := c.handshake(ctx, cfg); err != nil {
		return err
	}
	return c.Hello(ctx, name)
}

// ClientTLS starts TLS right away (implicit TLS, port 465) before Greet.
func (c *Conn) ClientTLS(ctx context.Context, cfg *tls.Config) error {
	return c.handshake(ctx, cfg)
}

func (c *Conn) handshake(ctx context.Context, cfg *tls.Config) error {
	tc := tls.Client(c.tc, cfg)
	hctx, cancel := context.WithTimeout(ctx, c.CommandTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		return wrapErr(ctx, fmt.Errorf("smtpout: TLS handshake: %w", err))
	}
	st := tc.ConnectionState()
	c.tls = &st
	c.setConn(tc)
	return nil
}

// AuthPlain authenticates with SASL PLAIN.
func (c *Conn) AuthPlain(ctx context.Context, user, pass string) error {
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	_, err := c.cmd(ctx, 2, "AUTH PLAIN "+resp)
	return err
}

// Mail sends MAIL FROM:<from> with the given ESMTP parameters
// (e.g. "SIZE=123", "RET=HDRS").
func (c *Conn) Mail(ctx context.Context, from string, params ...string) error {
	_, err := c.cmd(ctx, 2, withParams("MAIL FROM:<"+from+">", params))
	return err
}

// Rcpt sends RCPT TO:<to> with the given ESMTP parameters.
func (c *Conn) Rcpt(ctx context.Context, to string, params ...string) error {
	_, err := c.cmd(ctx, 2, withParams("RCPT TO:<"+to+">", params))
	return err
}

func withParams(s string, params []string) string {
	for _, p := range params {
		s += " " + p
	}
	return s
}

// Data sends DATA, then body dot-stuffed (bare LF is sent as CRLF), then the
// final dot, and returns the final reply. Only a nil error means the server
// took responsibility for the message (a 2xx reply). The error wraps
// ErrBody when reading body failed; the connection is then unusable.
func (c *Conn) Data(ctx context.Context, body io.Reader) (*Reply, error) {
	if _, err := c.cmd(ctx, 3, "DATA"); err != nil {
		return nil, err
	}
	return c.Body(ctx, body)
}

// copyBuffers are the buffers bodies are copied through, reused from
// message to message (io.Copy would allocate 32 KiB for each).
var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// Body sends body dot-stuffed and the final dot after the server answered
// DATA with 354 (through Data or Pipeline), and returns the final reply
// like Data.
func (c *Conn) Body(ctx context.Context, body io.Reader) (*Reply, error) {
	stop := c.watch(ctx)
	defer stop()
	dw := newDotWriter(c.w)
	buf := copyBuffers.Get().(*[]byte)
	_, err := io.CopyBuffer(dw, bodyReader{body}, *buf)
	copyBuffers.Put(buf)
	if err != nil {
		var be bodyError
		if errors.As(err, &be) {
			c.raw.Close()
			return nil, fmt.Errorf("%w: %w", ErrBody, be.err)
		}
		return nil, wrapErr(ctx, fmt.Errorf("smtpout: writing message: %w", err))
	}
	if err := dw.Close(); err != nil { // writes ".\r\n" and flushes
		return nil, wrapErr(ctx, fmt.Errorf("smtpout: writing message: %w", err))
	}
	c.tc.rt = c.DataTimeout
	rep, err := c.ReadReply()
	c.tc.rt = c.CommandTimeout
	if err != nil {
		return nil, wrapErr(ctx, err)
	}
	if rep.Code/100 != 2 {
		return rep, rep.Error()
	}
	return rep, nil
}

// EmptyData ends the message at once after DATA got 354 when nothing is
// to be sent (no recipient was accepted, RFC 2920 section 3.1): a lone
// final dot. Its reply is returned like Data's.
func (c *Conn) EmptyData(ctx context.Context) (*Reply, error) {
	return c.cmd(ctx, 2, ".")
}

// ErrBody marks a failure to read the message body (a local error).
var ErrBody = errors.New("smtpout: reading message body")

type bodyError struct{ err error }

func (e bodyError) Error() string { return e.err.Error() }

// bodyReader marks errors that come from the body, not the connection.
type bodyReader struct{ r io.Reader }

func (b bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		err = bodyError{err}
	}
	return n, err
}

// Reset sends RSET.
func (c *Conn) Reset(ctx context.Context) error {
	_, err := c.cmd(ctx, 2, "RSET")
	return err
}

// Quit sends QUIT (waiting briefly for the reply) and closes the connection.
func (c *Conn) Quit() error {
	c.tc.rt, c.tc.wt = min(c.CommandTimeout, 2*time.Second), min(c.CommandTimeout, 2*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err := c.cmd(ctx, 2, "QUIT")
	c.raw.Close()
	return err
}

// EncodeXtext encodes s as RFC 3461 xtext (for ORCPT and ENVID).
func EncodeXtext(s string) string {
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch < '!' || ch > '~' || ch == '+' || ch == '=' {
			fmt.Fprintf(&b, "+%02X", ch)
			continue
		}
		b.WriteByte(ch)
	}
	return b.String()
}
