package testmx

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// CA is a test certificate authority: a self-signed root, optionally with
// an intermediate, issuing leaf certificates for tests of certificate
// verification (MTA-STS, DANE-TA, HTTPS).
type CA struct {
	t      testing.TB
	Root   *x509.Certificate
	key    *ecdsa.PrivateKey
	serial atomic.Int64
}

// NewCA creates a root CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key := newKey(t)
	ca := &CA{t: t, key: key}
	ca.serial.Store(time.Now().UnixNano())
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(ca.serial.Add(1)),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("testmx: CA certificate: %v", err)
	}
	if ca.Root, err = x509.ParseCertificate(der); err != nil {
		t.Fatalf("testmx: parse CA certificate: %v", err)
	}
	return ca
}

// Pool returns a pool trusting the root.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Root)
	return p
}

// Issue returns a leaf certificate for names (DNS names or IP literals),
// valid now, with the chain leaf, root.
func (ca *CA) Issue(names ...string) tls.Certificate {
	return ca.IssueValid(time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour), names...)
}

// IssueValid is Issue with a chosen validity period (e.g. an expired one).
func (ca *CA) IssueValid(notBefore, notAfter time.Time, names ...string) tls.Certificate {
	ca.t.Helper()
	key := newKey(ca.t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serial.Add(1)),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Root, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatalf("testmx: leaf certificate: %v", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		ca.t.Fatalf("testmx: parse leaf certificate: %v", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.Root.Raw}, PrivateKey: key, Leaf: leaf}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("testmx: key: %v", err)
	}
	return key
}
