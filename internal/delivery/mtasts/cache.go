package mtasts

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/resolve"
)

// maxPolicySize bounds the policy body read (RFC 8461 §3.3 suggests 64 KiB).
const maxPolicySize = 64 << 10

// TLS-RPT result types (RFC 8460 §4.3.2) for policy discovery failures.
const (
	ResultFetchError    = "sts-policy-fetch-error"
	ResultPolicyInvalid = "sts-policy-invalid"
	ResultWebPKIInvalid = "sts-webpki-invalid"
)

// Error is a failure to obtain a policy that a domain advertises. Type is
// the RFC 8460 result type for TLS reports.
type Error struct {
	Domain string
	Type   string
	Err    error
}

func (e *Error) Error() string { return "mta-sts " + e.Domain + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Config configures a Cache.
type Config struct {
	Resolver resolve.Resolver // for the TXT record and the policy host's addresses
	RootCAs  *x509.CertPool   // roots for the policy host's certificate; nil = system roots
	Clock    clock.Clock      // default clock.Real
	Timeout  time.Duration    // per policy fetch; default 30s
	// Port is the HTTPS port of policy hosts (default 443; only tests
	// change it).
	Port int
	Log  *slog.Logger
}

// Cache finds, fetches and caches MTA-STS policies. It is safe for
// concurrent use; concurrent lookups of one domain share one fetch.
type Cache struct {
	cfg    Config
	client *http.Client

	mu       sync.Mutex
	policies map[string]*Policy
	inflight map[string]*call
	fetches  int
}

type call struct {
	done chan struct{}
	p    *Policy
	err  error
}

// New returns a Cache.
func New(cfg Config) *Cache {
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
	if cfg.Port == 0 {
		cfg.Port = 443
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{cfg: cfg, policies: map[string]*Policy{}, inflight: map[string]*call{}}
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           c.dial,
		TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout:   cfg.Timeout,
		ResponseHeaderTimeout: cfg.Timeout,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       30 * time.Second,
	}
	c.client = &http.Client{
		Transport: tr,
		Timeout:   cfg.Timeout,
		// RFC 8461 §3.3: HTTP redirects MUST NOT be followed.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return c
}

// Fetches returns how many HTTPS policy fetches were made so far.
func (c *Cache) Fetches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.fetches
}

// Close releases idle HTTPS connections.
func (c *Cache) Close() { c.client.CloseIdleConnections() }

// dial resolves the policy host through our resolver (not the system's)
// and connects to its addresses in turn, on the configured port.
func (c *Cache) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, perr := netip.ParseAddr(host); perr == nil {
		ips = []netip.Addr{ip}
	} else if ips, err = c.cfg.Resolver.LookupIP(ctx, host); err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	var d net.Dialer
	var last error
	for _, ip := range ips {
		conn, err := d.DialContext(ctx, network, net.JoinHostPort(ip.String(), strconv.Itoa(c.cfg.Port)))
		if err == nil {
			return conn, nil
		}
		last = err
	}
	return nil, last
}

// Get returns the policy to apply to mail for domain: nil when the domain
// has none (a mode-none policy is returned as such). A domain that advertises a policy which cannot be
// fetched or parsed, with no valid cached policy, yields nil and an *Error
// (delivery goes on without MTA-STS; the error is for TLS-RPT). A cached,
// unexpired policy is used when the TXT record is missing, unchanged or
// cannot be read, or when a refetch fails (RFC 8461 §5.1).
func (c *Cache) Get(ctx context.Context, domain string) (*Policy, error) {
	domain = strings.TrimSuffix(strings.ToLower(domain), ".")
	now := c.cfg.Clock.Now()
	c.mu.Lock()
	cached := c.policies[domain]
	if cached != nil && !now.Before(cached.Expires()) {
		delete(c.policies, domain)
		cached = nil
	}
	c.mu.Unlock()

	id, err := c.lookupID(ctx, domain)
	if err != nil || id == "" {
		if err != nil {
			c.cfg.Log.Debug("mta-sts: TXT lookup", slog.String("domain", domain), slog.String("err", err.Error()))
		}
		return cached, nil
	}
	if cached != nil && cached.ID == id {
		return cached, nil
	}
	p, err := c.fetchShared(ctx, domain, id)
	if err != nil {
		if cached != nil {
			c.cfg.Log.Warn("mta-sts: refetch failed, using cached policy", slog.String("domain", domain), slog.String("err", err.Error()))
			return cached, nil
		}
		return nil, err
	}
	return p, nil
}

// lookupID returns the id of domain's single v=STSv1 TXT record, "" if
// there is none (or several, RFC 8461 §3.1).
func (c *Cache) lookupID(ctx context.Context, domain string) (string, error) {
	txts, err := c.cfg.Resolver.LookupTXT(ctx, "_mta-sts."+domain)
	if errors.Is(err, resolve.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=STSv1") {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return "", nil
	}
	id, err := ParseTXT(recs[0])
	if err != nil {
		return "", err
	}
	return id, nil
}

// fetchShared fetches domain's policy, sharing the fetch with concurrent
// callers, and caches it.
func (c *Cache) fetchShared(ctx context.Context, domain, id string) (*Policy, error) {
	c.mu.Lock()
	if p := c.policies[domain]; p != nil && p.ID == id && c.cfg.Clock.Now().Before(p.Expires()) {
		c.mu.Unlock() // fetched meanwhile by another caller
		return p, nil
	}
	if cl, ok := c.inflight[domain]; ok {
		c.mu.Unlock()
		select {
		case <-cl.done:
			return cl.p, cl.err
		case <-ctx.Done():
			return nil, &Error{Domain: domain, Type: ResultFetchError, Err: ctx.Err()}
		}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[domain] = cl
	c.fetches++
	c.mu.Unlock()

	cl.p, cl.err = c.fetch(ctx, domain)
	c.mu.Lock()
	delete(c.inflight, domain)
	if cl.err == nil {
		cl.p.ID = id
		c.policies[domain] = cl.p
	}
	c.mu.Unlock()
	close(cl.done)
	return cl.p, cl.err
}

// fetch downloads and parses the policy of domain.
func (c *Cache) fetch(ctx context.Context, domain string) (*Policy, error) {
	url := "https://mta-sts." + domain + "/.well-known/mta-sts.txt"
	fail := func(typ string, err error) (*Policy, error) {
		return nil, &Error{Domain: domain, Type: typ, Err: err}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fail(ResultFetchError, err)
	}
	req.Header.Set("User-Agent", "Herald MTA-STS")
	resp, err := c.client.Do(req)
	if err != nil {
		if isCertError(err) {
			return fail(ResultWebPKIInvalid, fmt.Errorf("fetching %s: %w", url, err))
		}
		return fail(ResultFetchError, fmt.Errorf("fetching %s: %w", url, err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(ResultFetchError, fmt.Errorf("fetching %s: HTTP status %d", url, resp.StatusCode))
	}
	if mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type")); err != nil || mt != "text/plain" {
		return fail(ResultPolicyInvalid, fmt.Errorf("fetching %s: content type %q, want text/plain", url, resp.Header.Get("Content-Type")))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPolicySize+1))
	if err != nil {
		return fail(ResultFetchError, fmt.Errorf("reading %s: %w", url, err))
	}
	if len(body) > maxPolicySize {
		return fail(ResultPolicyInvalid, fmt.Errorf("%s is larger than %d bytes", url, maxPolicySize))
	}
	p, err := Parse(body)
	if err != nil {
		return fail(ResultPolicyInvalid, err)
	}
	p.Domain = domain
	p.Fetched = c.cfg.Clock.Now()
	return p, nil
}

func isCertError(err error) bool {
	var (
		ve  *tls.CertificateVerificationError
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		cie x509.CertificateInvalidError
	)
	return errors.As(err, &ve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &cie)
}
