package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// maxRedirects bounds the same-host redirects followed.
const maxRedirects = 3

// CheckRedirect is an http.Client redirect policy for requests Herald sends
// to user-supplied URLs: it follows only a redirect that keeps the POST
// (307, 308) to the same scheme and host (port included), at most three
// times; any other redirect is returned to the caller as the response.
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
// transport, the given overall timeout and CheckRedirect.
func NewClient(timeout time.Duration) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	t.ResponseHeaderTimeout = timeout
	return &http.Client{Transport: t, Timeout: timeout, CheckRedirect: CheckRedirect}
}

// ErrPrivateAddress is returned when a webhook or route URL leads to an
// address Herald refuses to call on a tenant's behalf.
var ErrPrivateAddress = errors.New("webhook: destination is a loopback, private or link-local address")

// PublicOnly is a net.Dialer Control function that refuses to connect to
// loopback, private (RFC 1918, ULA), link-local, unspecified and multicast
// addresses. Checked at connect time, after DNS resolution, it also stops
// DNS-rebinding tricks: a tenant's webhook URL cannot reach Herald's own
// admin listener or the internal network (SSRF).
func PublicOnly(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return err
	}
	ip = ip.Unmap()
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsUnspecified() || ip.IsMulticast() || ip.IsInterfaceLocalMulticast() {
		return fmt.Errorf("%w: %s", ErrPrivateAddress, ip)
	}
	return nil
}

// NewPublicClient is NewClient whose connections may only reach public
// addresses (see PublicOnly).
func NewPublicClient(timeout time.Duration) *http.Client {
	c := NewClient(timeout)
	t := c.Transport.(*http.Transport)
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Control: PublicOnly}
	t.DialContext = d.DialContext
	t.Proxy = nil // a proxy would connect on our behalf, past the check
	return c
}
