// Package spf checks the Sender Policy Framework (RFC 7208) of inbound mail.
// It wraps blitiri.com.ar/go/spf behind Herald's own API and answers its DNS
// questions through an injected resolve.Resolver, so checks use the
// configured DNS server and tests use a loopback one.
package spf

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	blitiri "blitiri.com.ar/go/spf"

	"github.com/heraldmail/herald/internal/resolve"
)

// Status is the outcome of an SPF check (RFC 7208 section 2.6). The string
// values are those used in Authentication-Results and Received-SPF.
type Status string

// The SPF results of RFC 7208 section 2.6.
const (
	None      Status = "none"
	Neutral   Status = "neutral"
	Pass      Status = "pass"
	Fail      Status = "fail"
	SoftFail  Status = "softfail"
	TempError Status = "temperror"
	PermError Status = "permerror"
)

// Result is the outcome of one SPF check.
type Result struct {
	// Result is the SPF result.
	Result Status
	// Domain is the domain whose policy was checked: the MAIL FROM domain,
	// or the HELO name for the null sender and for CheckHELO.
	Domain string
	// Explanation says in a few words why the result was reached (e.g.
	// "matched ip", "matched all", "no DNS record found"). It is meant for
	// logs and the reason of an Authentication-Results entry, not for the
	// SMTP client.
	Explanation string
	// Err is the cause of a temperror or permerror, nil otherwise.
	Err error
}

// Check evaluates the SPF policy of mailFrom's domain for a client at ip
// that said helo. mailFrom is the MAIL FROM address without angle brackets;
// for the null sender ("") the HELO name is checked with the identity
// "postmaster@helo" (RFC 7208 section 2.4). It never fails: DNS trouble is
// reported as TempError and bad records as PermError.
func Check(ctx context.Context, r resolve.Resolver, ip netip.Addr, helo, mailFrom string) Result {
	helo = normDomain(helo)
	sender := mailFrom
	domain := ""
	if at := strings.LastIndexByte(mailFrom, '@'); at >= 0 {
		domain = normDomain(mailFrom[at+1:])
		sender = mailFrom[:at] + "@" + domain
	}
	if domain == "" {
		// Null sender (or no domain part): the HELO identity is checked.
		domain = helo
		sender = "postmaster@" + helo
	}
	return check(ctx, r, ip, helo, sender, domain)
}

// CheckHELO evaluates the SPF policy of the HELO/EHLO name (RFC 7208
// section 2.3) for a client at ip. An address literal or a name that is not
// a domain gives None.
func CheckHELO(ctx context.Context, r resolve.Resolver, ip netip.Addr, helo string) Result {
	helo = normDomain(helo)
	return check(ctx, r, ip, helo, "postmaster@"+helo, helo)
}

func check(ctx context.Context, r resolve.Resolver, ip netip.Addr, helo, sender, domain string) Result {
	res := Result{Domain: domain}
	if !ip.IsValid() {
		res.Result, res.Err = PermError, errors.New("spf: invalid client IP address")
		res.Explanation = res.Err.Error()
		return res
	}
	if !isDomain(domain) {
		res.Result, res.Explanation = None, "no valid domain to check"
		return res
	}
	if err := ctx.Err(); err != nil {
		res.Result, res.Err = TempError, fmt.Errorf("spf: %s: %w", domain, err)
		res.Explanation = res.Err.Error()
		return res
	}
	st, err := blitiri.CheckHostWithSender(net.IP(ip.Unmap().AsSlice()), helo, sender,
		blitiri.WithContext(ctx), blitiri.WithResolver(adapter{r}))
	res.Result = Status(st)
	if err != nil {
		res.Explanation = err.Error()
	}
	if st == blitiri.TempError || st == blitiri.PermError {
		if err == nil {
			err = errors.New(string(st))
		}
		res.Err = fmt.Errorf("spf: %s: %w", domain, err)
	}
	return res
}

// normDomain lower-cases a domain and drops a trailing dot.
func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// isDomain reports whether d looks like a domain name we can ask DNS about:
// not empty, not an address literal, at most 253 octets, labels of 1..63
// octets without spaces.
func isDomain(d string) bool {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, "[") {
		return false
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return false
	}
	for l := range strings.SplitSeq(d, ".") {
		if l == "" || len(l) > 63 || strings.ContainsAny(l, " \t\r\n\\") {
			return false
		}
	}
	return true
}

// adapter answers blitiri's DNS questions with a resolve.Resolver. blitiri
// classifies failures by type-asserting *net.DNSError, so errors are mapped
// to it: ErrNotFound -> IsNotFound, anything else -> IsTemporary.
type adapter struct{ r resolve.Resolver }

var _ blitiri.DNSResolver = adapter{}

func dnsError(name string, err error) error {
	if err == nil {
		return nil
	}
	de := &net.DNSError{Err: err.Error(), Name: name}
	if errors.Is(err, resolve.ErrNotFound) {
		de.IsNotFound = true
	} else {
		de.IsTemporary = true
	}
	return de
}

// LookupTXT implements blitiri.DNSResolver.
func (a adapter) LookupTXT(ctx context.Context, name string) ([]string, error) {
	txt, err := a.r.LookupTXT(ctx, name)
	return txt, dnsError(name, err)
}

// LookupMX implements blitiri.DNSResolver. A null MX yields no records.
func (a adapter) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	mxs, err := a.r.LookupMX(ctx, name)
	if err != nil {
		return nil, dnsError(name, err)
	}
	out := make([]*net.MX, 0, len(mxs))
	for _, mx := range mxs {
		if mx.Host == "" {
			continue
		}
		out = append(out, &net.MX{Host: mx.Host + ".", Pref: mx.Pref})
	}
	return out, nil
}

// LookupIPAddr implements blitiri.DNSResolver.
func (a adapter) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	ips, err := a.r.LookupIP(ctx, host)
	if err != nil {
		return nil, dnsError(host, err)
	}
	out := make([]net.IPAddr, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.IPAddr{IP: net.IP(ip.Unmap().AsSlice())})
	}
	return out, nil
}

// LookupAddr implements blitiri.DNSResolver (PTR lookups for "ptr" and
// the %{p} macro). Names are returned with a trailing dot, like net.
func (a adapter) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "invalid address", Name: addr, IsNotFound: true}
	}
	names, err := a.r.LookupPTR(ctx, ip)
	if err != nil {
		return nil, dnsError(addr, err)
	}
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n + "."
	}
	return out, nil
}
