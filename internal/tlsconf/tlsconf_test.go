package tlsconf

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// writePair writes a fresh self-signed certificate for cn and its key.
func writePair(t *testing.T, certFile, keyFile, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     []string{cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return der
}

// serve runs a TLS listener on loopback with m's configuration, completing
// handshakes until the test ends.
func serve(t *testing.T, m *Manager) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", m.ServerConfig())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				_ = c.(*tls.Conn).Handshake()
				// Wait for the client to hang up, so it can read the
				// session state without racing our close.
				_, _ = c.Read(make([]byte, 1))
			}()
		}
	}()
	return ln.Addr().String()
}

// handshake connects to addr and returns the connection state.
func handshake(t *testing.T, addr string, cfg *tls.Config) (tls.ConnectionState, error) {
	t.Helper()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.InsecureSkipVerify = true // we compare the served leaf ourselves
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer c.Close()
	return c.ConnectionState(), nil
}

func servedLeaf(t *testing.T, addr string) []byte {
	t.Helper()
	cs, err := handshake(t, addr, nil)
	if err != nil {
		t.Fatalf("handshake: %v", err)
	}
	return cs.PeerCertificates[0].Raw
}

func TestSelfSignedGeneratedAndReused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m1, err := New("", "", dir, "mx.example.test", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !m1.SelfSigned() {
		t.Error("SelfSigned() = false")
	}
	leaf := m1.Certificate().Leaf
	if err := leaf.VerifyHostname("mx.example.test"); err != nil {
		t.Error(err)
	}
	for _, h := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := leaf.VerifyHostname(h); err != nil {
			t.Errorf("self-signed cert does not cover %s: %v", h, err)
		}
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key is %T, want ECDSA P-256", leaf.PublicKey)
	}
	// Persisted under dataDir/tls with a private key file.
	if filepath.Dir(m1.CertFile()) != filepath.Join(dir, "tls") {
		t.Errorf("cert file %s not under %s/tls", m1.CertFile(), dir)
	}
	st, err := os.Stat(filepath.Join(dir, "tls", selfSignedKey))
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v, want 0600", st.Mode().Perm())
	}

	// A second start reuses it, and serves it.
	m2, err := New("", "", dir, "mx.example.test", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m1.Certificate().Certificate[0], m2.Certificate().Certificate[0]) {
		t.Fatal("second New generated a new certificate instead of reusing the stored one")
	}
	if got := servedLeaf(t, serve(t, m2)); !bytes.Equal(got, leaf.Raw) {
		t.Error("served certificate is not the stored self-signed one")
	}

	// A new hostname gets a new certificate.
	m3, err := New("", "", dir, "other.example.test", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(m3.Certificate().Certificate[0], leaf.Raw) || m3.Certificate().Leaf.VerifyHostname("other.example.test") != nil {
		t.Error("hostname change did not produce a certificate for the new name")
	}
	// A corrupt stored certificate is an error, not silently replaced.
	if err := os.WriteFile(m3.CertFile(), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New("", "", dir, "other.example.test", 0, nil); err == nil {
		t.Error("corrupt stored certificate accepted")
	}
}

func TestFilesLoaded(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	der := writePair(t, certFile, keyFile, "mail.example.test")
	m, err := New(certFile, keyFile, "", "mail.example.test", tls.VersionTLS12, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m.SelfSigned() || m.CertFile() != certFile {
		t.Errorf("SelfSigned=%v CertFile=%s", m.SelfSigned(), m.CertFile())
	}
	if got := servedLeaf(t, serve(t, m)); !bytes.Equal(got, der) {
		t.Error("served certificate is not the one in the file")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("New with files wrote into the directory: %v", entries)
	}

	if _, err := New(certFile, "", dir, "h", 0, nil); err == nil {
		t.Error("certificate without key accepted")
	}
	if _, err := New(filepath.Join(dir, "missing.pem"), keyFile, "", "h", 0, nil); err == nil {
		t.Error("missing certificate file accepted")
	}
	if _, err := New(keyFile, certFile, "", "h", 0, nil); err == nil {
		t.Error("swapped files accepted")
	}
	if _, err := New(certFile, keyFile, "", "h", tls.VersionTLS11, nil); err == nil {
		t.Error("TLS 1.1 minimum accepted")
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	first := writePair(t, certFile, keyFile, "a.example.test")
	m, err := New(certFile, keyFile, "", "a.example.test", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, m)
	if got := servedLeaf(t, addr); !bytes.Equal(got, first) {
		t.Fatal("initial certificate not served")
	}

	second := writePair(t, certFile, keyFile, "b.example.test")
	if err := m.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := servedLeaf(t, addr); !bytes.Equal(got, second) {
		t.Fatal("Reload did not change the served certificate")
	}

	// A broken file: Reload fails and the current certificate stays.
	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := m.Reload(); err == nil {
		t.Fatal("Reload of a broken file succeeded")
	}
	if got := servedLeaf(t, addr); !bytes.Equal(got, second) {
		t.Fatal("broken reload replaced the served certificate")
	}
	// A certificate that does not match the key is refused too.
	writePair(t, certFile, filepath.Join(dir, "other-key.pem"), "c.example.test")
	if err := m.Reload(); err == nil {
		t.Fatal("Reload with mismatched key succeeded")
	}
	if got := servedLeaf(t, addr); !bytes.Equal(got, second) {
		t.Fatal("mismatched reload replaced the served certificate")
	}
}

func TestMinVersion(t *testing.T) {
	t.Parallel()
	m, err := New("", "", t.TempDir(), "localhost", tls.VersionTLS13, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, m)
	if _, err := handshake(t, addr, &tls.Config{MaxVersion: tls.VersionTLS12}); err == nil {
		t.Error("TLS 1.2 client accepted by a TLS 1.3-only server")
	}
	cs, err := handshake(t, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("version %x", cs.Version)
	}
	if m.ServerConfig().MinVersion != tls.VersionTLS13 {
		t.Error("ServerConfig MinVersion not applied")
	}
	m12, err := New("", "", t.TempDir(), "localhost", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if m12.ServerConfig().MinVersion != tls.VersionTLS12 {
		t.Error("default MinVersion is not TLS 1.2")
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	if got := Describe(nil); got != "" {
		t.Errorf("Describe(nil) = %q", got)
	}
	cs := &tls.ConnectionState{Version: tls.VersionTLS12, CipherSuite: tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	if got, want := Describe(cs), "TLS1.2 TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"; got != want {
		t.Errorf("Describe = %q, want %q", got, want)
	}
	m, err := New("", "", t.TempDir(), "localhost", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	real, err := handshake(t, serve(t, m), nil)
	if err != nil {
		t.Fatal(err)
	}
	tls13 := []string{"TLS1.3 TLS_AES_128_GCM_SHA256", "TLS1.3 TLS_AES_256_GCM_SHA384", "TLS1.3 TLS_CHACHA20_POLY1305_SHA256"}
	if got := Describe(&real); !slices.Contains(tls13, got) {
		t.Errorf("Describe(real handshake) = %q", got)
	}
}
