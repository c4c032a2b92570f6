package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
)

// TestHTTPListenerLimits checks that the node's HTTP listener is built with
// the [http] limits: a header never finished is cut off, an unauthenticated
// upload is answered 401 before its body is complete, and a third
// connection from one address over max_connections_per_ip = 2 is refused.
func TestHTTPListenerLimits(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.HTTP.ReadHeaderTimeout = 200 * time.Millisecond
		c.HTTP.ReadTimeout = time.Hour // waiting for a body would fail the test
		c.HTTP.UploadTimeout = time.Hour
		c.HTTP.MaxConnectionsPerIP = 2
	})
	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", h.addr("http"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck
		return c, bufio.NewReader(c)
	}
	closed := func(r io.Reader, what string) {
		t.Helper()
		_, err := io.Copy(io.Discard, r)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("%s: connection still open", what)
		}
	}

	c, br := dial()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n") //nolint:errcheck
	closed(br, "unfinished header")
	c.Close()

	c, br = dial()
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: herald\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{\"from\":")
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer before the body is complete: %v", err)
	}
	if res.StatusCode != http.StatusUnauthorized || !res.Close {
		t.Fatalf("unauthenticated upload: %d close=%v", res.StatusCode, res.Close)
	}
	closed(br, "refused upload")
	c.Close()

	for range 2 {
		c, br := dial()
		io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n") //nolint:errcheck
		if res, err := http.ReadResponse(br, nil); err != nil || res.StatusCode != 200 {
			t.Fatalf("healthz: %v %v", res, err)
		}
	}
	c, br = dial()
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n") //nolint:errcheck
	if res, err := http.ReadResponse(br, nil); err == nil && res.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("third connection from one address served: %d", res.StatusCode)
	}
}
