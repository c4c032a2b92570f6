package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxRedirects bounds the same-host redirects CheckRedirect follows.
const maxRedirects = 3

// CheckRedirect is an http.Client redirect policy for requests Herald sends
// to operator-configured URLs (HTTP routes): it follows only a redirect
// that keeps the POST (307, 308) to the same scheme and host (port
// included), at most three times; any other redirect is returned to the
// caller as the response. Webhooks, whose URLs tenants choose, follow no
// redirect at all (NoRedirects).
func CheckRedirect(req *http.Request, via []*http.Request) error {
	if len(via) == 0 {
		return nil
	}
	first := via[0]
	if len(via) > maxRedirects || req.Method != first.Method ||
		req.URL.Scheme != first.URL.Scheme || req.URL.Host != first.URL.Host {
		return http.ErrUseLastResponse
	}
	return nil
}

// NoRedirects is an http.Client redirect policy that follows no redirect:
// the 3xx response is returned to the caller, which counts it as a failed
// attempt. The Dispatcher uses it, so a webhook request only ever goes to
// the URL the tenant registered (and a redirect cannot steer it anywhere,
// not even to another path of the same host).
func NoRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// SafeClient returns a shallow copy of c (http.DefaultClient if nil) with
// CheckRedirect as its redirect policy.
func SafeClient(c *http.Client) *http.Client {
	if c == nil {
		c = http.DefaultClient
	}
	cc := *c
	cc.CheckRedirect = CheckRedirect
	return &cc
}

// NewClient returns an HTTP client for webhook and route requests: its own
// transport, the given overall timeout and CheckRedirect. It may connect to
// any address; see NewPublicClient.
func NewClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	t.ResponseHeaderTimeout = timeout
	return &http.Client{Transport: t, Timeout: timeout, CheckRedirect: CheckRedirect}
}

// PublicOnly is a net.Dialer Control function that refuses to connect to
// any address CheckAddr refuses (loopback, private, link-local, multicast
// and every other special-purpose block). It runs for each address the
// dialer tries, after DNS resolution and just before connect(2), so neither
// a name resolving to an internal address nor DNS rebinding between a check
// and the connection can make a tenant's webhook reach Herald's own
// listeners, a cloud metadata service or the internal network (SSRF).
func PublicOnly(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: unparsable address %q", ErrPrivateAddress, address)
	}
	return CheckAddr(ap.Addr())
}

// NewPublicClient is NewClient whose connections may only reach public
// addresses (see PublicOnly), through no proxy.
func NewPublicClient(timeout time.Duration) *http.Client {
	return newPublicClient(timeout, nil)
}

// newPublicClient is NewPublicClient resolving names with r (nil: the
// default resolver); tests pass one asking a loopback DNS server.
func newPublicClient(timeout time.Duration, r *net.Resolver) *http.Client {
	c := NewClient(timeout)
	t := c.Transport.(*http.Transport)
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: PublicOnly, Resolver: r}
	t.DialContext = d.DialContext
	t.Proxy = nil // a proxy would connect on our behalf, past the check
	return c
}

// Do sends req with c and reads (and discards) at most limit bytes of the
// response. It returns the final HTTP status (0 if there was no response)
// and "" for a 2xx answer, else a fixed one-line error text: "HTTP 500",
// "HTTP 307: redirect not followed", or a category of transport failure
// such as "connection refused". The text never contains anything the
// destination sent (body, Location, a malformed status line, certificate
// names) nor resolver details, so it may be shown to whoever chose the URL:
// a tenant must not be able to read internal responses through Herald.
func Do(c *http.Client, req *http.Request, limit int64) (int, string) {
	code, text, _ := do(c, req, limit)
	return code, text
}

// do is Do that also returns the underlying error, for the operator's log.
func do(c *http.Client, req *http.Request, limit int64) (int, string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, transportText(err), err
	}
	defer resp.Body.Close()
	// Read a bounded amount so the connection may be reused; never keep it.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, limit))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return resp.StatusCode, "", nil
	}
	text := "HTTP " + strconv.Itoa(resp.StatusCode)
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		text += ": redirect not followed"
	}
	return resp.StatusCode, text, errors.New(text)
}

// transportText maps a client error to a fixed text.
func transportText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var ne net.Error
	switch {
	case errors.Is(err, ErrPrivateAddress):
		return "refused: the destination is not a public address (private, loopback or special-purpose)"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "DNS: host not found"
		}
		return "DNS lookup failed"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "connection reset"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "destination unreachable"
	case errors.As(err, &certErr):
		return "TLS certificate not valid"
	case strings.Contains(err.Error(), "tls: "):
		return "TLS handshake failed"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without a response"
	}
	return "request failed: no valid HTTP response"
}
