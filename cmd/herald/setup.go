package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/privdrop"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

const setupUsage = "herald setup DOMAIN --hostname mail.DOMAIN [--ip ADDR]... [--acme] [--email ADDR] " +
	"[--config FILE] [--data-dir DIR] [--force]"

// Defaults of herald setup: where the Debian package keeps things.
const (
	setupConfigPath = "/etc/herald/herald.toml"
	setupDataDir    = "/var/lib/herald"
	maxSetupIPs     = 16 // --ip given more often is a mistake
)

// setupPlan is what herald setup was asked to do.
type setupPlan struct {
	Domain   string       // the mail domain, normalised (A-labels, lower case)
	Hostname string       // server.hostname
	IPs      []netip.Addr // the server's public addresses (may be empty)
	ACME     bool         // turn ACME on
	Email    string       // acme.email
	DataDir  string       // server.data_dir, absolute
	User     string       // server.user to write ("" leaves the default)
	Now      time.Time
}

// setupCmd runs "herald setup": write a production configuration, create
// the domain, its DKIM keys, the postmaster and its aliases in the store,
// and print every DNS record to publish.
func (e *cmdEnv) setupCmd(args []string) error {
	fs := flag.NewFlagSet("setup", flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	cfgPath := setupConfigPath
	if v, ok := os.LookupEnv("HERALD_CONFIG"); ok && v != "" {
		cfgPath = v
	}
	fs.StringVar(&cfgPath, "config", cfgPath, "configuration file to write")
	dataDir := fs.String("data-dir", setupDataDir, "data directory (server.data_dir)")
	hostname := fs.String("hostname", "", "this server's public DNS name (server.hostname), e.g. mail.DOMAIN")
	acme := fs.Bool("acme", false, "obtain certificates from Let's Encrypt (ACME)")
	email := fs.String("email", "", "contact address for the ACME CA (default postmaster@DOMAIN)")
	force := fs.Bool("force", false, "replace an existing configuration file (kept as FILE.bak)")
	var ips []netip.Addr
	fs.Func("ip", "a public address of this server (repeatable, or comma-separated)", func(s string) error {
		for f := range strings.SplitSeq(s, ",") {
			ip, err := parseSetupIP(strings.TrimSpace(f))
			if err != nil {
				return err
			}
			if len(ips) >= maxSetupIPs {
				return fmt.Errorf("more than %d addresses", maxSetupIPs)
			}
			ips = append(ips, ip)
		}
		return nil
	})
	var pos []string
	for rest := args; len(rest) > 0; {
		if err := fs.Parse(rest); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		rest = fs.Args()
		if len(rest) > 0 {
			pos = append(pos, rest[0])
			rest = rest[1:]
		}
	}
	if len(pos) != 1 || *hostname == "" {
		return fmt.Errorf("%w: %s", errUsage, setupUsage)
	}
	p := setupPlan{ACME: *acme, Now: time.Now()}
	var err error
	if p.Domain, err = setupDNSName(pos[0]); err != nil {
		return fmt.Errorf("%w: domain: %v", errUsage, err)
	}
	if p.Hostname, err = setupDNSName(*hostname); err != nil {
		return fmt.Errorf("%w: --hostname: %v", errUsage, err)
	}
	p.IPs = ips
	switch {
	case *email != "" && !*acme:
		return fmt.Errorf("%w: --email is the ACME contact: give --acme too", errUsage)
	case *email != "":
		a, err := smtp.ParseAddress(*email)
		if err != nil || strings.HasPrefix(a.Domain, "[") {
			return fmt.Errorf("%w: --email: %q is not a mail address", errUsage, *email)
		}
		p.Email = a.String()
	case *acme:
		p.Email = "postmaster@" + p.Domain
	}
	if p.DataDir, err = filepath.Abs(*dataDir); err != nil {
		return fmt.Errorf("%w: --data-dir: %v", errUsage, err)
	}
	if acct, err := privdrop.Lookup(privdrop.DefaultUser); err == nil && acct.UID != 0 {
		p.User = acct.Name
	}
	for _, ip := range p.IPs {
		if !publicAddr(ip) {
			fmt.Fprintf(e.stderr, "herald: warning: %s is not a public address; receivers on the internet cannot reach it\n", ip)
		}
	}

	// 1. The configuration, checked by config.Load before it is in place.
	text := setupConfig(p)
	cfg, err := installConfig(cfgPath, text, *force)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "Configuration written to %s (herald config check %s: OK).\n", cfgPath, cfgPath)

	// 2. The store: domain, DKIM keys, postmaster and aliases. Run as
	// root, opening the store switches to server.user (so its files are
	// the server's), which is why the configuration came first.
	e.cfg = cfg
	st, err := e.openStore(cfg, createStore)
	if err != nil {
		return fmt.Errorf("%w (the configuration %s is written: run herald setup again with --force once fixed)", err, cfgPath)
	}
	defer st.Close()
	ctx := context.Background()
	keys, err := e.setupStore(ctx, st, cfg, p)
	if err != nil {
		return fmt.Errorf("%w (the configuration %s is written: run herald setup again with --force once fixed)", err, cfgPath)
	}

	// 3. The DNS records.
	var pubs []dnscheck.DKIMPublic
	for _, k := range keys {
		name, value, err := dkim.DNSRecord(k.Domain, k.Selector, k.PrivateKey)
		if err != nil {
			return fmt.Errorf("DKIM key %s of %s: %w", k.Selector, k.Domain, err)
		}
		pubs = append(pubs, dnscheck.DKIMPublic{Name: name, Value: value})
	}
	rs := dnscheck.Records(dnscheck.RecordOptions{Domain: p.Domain, Hostname: p.Hostname, IPs: p.IPs, DKIM: pubs, Now: p.Now})
	fmt.Fprintf(e.stdout, "\nPublish these DNS records (zone-file syntax; the PTR records at the end are set by the provider of the addresses):\n\n")
	fmt.Fprint(e.stdout, dnscheck.Zone(rs))
	if len(p.IPs) == 0 {
		fmt.Fprintf(e.stdout, "\n; Also: A/AAAA records of %s and the PTR of each address (run again with --ip ADDR to get them).\n", p.Hostname)
	}
	e.setupNext(cfgPath, p)
	return nil
}

// setupNext prints what to do after setup.
func (e *cmdEnv) setupNext(cfgPath string, p setupPlan) {
	w := e.stdout
	fmt.Fprintf(w, "\nNext:\n")
	fmt.Fprintf(w, "  1. Publish the records above; ask your provider for the PTR records; open ports 25, 465 and 587")
	if p.ACME {
		fmt.Fprintf(w, ",\n     and 80 and 443 (the ACME CA validates there; Herald serves MTA-STS and autoconfig on 443)")
	}
	fmt.Fprintf(w, ".\n  2. Start Herald: systemctl start herald (or: herald serve --config %s).\n", cfgPath)
	if p.ACME {
		fmt.Fprintf(w, "     Certificates for %s, mta-sts.%s, autoconfig.%s and autodiscover.%s are ordered at start.\n", p.Hostname, p.Domain, p.Domain, p.Domain)
	} else {
		fmt.Fprintf(w, "     Without --acme Herald serves a self-signed certificate: set tls.cert_file/key_file, and serve\n"+
			"     https://mta-sts.%s/ and https://autoconfig.%s/ through a reverse proxy to http.listen.\n", p.Domain, p.Domain)
	}
	fmt.Fprintf(w, "  3. Check what is live: herald dns check %s --config %s\n", p.Domain, cfgPath)
}

// setupStore creates what the domain needs in the store and returns its
// active DKIM keys. What exists already is kept and said so: no second
// keys, and the postmaster's password is not changed.
func (e *cmdEnv) setupStore(ctx context.Context, st store.Store, cfg *config.Config, p setupPlan) ([]store.DKIMKey, error) {
	w := e.stdout
	d := p.Domain
	switch err := st.AddDomain(ctx, d); {
	case err == nil:
		fmt.Fprintf(w, "Domain %s: added.\n", d)
	case errors.Is(err, store.ErrExists):
		fmt.Fprintf(w, "Domain %s: exists.\n", d)
	default:
		return nil, fmt.Errorf("domain %s: %w", d, err)
	}

	// DKIM: one RSA (2048 bits) and one Ed25519 key, both active.
	existing, err := st.ListDKIMKeys(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("DKIM keys of %s: %w", d, err)
	}
	for _, algo := range []string{store.DKIMAlgorithmRSA, store.DKIMAlgorithmEd25519} {
		var have *store.DKIMKey
		for i, k := range existing {
			if k.Algorithm == algo && (have == nil || k.Active) {
				have = &existing[i]
			}
		}
		switch {
		case have != nil && have.Active:
			fmt.Fprintf(w, "DKIM %s key %s: exists, active.\n", algo, have.Selector)
		case have != nil:
			fmt.Fprintf(w, "DKIM %s key %s: exists but is inactive (herald dkim activate %s %s once its record is published).\n", algo, have.Selector, d, have.Selector)
		default:
			k, err := newDKIMKey(ctx, st, d, "", algo, p.Now)
			if err != nil {
				return nil, err
			}
			fmt.Fprintf(w, "DKIM %s key %s: created, active.\n", algo, k.Selector)
		}
	}

	// The postmaster, with a generated password shown once.
	pm := "postmaster@" + d
	switch _, err := st.GetUser(ctx, pm); {
	case err == nil:
		fmt.Fprintf(w, "User %s: exists, password unchanged (herald user passwd %s to set a new one).\n", pm, pm)
	case errors.Is(err, store.ErrNotFound):
		pw := newSetupPassword()
		if err := auth.CheckNewPassword(pw, cfg.Auth.MinPasswordLength); err != nil {
			return nil, exitcode.With(exitcode.Software, err) // not reached: 26 random characters
		}
		hash, err := auth.HashPassword(pw)
		if err != nil {
			return nil, err
		}
		if err := st.AddUser(ctx, store.User{Address: pm, PasswordHash: hash, Created: p.Now}); err != nil {
			return nil, fmt.Errorf("user %s: %w", pm, err)
		}
		fmt.Fprintf(w, "User %s: added. Its password, shown only now (log in to submission with the full address):\n\n    %s\n\n", pm, pw)
	default:
		return nil, fmt.Errorf("user %s: %w", pm, err)
	}

	// Aliases: the addresses receivers and RFC 2142 expect, to the postmaster.
	for _, local := range []string{"abuse", dnscheck.DMARCReportsLocal, dnscheck.TLSRPTReportsLocal} {
		addr := local + "@" + d
		switch a, err := st.GetAlias(ctx, addr); {
		case err == nil:
			fmt.Fprintf(w, "Alias %s: exists (-> %s).\n", addr, strings.Join(a.Targets, ", "))
			continue
		case !errors.Is(err, store.ErrNotFound):
			return nil, fmt.Errorf("alias %s: %w", addr, err)
		}
		if _, err := st.GetUser(ctx, addr); err == nil {
			fmt.Fprintf(w, "Alias %s: not added, a user has that address.\n", addr)
			continue
		}
		if err := st.AddAlias(ctx, store.Alias{Address: addr, Targets: []string{pm}}); err != nil {
			return nil, fmt.Errorf("alias %s: %w", addr, err)
		}
		fmt.Fprintf(w, "Alias %s -> %s: added.\n", addr, pm)
	}
	keys, err := st.ActiveDKIMKeys(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("DKIM keys of %s: %w", d, err)
	}
	return keys, nil
}

// newSetupPassword returns a random password: 26 characters of base32
// (130 bits), which no guessing over SMTP AUTH reaches.
func newSetupPassword() string { return rand.Text() }

// setupDNSName validates a domain or host name given to setup: a DNS name
// of at least two labels of letters, digits and inner hyphens (IDNs are
// converted to A-labels), not an address literal.
func setupDNSName(s string) (string, error) {
	d, err := smtp.NormalizeDomain(strings.TrimSuffix(s, "."))
	switch {
	case err != nil || strings.HasPrefix(d, "["):
		return "", fmt.Errorf("%q is not a DNS name", s)
	case strings.ContainsRune(d, '_'):
		return "", fmt.Errorf("%q: '_' is not allowed in a host or domain name", s)
	case !strings.Contains(d, ".") || len(d) > 253:
		return "", fmt.Errorf("%q is not a fully qualified name (like example.com)", s)
	}
	tld := d[strings.LastIndexByte(d, '.')+1:]
	if strings.Trim(tld, "0123456789") == "" {
		return "", fmt.Errorf("%q looks like an address, not a name", s)
	}
	return d, nil
}

// parseSetupIP parses an --ip address: IPv4 or IPv6, no zone, not
// unspecified or multicast.
func parseSetupIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil || ip.Zone() != "" {
		return netip.Addr{}, fmt.Errorf("bad address %q", s)
	}
	ip = ip.Unmap()
	if ip.IsUnspecified() || ip.IsMulticast() {
		return netip.Addr{}, fmt.Errorf("%s is not a host address", ip)
	}
	return ip, nil
}

// publicAddr reports whether ip can be reached from the internet.
func publicAddr(ip netip.Addr) bool {
	return ip.IsGlobalUnicast() && !ip.IsPrivate()
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			fmt.Fprintf(&b, "\\u%04X", r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// setupConfig renders the production configuration of p.
func setupConfig(p setupPlan) string {
	var b strings.Builder
	q := tomlString
	fmt.Fprintf(&b, `# Herald configuration written by "herald setup %s" on %s.
# Every key, its default and what it does: herald.example.toml
# (/usr/share/doc/herald/herald.example.toml in the Debian package).
# After an edit: herald config check FILE, then restart Herald.

[server]
# The public name of this server: MX target, HELO name, certificate name.
hostname = %s
data_dir = %s
`, p.Domain, p.Now.UTC().Format(time.DateOnly), q(p.Hostname), q(p.DataDir))
	if p.User != "" {
		fmt.Fprintf(&b, "# Started as root, Herald switches to this user once its ports are bound.\nuser = %s\n", q(p.User))
	}
	fmt.Fprintf(&b, `# Undeliverable bounces go here (a user created by setup).
postmaster = %s

[log]
format = "text"

[smtp]
# MX: mail for your domains, from the internet.
listen = ["0.0.0.0:25", "[::]:25"]

[submission]
# Your users' mail clients and applications: STARTTLS, then AUTH.
listen = ["0.0.0.0:587", "[::]:587"]

[submissions]
# The same with implicit TLS (RFC 8314).
listen = ["0.0.0.0:465", "[::]:465"]

[http]
# The HTTP API (/v1), the web console, /metrics and /healthz: loopback only.
# Put a TLS reverse proxy in front before opening it to the network.
listen = ["127.0.0.1:8025"]

[tlsrpt]
# Contact in the TLS reports Herald sends to the domains it delivers to.
contact = %s
`, q("postmaster@"+p.Domain), q("postmaster@"+p.Domain))
	if p.ACME {
		fmt.Fprintf(&b, `
[acme]
# Certificates from Let's Encrypt for the hostname and, for each local domain,
# mta-sts.DOMAIN, autoconfig.DOMAIN and autodiscover.DOMAIN; validated on
# ports 443 (tls-alpn-01) and 80 (http-01), where Herald also serves the
# MTA-STS policy and the mail client autoconfiguration.
enabled = true
email = %s
`, q(p.Email))
	} else {
		b.WriteString(`
[tls]
# Without certificate files (or [acme] enabled = true) Herald serves a
# self-signed certificate: receivers accept it, mail clients do not.
# cert_file = "/etc/letsencrypt/live/` + p.Hostname + `/fullchain.pem"
# key_file = "/etc/letsencrypt/live/` + p.Hostname + `/privkey.pem"
`)
	}
	return b.String()
}

// installConfig checks text with config.Load and puts it at path (mode
// 0640, group of server.user when run as root), refusing to replace an
// existing file unless force (then the old one is kept as path.bak). It
// returns the configuration as loaded from its final place.
func installConfig(path, text string, force bool) (*config.Config, error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, exitcode.With(exitcode.CantCreat, fmt.Errorf("creating %s: %w", dir, err))
	}
	if _, err := os.Lstat(path); err == nil && !force {
		return nil, exitcode.New(exitcode.CantCreat,
			fmt.Sprintf("%s exists: not replaced (give --force to replace it; the current file is then kept as %s.bak)", path, path), nil)
	}
	tmp, err := os.CreateTemp(dir, ".herald-setup-*.toml")
	if err != nil {
		return nil, exitcode.With(exitcode.CantCreat, fmt.Errorf("writing the configuration: %w", err))
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o640); err != nil {
		tmp.Close()
		return nil, exitcode.With(exitcode.IOErr, err)
	}
	if _, err := tmp.WriteString(text); err != nil {
		tmp.Close()
		return nil, exitcode.With(exitcode.IOErr, fmt.Errorf("writing %s: %w", tmp.Name(), err))
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, exitcode.With(exitcode.IOErr, fmt.Errorf("writing %s: %w", tmp.Name(), err))
	}
	if err := tmp.Close(); err != nil {
		return nil, exitcode.With(exitcode.IOErr, fmt.Errorf("writing %s: %w", tmp.Name(), err))
	}
	// The text alone must be valid, whatever HERALD_* variables say.
	plain, err := config.Parse(path, []byte(text), nil)
	if err != nil {
		return nil, exitcode.With(exitcode.Software, fmt.Errorf("the configuration setup wrote does not load: %w", err))
	}
	if os.Geteuid() == 0 {
		if acct, _, err := privdrop.Plan(0, plain.Server.User); err == nil && acct != nil {
			if err := os.Chown(tmp.Name(), 0, acct.GID); err != nil {
				return nil, exitcode.With(exitcode.NoPerm, fmt.Errorf("giving %s to group %d: %w", tmp.Name(), acct.GID, err))
			}
		}
	}
	if force {
		if _, err := os.Lstat(path); err == nil {
			if err := os.Remove(path + ".bak"); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, exitcode.With(exitcode.CantCreat, fmt.Errorf("keeping the old %s: %w", path, err))
			}
			if err := os.Link(path, path+".bak"); err != nil {
				return nil, exitcode.With(exitcode.CantCreat, fmt.Errorf("keeping the old %s: %w", path, err))
			}
		}
		if err := os.Rename(tmp.Name(), path); err != nil {
			return nil, exitcode.With(exitcode.CantCreat, fmt.Errorf("writing %s: %w", path, err))
		}
	} else if err := os.Link(tmp.Name(), path); err != nil {
		// Link, not rename: it fails if the file appeared meanwhile.
		if errors.Is(err, fs.ErrExist) {
			return nil, exitcode.New(exitcode.CantCreat, path+" exists: not replaced (give --force to replace it)", nil)
		}
		return nil, exitcode.With(exitcode.CantCreat, fmt.Errorf("writing %s: %w", path, err))
	}
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	// As the commands will read it: with the HERALD_* variables.
	cfg, err := config.Load(path)
	if err != nil {
		return nil, exitcode.With(exitcode.Config, err)
	}
	return cfg, nil
}
