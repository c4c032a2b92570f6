package dnsbl

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Site is one DNS list: its zone, the weight a listing adds to a client's
// score, and which answers count as a listing. Its text form is Postfix
// postscreen's dnsbl_sites syntax, "zone[=pattern][*weight]", for example
// "zen.spamhaus.org=127.0.0.[2..11]*3" or "list.dnswl.org=127.0.[0..255].[1..3]*-2".
type Site struct {
	// Zone is the list's DNS zone, lower case, without a trailing dot.
	Zone string
	// Filter selects the answers that count; nil counts every answer in
	// 127.0.0.0/8 (see Counts).
	Filter *Filter
	// Weight is added to the score of a listed client: positive for a
	// blocklist, negative for an allow-list (1 when not given).
	Weight int
}

// maxWeight bounds a weight (postscreen accepts any int; a larger one
// means nothing more than "decisive").
const maxWeight = 1000

// ParseSite reads "zone[=pattern][*weight]". When weighted is false (the
// lists of the reputation monitor) a weight is an error.
func ParseSite(s string, weighted bool) (Site, error) {
	rest := strings.TrimSpace(s)
	site := Site{Weight: 1}
	if i := strings.LastIndexByte(rest, '*'); i >= 0 {
		if !weighted {
			return Site{}, fmt.Errorf("%q: a weight (*N) only applies to client lists", s)
		}
		w, err := strconv.Atoi(rest[i+1:])
		if err != nil || w < -maxWeight || w > maxWeight {
			return Site{}, fmt.Errorf("%q: the weight %q is not a whole number from %d to %d", s, rest[i+1:], -maxWeight, maxWeight)
		}
		if w == 0 {
			return Site{}, fmt.Errorf("%q: a weight of 0 makes the list useless; remove it instead", s)
		}
		site.Weight, rest = w, rest[:i]
	}
	if i := strings.IndexByte(rest, '='); i >= 0 {
		f, err := ParseFilter(rest[i+1:])
		if err != nil {
			return Site{}, fmt.Errorf("%q: %w", s, err)
		}
		site.Filter, rest = f, rest[:i]
	}
	zone := strings.ToLower(strings.TrimSuffix(rest, "."))
	if !isZone(zone) {
		return Site{}, fmt.Errorf("%q: %q is not a DNS zone name", s, rest)
	}
	site.Zone = zone
	return site, nil
}

// String returns the site in the syntax ParseSite reads.
func (s Site) String() string {
	out := s.Zone
	if s.Filter != nil {
		out += "=" + s.Filter.String()
	}
	if s.Weight != 1 {
		out += "*" + strconv.Itoa(s.Weight)
	}
	return out
}

// Counts reports whether the answer a counts as a listing on s. Whatever
// the filter, an answer outside 127.0.0.0/8 never counts (a list that
// answers so is broken, or its domain has expired and answers everything),
// nor does one in 127.255.255.0/24: Spamhaus's error codes (.252 typing
// error, .254 query through a public resolver, .255 too many queries)
// that say nothing about the client.
func (s Site) Counts(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	b := a.As4()
	if b[0] != 127 || ErrorCode(a) {
		return false
	}
	return s.Filter == nil || s.Filter.Match(a)
}

// ErrorCode reports whether a is one of the error answers of a list
// (127.255.255.0/24), which mean that the query, not the client, is bad.
func ErrorCode(a netip.Addr) bool {
	b := a.As4()
	return a.Is4() && b[0] == 127 && b[1] == 255 && b[2] == 255
}

func isZone(s string) bool {
	if s == "" || len(s) > 200 || !strings.Contains(s, ".") {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// Filter is a pattern on the four octets of an answer: each octet is a
// number, or a set in brackets of numbers and ranges separated by ';', as
// in postscreen: "127.0.0.[2..11]", "127.0.1.[2;4;6..9]".
type Filter struct {
	octets [4][4]uint64 // a bit set of allowed values per octet
	text   string
}

// ParseFilter reads a pattern.
func ParseFilter(s string) (*Filter, error) {
	f := &Filter{text: s}
	parts := splitOctets(s)
	if len(parts) != 4 {
		return nil, fmt.Errorf("the result pattern %q does not have four octets", s)
	}
	for i, p := range parts {
		items := []string{p}
		if strings.HasPrefix(p, "[") && strings.HasSuffix(p, "]") {
			items = strings.Split(p[1:len(p)-1], ";")
		}
		for _, it := range items {
			lo, hi, isRange := strings.Cut(it, "..")
			a, err1 := octet(lo)
			b := a
			var err2 error
			if isRange {
				b, err2 = octet(hi)
			}
			if err1 != nil || err2 != nil || b < a {
				return nil, fmt.Errorf("the result pattern %q: %q is not an octet, a range a..b or a set [a;b..c]", s, p)
			}
			for v := a; v <= b; v++ {
				f.octets[i][v/64] |= 1 << (v % 64)
			}
		}
	}
	return f, nil
}

// splitOctets splits a pattern at the dots outside brackets.
func splitOctets(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case '.':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func octet(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 255 || s != strconv.Itoa(n) {
		return 0, fmt.Errorf("not an octet: %q", s)
	}
	return n, nil
}

// Match reports whether a (IPv4) fits the pattern.
func (f *Filter) Match(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	for i, v := range a.As4() {
		if f.octets[i][v/64]&(1<<(v%64)) == 0 {
			return false
		}
	}
	return true
}

// String returns the pattern as written.
func (f *Filter) String() string { return f.text }

// ReverseName is the name a list is asked about for ip: the IPv4 octets
// in reverse order, or the 32 nibbles of an IPv6 address in reverse order
// (RFC 5782 §2.4), followed by zone.
func ReverseName(ip netip.Addr, zone string) string {
	ip = ip.Unmap()
	var b strings.Builder
	if ip.Is4() {
		o := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(o[i])))
			b.WriteByte('.')
		}
	} else {
		const hex = "0123456789abcdef"
		o := ip.As16()
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[o[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[o[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String()
}
