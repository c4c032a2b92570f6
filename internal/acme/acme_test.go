package acme_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/acme"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/testutil/testacme"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/tlsconf"
)

const hostname = "mail.example.org"

// env is one test's world: DNS pointing every name at 127.0.0.1, the
// loopback ports the CA validates on, and the CA.
type env struct {
	dns            *testdns.Server
	httpLn, tlsLn  net.Listener
	ca             *testacme.CA
	clk            *clock.Fake
	challengeAddrs struct{ http, tls string }
}

func newEnv(t *testing.T, validity time.Duration) *env {
	t.Helper()
	e := &env{dns: testdns.Start(t), clk: clock.NewFake(time.Now())}
	for _, n := range []string{hostname, "mta-sts.example.org", "autoconfig.example.org", "autodiscover.example.org", "evil.example.net"} {
		e.dns.AddA(n, "127.0.0.1")
	}
	var err error
	if e.httpLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if e.tlsLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.httpLn.Close(); e.tlsLn.Close() })
	e.ca = testacme.Start(t, testacme.Options{DNS: e.dns.Addr(), HTTPPort: port(e.httpLn), TLSPort: port(e.tlsLn), Validity: validity})
	return e
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// node is one Herald node's certificate side: its manager, its TLS
// certificates and its :80/:443 servers, on the env's listeners when
// serve is set.
type node struct {
	m   *acme.Manager
	tls *tlsconf.Manager
}

func newNode(t *testing.T, e *env, st acme.Store, domains []string, challenges []string) *node {
	t.Helper()
	m, err := acme.New(acme.Config{
		DirectoryURL: e.ca.DirectoryURL, Email: "postmaster@example.org", Hostname: hostname,
		Domains:    func(context.Context) ([]string, error) { return domains, nil },
		Challenges: challenges, HTTPClient: e.ca.Client, PollInterval: 20 * time.Millisecond,
		Store: st, Clock: e.clk,
	})
	if err != nil {
		t.Fatal(err)
	}
	tm, err := tlsconf.New("", "", t.TempDir(), hostname, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	tm.AddSource(m)
	return &node{m: m, tls: tm}
}

// serve runs n's :80 and :443 servers on the env's listeners.
func (n *node) serve(t *testing.T, e *env) {
	t.Helper()
	h := &http.Server{Handler: n.m.HTTPHandler(nil)}
	s := &http.Server{Handler: http.NotFoundHandler(), TLSConfig: n.m.TLSConfig(n.tls)}
	go h.Serve(e.httpLn)
	go s.ServeTLS(e.tlsLn, "", "")
	t.Cleanup(func() { h.Close(); s.Close() })
}

func openSQLite(t *testing.T) store.Store {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// served returns the leaf a TLS client asking for sni gets from tm,
// verified against roots for sni.
func served(t *testing.T, tm *tlsconf.Manager, roots *x509.CertPool, sni string) (*x509.Certificate, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", tm.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.(*tls.Conn).Handshake()
		c.Read(make([]byte, 1))
	}()
	c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{ServerName: sni, RootCAs: roots})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

func maintain(t *testing.T, m *acme.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := m.Maintain(ctx); err != nil {
		t.Fatalf("Maintain: %v", err)
	}
}

// Certificates for the hostname and each domain's hosts, obtained through
// each challenge type, verify against the CA's root and are in the store.
func TestIssue(t *testing.T) {
	for _, chal := range []string{acme.HTTP01, acme.TLSALPN01} {
		t.Run(chal, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, 0)
			st := openSQLite(t)
			n := newNode(t, e, st, []string{"example.org"}, []string{chal})
			n.serve(t, e)
			names, _ := n.m.Names(context.Background())
			want := []string{hostname, "autoconfig.example.org", "autodiscover.example.org", "mta-sts.example.org"}
			if !slices.Equal(names, want) {
				t.Fatalf("names %v, want %v", names, want)
			}
			// Before anything is issued the self-signed certificate is
			// served; it does not verify.
			if _, err := served(t, n.tls, e.ca.Roots(), hostname); err == nil {
				t.Fatal("a CA-verified certificate before any order")
			}
			maintain(t, n.m)
			if got := e.ca.NewOrders(); got != 4 {
				t.Errorf("%d orders, want 4", got)
			}
			for _, name := range want {
				leaf, err := served(t, n.tls, e.ca.Roots(), name)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !slices.Equal(leaf.DNSNames, []string{name}) {
					t.Errorf("%s: certificate for %v", name, leaf.DNSNames)
				}
				sc, err := st.ACMECertificate(context.Background(), name)
				if err != nil || !bytes.Contains(sc.CertPEM, []byte("CERTIFICATE")) || !sc.NotAfter.Equal(leaf.NotAfter) {
					t.Errorf("%s: stored %v, %v", name, sc.NotAfter, err)
				}
			}
			// Nothing left to do: a second pass orders nothing.
			maintain(t, n.m)
			if got := e.ca.NewOrders(); got != 4 {
				t.Errorf("%d orders after a second pass, want still 4", got)
			}
			// A node started later on the same store serves them after
			// Load, before any Maintain, and orders nothing.
			later := newNode(t, e, st, []string{"example.org"}, []string{chal})
			if err := later.m.Load(context.Background()); err != nil {
				t.Fatal(err)
			}
			for _, name := range want {
				if _, err := served(t, later.tls, e.ca.Roots(), name); err != nil {
					t.Errorf("after Load, %s: %v", name, err)
				}
			}
			if got := e.ca.NewOrders(); got != 4 {
				t.Errorf("%d orders after Load, want still 4", got)
			}
		})
	}
}

// A certificate is renewed once two thirds of its lifetime have passed
// (fake clock), and the new one is served without a restart; before that,
// nothing is ordered.
func TestRenewal(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 90*24*time.Hour)
	st := openSQLite(t)
	n := newNode(t, e, st, nil, []string{acme.HTTP01})
	n.serve(t, e)
	maintain(t, n.m)
	first, err := served(t, n.tls, e.ca.Roots(), hostname)
	if err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(59 * 24 * time.Hour)
	maintain(t, n.m)
	if got := e.ca.NewOrders(); got != 1 {
		t.Fatalf("%d orders at 59 of 90 days, want 1", got)
	}
	e.clk.Advance(2 * 24 * time.Hour)
	maintain(t, n.m)
	if got := e.ca.NewOrders(); got != 2 {
		t.Fatalf("%d orders at 61 of 90 days, want 2", got)
	}
	second, err := served(t, n.tls, e.ca.Roots(), hostname)
	if err != nil {
		t.Fatal(err)
	}
	if second.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatal("the renewed certificate is not served")
	}
	sc, _ := st.ACMECertificate(context.Background(), hostname)
	if !sc.NotAfter.Equal(second.NotAfter) {
		t.Fatal("the renewed certificate is not the stored one")
	}
}

// A configured renew_before renews that long before expiry instead.
func TestRenewBefore(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 90*24*time.Hour)
	st := openSQLite(t)
	m, err := acme.New(acme.Config{DirectoryURL: e.ca.DirectoryURL, Hostname: hostname,
		Domains: func(context.Context) ([]string, error) { return nil, nil }, Challenges: []string{acme.TLSALPN01},
		HTTPClient: e.ca.Client, PollInterval: 20 * time.Millisecond, Store: st, Clock: e.clk, RenewBefore: 10 * 24 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tm, _ := tlsconf.New("", "", t.TempDir(), hostname, 0, nil)
	(&node{m: m, tls: tm}).serve(t, e)
	maintain(t, m)
	e.clk.Advance(79 * 24 * time.Hour)
	maintain(t, m)
	if got := e.ca.NewOrders(); got != 1 {
		t.Fatalf("%d orders at day 79 with renew_before 10 days, want 1", got)
	}
	e.clk.Advance(2 * 24 * time.Hour)
	maintain(t, m)
	if got := e.ca.NewOrders(); got != 2 {
		t.Fatalf("%d orders at day 81, want 2", got)
	}
}

// Two nodes on one PostgreSQL store. Node a orders while only node b
// answers the CA: b reads a's challenge responses from the store. Node b
// then serves a's certificates without ordering. At renewal both nodes run
// at once: one order per name in all, and both serve the renewed
// certificates.
func TestTwoNodesOneOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 90*24*time.Hour)
	_, dsn := pgtest.NewSchema(t)
	var stores []store.Store
	for i := range 2 {
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Node: fmt.Sprintf("n%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		stores = append(stores, st)
	}
	a := newNode(t, e, stores[0], []string{"example.org"}, []string{acme.HTTP01, acme.TLSALPN01})
	b := newNode(t, e, stores[1], []string{"example.org"}, []string{acme.HTTP01, acme.TLSALPN01})
	b.serve(t, e)                                          // only b answers the CA
	if err := b.m.Load(context.Background()); err != nil { // b's list of names
		t.Fatal(err)
	}
	maintain(t, a.m)
	if a.m.Orders.Load() != 4 || e.ca.NewOrders() != 4 {
		t.Fatalf("node a placed %d orders (CA saw %d), want 4", a.m.Orders.Load(), e.ca.NewOrders())
	}
	maintain(t, b.m)
	if b.m.Orders.Load() != 0 || e.ca.NewOrders() != 4 {
		t.Fatalf("node b ordered %d certificates it could read from the store", b.m.Orders.Load())
	}
	same := func(phase string) []*x509.Certificate {
		var leaves []*x509.Certificate
		for _, name := range []string{hostname, "mta-sts.example.org", "autoconfig.example.org", "autodiscover.example.org"} {
			la, err := served(t, a.tls, e.ca.Roots(), name)
			if err != nil {
				t.Fatalf("%s: node a, %s: %v", phase, name, err)
			}
			lb, err := served(t, b.tls, e.ca.Roots(), name)
			if err != nil {
				t.Fatalf("%s: node b, %s: %v", phase, name, err)
			}
			if !la.Equal(lb) {
				t.Fatalf("%s: %s: the nodes serve different certificates", phase, name)
			}
			leaves = append(leaves, la)
		}
		return leaves
	}
	first := same("issued")

	// Renewal, both nodes at once.
	e.clk.Advance(61 * 24 * time.Hour)
	var wg sync.WaitGroup
	pending := make([]bool, 2)
	for i, n := range []*node{a, b} {
		wg.Go(func() {
			var err error
			pending[i], err = n.m.Maintain(context.Background())
			if err != nil {
				t.Errorf("node %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	if got := e.ca.NewOrders(); got != 8 {
		t.Fatalf("%d orders after renewal by two nodes, want 8 (one per name)", got)
	}
	// A node that found a name claimed picks the certificate up on its
	// next pass (Run comes back after a minute).
	for i, n := range []*node{a, b} {
		if pending[i] {
			maintain(t, n.m)
		}
	}
	if got := e.ca.NewOrders(); got != 8 {
		t.Fatalf("%d orders after the second pass, want 8", got)
	}
	for i, leaf := range same("renewed") {
		if leaf.Equal(first[i]) {
			t.Errorf("%v: not renewed", leaf.DNSNames)
		}
	}
}

// SNI: mta-sts.DOMAIN gets its own certificate, the hostname its own, and
// a name not on the list gets the hostname's certificate and never causes
// an order.
func TestSNIAndWhitelist(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	st := openSQLite(t)
	n := newNode(t, e, st, []string{"example.org"}, []string{acme.TLSALPN01})
	n.serve(t, e)
	maintain(t, n.m)
	orders := e.ca.NewOrders()
	sts, err := served(t, n.tls, e.ca.Roots(), "mta-sts.example.org")
	if err != nil {
		t.Fatal(err)
	}
	host, err := served(t, n.tls, e.ca.Roots(), hostname)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(sts.DNSNames, []string{"mta-sts.example.org"}) || !slices.Equal(host.DNSNames, []string{hostname}) {
		t.Fatalf("mta-sts got %v, hostname got %v", sts.DNSNames, host.DNSNames)
	}
	// An attacker's name: the hostname's certificate (which does not
	// verify for it), and no order, now or at the next pass.
	_, err = served(t, n.tls, e.ca.Roots(), "evil.example.net")
	var he x509.HostnameError
	if !errors.As(err, &he) || !slices.Equal(he.Certificate.DNSNames, []string{hostname}) {
		t.Fatalf("unknown SNI: %v; want the hostname's certificate", err)
	}
	if n.m.Certificate("evil.example.net") != nil {
		t.Fatal("a certificate for a name not on the list")
	}
	maintain(t, n.m)
	if got := e.ca.NewOrders(); got != orders {
		t.Fatalf("%d orders after an unknown SNI, want %d", got, orders)
	}
	// The tls-alpn-01 responder answers only names on the list.
	c, err := tls.Dial("tcp", e.tlsLn.Addr().String(), &tls.Config{ServerName: "evil.example.net", NextProtos: []string{acme.ALPNProto}, InsecureSkipVerify: true})
	if err == nil {
		c.Close()
		t.Fatal("tls-alpn-01 handshake for a name not on the list succeeded")
	}
}

// The http-01 responder serves nothing for unknown tokens, malformed
// tokens or hosts not on the list.
func TestHTTPChallengeResponder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	st := openSQLite(t)
	n := newNode(t, e, st, nil, []string{acme.HTTP01})
	n.serve(t, e)
	maintain(t, n.m) // loads the list
	if err := st.PutACMEChallenge(context.Background(), "http-01/tok_en-1", []byte("tok_en-1.thumb"), e.clk.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	get := func(host, path string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+e.httpLn.Addr().String()+path, nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		return resp.StatusCode, b.String()
	}
	if code, body := get(hostname, "/.well-known/acme-challenge/tok_en-1"); code != 200 || body != "tok_en-1.thumb" {
		t.Errorf("stored challenge: %d %q", code, body)
	}
	for _, c := range []struct{ host, path string }{
		{"evil.example.net", "/.well-known/acme-challenge/tok_en-1"},
		{hostname, "/.well-known/acme-challenge/other"},
		{hostname, "/.well-known/acme-challenge/tok.en"},
		{hostname, "/.well-known/acme-challenge/"},
	} {
		if code, _ := get(c.host, c.path); code != 404 {
			t.Errorf("%s%s: %d, want 404", c.host, c.path, code)
		}
	}
	// Guessing tokens is bounded: beyond 50 store lookups in a second,
	// nothing is looked up (not even a real token) until the next one.
	for i := range 50 {
		get(hostname, fmt.Sprintf("/.well-known/acme-challenge/guess%d", i))
	}
	if code, _ := get(hostname, "/.well-known/acme-challenge/tok_en-1"); code != 404 {
		t.Errorf("lookup over the limit: %d, want 404", code)
	}
	e.clk.Advance(time.Second)
	if code, body := get(hostname, "/.well-known/acme-challenge/tok_en-1"); code != 200 || body != "tok_en-1.thumb" {
		t.Errorf("the next second: %d %q", code, body)
	}
}

// A failing order (the name does not resolve to us) is not retried at
// every pass: it waits 5 minutes, then 10, and the names that work are
// obtained meanwhile.
func TestFailedOrderBacksOff(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 0)
	st := openSQLite(t)
	m, err := acme.New(acme.Config{DirectoryURL: e.ca.DirectoryURL, Hostname: hostname, HostPrefixes: []string{"mta-sts"},
		Domains:    func(context.Context) ([]string, error) { return []string{"nowhere.example"}, nil }, // no DNS
		Challenges: []string{acme.HTTP01}, HTTPClient: e.ca.Client, PollInterval: 20 * time.Millisecond, Store: st, Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	tm, _ := tlsconf.New("", "", t.TempDir(), hostname, 0, nil)
	(&node{m: m, tls: tm}).serve(t, e)
	pass := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		_, err := m.Maintain(ctx)
		return err
	}
	if err := pass(); err == nil || !strings.Contains(err.Error(), "mta-sts.nowhere.example") {
		t.Fatalf("first pass: %v, want the failure of mta-sts.nowhere.example", err)
	}
	if m.Certificate(hostname) == nil {
		t.Fatal("the hostname's certificate was not obtained beside the failing name")
	}
	if got := e.ca.NewOrders(); got != 2 {
		t.Fatalf("%d orders, want 2", got)
	}
	for _, step := range []struct {
		advance time.Duration
		orders  int
	}{{time.Minute, 2}, {4 * time.Minute, 3}, {9 * time.Minute, 3}, {time.Minute, 4}} {
		e.clk.Advance(step.advance)
		_ = pass()
		if got := e.ca.NewOrders(); got != step.orders {
			t.Fatalf("after %s more: %d orders, want %d", step.advance, got, step.orders)
		}
	}
}
