package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testacme"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// TestACMEEndToEnd runs a node with ACME on against Pebble on loopback:
// the certificates of the hostname and of mta-sts/autoconfig of a domain
// added while running are obtained (tls-alpn-01 on the node's :443
// listener, or http-01 on :80), every TLS listener serves them by SNI, and the HTTPS listener
// serves the MTA-STS policy and the autoconfig document under names a
// client verifies; the API listener serves the policy by Host header too.
func TestACMEEndToEnd(t *testing.T) {
	for _, chal := range []string{"tls-alpn-01", "http-01"} {
		t.Run(chal, func(t *testing.T) {
			t.Parallel()
			testACMEEndToEnd(t, chal)
		})
	}
}

func testACMEEndToEnd(t *testing.T, chal string) {
	dns := testdns.Start(t)
	for _, n := range []string{"mx.herald.test", "mta-sts.example.org", "autoconfig.example.org"} {
		dns.AddA(n, "127.0.0.1")
	}
	httpAddr, httpsAddr := freePortOn(t, "127.0.0.1"), freePortOn(t, "127.0.0.1")
	ca := testacme.Start(t, testacme.Options{DNS: dns.Addr(), HTTPPort: portOf(t, httpAddr), TLSPort: portOf(t, httpsAddr)})
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, ca.ServerCertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	h := startHerald(t, func(c *config.Config) {
		c.DNS.Resolver = dns.Addr()
		c.ACME.Enabled = true
		c.ACME.DirectoryURL = ca.DirectoryURL
		c.ACME.CAFile = caFile
		c.ACME.Email = "postmaster@example.org"
		c.ACME.HTTPAddress, c.ACME.HTTPSAddress = httpAddr, httpsAddr
		c.ACME.Challenges = []string{chal}
		c.ACME.Hosts = []string{"mta-sts", "autoconfig"}
	})
	roots := ca.Roots()
	waitCert(t, h.addr("submissions"), "mx.herald.test", roots)

	// A domain added while running: SIGHUP (Reload) checks at once.
	h.addDomain("example.org")
	if err := h.app.Reload(); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mta-sts.example.org", "autoconfig.example.org"} {
		waitCert(t, httpsAddr, name, roots)
	}
	// Every TLS listener picks by SNI; an unknown name gets the hostname's.
	for _, l := range []string{"submissions", "acme_https"} {
		addr := h.addrs[l][0]
		for _, sni := range []string{"mx.herald.test", "mta-sts.example.org"} {
			if leaf, err := tlsLeaf(addr, sni, roots); err != nil || !slices.Equal(leaf.DNSNames, []string{sni}) {
				t.Errorf("%s, SNI %s: %v", l, sni, err)
			}
		}
		leaf, err := tlsLeaf(addr, "other.example.net", nil)
		if err != nil || !slices.Equal(leaf.DNSNames, []string{"mx.herald.test"}) {
			t.Errorf("%s, unknown SNI: %v, %v", l, leaf, err)
		}
	}
	// STARTTLS on submission too.
	c := dial(t, h.addr("submission"))
	c.ok(250, "EHLO client.example")
	c.ok(220, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{ServerName: "mx.herald.test", RootCAs: roots})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("STARTTLS with the ACME certificate: %v", err)
	}
	tc.Close()

	// The documents over verified HTTPS.
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, httpsAddr)
		},
	}, Timeout: 10 * time.Second}
	get := func(url string) (int, string) {
		t.Helper()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("https://mta-sts.example.org/.well-known/mta-sts.txt"); code != 200 ||
		body != "version: STSv1\r\nmode: testing\r\nmx: mx.herald.test\r\nmax_age: 604800\r\n" {
		t.Errorf("MTA-STS policy: %d %q", code, body)
	}
	if err := h.app.Store().SetDomainPolicy(context.Background(), "example.org", store.DomainPolicy{MTASTS: "enforce"}); err != nil {
		t.Fatal(err)
	}
	if _, body := get("https://mta-sts.example.org/.well-known/mta-sts.txt"); !strings.Contains(body, "mode: enforce\r\n") {
		t.Errorf("MTA-STS mode from the store not served: %q", body)
	}
	code, body := get("https://autoconfig.example.org/mail/config-v1.1.xml?emailaddress=user%40example.org")
	if code != 200 || !strings.Contains(body, "<hostname>mx.herald.test</hostname>") ||
		!strings.Contains(body, "<port>"+strconv.Itoa(portOf(t, h.addr("submissions")))+"</port>") {
		t.Errorf("autoconfig: %d %s", code, body)
	}

	// The API listener serves the policy by Host header (behind a proxy).
	req, _ := http.NewRequest("GET", "http://"+h.addr("http")+"/.well-known/mta-sts.txt", nil)
	req.Host = "mta-sts.example.org"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "mode: enforce") {
		t.Errorf("policy on the API listener: %d %q", resp.StatusCode, b)
	}
	// Plain HTTP: a redirect to HTTPS for a certified name, never the policy.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	req, _ = http.NewRequest("GET", "http://"+httpAddr+"/.well-known/mta-sts.txt", nil)
	req.Host = "mta-sts.example.org"
	if resp, err = noRedirect.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != "https://mta-sts.example.org/.well-known/mta-sts.txt" {
		t.Errorf("plain HTTP: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Thunderbird also tries autoconfig over plain HTTP.
	req, _ = http.NewRequest("GET", "http://"+httpAddr+"/mail/config-v1.1.xml", nil)
	req.Host = "autoconfig.example.org"
	if resp, err = noRedirect.Do(req); err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "<domain>example.org</domain>") {
		t.Errorf("autoconfig over plain HTTP: %d %q", resp.StatusCode, b)
	}
	if got := ca.NewOrders(); got != 3 {
		t.Errorf("%d orders, want 3 (hostname, mta-sts, autoconfig)", got)
	}

	// Restarted on the same data: the certificates are served from the
	// first handshake, and nothing is ordered again.
	h.stop()
	h2 := startHerald(t, func(c *config.Config) {
		*c = *h.cfg
	})
	for _, sni := range []string{"mx.herald.test", "mta-sts.example.org"} {
		if _, err := tlsLeaf(h2.addr("submissions"), sni, roots); err != nil {
			t.Errorf("after a restart, first handshake for %s: %v", sni, err)
		}
	}
	if got := ca.NewOrders(); got != 3 {
		t.Errorf("%d orders after a restart, want still 3", got)
	}
}

func portOf(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := strconv.Atoi(p)
	return n
}

// tlsLeaf handshakes with addr asking for sni and returns the leaf; with
// roots it must verify for sni.
func tlsLeaf(addr, sni string, roots *x509.CertPool) (*x509.Certificate, error) {
	cfg := &tls.Config{ServerName: sni, RootCAs: roots, InsecureSkipVerify: roots == nil}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0], nil
}

// waitCert waits until addr serves a certificate for sni that verifies
// against roots (the CA validates and issues in the background).
func waitCert(t *testing.T, addr, sni string, roots *x509.CertPool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := tlsLeaf(addr, sni, roots)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never served a verified certificate for %s: %v", addr, sni, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
