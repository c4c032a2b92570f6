package tlsconf

import (
	"bytes"
	"crypto/tls"
	"path/filepath"
	"testing"
)

// mapSource is a Source serving fixed certificates by name.
type mapSource map[string]*tls.Certificate

func (s mapSource) Certificate(name string) *tls.Certificate { return s[name] }

func loadTestPair(t *testing.T, dir, cn string) *tls.Certificate {
	t.Helper()
	cf, kf := filepath.Join(dir, cn+".crt"), filepath.Join(dir, cn+".key")
	writePair(t, cf, kf, cn)
	c, err := loadPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func leafFor(t *testing.T, addr, sni string) []byte {
	t.Helper()
	cs, err := handshake(t, addr, &tls.Config{ServerName: sni})
	if err != nil {
		t.Fatalf("handshake for %q: %v", sni, err)
	}
	return cs.PeerCertificates[0].Raw
}

// The certificate is chosen per SNI: a source's certificate for its names,
// the hostname's certificate for names nobody covers.
func TestSNIChoosesSource(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := New("", "", dir, "mail.example.org", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := m.Certificate().Certificate[0]
	sts := loadTestPair(t, dir, "mta-sts.example.org")
	m.AddSource(mapSource{"mta-sts.example.org": sts})
	addr := serve(t, m)

	if got := leafFor(t, addr, "MTA-STS.example.org."); !bytes.Equal(got, sts.Certificate[0]) {
		t.Error("SNI mta-sts.example.org did not get the source's certificate")
	}
	if got := leafFor(t, addr, "mail.example.org"); !bytes.Equal(got, selfSigned) {
		t.Error("SNI mail.example.org did not get the self-signed certificate of the hostname")
	}
	if got := leafFor(t, addr, "attacker.example.net"); !bytes.Equal(got, selfSigned) {
		t.Error("unknown SNI did not get the hostname's certificate")
	}

	// Once a source has the hostname's certificate, it wins over the
	// self-signed one, also for unknown names and for no name at all.
	host := loadTestPair(t, dir, "mail.example.org")
	m.AddSource(mapSource{"mail.example.org": host})
	for _, sni := range []string{"mail.example.org", "attacker.example.net", ""} {
		if got := leafFor(t, addr, sni); !bytes.Equal(got, host.Certificate[0]) {
			t.Errorf("SNI %q did not get the source's hostname certificate", sni)
		}
	}
	if got := leafFor(t, addr, "mta-sts.example.org"); !bytes.Equal(got, sts.Certificate[0]) {
		t.Error("second source changed the first one's name")
	}
}

// A configured certificate file comes before the sources for the names it
// covers; the sources serve the others.
func TestSNIFileFirst(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	fileDER := writePair(t, cf, kf, "mail.example.org")
	m, err := New(cf, kf, "", "mail.example.org", 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	other := loadTestPair(t, dir, "other")
	sts := loadTestPair(t, dir, "mta-sts.example.org")
	m.AddSource(mapSource{"mail.example.org": other, "mta-sts.example.org": sts})
	addr := serve(t, m)
	if got := leafFor(t, addr, "mail.example.org"); !bytes.Equal(got, fileDER) {
		t.Error("the file's name was served from a source")
	}
	if got := leafFor(t, addr, "mta-sts.example.org"); !bytes.Equal(got, sts.Certificate[0]) {
		t.Error("a name the file does not cover was not served from the source")
	}
	if got := leafFor(t, addr, "nobody.example.net"); !bytes.Equal(got, fileDER) {
		t.Error("unknown SNI did not get the hostname's (file) certificate")
	}
}

func TestNormalizeName(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"Mail.Example.ORG.": "mail.example.org",
		"127.0.0.1":         "",
		"":                  "",
		"a..b":              "",
		".a":                "",
		"a b":               "",
		"bücher.example":    "",
		"xn--bcher-kva.ex":  "xn--bcher-kva.ex",
	} {
		if got := NormalizeName(in); got != want {
			t.Errorf("NormalizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
