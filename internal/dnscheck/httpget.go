package dnscheck

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
)

// maxPolicySize bounds an MTA-STS policy file (RFC 8461 §3.3 suggests 64 KiB).
const maxPolicySize = 64 << 10

// NewHTTPGet returns an HTTPGetFunc for MTA-STS policy files: HTTPS host
// names are resolved through r (the same resolver the checks use), TLS is
// verified with tlsConfig (nil means the system roots), redirects are
// refused (RFC 8461 §3.3), only status 200 is accepted, and the body is
// limited to 64 KiB. timeout bounds the whole fetch (default 10s).
func NewHTTPGet(r resolve.Resolver, tlsConfig *tls.Config, timeout time.Duration) HTTPGetFunc {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	dialer := &net.Dialer{Timeout: timeout}
	tr := &http.Transport{
		TLSClientConfig:     tlsConfig,
		TLSHandshakeTimeout: timeout,
		DisableKeepAlives:   true,
		Proxy:               nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			ips, err := r.LookupIP(ctx, host)
			if err != nil {
				return nil, fmt.Errorf("resolve %s: %w", host, err)
			}
			var errs []error
			for _, ip := range ips {
				c, err := dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				if err == nil {
					return c, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
	}
	client := &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("MTA-STS policy fetch must not redirect (RFC 8461 §3.3)")
		},
	}
	return func(ctx context.Context, url string) ([]byte, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", url, err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
		if err != nil {
			return nil, fmt.Errorf("GET %s: %w", url, err)
		}
		if len(body) > maxPolicySize {
			return nil, fmt.Errorf("GET %s: policy larger than %d bytes", url, maxPolicySize)
		}
		return body, nil
	}
}
