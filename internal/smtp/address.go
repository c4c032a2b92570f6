package smtp

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// MaxLocalPart and MaxDomain are the RFC 5321 §4.5.3.1 size limits.
const (
	MaxLocalPart = 64
	MaxDomain    = 255
	MaxPath      = 256
)

// Address is a parsed mailbox: local part and domain. The domain is kept in
// its lower-case A-label (punycode) form so that it can be compared and used
// in DNS; the local part is kept as given (case is significant by RFC 5321,
// lookups in Herald's directory fold it).
type Address struct {
	Local  string
	Domain string
}

// String returns "local@domain".
func (a Address) String() string {
	if a.Domain == "" {
		return a.Local
	}
	return a.Local + "@" + a.Domain
}

// IsZero reports whether a is the null address.
func (a Address) IsZero() bool { return a.Local == "" && a.Domain == "" }

var errBadAddress = Error{501, EnhancedCode{5, 1, 3}, "Invalid address syntax"}

// ParseAddress parses a mailbox "local@domain" (without angle brackets). It
// accepts UTF-8 local parts and U-label domains (SMTPUTF8), converts the
// domain to its A-label form, and rejects NUL, control characters, invalid
// UTF-8 and over-long parts with a 501 5.1.3 error.
func ParseAddress(s string) (Address, error) {
	if len(s) > MaxPath || !utf8.ValidString(s) {
		return Address{}, &errBadAddress
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return Address{}, &errBadAddress
	}
	local, domain := s[:at], s[at+1:]
	if len(local) > MaxLocalPart || !validLocal(local) {
		return Address{}, &errBadAddress
	}
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Address{}, err
	}
	return Address{Local: local, Domain: d}, nil
}

// NormalizeDomain lower-cases a domain and converts it to A-labels. Address
// literals ("[192.0.2.1]") are kept as they are.
func NormalizeDomain(domain string) (string, error) {
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		return domain, nil
	}
	domain = strings.TrimSuffix(domain, ".")
	if domain == "" || len(domain) > MaxDomain {
		return "", &errBadAddress
	}
	ascii, err := idna.Lookup.ToASCII(domain)
	if err != nil || !ValidHostname(ascii) {
		return "", &errBadAddress
	}
	return strings.ToLower(ascii), nil
}

// ValidHostname checks an A-label name: labels of 1 to 63 letters, digits
// and inner hyphens (underscores tolerated, as some senders and DKIM
// selectors use them), at most 255 bytes in all.
func ValidHostname(d string) bool {
	if d == "" || len(d) > MaxDomain {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// validLocal accepts a dot-atom or quoted-string local part, with UTF-8
// allowed (RFC 6531), and refuses control characters and NUL anywhere.
func validLocal(s string) bool {
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	if strings.HasPrefix(s, `"`) {
		return len(s) >= 2 && strings.HasSuffix(s, `"`)
	}
	if s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for _, r := range s {
		if r >= 0x80 {
			continue
		}
		if !isAtext(byte(r)) && r != '.' {
			return false
		}
	}
	return true
}

func isAtext(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

// IsASCII reports whether s has only 7-bit characters; a message or address
// that is not needs SMTPUTF8 from the next hop.
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// DomainOf returns the lower-cased domain of an address ("" without "@").
func DomainOf(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return strings.ToLower(addr[i+1:])
	}
	return ""
}
