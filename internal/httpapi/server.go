package httpapi

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
)

// ServerConfig bounds what one HTTP client can hold: time for each phase of
// a request, header size and, through LimitListener, connections.
type ServerConfig struct {
	// ReadHeaderTimeout bounds reading a request's header (slowloris).
	// Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, header and body. It is
	// short because it applies before authentication; the API extends it
	// for an authenticated message upload (Config.UploadTimeout). Default
	// 30s (1 MiB, the limit of other bodies, at 35 KB/s).
	ReadTimeout time.Duration
	// WriteTimeout bounds the time from the end of the request header to
	// the end of the response: the handler and a client slow to read the
	// answer. Default 60s.
	WriteTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long between
	// requests. Default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request line and header fields; larger
	// requests get 431 (net/http allows 4 KiB of slack). Default 16 KiB.
	MaxHeaderBytes int
	// Logger receives net/http's own errors (TLS handshakes, Accept
	// problems) at warn level. Default slog.Default().
	Logger *slog.Logger
}

func (c *ServerConfig) defaults() {
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = 10 * time.Second
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 120 * time.Second
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 16 << 10
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// NewServer returns the HTTP server for h (the API, metrics, health) with
// cfg's timeouts and header limit. Every response to a request whose body
// the handler did not read to the end closes the connection (see
// closeUnread), so an unread body is never drained.
// Serve it on listeners wrapped by LimitListener.
func NewServer(h http.Handler, cfg ServerConfig) *http.Server {
	cfg.defaults()
	return &http.Server{
		Handler:           closeUnread(h),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.With("component", "http").Handler(), slog.LevelWarn),
	}
}

// closeUnread wraps h so that a response started while the request body is
// not yet read to its end closes the connection without reading more (see
// stopReading): a 401, 404 or 415 must not wait for a body nobody will
// read.
func closeUnread(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		b := &trackedBody{ReadCloser: r.Body, want: r.ContentLength}
		r.Body = b
		cw := &closeWriter{ResponseWriter: w, body: b}
		h.ServeHTTP(cw, r)
		cw.beforeHeader() // a handler that wrote nothing: the server writes the header next
	})
}

// trackedBody records whether the request body was read to its end.
type trackedBody struct {
	io.ReadCloser
	want int64 // Content-Length, or -1 (chunked)
	n    atomic.Int64
	eof  atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err == io.EOF {
		b.eof.Store(true)
	}
	return n, err
}

// done reports whether nothing of the body remains to be read.
func (b *trackedBody) done() bool {
	return b.eof.Load() || (b.want > 0 && b.n.Load() >= b.want)
}

// closeWriter adds "Connection: close" to a response started while the
// body is unread.
type closeWriter struct {
	http.ResponseWriter
	body    *trackedBody
	started bool
}

func (w *closeWriter) beforeHeader() {
	if w.started {
		return
	}
	w.started = true
	if !w.body.done() {
		stopReading(w.ResponseWriter)
	}
}

// stopReading is for a response sent without reading the request body: it
// adds "Connection: close" and expires the connection's read deadline.
// net/http then writes the response at once and closes the connection,
// instead of first (without "close") or afterwards (even with it) reading
// and discarding up to 256 KiB of the body, for as long as the client takes
// to trickle it within ReadTimeout.
func stopReading(w http.ResponseWriter) {
	w.Header().Set("Connection", "close")
	// ErrNotSupported for writers without a connection (tests).
	_ = http.NewResponseController(w).SetReadDeadline(time.Unix(1, 0))
}

// WriteHeader implements http.ResponseWriter.
func (w *closeWriter) WriteHeader(code int) {
	if code >= 200 { // 1xx informational responses precede the real one
		w.beforeHeader()
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write implements http.ResponseWriter.
func (w *closeWriter) Write(p []byte) (int, error) {
	w.beforeHeader()
	return w.ResponseWriter.Write(p)
}

// Flush implements http.Flusher.
func (w *closeWriter) Flush() {
	w.beforeHeader()
	http.NewResponseController(w.ResponseWriter).Flush() //nolint:errcheck // as http.Flusher: no error to report
}

// Unwrap lets http.ResponseController reach the server's writer (deadlines).
func (w *closeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// LimitListener wraps ln so that at most the limiter's number of
// connections are open in total and per client address (IPv4 address, IPv6
// /64; see ratelimit.ConnLimiter). A connection over a limit is answered
// "503 Service Unavailable" with "Connection: close" and closed at once,
// before anything of it is read; it never reaches the HTTP server. A slot is
// released when the server closes the connection. Behind a reverse proxy
// every client shares the proxy's address: raise or disable (0) the
// per-address limit there.
func LimitListener(ln net.Listener, lim *ratelimit.ConnLimiter) net.Listener {
	return &limitListener{Listener: ln, lim: lim}
}

type limitListener struct {
	net.Listener
	lim *ratelimit.ConnLimiter
}

// refusal is written to a connection over a limit.
const refusal = "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n" +
	"Retry-After: 5\r\nContent-Length: 21\r\n\r\ntoo many connections\n"

// Accept returns the next connection within the limits.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		release, err := l.lim.Acquire(remoteIP(c))
		if err != nil {
			// The write fits the socket buffer of a fresh connection; the
			// deadline only guards against the impossible.
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, refusal)
			if cw, ok := c.(interface{ CloseWrite() error }); ok {
				_ = cw.CloseWrite()
			}
			_ = c.Close()
			continue
		}
		return &limitConn{Conn: c, release: release}, nil
	}
}

// remoteIP is the client address of c; the zero Addr (one shared slot)
// if it is not an IP connection.
func remoteIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// limitConn releases its slot on Close.
type limitConn struct {
	net.Conn
	release func() // idempotent
}

// Close closes the connection and frees its slot.
func (c *limitConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// CloseWrite half-closes a TCP connection: net/http sends a response with
// "Connection: close" and then half-closes, so the client reads the
// response before the connection is reset.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
