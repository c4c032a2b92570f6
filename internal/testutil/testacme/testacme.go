// Package testacme runs a real ACME CA on loopback for tests: Let's
// Encrypt's Pebble (github.com/letsencrypt/pebble/v2), in-process. Its
// validation authority resolves names with the test's DNS server and
// connects to the given loopback ports for http-01 and tls-alpn-01, as
// Let's Encrypt connects to ports 80 and 443.
package testacme

import (
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
)

// Options configure a CA.
type Options struct {
	// DNS is the "127.0.0.1:port" of the DNS server the validation
	// authority asks (testdns).
	DNS string
	// HTTPPort and TLSPort are where http-01 and tls-alpn-01 validations
	// connect (on the address the name resolves to).
	HTTPPort, TLSPort int
	// Validity is the lifetime of the certificates issued (0: 90 days).
	Validity time.Duration
	// Log receives Pebble's log (nil: discarded).
	Log io.Writer
}

// CA is a running Pebble.
type CA struct {
	// DirectoryURL is the ACME directory.
	DirectoryURL string
	// Client trusts the CA's HTTPS server certificate.
	Client *http.Client
	// ServerCertPEM is that certificate, for clients configured by file
	// (acme.ca_file).
	ServerCertPEM []byte
	ca            *ca.CAImpl
	mu            sync.Mutex
	hits          map[string]int
}

var envOnce sync.Once

// Start starts a CA and stops it when the test ends.
func Start(t testing.TB, o Options) *CA {
	t.Helper()
	envOnce.Do(func() {
		// Read by Pebble when its parts are created: no random sleeps
		// before validations, no injected bad nonces, no reuse of
		// earlier authorizations (every order is validated).
		os.Setenv("PEBBLE_VA_NOSLEEP", "1")
		os.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
		os.Setenv("PEBBLE_AUTHZREUSE", "0")
	})
	w := o.Log
	if w == nil {
		w = io.Discard
	}
	logger := log.New(w, "pebble ", log.LstdFlags)
	validity := uint64(o.Validity / time.Second)
	mem := db.NewMemoryStore()
	c := ca.New(logger, mem, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test", ValidityPeriod: validity}})
	v := va.New(logger, o.HTTPPort, o.TLSPort, false, o.DNS, mem)
	fe := wfe.New(logger, mem, v, c, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	out := &CA{ca: c, hits: map[string]int{}}
	h := fe.Handler()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		out.mu.Lock()
		out.hits[r.URL.Path]++
		out.mu.Unlock()
		h.ServeHTTP(rw, r)
	}))
	t.Cleanup(srv.Close)
	out.DirectoryURL = srv.URL + wfe.DirectoryPath
	out.Client = srv.Client()
	out.Client.Timeout = 30 * time.Second
	out.ServerCertPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	return out
}

// Roots returns a pool with the CA's root, to verify the certificates it
// issues.
func (c *CA) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	for i := range c.ca.GetNumberOfRootCerts() {
		p.AddCert(c.ca.GetRootCert(i).Cert)
	}
	return p
}

// NewOrders returns how many orders were created.
func (c *CA) NewOrders() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hits["/order-plz"]
}

// RootsPEM returns the CA's roots in PEM, for a process that trusts them
// through a file (SSL_CERT_FILE).
func (c *CA) RootsPEM() []byte {
	var out []byte
	for i := range c.ca.GetNumberOfRootCerts() {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.ca.GetRootCert(i).Cert.Raw})...)
	}
	return out
}
