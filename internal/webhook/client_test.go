package webhook

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// acceptLog is a loopback TCP listener that records the client address of
// every connection it accepts and answers each with a bare 200.
type acceptLog struct {
	net.Listener
	remotes chan string
}

func listenLog(t *testing.T, network, addr string) *acceptLog {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		return nil
	}
	a := &acceptLog{Listener: ln, remotes: make(chan string, 100)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			a.remotes <- c.RemoteAddr().String()
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			c.Close()
		}
	}()
	return a
}

// firstAcceptedIs dials the listener directly and checks that this control
// connection is the first the listener ever accepted: nothing before it
// (the refused webhook requests) reached the listener.
func (a *acceptLog) firstAcceptedIs(t *testing.T) {
	t.Helper()
	c, err := net.Dial(a.Addr().Network(), a.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case r := <-a.remotes:
		if r != c.LocalAddr().String() {
			t.Errorf("listener %s accepted a connection from %s before the control connection %s", a.Addr(), r, c.LocalAddr())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("control connection not accepted")
	}
}

// TestPublicClientRefusesInternalDestinations sends webhook requests
// through NewPublicClient's dialer to real loopback listeners, by IP
// literal in several notations and by names that resolve (through a real
// DNS server, as with DNS rebinding) to loopback: every request is refused
// before a connection is made, with the fixed text.
func TestPublicClientRefusesInternalDestinations(t *testing.T) {
	t.Parallel()
	ln4 := listenLog(t, "tcp4", "127.0.0.1:0")
	ln6 := listenLog(t, "tcp6", "[::1]:0")
	dns := testdns.Start(t)
	dns.AddA("rebind.example.com", "127.0.0.1")
	dns.AddA("mixed.example.com", "10.9.8.7")
	dns.AddA("mixed.example.com", "127.0.0.1")
	dns.AddAAAA("rebind6.example.com", "::1")
	dns.Add("mapped.example.com. 300 IN AAAA ::ffff:127.0.0.1")
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, dns.Addr())
	}}
	client := newPublicClient(5*time.Second, res)

	_, p4, _ := net.SplitHostPort(ln4.Addr().String())
	urls := []string{
		"http://127.0.0.1:" + p4 + "/hook",
		"http://[::ffff:127.0.0.1]:" + p4 + "/hook",
		"http://[::ffff:7f00:1]:" + p4 + "/hook",
		"http://localhost:" + p4 + "/hook",
		"http://rebind.example.com:" + p4 + "/hook",
		"http://mixed.example.com:" + p4 + "/hook",
		"http://mapped.example.com:" + p4 + "/hook",
	}
	if ln6 != nil {
		_, p6, _ := net.SplitHostPort(ln6.Addr().String())
		urls = append(urls, "http://[::1]:"+p6+"/hook", "http://rebind6.example.com:"+p6+"/hook")
	}
	for _, u := range urls {
		req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(`{"id":1}`))
		if err != nil {
			t.Fatal(err)
		}
		code, text, detail := do(client, req, 1024)
		if code != 0 || !strings.HasPrefix(text, "refused: the destination is not a public address") || !errors.Is(detail, ErrPrivateAddress) {
			t.Errorf("%s: code %d, text %q, detail %v; want a refusal of the address", u, code, text, detail)
		}
	}
	ln4.firstAcceptedIs(t)
	if ln6 != nil {
		ln6.firstAcceptedIs(t)
	}
}

// TestDoNeverCopiesResponse: whatever a destination sends (body, Location,
// a non-HTTP banner, a certificate for an internal name), the recorded
// text holds only the status or a fixed category; the detail for the
// operator's log keeps it.
func TestDoNeverCopiesResponse(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/500":
			w.Header().Set("X-Internal", "SECRET-HEADER")
			w.WriteHeader(500)
			io.WriteString(w, "SECRET-BODY root:x:0:0")
		case "/307":
			w.Header().Set("Location", "http://SECRET-LOCATION.internal/")
			w.WriteHeader(307)
			io.WriteString(w, "SECRET-BODY")
		case "/200":
			io.WriteString(w, "SECRET-BODY")
		}
	}))
	t.Cleanup(srv.Close)

	banner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { banner.Close() })
	go func() {
		for {
			c, err := banner.Accept()
			if err != nil {
				return
			}
			// Answer the request (once read) with a non-HTTP banner, which
			// net/http quotes in its error.
			if req, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
				io.Copy(io.Discard, req.Body) //nolint:errcheck
			}
			io.WriteString(c, "SSH-2.0-SECRET-BANNER\r\n")
			c.Close()
		}
	}()

	tlsSrv := httptest.NewTLSServer(http.NotFoundHandler()) // certificate for example.com and 127.0.0.1
	t.Cleanup(tlsSrv.Close)
	_, tlsPort, _ := net.SplitHostPort(tlsSrv.Listener.Addr().String())

	client := NewClient(5 * time.Second)
	tr := client.Transport.(*http.Transport)
	tr.TLSClientConfig = &tls.Config{RootCAs: tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}

	for _, tc := range []struct {
		url, text, leak string
		code            int
	}{
		{srv.URL + "/500", "HTTP 500", "", 500},
		{srv.URL + "/307", "HTTP 307: redirect not followed", "", 307},
		{srv.URL + "/200", "", "", 200},
		{"http://" + banner.Addr().String() + "/", "request failed: no valid HTTP response", "SECRET-BANNER", 0},
		{"https://localhost:" + tlsPort + "/", "TLS certificate not valid", "example.com", 0},
	} {
		req, err := http.NewRequest(http.MethodPost, tc.url, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		code, text, detail := do(client, req, 1<<10)
		if code != tc.code || text != tc.text || strings.Contains(text, "SECRET") {
			t.Errorf("%s: code %d text %q, want %d %q", tc.url, code, text, tc.code, tc.text)
		}
		if tc.leak != "" && (detail == nil || !strings.Contains(detail.Error(), tc.leak)) {
			t.Errorf("%s: detail %v, want the transport error (with %q) for the log", tc.url, detail, tc.leak)
		}
		if c2, t2 := Do(client, req.Clone(context.Background()), 1<<10); tc.url == srv.URL+"/500" && (c2 != 500 || t2 != "HTTP 500") {
			t.Errorf("Do: %d %q", c2, t2)
		}
	}
}

func TestTransportText(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&net.DNSError{Err: "no such host", Name: "internal.corp", Server: "10.0.0.53:53", IsNotFound: true}, "DNS: host not found"},
		{&net.DNSError{Err: "server misbehaving", Name: "x", Server: "10.0.0.53:53"}, "DNS lookup failed"},
		{context.DeadlineExceeded, "timeout"},
		{io.ErrUnexpectedEOF, "connection closed without a response"},
		{errors.New(`net/http: HTTP/1.x transport connection broken: malformed HTTP response "secret"`), "request failed: no valid HTTP response"},
		{errors.New("remote error: tls: handshake failure"), "TLS handshake failed"},
	} {
		if got := transportText(tc.err); got != tc.want {
			t.Errorf("transportText(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}
