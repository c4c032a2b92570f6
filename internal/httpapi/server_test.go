package httpapi

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// bound is how long a test waits for something that must happen; only a
// broken server needs it (no timing is asserted).
const bound = 10 * time.Second

// served is the API, /healthz and NewServer on a real loopback listener
// wrapped by LimitListener, as internal/app builds them.
type served struct {
	*env
	addr string
	lim  *ratelimit.ConnLimiter
}

func serve(t *testing.T, cfg Config, scfg ServerConfig, lim *ratelimit.ConnLimiter) *served {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{ReadConns: 2, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st, sub: &fakeSubmitter{}, logs: &bytes.Buffer{}}
	mux := http.NewServeMux()
	mux.Handle("/v1/", New(cfg, Deps{Platform: st, Messages: st, Submitter: e.sub, Logger: slog.New(slog.DiscardHandler)}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	if lim == nil {
		lim = ratelimit.NewConnLimiter(0, 0)
	}
	scfg.Logger = slog.New(slog.DiscardHandler)
	srv := NewServer(mux, scfg)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { srv.Serve(LimitListener(ln, lim)); close(done) }() //nolint:errcheck // ErrServerClosed
	t.Cleanup(func() { srv.Close(); <-done })
	e.url = "http://" + ln.Addr().String()
	return &served{env: e, addr: ln.Addr().String(), lim: lim}
}

// dial opens a raw connection that fails the test's reads after bound.
func (s *served) dial(t *testing.T) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", s.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(bound)) //nolint:errcheck
	return c
}

// expectClosed reads c until the server closes it; a read timeout (the
// server kept the connection) fails the test.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the server still holds the connection after %s", what, bound)
	}
}

// healthz sends a keep-alive GET /healthz on c and reads the answer.
func healthz(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, res.Body) //nolint:errcheck
	res.Body.Close()
	if res.StatusCode != 200 || res.Close {
		t.Fatalf("healthz: %d close=%v", res.StatusCode, res.Close)
	}
}

// TestServerSlowlorisHeader: a client that never finishes its header, even
// one that keeps sending header lines, is disconnected after
// ReadHeaderTimeout although ReadTimeout is long.
func TestServerSlowlorisHeader(t *testing.T) {
	t.Parallel()
	s := serve(t, Config{}, ServerConfig{ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: time.Hour}, nil)

	silent := s.dial(t)
	io.WriteString(silent, "GET /healthz HTTP/1.1\r\nHost: herald\r\n") //nolint:errcheck
	expectClosed(t, silent, "silent client")

	trickle := s.dial(t)
	io.WriteString(trickle, "GET /healthz HTTP/1.1\r\nHost: herald\r\n") //nolint:errcheck
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if _, err := fmt.Fprintf(trickle, "X-%d: y\r\n", i); err != nil {
				return
			}
		}
	}()
	expectClosed(t, trickle, "trickling client")
}

// TestServerUnauthenticatedSlowBody: a request without a valid key (or with
// a key lacking the scope) gets its 401/403 at once, with the connection
// closed, while its body is still incomplete: the server neither waits for
// it nor drains it. ReadTimeout is an hour, so waiting would fail the test.
func TestServerUnauthenticatedSlowBody(t *testing.T) {
	t.Parallel()
	s := serve(t, Config{}, ServerConfig{ReadTimeout: time.Hour}, nil)
	readOnly := s.key("acme", store.ScopeRead)
	for _, tc := range []struct {
		name, auth, framing, start string
		status                     int
	}{
		{"no key, Content-Length", "", "Content-Length: 100000", "{", 401},
		{"bad key, Content-Length", "Authorization: Bearer hk_aaaaaaaaaaaa_" + strings.Repeat("A", 43) + "\r\n", "Content-Length: 2000", `{"to":`, 401},
		{"no key, chunked", "", "Transfer-Encoding: chunked", "5\r\n{\"to\"\r\n", 401},
		{"no key, 100-continue", "", "Expect: 100-continue\r\nContent-Length: 2000", "", 401},
		{"read key on send endpoint", "Authorization: Bearer " + readOnly + "\r\n", "Content-Length: 2000", "{", 403},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := s.dial(t)
			fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\n%s%s\r\n\r\n%s", tc.auth, tc.framing, tc.start)
			res, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("no response while the body is incomplete: %v", err)
			}
			res.Body.Close()
			if res.StatusCode != tc.status || !res.Close {
				t.Fatalf("status %d, close=%v; want %d and Connection: close", res.StatusCode, res.Close, tc.status)
			}
			expectClosed(t, c, tc.name)
		})
	}
	if n := s.sub.count(); n != 0 {
		t.Fatalf("%d submissions", n)
	}
}

// TestServerUnreadBodyClosesConnection: handlers that do not read the body
// at all (/healthz, an unknown path) do not wait for it either.
func TestServerUnreadBodyClosesConnection(t *testing.T) {
	t.Parallel()
	s := serve(t, Config{}, ServerConfig{ReadTimeout: time.Hour}, nil)
	for _, path := range []string{"/healthz", "/v1/nowhere"} {
		c := s.dial(t)
		method := "POST"
		if path == "/healthz" {
			method = "GET"
		}
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: herald\r\nContent-Length: 5000\r\n\r\nabc", method, path)
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("%s: no response while the body is incomplete: %v", path, err)
		}
		res.Body.Close()
		if !res.Close {
			t.Errorf("%s: %d without Connection: close", path, res.StatusCode)
		}
		expectClosed(t, c, path)
	}
}

// TestServerPerIPConnectionCap: with a cap of 2 per address, a third
// connection from 127.0.0.1 is refused with 503 (or reset) and never
// served; once one of the two closes, a new one is served.
func TestServerPerIPConnectionCap(t *testing.T) {
	t.Parallel()
	s := serve(t, Config{}, ServerConfig{}, ratelimit.NewConnLimiter(100, 2))
	var held []net.Conn
	for range 2 {
		c := s.dial(t)
		healthz(t, c, bufio.NewReader(c)) // served: it holds a slot
		held = append(held, c)
	}
	if n := s.lim.ActiveFrom(netip.MustParseAddr("127.0.0.1")); n != 2 {
		t.Fatalf("%d connections counted, want 2", n)
	}
	third := s.dial(t)
	io.WriteString(third, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n") //nolint:errcheck
	res, err := http.ReadResponse(bufio.NewReader(third), nil)
	switch {
	case err == nil && res.StatusCode != http.StatusServiceUnavailable:
		t.Fatalf("third connection served: %d", res.StatusCode)
	case err != nil:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("third connection neither refused nor closed")
		}
	}
	expectClosed(t, third, "third connection")

	held[0].Close()
	deadline := time.Now().Add(bound)
	for {
		c := s.dial(t)
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n") //nolint:errcheck
		res, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err == nil && res.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the slot of the closed connection was never released")
		}
	}
}

// TestServerIdleTimeout: a keep-alive connection idle after a request is
// closed by the server.
func TestServerIdleTimeout(t *testing.T) {
	t.Parallel()
	lim := ratelimit.NewConnLimiter(10, 10)
	s := serve(t, Config{}, ServerConfig{IdleTimeout: 100 * time.Millisecond}, lim)
	c := s.dial(t)
	br := bufio.NewReader(c)
	healthz(t, c, br)
	if _, err := io.Copy(io.Discard, br); err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("idle keep-alive connection not closed")
		}
	}
	deadline := time.Now().Add(bound)
	for lim.Active() != 0 { // the server closed it: the slot is free
		if time.Now().After(deadline) {
			t.Fatalf("%d slots still held", lim.Active())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestServerHeaderLimit: a header over MaxHeaderBytes is refused with 431.
func TestServerHeaderLimit(t *testing.T) {
	t.Parallel()
	s := serve(t, Config{}, ServerConfig{MaxHeaderBytes: 4 << 10}, nil)
	c := s.dial(t)
	fmt.Fprintf(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 64<<10))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("status %d, want 431", res.StatusCode)
	}
	c2 := s.dial(t)
	fmt.Fprintf(c2, "GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Small: %s\r\n\r\n", strings.Repeat("a", 2<<10))
	if res, err := http.ReadResponse(bufio.NewReader(c2), nil); err != nil || res.StatusCode != 200 {
		t.Fatalf("small header: %v %v", res, err)
	}
}

// TestServerUploadOutlivesReadTimeout: an authenticated upload of a large
// raw message may take longer than ReadTimeout (UploadTimeout applies
// once the key is checked), while the same slow body sent to another
// endpoint is cut at ReadTimeout.
func TestServerUploadOutlivesReadTimeout(t *testing.T) {
	t.Parallel()
	const readTimeout = 300 * time.Millisecond
	s := serve(t, Config{UploadTimeout: time.Minute}, ServerConfig{ReadTimeout: readTimeout, WriteTimeout: readTimeout}, nil)
	tok := s.key("acme", store.ScopeSend, store.ScopeAdmin)

	head := "From: a@acme.example\r\nTo: b@example.org\r\nSubject: big\r\n\r\n"
	line := strings.Repeat("x", 998) + "\r\n"
	body := head + strings.Repeat(line, (34<<20)/len(line)) // 34 MiB, under the 35 MiB default
	c := s.dial(t)
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer %s\r\nContent-Type: message/rfc822\r\nContent-Length: %d\r\n\r\n", tok, len(body))
	half := len(body) / 2
	if _, err := io.WriteString(c, body[:half]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * readTimeout) // a slow but honest client: past ReadTimeout (and WriteTimeout) mid-body
	if _, err := io.WriteString(c, body[half:]); err != nil {
		t.Fatalf("the server cut the authenticated upload: %v", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to the upload: %v", err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		t.Fatalf("upload: %d", res.StatusCode)
	}
	if sub := s.sub.last(); sub == nil || len(sub.Raw) < len(body) {
		t.Fatal("the message was not submitted whole")
	}

	// The same pause inside a small body of another endpoint.
	sup := `{"address":"x@example.org"}`
	c2 := s.dial(t)
	fmt.Fprintf(c2, "POST /v1/suppressions HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", tok, len(sup), sup[:5])
	time.Sleep(2 * readTimeout)
	io.WriteString(c2, sup[5:]) //nolint:errcheck // may fail: the server gave up
	if res, err := http.ReadResponse(bufio.NewReader(c2), nil); err == nil && res.StatusCode < 300 {
		t.Fatalf("a body slower than ReadTimeout was accepted: %d", res.StatusCode)
	}
}

// TestLimitListenerTotal: the total cap counts every address.
func TestLimitListenerTotal(t *testing.T) {
	t.Parallel()
	s := serve(t, Config{}, ServerConfig{}, ratelimit.NewConnLimiter(1, 10))
	first := s.dial(t)
	healthz(t, first, bufio.NewReader(first))
	c := s.dial(t)                                                     // per address 10: only the total of 1 refuses it
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n") //nolint:errcheck
	if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil && res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("second connection served over a total of 1: %d", res.StatusCode)
	}
}
