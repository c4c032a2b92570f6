package webhook

import (
	"net/http"
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
