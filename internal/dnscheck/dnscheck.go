// Package dnscheck is Herald's "DNS doctor": it checks, against a resolver,
// the DNS records a mail domain needs for Herald to receive and deliver its
// mail (MX, SPF, DKIM, DMARC, forward-confirmed reverse DNS, MTA-STS and
// TLS-RPT) and says, for each finding, what is wrong and the exact record
// to publish or change.
//
// Severity: ERROR means mail is lost, refused or likely marked as spam (no
// or several SPF records, more than 10 SPF lookups, an SPF record that does
// not authorise a sending address or ends with +all, a missing or wrong
// DKIM record, no DMARC record, no or unconfirmed reverse DNS, no MX to
// this server). WARN means weak or optional: DMARC p=none, pct<100 or no
// rua, SPF ending ?all or without all, more than 2 void lookups, a PTR name
// other than the HELO name, no SPF for the HELO name, no DKIM key in the
// store, a null MX, a hostname not resolving to the given sending
// addresses, and the optional MTA-STS, TLS-RPT, autoconfig/autodiscover
// and SRV records when missing. A zone with every record Records suggests
// gives no WARN.
package dnscheck

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
)

// Level is the severity of a finding.
type Level int

// Finding levels, from harmless to blocking.
const (
	LevelOK    Level = iota // the record is right
	LevelWarn               // works, but is weak, optional or risky
	LevelError              // mail will be lost, refused or marked as spam
)

// String returns "OK", "WARN" or "ERROR".
func (l Level) String() string {
	switch l {
	case LevelOK:
		return "OK"
	case LevelWarn:
		return "WARN"
	case LevelError:
		return "ERROR"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// MarshalText writes the level as in String, so JSON reports (the HTTP API)
// say "OK", "WARN" or "ERROR".
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// Names of the checks, as they appear in Finding.Check.
const (
	CheckHost    = "host"
	CheckMX      = "mx"
	CheckSPF     = "spf"
	CheckDKIM    = "dkim"
	CheckDMARC   = "dmarc"
	CheckPTR     = "ptr"
	CheckMTASTS  = "mta-sts"
	CheckTLSRPT  = "tls-rpt"
	CheckSPFHelo = "spf-helo"
)

// Finding is one result of a check. The JSON form is part of the HTTP API
// (GET /v1/domains/{domain}/dns, schema DNSFinding of its OpenAPI document).
type Finding struct {
	Check   string `json:"check"`         // one of the Check* names
	Level   Level  `json:"level"`         // "OK", "WARN" or "ERROR" in JSON
	Message string `json:"message"`       // what was found and why it matters
	Fix     string `json:"fix,omitempty"` // the record to publish or change (zone-file syntax), or what to do; "" if nothing
}

// Report is the outcome of Check, findings in a stable order. The JSON
// form is part of the HTTP API (schema DNSReport): snake_case names, and
// empty lists as [] rather than null.
type Report struct {
	Domain     string       `json:"domain"`
	Hostname   string       `json:"hostname"`
	SendingIPs []netip.Addr `json:"sending_ips"`
	Findings   []Finding    `json:"findings"`
}

// MarshalJSON writes the report with [] for an empty SendingIPs or
// Findings.
func (r Report) MarshalJSON() ([]byte, error) {
	type plain Report // without this method
	if r.SendingIPs == nil {
		r.SendingIPs = []netip.Addr{}
	}
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	return json.Marshal(plain(r))
}

// Errors returns the number of ERROR findings.
func (r Report) Errors() int { return r.count(LevelError) }

// Warnings returns the number of WARN findings.
func (r Report) Warnings() int { return r.count(LevelWarn) }

func (r Report) count(l Level) int {
	n := 0
	for _, f := range r.Findings {
		if f.Level == l {
			n++
		}
	}
	return n
}

// KeySource gives the DKIM keys Herald signs with (store.DKIMKeys
// satisfies it).
type KeySource interface {
	// ActiveDKIMKeys returns the active keys of domain; none is not an error.
	ActiveDKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error)
}

// HTTPGetFunc fetches url and returns its body; any status but 200 must be
// an error.
type HTTPGetFunc func(ctx context.Context, url string) ([]byte, error)

// Options says what to check.
type Options struct {
	// Domain is the mail domain checked.
	Domain string
	// Hostname is this server's public name: its HELO name and the name
	// its MX records should point to (config server.hostname).
	Hostname string
	// SendingIPs are the addresses mail leaves from. Empty means the
	// addresses of Hostname.
	SendingIPs []netip.Addr
	// HTTPGet fetches the MTA-STS policy file. Nil means the policy file
	// is not fetched (a WARN says so); NewHTTPGet builds a real one.
	HTTPGet HTTPGetFunc
}

// checker carries one Check run.
type checker struct {
	r    *cachedResolver
	keys KeySource
	opts Options
	rep  *Report

	ourAddrs []netip.Addr // addresses of Hostname
	mxHosts  []string     // MX hosts of Domain (no null MX)
}

func (c *checker) add(check string, level Level, fix string, format string, args ...any) {
	c.rep.Findings = append(c.rep.Findings, Finding{Check: check, Level: level, Message: fmt.Sprintf(format, args...), Fix: fix})
}

// Check runs every check on opts.Domain. Lookups are cached for the run, so
// each name is asked once. DNS failures become findings, never errors.
func Check(ctx context.Context, r resolve.Resolver, keys KeySource, opts Options) Report {
	opts.Domain = normName(opts.Domain)
	opts.Hostname = normName(opts.Hostname)
	c := &checker{r: newCachedResolver(r), keys: keys, opts: opts, rep: &Report{Domain: opts.Domain, Hostname: opts.Hostname}}
	given := opts.SendingIPs
	c.checkHost(ctx)
	c.checkHostAddrs(given)
	c.rep.SendingIPs = c.opts.SendingIPs
	c.checkMX(ctx)
	c.checkSPF(ctx)
	c.checkHeloSPF(ctx)
	c.checkDKIM(ctx)
	c.checkDMARC(ctx)
	c.checkPTR(ctx)
	c.checkMTASTS(ctx)
	c.checkTLSRPT(ctx)
	c.checkClients(ctx)
	return *c.rep
}

func normName(s string) string { return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".") }

// fqdn returns name with a trailing dot, as zone files want.
func fqdn(name string) string { return name + "." }

func describe(err error) string {
	switch {
	case errors.Is(err, resolve.ErrNotFound):
		return "no such record"
	case errors.Is(err, resolve.ErrTemporary):
		return "temporary DNS failure (" + err.Error() + ")"
	}
	return err.Error()
}

func addrRecords(name string, ips []netip.Addr) string {
	var b strings.Builder
	for i, ip := range ips {
		if i > 0 {
			b.WriteByte('\n')
		}
		t := "A"
		if ip.Is6() {
			t = "AAAA"
		}
		fmt.Fprintf(&b, "%s %s %s", fqdn(name), t, ip)
	}
	return b.String()
}

// checkHost checks Hostname itself and settles the sending addresses.
func (c *checker) checkHost(ctx context.Context) {
	h := c.opts.Hostname
	switch {
	case h == "":
		c.add(CheckHost, LevelError, "set server.hostname to this server's public name, e.g. mail."+c.opts.Domain, "the server has no hostname")
	case h == "localhost" || !strings.Contains(h, "."):
		c.add(CheckHost, LevelError, "set server.hostname to this server's public name, e.g. mail."+c.opts.Domain, "hostname %q is not a public DNS name; receivers refuse it as a HELO name", h)
	default:
		ips, err := c.r.LookupIP(ctx, h)
		if err != nil {
			fix := ""
			if len(c.opts.SendingIPs) > 0 {
				fix = addrRecords(h, c.opts.SendingIPs)
			}
			c.add(CheckHost, LevelError, fix, "hostname %s does not resolve: %s", h, describe(err))
		} else {
			c.ourAddrs = ips
			c.add(CheckHost, LevelOK, "", "hostname %s resolves to %s", h, joinAddrs(ips))
		}
	}
	if len(c.opts.SendingIPs) == 0 {
		c.opts.SendingIPs = c.ourAddrs
		if len(c.opts.SendingIPs) == 0 {
			c.add(CheckHost, LevelError, "set delivery.source_ipv4/source_ipv6, or pass --ip ADDR", "no sending address known: SPF authorisation and reverse DNS cannot be checked")
		}
	}
}

func joinAddrs(ips []netip.Addr) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}

// isOurs reports whether any of ips is one of this server's addresses.
func (c *checker) isOurs(ips []netip.Addr) bool {
	for _, ip := range ips {
		if slices.Contains(c.ourAddrs, ip) || slices.Contains(c.opts.SendingIPs, ip) {
			return true
		}
	}
	return false
}

func (c *checker) checkMX(ctx context.Context) {
	d := c.opts.Domain
	fix := fmt.Sprintf("%s MX 10 %s", fqdn(d), fqdn(c.opts.Hostname))
	mxs, err := c.r.LookupMX(ctx, d)
	if err != nil {
		if errors.Is(err, resolve.ErrNotFound) {
			c.add(CheckMX, LevelError, fix, "%s has no MX record: senders fall back to its A/AAAA records, and many refuse to", d)
		} else {
			c.add(CheckMX, LevelError, "", "MX of %s: %s", d, describe(err))
		}
		return
	}
	if len(mxs) == 1 && mxs[0].Host == "" {
		c.add(CheckMX, LevelWarn, "if Herald should receive mail for "+d+", replace the null MX with:\n"+fix,
			"%s publishes a null MX (RFC 7505): it receives no mail", d)
		return
	}
	toUs := false
	var names []string
	for _, mx := range mxs {
		if mx.Host == "" {
			c.add(CheckMX, LevelError, "remove the null MX \""+fqdn(d)+" MX 0 .\"", "%s mixes a null MX with other MX records", d)
			continue
		}
		c.mxHosts = append(c.mxHosts, mx.Host)
		names = append(names, fmt.Sprintf("%d %s", mx.Pref, mx.Host))
		ips, err := c.r.LookupIP(ctx, mx.Host)
		if err != nil {
			c.add(CheckMX, LevelError, "", "MX host %s does not resolve: %s; senders cannot reach it", mx.Host, describe(err))
			continue
		}
		if mx.Host == c.opts.Hostname || c.isOurs(ips) {
			toUs = true
		}
	}
	if !toUs {
		c.add(CheckMX, LevelError, fix, "no MX of %s (%s) points to this server (%s)", d, strings.Join(names, ", "), c.opts.Hostname)
		return
	}
	c.add(CheckMX, LevelOK, "", "MX of %s: %s", d, strings.Join(names, ", "))
}

// checkPTR checks forward-confirmed reverse DNS of each sending address.
func (c *checker) checkPTR(ctx context.Context) {
	h := c.opts.Hostname
	for _, ip := range c.opts.SendingIPs {
		fix := fmt.Sprintf("ask your provider to set the PTR of %s to %s", ip, h)
		names, err := c.r.LookupPTR(ctx, ip)
		if err != nil {
			c.add(CheckPTR, LevelError, fix, "%s has no reverse DNS (PTR): %s; many receivers refuse mail from it", ip, describe(err))
			continue
		}
		var confirmed []string
		for _, n := range names {
			ips, err := c.r.LookupIP(ctx, n)
			if err == nil && slices.Contains(ips, ip) {
				confirmed = append(confirmed, n)
			}
		}
		switch {
		case len(confirmed) == 0:
			f := fix
			if slices.Contains(names, h) {
				f = addrRecords(h, []netip.Addr{ip})
			}
			c.add(CheckPTR, LevelError, f, "PTR of %s is %s, which does not resolve back to %s (not forward-confirmed)", ip, strings.Join(names, ", "), ip)
		case !slices.Contains(confirmed, h):
			c.add(CheckPTR, LevelWarn, fix, "PTR of %s is %s, not the HELO name %s", ip, strings.Join(confirmed, ", "), h)
		default:
			c.add(CheckPTR, LevelOK, "", "%s has forward-confirmed reverse DNS %s", ip, h)
		}
	}
}

// cachedResolver remembers every answer for the duration of one Check.
type cachedResolver struct {
	r  resolve.Resolver
	mu sync.Mutex
	m  map[string]cachedAnswer
}

type cachedAnswer struct {
	v   any
	err error
}

func newCachedResolver(r resolve.Resolver) *cachedResolver {
	return &cachedResolver{r: r, m: map[string]cachedAnswer{}}
}

func cached[T any](c *cachedResolver, key string, f func() (T, error)) (T, error) {
	c.mu.Lock()
	a, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		v, _ := a.v.(T)
		return v, a.err
	}
	v, err := f()
	c.mu.Lock()
	c.m[key] = cachedAnswer{v: v, err: err}
	c.mu.Unlock()
	return v, err
}

func (c *cachedResolver) LookupMX(ctx context.Context, domain string) ([]resolve.MX, error) {
	domain = normName(domain)
	return cached(c, "mx "+domain, func() ([]resolve.MX, error) { return c.r.LookupMX(ctx, domain) })
}

func (c *cachedResolver) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	host = normName(host)
	return cached(c, "ip "+host, func() ([]netip.Addr, error) { return c.r.LookupIP(ctx, host) })
}

func (c *cachedResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	name = normName(name)
	return cached(c, "txt "+name, func() ([]string, error) { return c.r.LookupTXT(ctx, name) })
}

func (c *cachedResolver) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	return cached(c, "ptr "+addr.String(), func() ([]string, error) {
		names, err := c.r.LookupPTR(ctx, addr)
		for i := range names {
			names[i] = normName(names[i])
		}
		return names, err
	})
}

// txtWithPrefix returns the TXT records of name that start with prefix
// (compared case-insensitively and followed by end, space or ';').
func (c *checker) txtWithPrefix(ctx context.Context, name, prefix string) ([]string, error) {
	txts, err := c.r.LookupTXT(ctx, name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range txts {
		t = strings.TrimSpace(t)
		if len(t) >= len(prefix) && strings.EqualFold(t[:len(prefix)], prefix) &&
			(len(t) == len(prefix) || strings.ContainsRune(" ;\t", rune(t[len(prefix)]))) {
			out = append(out, t)
		}
	}
	return out, nil
}

// txtRecord formats a TXT record in zone-file syntax, splitting the text
// into strings of at most 255 bytes.
func txtRecord(name, text string) string {
	var b strings.Builder
	b.WriteString(fqdn(name))
	b.WriteString(" TXT")
	for len(text) > 0 {
		n := min(len(text), 255)
		b.WriteString(` "`)
		b.WriteString(strings.ReplaceAll(text[:n], `"`, `\"`))
		b.WriteString(`"`)
		text = text[n:]
	}
	return b.String()
}
