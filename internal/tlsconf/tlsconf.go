// Package tlsconf provides the server certificates for Herald's listeners,
// chosen per handshake by the name the client asks for (SNI): a
// certificate loaded from PEM files and reloaded on demand (SIGHUP),
// further sources such as ACME (internal/acme) behind the Source
// interface, and, when no files are configured, a self-signed development
// certificate generated once and kept in the data directory.
package tlsconf

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Self-signed certificate parameters.
const (
	selfSignedValidity = 5 * 365 * 24 * time.Hour
	// A stored self-signed certificate closer than this to expiry is replaced.
	selfSignedRenewBefore = 30 * 24 * time.Hour
	// Configured certificates closer than this to expiry are warned about.
	expiryWarning = 14 * 24 * time.Hour

	selfSignedDir  = "tls"
	selfSignedCert = "selfsigned.crt"
	selfSignedKey  = "selfsigned.key"
)

// Source is a provider of server certificates by host name, such as the
// ACME manager.
type Source interface {
	// Certificate returns the certificate to serve for name (lower-case
	// ASCII, no trailing dot), or nil when the source has none for it. It
	// is called during handshakes: it must not block, and must never
	// obtain a certificate for a name it was not configured with.
	Certificate(name string) *tls.Certificate
}

// Manager holds the server certificates and picks one per handshake. It is
// safe for concurrent use: handshakes read the certificates while Reload
// and the sources replace them.
//
// For the name a client asks for, the configured certificate file comes
// first when it covers the name, then the sources added with AddSource in
// their order, then the self-signed certificate when it covers the name.
// A client that asks for no name or for a name nothing covers gets the
// certificate of the server's hostname, found the same way, or else the
// file or self-signed certificate.
type Manager struct {
	certFile, keyFile string
	selfSigned        bool
	minVersion        uint16
	hostname          string
	log               *slog.Logger

	mu      sync.Mutex // serialises Reload and AddSource
	cert    atomic.Pointer[tls.Certificate]
	sources atomic.Pointer[[]Source]
}

// New returns a Manager for the given PEM certificate chain and key files.
// When both are empty it uses a self-signed ECDSA P-256 certificate for
// hostname, "localhost", 127.0.0.1 and ::1, generated on first use and kept
// under dataDir/tls/ (key mode 0600), and reused on later starts (it is
// replaced when it no longer covers hostname or is about to expire).
// minVersion is tls.VersionTLS12 or tls.VersionTLS13; 0 means TLS 1.2. log
// may be nil.
func New(certFile, keyFile, dataDir, hostname string, minVersion uint16, log *slog.Logger) (*Manager, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	switch minVersion {
	case 0:
		minVersion = tls.VersionTLS12
	case tls.VersionTLS12, tls.VersionTLS13:
	default:
		return nil, fmt.Errorf("tlsconf: minimum TLS version %s is not supported (use 1.2 or 1.3)", tls.VersionName(minVersion))
	}
	m := &Manager{certFile: certFile, keyFile: keyFile, minVersion: minVersion, hostname: NormalizeName(hostname), log: log}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := loadPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		m.cert.Store(cert)
		m.logLoaded("loaded TLS certificate", cert, hostname)
		return m, nil
	case certFile != "" || keyFile != "":
		return nil, errors.New("tlsconf: certificate and key files must be given together")
	}

	if dataDir == "" {
		return nil, errors.New("tlsconf: no certificate files and no data directory for a self-signed certificate")
	}
	m.selfSigned = true
	dir := filepath.Join(dataDir, selfSignedDir)
	m.certFile = filepath.Join(dir, selfSignedCert)
	m.keyFile = filepath.Join(dir, selfSignedKey)
	cert, err := loadPair(m.certFile, m.keyFile)
	switch {
	case err == nil && usable(cert.Leaf, hostname):
		m.cert.Store(cert)
		m.logLoaded("using stored self-signed TLS certificate", cert, hostname)
		return m, nil
	case err == nil:
		log.Info("replacing stored self-signed TLS certificate (expiring or not for this hostname)", "file", m.certFile, "hostname", hostname)
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("tlsconf: stored self-signed certificate: %w (delete %s to generate a new one)", err, dir)
	}
	if err := generate(dir, m.certFile, m.keyFile, hostname); err != nil {
		return nil, err
	}
	if cert, err = loadPair(m.certFile, m.keyFile); err != nil {
		return nil, err
	}
	m.cert.Store(cert)
	m.logLoaded("generated self-signed TLS certificate", cert, hostname)
	return m, nil
}

// usable reports whether a stored self-signed certificate still serves.
func usable(leaf *x509.Certificate, hostname string) bool {
	if time.Until(leaf.NotAfter) < selfSignedRenewBefore {
		return false
	}
	return hostname == "" || leaf.VerifyHostname(hostname) == nil
}

func (m *Manager) logLoaded(msg string, cert *tls.Certificate, hostname string) {
	leaf := cert.Leaf
	attrs := []any{
		"file", m.certFile, "subject", leaf.Subject.CommonName, "names", leaf.DNSNames,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "self_signed", m.selfSigned,
	}
	m.log.Info(msg, attrs...)
	if left := time.Until(leaf.NotAfter); left < expiryWarning {
		m.log.Warn("TLS certificate expires soon or has expired", "file", m.certFile, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if hostname != "" && leaf.VerifyHostname(hostname) != nil {
		m.log.Warn("TLS certificate does not cover the server hostname", "file", m.certFile, "hostname", hostname, "names", leaf.DNSNames)
	}
}

// loadPair reads and checks a PEM certificate chain and its key.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tlsconf: load %s and %s: %w", certFile, keyFile, err)
	}
	if cert.Leaf == nil { // filled by Go >= 1.23; keep a fallback
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tlsconf: parse %s: %w", certFile, err)
		}
	}
	return &cert, nil
}

// Reload re-reads the certificate and key files (call it on SIGHUP). New
// handshakes use the new certificate; on error the current certificate
// stays in use and the error is returned.
func (m *Manager) Reload() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	cert, err := loadPair(m.certFile, m.keyFile)
	if err != nil {
		m.log.Error("TLS certificate reload failed; keeping the current certificate", "err", err)
		return err
	}
	old := m.cert.Swap(cert)
	if !slices.Equal(old.Certificate[0], cert.Certificate[0]) {
		m.logLoaded("reloaded TLS certificate", cert, "")
	}
	return nil
}

// ServerConfig returns a new TLS configuration for a listener. It picks
// the certificate per handshake (GetCertificate), so Reload and the
// sources' renewals apply to new connections.
func (m *Manager) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     m.minVersion,
		GetCertificate: m.GetCertificate,
	}
}

// MinVersion returns the lowest TLS version the listeners accept.
func (m *Manager) MinVersion() uint16 { return m.minVersion }

// AddSource adds a certificate source after the configured file and the
// sources added before, ahead of the self-signed certificate.
func (m *Manager) AddSource(s Source) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var list []Source
	if old := m.sources.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, s)
	m.sources.Store(&list)
}

// GetCertificate returns the certificate for the name hello asks for (see
// Manager); it never fails.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return m.ForName(hello.ServerName), nil
}

// ForName returns the certificate served to a client asking for name.
func (m *Manager) ForName(name string) *tls.Certificate {
	if c := m.lookup(NormalizeName(name)); c != nil {
		return c
	}
	if c := m.lookup(m.hostname); c != nil {
		return c
	}
	return m.cert.Load()
}

// lookup returns the certificate of the first source that covers name,
// or nil. The sources are, in order: the certificate file, the added
// sources, the self-signed certificate.
func (m *Manager) lookup(name string) *tls.Certificate {
	if name == "" {
		return nil
	}
	if c := m.own(false).Certificate(name); c != nil {
		return c
	}
	if list := m.sources.Load(); list != nil {
		for _, s := range *list {
			if c := s.Certificate(name); c != nil {
				return c
			}
		}
	}
	return m.own(true).Certificate(name)
}

// ownSource is the Manager's own certificate (file or self-signed) as a
// Source: it covers the names its leaf is valid for.
type ownSource struct {
	m       *Manager
	enabled bool
}

// own returns the Manager's certificate as a Source in the file position
// (selfSigned false) or the self-signed position (true): it has
// certificates only in the position that matches what it is.
func (m *Manager) own(selfSigned bool) Source { return ownSource{m, m.selfSigned == selfSigned} }

// Certificate returns the Manager's certificate if it covers name.
func (o ownSource) Certificate(name string) *tls.Certificate {
	if !o.enabled {
		return nil
	}
	if c := o.m.cert.Load(); c.Leaf.VerifyHostname(name) == nil {
		return c
	}
	return nil
}

// NormalizeName returns a TLS server name as sources see it: lower-case,
// without a trailing dot; "" for anything that is not a plausible DNS
// name (an IP address, empty labels, bytes outside letters, digits, '-',
// '_' and '.', or longer than 253 bytes).
func NormalizeName(name string) string {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if name == "" || len(name) > 253 || strings.Contains(name, "..") || strings.HasPrefix(name, ".") {
		return ""
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return ""
		}
	}
	if net.ParseIP(name) != nil {
		return ""
	}
	return name
}

// Certificate returns the file or self-signed certificate (the one served
// when no source has a better one).
func (m *Manager) Certificate() *tls.Certificate { return m.cert.Load() }

// SelfSigned reports whether the certificate is Herald's generated one.
func (m *Manager) SelfSigned() bool { return m.selfSigned }

// CertFile returns the certificate file in use (the generated one under the
// data directory when self-signed), for banners and logs.
func (m *Manager) CertFile() string { return m.certFile }

// Describe summarises a TLS connection for Received headers and logs, e.g.
// "TLS1.3 TLS_AES_128_GCM_SHA256". It returns "" for nil (no TLS).
func Describe(cs *tls.ConnectionState) string {
	if cs == nil {
		return ""
	}
	return strings.ReplaceAll(tls.VersionName(cs.Version), " ", "") + " " + tls.CipherSuiteName(cs.CipherSuite)
}

// generate writes a new self-signed certificate and key into dir. Each file
// is written to a temporary name, synced and renamed, so a crash never
// leaves a half-written file under the final name.
func generate(dir, certFile, keyFile, hostname string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("tlsconf: generate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return fmt.Errorf("tlsconf: serial: %w", err)
	}
	names := []string{"localhost"}
	if hostname != "" && hostname != "localhost" {
		if ip := net.ParseIP(hostname); ip == nil {
			names = append([]string{hostname}, names...)
		}
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"Herald self-signed"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(selfSignedValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if ip := net.ParseIP(hostname); ip != nil && !ip.IsLoopback() {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return fmt.Errorf("tlsconf: create certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("tlsconf: marshal key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	// Key first: a certificate file is only ever next to its key.
	if err := writeFileAtomic(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return err
	}
	if err := writeFileAtomic(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return err
	}
	return syncDir(dir)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("tlsconf: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("tlsconf: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("tlsconf: sync %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("tlsconf: close %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("tlsconf: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("tlsconf: sync %s: %w", dir, err)
	}
	return nil
}
