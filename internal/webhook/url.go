package webhook

import (
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// MaxURLLength bounds a webhook URL.
const MaxURLLength = 2048

// URLError is a webhook URL refused by ValidateURL. Its message describes
// the problem with the caller's own input and is safe to show to them.
type URLError struct {
	Reason string
}

// Error implements error.
func (e *URLError) Error() string { return "webhook URL " + e.Reason }

func badURL(format string, args ...any) error {
	return &URLError{Reason: fmt.Sprintf(format, args...)}
}

// internalNames are domain suffixes that resolve (if at all) inside the
// operator's network, never to a public webhook receiver: RFC 6761/6762
// special-use names, home.arpa (RFC 8375), .internal (reserved by ICANN
// for private use, e.g. metadata.google.internal) and the private TLDs in
// common use.
var internalNames = []string{
	"localhost", "localdomain", "local", "internal", "home.arpa", "intranet", "lan", "corp", "home",
	"private", "test", "invalid", "onion", "alt",
}

// ValidateURL checks a webhook URL given by a tenant and returns it parsed.
// It requires an absolute http or https URL of at most MaxURLLength bytes,
// without user information or fragment, whose host is a DNS name of
// letters, digits, '-', '_' and '.' or an IP address in its standard form
// (dotted decimal; bracketed IPv6 without a zone). Numeric hosts in other
// notations (2130706433, 0x7f.1, 0177.0.0.1, 127.1) are refused, as a
// resolver or proxy might read them as an IP address.
//
// Unless allowPrivate is set it also refuses IP literals that CheckAddr
// refuses, single-label names (resolved through the search list to internal
// hosts) and names under internalNames such as localhost. This check at
// creation time only catches the obvious cases; the dialer of
// NewPublicClient checks every address after DNS resolution, so a public
// name that resolves to a private address is refused when called.
//
// Errors are *URLError.
func ValidateURL(raw string, allowPrivate bool) (*url.URL, error) {
	if len(raw) > MaxURLLength {
		return nil, badURL("is longer than %d bytes", MaxURLLength)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return nil, badURL("is not a valid URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, badURL("must be an absolute http or https URL")
	}
	if u.Opaque != "" || u.Host == "" {
		return nil, badURL("must be an absolute http or https URL with a host")
	}
	if u.User != nil {
		return nil, badURL("must not contain a user name or password")
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, badURL("must not contain a fragment")
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return nil, badURL("has an invalid port %q", p)
		}
	}
	if err := checkHost(u, allowPrivate); err != nil {
		return nil, err
	}
	return u, nil
}

// checkHost applies ValidateURL's rules to u's host.
func checkHost(u *url.URL, allowPrivate bool) error {
	host := u.Hostname()
	if strings.HasPrefix(u.Host, "[") {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.Is6() {
			return badURL("has an invalid IPv6 address")
		}
		if ip.Zone() != "" {
			return badURL("must not contain an IPv6 zone")
		}
		return checkLiteral(ip, allowPrivate)
	}
	name := strings.TrimSuffix(strings.ToLower(host), ".")
	if name == "" {
		return badURL("must have a host")
	}
	if ip, err := netip.ParseAddr(name); err == nil && ip.Is4() {
		return checkLiteral(ip, allowPrivate)
	}
	if len(name) > 253 {
		return badURL("has a host name longer than 253 bytes")
	}
	labels := strings.Split(name, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return badURL("has an invalid host name")
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return badURL("has an invalid host name (use the xn-- form for international names)")
			}
		}
	}
	if numeric(labels[len(labels)-1]) {
		return badURL("has a numeric host that is not a dotted-decimal IPv4 address")
	}
	if allowPrivate {
		return nil
	}
	if len(labels) == 1 {
		return badURL("must use a fully qualified host name, not %q", name)
	}
	for _, s := range internalNames {
		if name == s || strings.HasSuffix(name, "."+s) {
			return badURL("must not point to a local or internal host name (%s)", s)
		}
	}
	return nil
}

// checkLiteral refuses a non-public IP literal unless allowPrivate.
func checkLiteral(ip netip.Addr, allowPrivate bool) error {
	if allowPrivate {
		return nil
	}
	if err := CheckAddr(ip); err != nil {
		return badURL("must not point to a private, loopback or special-purpose address")
	}
	return nil
}

// numeric reports whether a label reads as a number in the notations of
// inet_aton and the WHATWG URL standard: decimal, octal with a leading 0,
// or hexadecimal with 0x. A name ending in such a label is an IPv4 address
// to some parsers.
func numeric(l string) bool {
	if l == "" {
		return false
	}
	digits := l
	hex := false
	if len(l) >= 2 && l[0] == '0' && (l[1] == 'x') {
		digits, hex = l[2:], true
		if digits == "" {
			return true // "0x" is zero to WHATWG
		}
	}
	for i := 0; i < len(digits); i++ {
		c := digits[i]
		if !(c >= '0' && c <= '9' || hex && c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
