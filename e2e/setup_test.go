package e2e

import (
	"bytes"
	"crypto/tls"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/testutil/testacme"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/miekg/dns"
)

// runHerald runs the herald binary with env added to a clean environment
// (no HERALD_* variable of the test process) and returns its output and
// exit status.
func runHerald(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") && !strings.HasPrefix(kv, "SSL_CERT_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		code = exit.ExitCode()
	case err != nil:
		t.Fatalf("herald %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errOut.String(), code
}

// setupZone returns the records of herald setup's output (from "Publish
// these DNS records" to "Next:"), failing the test if any line of it is
// not valid zone-file syntax.
func setupZone(t *testing.T, out string) []dns.RR {
	t.Helper()
	_, zone, ok := strings.Cut(out, "Publish these DNS records")
	if !ok {
		t.Fatalf("no records in the output:\n%s", out)
	}
	_, zone, _ = strings.Cut(zone, "\n") // the heading's rest
	zone, _, _ = strings.Cut(zone, "\nNext:")
	var rrs []dns.RR
	for line := range strings.SplitSeq(zone, "\n") {
		l := strings.TrimSpace(line)
		if l == "" || strings.HasPrefix(l, ";") {
			continue
		}
		rr, err := dns.NewRR(l)
		if err != nil || rr == nil {
			t.Fatalf("printed line %q is not a zone-file record: %v", l, err)
		}
		rrs = append(rrs, rr)
	}
	zp := dns.NewZoneParser(strings.NewReader(zone), "", "setup")
	n := 0
	for _, ok := zp.Next(); ok; _, ok = zp.Next() {
		n++
	}
	if err := zp.Err(); err != nil || n != len(rrs) {
		t.Fatalf("zone parser: %d records, %v; lines: %d", n, err, len(rrs))
	}
	return rrs
}

var setupPassword = regexp.MustCompile(`(?m)^    ([A-Z2-7]{26})$`)

// The guided setup, end to end with the real binary: herald setup writes a
// configuration that passes config check and prints a zone; before the
// zone is published the DNS doctor reports errors, after it is loaded into
// the DNS server (and herald serve runs with that configuration, with its
// certificates from an ACME CA on loopback) the doctor reports none; the
// printed password logs in to submission over verified TLS; and a second
// setup neither replaces the configuration nor, with --force, makes new
// keys or changes the password.
func TestSetupEndToEnd(t *testing.T) {
	t.Parallel()
	bin := heraldBinary(t)
	zone := testdns.Start(t)
	ip := nextMXIP()
	ca := testacme.Start(t, testacme.Options{DNS: zone.Addr(), HTTPPort: 80, TLSPort: 443})
	dir := t.TempDir()
	cfgPath, dataDir := filepath.Join(dir, "etc", "herald.toml"), filepath.Join(dir, "data")
	caFile, rootsFile := filepath.Join(dir, "acme-server.pem"), filepath.Join(dir, "roots.pem")
	if err := os.WriteFile(caFile, ca.ServerCertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(rootsFile, ca.RootsPEM(), 0o644); err != nil {
		t.Fatal(err)
	}

	out, errOut, code := runHerald(t, bin, nil, "setup", "example.test", "--hostname", "mail.example.test", "--ip", ip,
		"--acme", "--email", "ops@example.test", "--config", cfgPath, "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("setup: exit %d\n%s\n%s", code, out, errOut)
	}
	t.Logf("herald setup output:\n%s", out)
	m := setupPassword.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no password printed:\n%s", out)
	}
	password := m[1]
	rrs := setupZone(t, out)
	if len(rrs) != 16 {
		t.Errorf("%d records printed, want 16 (MX, A, 2 SPF, 2 DKIM, DMARC, MTA-STS TXT and CNAME, TLS-RPT, 2 CNAME, 3 SRV, PTR)", len(rrs))
	}
	if info, err := os.Stat(cfgPath); err != nil || info.Mode().Perm() != 0o640 {
		t.Errorf("config file: %v, mode %v; want 0640", err, info.Mode())
	}
	if out, _, code := runHerald(t, bin, nil, "config", "check", cfgPath); code != 0 || !strings.Contains(out, ": OK") {
		t.Errorf("config check: exit %d: %s", code, out)
	}
	cfgBefore, _ := os.ReadFile(cfgPath)

	// A second run refuses to replace the configuration.
	_, errOut, code = runHerald(t, bin, nil, "setup", "example.test", "--hostname", "mx.other.test", "--config", cfgPath, "--data-dir", dataDir)
	if code != 73 || !strings.Contains(errOut, "exists: not replaced") {
		t.Errorf("rerun: exit %d, %q; want 73 and a refusal", code, errOut)
	}
	if now, _ := os.ReadFile(cfgPath); !bytes.Equal(now, cfgBefore) {
		t.Error("rerun changed the configuration")
	}

	env := []string{"HERALD_DNS_RESOLVER=" + zone.Addr(), "SSL_CERT_FILE=" + rootsFile}
	// Nothing published yet: the doctor finds errors.
	out, _, code = runHerald(t, bin, env, "dns", "check", "example.test", "--config", cfgPath)
	t.Logf("herald dns check example.test, before publishing:\n%s", out)
	if code == 0 || !strings.Contains(out, "ERROR") {
		t.Errorf("doctor before publishing: exit %d\n%s", code, out)
	}

	// Publish what setup printed (the PTR as the provider would).
	for _, rr := range rrs {
		zone.Add(rr.String())
	}
	subm, subms := freePortOn(t, ip), freePortOn(t, ip)
	serveEnv := append(env,
		"HERALD_SMTP_LISTEN="+freePortOn(t, ip),
		"HERALD_SUBMISSION_LISTEN="+subm,
		"HERALD_SUBMISSIONS_LISTEN="+subms,
		"HERALD_HTTP_LISTEN="+freePortOn(t, "127.0.0.1"),
		"HERALD_ACME_DIRECTORY_URL="+ca.DirectoryURL,
		"HERALD_ACME_CA_FILE="+caFile,
		"HERALD_ACME_HTTPS_ADDRESS="+ip+":443",
		"HERALD_ACME_HTTP_ADDRESS="+ip+":80",
		"HERALD_ACME_CHALLENGES=tls-alpn-01",
		"HERALD_SERVER_USER=root",
	)
	serve := exec.Command(bin, "serve", "--config", cfgPath)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HERALD_") {
			serve.Env = append(serve.Env, kv)
		}
	}
	serve.Env = append(serve.Env, serveEnv...)
	logPath := filepath.Join(dir, "serve.log")
	lf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	serve.Stdout, serve.Stderr = lf, lf
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: serve, log: lf}
	t.Cleanup(func() {
		p.term(t)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("serve log:\n%s", b)
		}
	})
	roots := ca.Roots()
	waitCert(t, subms, "mail.example.test", roots)
	waitCert(t, ip+":443", "mta-sts.example.test", roots)

	// Everything published and served: the doctor reports no error.
	out, errOut, code = runHerald(t, bin, env, "dns", "check", "example.test", "--config", cfgPath)
	t.Logf("herald dns check example.test:\n%s", out)
	if code != 0 || strings.Contains(out, "ERROR") {
		t.Errorf("doctor after publishing: exit %d\n%s\n%s", code, out, errOut)
	}
	if !strings.Contains(out, "OK     mta-sts: MTA-STS policy (mode testing") {
		t.Errorf("the policy Herald serves was not fetched and checked:\n%s", out)
	}

	// The printed password logs in to submission, over TLS verified for
	// the hostname with the ACME certificate.
	c := dial(t, subm)
	c.ok(250, "EHLO client.example")
	c.ok(220, "STARTTLS")
	tc := tls.Client(c.conn, &tls.Config{ServerName: "mail.example.test", RootCAs: roots})
	if err := tc.Handshake(); err != nil {
		t.Fatalf("STARTTLS: %v", err)
	}
	c.conn, c.tp = tc, newTextproto(tc)
	c.ok(250, "EHLO client.example")
	if code, msg := c.authPlain("postmaster@example.test", password+"x"); code != 535 {
		t.Errorf("AUTH with a wrong password: %d %s", code, msg)
	}
	if code, msg := c.authPlain("postmaster@example.test", password); code != 235 {
		t.Errorf("AUTH with the printed password: %d %s", code, msg)
	}
	c.conn.Close()

	// --force: the configuration is replaced (the old one kept), the store
	// keeps its keys and password.
	out, errOut, code = runHerald(t, bin, env, "setup", "example.test", "--hostname", "mail.example.test", "--ip", ip,
		"--config", cfgPath, "--data-dir", dataDir, "--force")
	if code != 0 {
		t.Fatalf("setup --force: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, s := range []string{"Domain example.test: exists", "DKIM rsa key", "exists, active", "password unchanged", "Alias abuse@example.test: exists"} {
		if !strings.Contains(out, s) {
			t.Errorf("setup --force output lacks %q:\n%s", s, out)
		}
	}
	if strings.Contains(out, "created") || setupPassword.MatchString(out) {
		t.Errorf("setup --force created keys or printed a password:\n%s", out)
	}
	if bak, _ := os.ReadFile(cfgPath + ".bak"); !bytes.Equal(bak, cfgBefore) {
		t.Error("the replaced configuration was not kept as .bak")
	}
	// The password still works (implicit TLS this time).
	c = dialTLS(t, subms)
	c.ok(250, "EHLO client.example")
	if code, msg := c.authPlain("postmaster@example.test", password); code != 235 {
		t.Errorf("AUTH after setup --force: %d %s", code, msg)
	}
	c.conn.Close()
}
