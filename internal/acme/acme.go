// Package acme obtains and renews Herald's certificates from an ACME CA
// (RFC 8555; Let's Encrypt by default) with the tls-alpn-01 (RFC 8737) and
// http-01 challenges, using golang.org/x/crypto/acme.
//
// The names certified are a fixed list, never what a client asks for: the
// server's hostname and, for each local domain, the configured host
// prefixes (mta-sts, autoconfig, autodiscover). Certificates are ordered
// ahead of time by Maintain (Run calls it at start and then periodically),
// not on a client's first handshake, and a name outside the list never
// causes an order. Certificates, their keys, the account key and the
// challenge responses are kept in the store, so every node of a cluster
// serves the same certificates and answers the CA for an order another
// node placed; a claim in the store makes one node at a time order a given
// name.
package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/acme"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/tlsconf"
)

// LetsEncrypt is the default directory URL.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// Challenge types.
const (
	TLSALPN01 = "tls-alpn-01"
	HTTP01    = "http-01"
)

// DefaultHostPrefixes are the per-domain hosts certified by default.
var DefaultHostPrefixes = []string{"mta-sts", "autoconfig", "autodiscover"}

const (
	orderTimeout    = 5 * time.Minute
	claimFor        = 10 * time.Minute // longer than orderTimeout
	firstBackoff    = 5 * time.Minute  // after a failed order (Let's Encrypt: 5 failures per name an hour)
	maxBackoff      = 12 * time.Hour
	defaultInterval = 10 * time.Minute
	pendingInterval = time.Minute // when another node was ordering
	maxTokenLen     = 256
	// maxLookups bounds the store lookups of challenge responses per
	// second: anyone may ask for random tokens; a CA asks a few times
	// per order.
	maxLookups  = 50
	minRenewAge = time.Hour // see due
)

// Store is what the manager keeps in the store.
type Store interface {
	store.ACMEStore
	store.Secrets
}

// Config configures a Manager.
type Config struct {
	// DirectoryURL is the CA's directory; "" means Let's Encrypt.
	DirectoryURL string
	// Email is the account's contact address ("" for none).
	Email string
	// Hostname is the server's hostname (server.hostname).
	Hostname string
	// HostPrefixes are the hosts certified for each local domain (nil:
	// DefaultHostPrefixes; empty: none).
	HostPrefixes []string
	// Domains returns the local domains.
	Domains func(ctx context.Context) ([]string, error)
	// Challenges are the challenge types to use, in order of preference
	// (nil: tls-alpn-01, then http-01).
	Challenges []string
	// RenewBefore renews a certificate this long before it expires; 0
	// renews when two thirds of its lifetime have passed.
	RenewBefore time.Duration
	// Interval is how often Run checks the certificates (0: 10 minutes).
	Interval time.Duration
	// HTTPClient talks to the CA (nil: http.DefaultClient).
	HTTPClient *http.Client
	// PollInterval is how often an authorization's or order's state is
	// polled (0: 1 s, or the CA's Retry-After).
	PollInterval time.Duration
	// Store keeps the certificates, claims, challenge responses and the
	// account key.
	Store Store
	Clock clock.Clock  // nil: the wall clock
	Log   *slog.Logger // nil: discarded
}

// Manager obtains and renews the certificates; it is a tlsconf.Source.
type Manager struct {
	cfg Config
	log *slog.Logger
	clk clock.Clock

	certs atomic.Pointer[map[string]*tls.Certificate] // name -> served certificate
	names atomic.Pointer[map[string]bool]             // the whitelist, as of the last Maintain

	mu       sync.Mutex // serialises Maintain
	client   *acme.Client
	failures map[string]int
	retryAt  map[string]time.Time

	chalMu    sync.Mutex
	chal      map[string][]byte // this node's challenge responses, by store key
	lookupSec int64             // the second (Unix) of lookupN
	lookupN   int               // store lookups of challenges in that second

	kick chan struct{}
	// Orders counts the orders this manager placed (tests, metrics).
	Orders atomic.Int64
}

// New returns a Manager; nothing is ordered until Maintain or Run.
func New(cfg Config) (*Manager, error) {
	if cfg.Store == nil || cfg.Domains == nil {
		return nil, errors.New("acme: a store and the local domains are required")
	}
	if tlsconf.NormalizeName(cfg.Hostname) == "" {
		return nil, fmt.Errorf("acme: hostname %q is not a DNS name", cfg.Hostname)
	}
	if cfg.DirectoryURL == "" {
		cfg.DirectoryURL = LetsEncrypt
	}
	if cfg.HostPrefixes == nil {
		cfg.HostPrefixes = DefaultHostPrefixes
	}
	if cfg.Challenges == nil {
		cfg.Challenges = []string{TLSALPN01, HTTP01}
	}
	for _, c := range cfg.Challenges {
		if c != TLSALPN01 && c != HTTP01 {
			return nil, fmt.Errorf("acme: unknown challenge type %q", c)
		}
	}
	if cfg.Interval <= 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = http.DefaultClient
	}
	m := &Manager{cfg: cfg, log: cfg.Log, clk: cfg.Clock, failures: map[string]int{}, retryAt: map[string]time.Time{},
		chal: map[string][]byte{}, kick: make(chan struct{}, 1)}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.clk == nil {
		m.clk = clock.Real{}
	}
	m.certs.Store(&map[string]*tls.Certificate{})
	m.names.Store(&map[string]bool{})
	return m, nil
}

// Certificate returns the certificate held for name, or nil (tlsconf.Source).
// It only reads what Maintain loaded: it never orders.
func (m *Manager) Certificate(name string) *tls.Certificate {
	return (*m.certs.Load())[name]
}

// Names returns the host names to certify: the hostname, then each local
// domain's hosts, sorted.
func (m *Manager) Names(ctx context.Context) ([]string, error) {
	domains, err := m.cfg.Domains(ctx)
	if err != nil {
		return nil, fmt.Errorf("acme: local domains: %w", err)
	}
	host := tlsconf.NormalizeName(m.cfg.Hostname)
	var names []string
	for _, d := range domains {
		for _, p := range m.cfg.HostPrefixes {
			if n := tlsconf.NormalizeName(p + "." + d); n != "" && n != host && !strings.Contains(n, "_") {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return append([]string{host}, slices.Compact(names)...), nil
}

// Whitelisted reports whether name is one of the names to certify, as of
// the last Maintain.
func (m *Manager) Whitelisted(name string) bool { return (*m.names.Load())[name] }

// Kick makes Run check the certificates now (a domain was added, SIGHUP).
func (m *Manager) Kick() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run maintains the certificates until ctx ends: at once, then every
// Interval (every minute while another node is ordering one).
func (m *Manager) Run(ctx context.Context) {
	for {
		pending, err := m.Maintain(ctx)
		if err != nil && ctx.Err() == nil {
			m.log.Error("ACME certificates", "err", err)
		}
		d := m.cfg.Interval
		if pending {
			d = min(d, pendingInterval)
		}
		t := clock.NewTimer(m.clk, d)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-m.kick:
			t.Stop()
		case <-t.C():
		}
	}
}

// Load reads the names to certify and the certificates the store holds for
// them, without ordering anything: called before the listeners serve, so
// that a node whose certificates were obtained earlier (by itself or by
// another node) serves them from its first handshake.
func (m *Manager) Load(ctx context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	names, err := m.loadNames(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		sc, err := m.cfg.Store.ACMECertificate(ctx, name)
		if errors.Is(err, store.ErrNotFound) {
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("acme: %s: %w", name, err))
			continue
		}
		if cert, err := parseStored(sc, name); err == nil {
			m.setCert(name, cert)
		}
	}
	return errors.Join(errs...)
}

// loadNames refreshes the whitelist and drops the certificates of names no
// longer on it (a domain was deleted).
func (m *Manager) loadNames(ctx context.Context) ([]string, error) {
	names, err := m.Names(ctx)
	if err != nil {
		return nil, err
	}
	white := make(map[string]bool, len(names))
	for _, n := range names {
		white[n] = true
	}
	m.names.Store(&white)
	certs := map[string]*tls.Certificate{}
	for n, c := range *m.certs.Load() {
		if white[n] {
			certs[n] = c
		}
	}
	m.certs.Store(&certs)
	return names, nil
}

// Maintain loads every name's certificate from the store and orders those
// missing or due for renewal that no other node is ordering. pending
// reports that another node holds the order of a name that needs one. A
// failed order is retried after a back-off (5 minutes, doubling to 12
// hours); the error returned joins the failures of this call.
func (m *Manager) Maintain(ctx context.Context) (pending bool, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	names, err := m.loadNames(ctx)
	if err != nil {
		return false, err
	}
	var errs []error
	for _, name := range names {
		p, err := m.maintain(ctx, name)
		pending = pending || p
		if err != nil {
			errs = append(errs, err)
		}
	}
	return pending, errors.Join(errs...)
}

// maintain loads, and orders when needed, the certificate of one name.
func (m *Manager) maintain(ctx context.Context, name string) (pending bool, err error) {
	now := m.clk.Now()
	sc, err := m.cfg.Store.ACMECertificate(ctx, name)
	switch {
	case err == nil:
		cert, perr := parseStored(sc, name)
		if perr != nil {
			m.log.Warn("stored ACME certificate unusable; ordering a new one", "name", name, "err", perr)
		} else {
			m.setCert(name, cert)
			if !m.due(cert.Leaf, sc.Updated, now) {
				return false, nil
			}
		}
	case !errors.Is(err, store.ErrNotFound):
		return false, fmt.Errorf("acme: %s: %w", name, err)
	}
	if at, ok := m.retryAt[name]; ok && now.Before(at) {
		return false, nil
	}
	token, err := m.cfg.Store.ClaimACMEOrder(ctx, name, now, now.Add(claimFor))
	if err != nil {
		return false, fmt.Errorf("acme: %s: %w", name, err)
	}
	if token == "" {
		m.log.Debug("another node is ordering the certificate", "name", name)
		return true, nil
	}
	defer func() {
		if rerr := m.cfg.Store.ReleaseACMEOrder(context.WithoutCancel(ctx), name, token); rerr != nil {
			m.log.Warn("releasing the ACME order claim", "name", name, "err", rerr)
		}
	}()
	// Another node may have stored a fresh certificate between our read
	// and our claim.
	if sc, err := m.cfg.Store.ACMECertificate(ctx, name); err == nil {
		if cert, perr := parseStored(sc, name); perr == nil && !m.due(cert.Leaf, sc.Updated, now) {
			m.setCert(name, cert)
			return false, nil
		}
	}
	octx, cancel := context.WithTimeout(ctx, orderTimeout)
	defer cancel()
	cert, sc, err := m.order(octx, name)
	if err != nil {
		n := m.failures[name]
		m.failures[name] = n + 1
		wait := min(firstBackoff<<min(n, 10), maxBackoff)
		m.retryAt[name] = now.Add(wait)
		m.log.Error("ACME order failed", "name", name, "err", err, "retry_in", wait.String())
		return false, fmt.Errorf("acme: order %s: %w", name, err)
	}
	delete(m.failures, name)
	delete(m.retryAt, name)
	sc.Updated = m.clk.Now()
	if err := m.cfg.Store.PutACMECertificate(ctx, sc); err != nil {
		// Serve it anyway; the next Maintain orders again.
		m.setCert(name, cert)
		return false, fmt.Errorf("acme: store certificate of %s: %w", name, err)
	}
	m.setCert(name, cert)
	m.log.Info("ACME certificate obtained", "name", name, "not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	return false, nil
}

// due reports whether leaf, stored at updated, should be renewed at now:
// at two thirds of its lifetime (or RenewBefore its end). A certificate
// stored less than minRenewAge ago is not renewed unless it expires
// within that time: when the CA's clock and ours disagree, or a CA issues
// certificates shorter-lived than renew_before, this keeps the nodes from
// ordering again and again.
func (m *Manager) due(leaf *x509.Certificate, updated, now time.Time) bool {
	renewAt := leaf.NotBefore.Add(leaf.NotAfter.Sub(leaf.NotBefore) * 2 / 3)
	if m.cfg.RenewBefore > 0 {
		renewAt = leaf.NotAfter.Add(-m.cfg.RenewBefore)
	}
	if now.Before(updated.Add(minRenewAge)) && now.Before(leaf.NotAfter.Add(-minRenewAge)) {
		return false
	}
	return !now.Before(renewAt)
}

func (m *Manager) setCert(name string, c *tls.Certificate) {
	old := *m.certs.Load()
	if old[name] == c {
		return
	}
	next := make(map[string]*tls.Certificate, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = c
	m.certs.Store(&next)
}

// parseStored turns a stored certificate into a served one, checking that
// it covers name and that the key matches.
func parseStored(sc store.ACMECertificate, name string) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(sc.CertPEM, sc.KeyPEM)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	if err := c.Leaf.VerifyHostname(name); err != nil {
		return nil, err
	}
	return &c, nil
}

// acmeClient returns the registered client, registering the account (key
// from the store) on first use.
func (m *Manager) acmeClient(ctx context.Context) (*acme.Client, error) {
	if m.client != nil {
		return m.client, nil
	}
	fresh, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(fresh)
	if err != nil {
		return nil, err
	}
	// Every node uses the same account: the first key stored wins.
	raw, err := m.cfg.Store.Secret(ctx, "acme-account-key "+m.cfg.DirectoryURL, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("account key: %w", err)
	}
	blk, _ := pem.Decode(raw)
	if blk == nil {
		return nil, errors.New("account key in the store is not PEM")
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("account key: %w", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, errors.New("account key is not a signing key")
	}
	c := &acme.Client{Key: signer, DirectoryURL: m.cfg.DirectoryURL, HTTPClient: m.cfg.HTTPClient, UserAgent: "herald"}
	acct := &acme.Account{}
	if m.cfg.Email != "" {
		acct.Contact = []string{"mailto:" + m.cfg.Email}
	}
	if _, err := c.Register(ctx, acct, acme.AcceptTOS); err != nil && !errors.Is(err, acme.ErrAccountAlreadyExists) {
		return nil, fmt.Errorf("register account: %w", err)
	}
	m.client = c
	return c, nil
}

// order obtains a certificate for name.
func (m *Manager) order(ctx context.Context, name string) (*tls.Certificate, store.ACMECertificate, error) {
	var sc store.ACMECertificate
	c, err := m.acmeClient(ctx)
	if err != nil {
		return nil, sc, err
	}
	m.Orders.Add(1)
	o, err := c.AuthorizeOrder(ctx, acme.DomainIDs(name))
	if err != nil {
		return nil, sc, fmt.Errorf("new order: %w", err)
	}
	for _, u := range o.AuthzURLs {
		if err := m.authorize(ctx, c, u, name); err != nil {
			return nil, sc, err
		}
	}
	if o, err = m.waitOrder(ctx, c, o.URI); err != nil {
		return nil, sc, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, sc, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name}, DNSNames: []string{name}}, key)
	if err != nil {
		return nil, sc, err
	}
	chain, _, err := c.CreateCertFromOrder(ctx, o, csr, true)
	if err != nil {
		return nil, sc, fmt.Errorf("finalize: %w", err)
	}
	if len(chain) == 0 {
		return nil, sc, errors.New("the CA returned no certificate")
	}
	var certPEM []byte
	for _, der := range chain {
		certPEM = append(certPEM, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, sc, err
	}
	sc = store.ACMECertificate{Name: name, CertPEM: certPEM, KeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}
	cert, err := parseStored(sc, name)
	if err != nil {
		return nil, sc, fmt.Errorf("certificate from the CA: %w", err)
	}
	sc.NotBefore, sc.NotAfter = cert.Leaf.NotBefore, cert.Leaf.NotAfter
	return cert, sc, nil
}

// authorize answers one authorization of name with the preferred challenge
// the CA offers.
func (m *Manager) authorize(ctx context.Context, c *acme.Client, url, name string) error {
	z, err := c.GetAuthorization(ctx, url)
	if err != nil {
		return fmt.Errorf("authorization: %w", err)
	}
	if z.Status == acme.StatusValid {
		return nil
	}
	var chal *acme.Challenge
	for _, want := range m.cfg.Challenges {
		for _, ch := range z.Challenges {
			if ch.Type == want && chal == nil {
				chal = ch
			}
		}
	}
	if chal == nil {
		return fmt.Errorf("the CA offers none of the challenges %v for %s", m.cfg.Challenges, name)
	}
	var key string
	var value []byte
	switch chal.Type {
	case HTTP01:
		resp, err := c.HTTP01ChallengeResponse(chal.Token)
		if err != nil {
			return err
		}
		key, value = HTTP01+"/"+chal.Token, []byte(resp)
	case TLSALPN01:
		cert, err := c.TLSALPN01ChallengeCert(chal.Token, name)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
		if err != nil {
			return err
		}
		key = TLSALPN01 + "/" + name
		value = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}),
			pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	}
	m.chalMu.Lock()
	m.chal[key] = value
	m.chalMu.Unlock()
	defer func() {
		m.chalMu.Lock()
		delete(m.chal, key)
		m.chalMu.Unlock()
		_ = m.cfg.Store.DeleteACMEChallenge(context.WithoutCancel(ctx), key, m.clk.Now())
	}()
	// In the store too: the CA may connect to another node.
	if err := m.cfg.Store.PutACMEChallenge(ctx, key, value, m.clk.Now().Add(orderTimeout)); err != nil {
		return err
	}
	if _, err := c.Accept(ctx, chal); err != nil {
		return fmt.Errorf("accept %s challenge: %w", chal.Type, err)
	}
	if err := m.waitAuthorization(ctx, c, z.URI); err != nil {
		return fmt.Errorf("%s challenge for %s: %w", chal.Type, name, err)
	}
	return nil
}

func (m *Manager) waitAuthorization(ctx context.Context, c *acme.Client, url string) error {
	if m.cfg.PollInterval <= 0 {
		_, err := c.WaitAuthorization(ctx, url)
		return err
	}
	for {
		z, err := c.GetAuthorization(ctx, url)
		switch {
		case err != nil:
			var ae *acme.AuthorizationError
			if errors.As(err, &ae) {
				return err
			}
		case z.Status == acme.StatusValid:
			return nil
		case z.Status == acme.StatusInvalid:
			return fmt.Errorf("authorization invalid: %s", challengeErrors(z))
		}
		if err := pause(ctx, m.cfg.PollInterval); err != nil {
			return err
		}
	}
}

func (m *Manager) waitOrder(ctx context.Context, c *acme.Client, url string) (*acme.Order, error) {
	if m.cfg.PollInterval <= 0 {
		return c.WaitOrder(ctx, url)
	}
	for {
		o, err := c.GetOrder(ctx, url)
		switch {
		case err != nil:
		case o.Status == acme.StatusInvalid:
			return nil, &acme.OrderError{OrderURL: url, Status: o.Status, Problem: o.Error}
		case o.Status == acme.StatusReady || o.Status == acme.StatusValid:
			return o, nil
		}
		if err := pause(ctx, m.cfg.PollInterval); err != nil {
			return nil, err
		}
	}
}

// pause waits d for a remote CA's state to change (real time: the CA is
// another process).
func pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func challengeErrors(z *acme.Authorization) string {
	var out []string
	for _, ch := range z.Challenges {
		if ch.Error != nil {
			out = append(out, ch.Type+": "+ch.Error.Error())
		}
	}
	return strings.Join(out, "; ")
}

// challenge returns the response stored under key: this node's, or one
// another node stored.
func (m *Manager) challenge(ctx context.Context, key string) ([]byte, bool) {
	now := m.clk.Now()
	m.chalMu.Lock()
	v, ok := m.chal[key]
	if !ok {
		if sec := now.Unix(); sec != m.lookupSec {
			m.lookupSec, m.lookupN = sec, 0
		}
		m.lookupN++
	}
	over := m.lookupN > maxLookups
	m.chalMu.Unlock()
	if ok {
		return v, true
	}
	if over {
		return nil, false
	}
	v, err := m.cfg.Store.ACMEChallenge(ctx, key, now)
	return v, err == nil
}

// HTTPHandler answers http-01 challenges under /.well-known/acme-challenge/
// and passes every other request to next (nil: 404).
func (m *Manager) HTTPHandler(next http.Handler) http.Handler {
	if next == nil {
		next = http.NotFoundHandler()
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		const prefix = "/.well-known/acme-challenge/"
		if !strings.HasPrefix(r.URL.Path, prefix) {
			next.ServeHTTP(w, r)
			return
		}
		token := strings.TrimPrefix(r.URL.Path, prefix)
		if !validToken(token) || !m.Whitelisted(hostOnly(r.Host)) {
			http.NotFound(w, r)
			return
		}
		v, ok := m.challenge(r.Context(), HTTP01+"/"+token)
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write(v)
	})
}

// validToken: ACME tokens are base64url (RFC 8555 section 8.1).
func validToken(t string) bool {
	if t == "" || len(t) > maxTokenLen {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// hostOnly returns the normalized host name of a Host header.
func hostOnly(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		h = h[:i]
	}
	return tlsconf.NormalizeName(h)
}

// ALPNProto is the protocol name of tls-alpn-01 handshakes.
const ALPNProto = acme.ALPNProto

// TLSConfig returns a TLS configuration for the HTTPS listener: it answers
// tls-alpn-01 challenges for the whitelisted names and otherwise serves
// the certificate t picks.
func (m *Manager) TLSConfig(t *tlsconf.Manager) *tls.Config {
	return &tls.Config{
		MinVersion: t.MinVersion(),
		NextProtos: []string{"h2", "http/1.1", ALPNProto},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNProto {
				return m.alpnCert(hello)
			}
			return t.GetCertificate(hello)
		},
	}
}

// alpnCert returns the tls-alpn-01 challenge certificate for the name asked.
func (m *Manager) alpnCert(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := tlsconf.NormalizeName(hello.ServerName)
	if !m.Whitelisted(name) {
		return nil, fmt.Errorf("acme: no tls-alpn-01 challenge for %q", hello.ServerName)
	}
	v, ok := m.challenge(hello.Context(), TLSALPN01+"/"+name)
	if !ok {
		return nil, fmt.Errorf("acme: no tls-alpn-01 challenge pending for %s", name)
	}
	c, err := tls.X509KeyPair(v, v)
	if err != nil {
		return nil, fmt.Errorf("acme: tls-alpn-01 challenge of %s: %w", name, err)
	}
	return &c, nil
}
