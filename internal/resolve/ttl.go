package resolve

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// Answer is a lookup's records with how long they may be kept.
type Answer struct {
	// Addrs are the IPv4 addresses of an A lookup (A records only: DNS
	// blocklists answer with 127.0.0.x).
	Addrs []netip.Addr
	// TXT are the TXT records of a TXT lookup, each record's strings
	// joined.
	TXT []string
	// TTL is the smallest TTL of the records returned; for a name that does
	// not exist (ErrNotFound), the negative-caching TTL of the zone (RFC
	// 2308: the smaller of the SOA's TTL and its MINIMUM field), or 0 when
	// the answer carried no SOA.
	TTL time.Duration
}

// LookupATTL asks for the A records of name and says how long the answer
// may be cached. A name without A records returns ErrNotFound together with
// the negative-caching TTL in the Answer. CNAMEs in the answer are followed
// (not re-asked).
func (c *Client) LookupATTL(ctx context.Context, name string) (Answer, error) {
	return c.lookupTTL(ctx, name, dns.TypeA)
}

// LookupTXTTTL is LookupATTL for TXT records.
func (c *Client) LookupTXTTTL(ctx context.Context, name string) (Answer, error) {
	return c.lookupTTL(ctx, name, dns.TypeTXT)
}

func (c *Client) lookupTTL(ctx context.Context, name string, qtype uint16) (Answer, error) {
	target := dns.Fqdn(strings.ToLower(name))
	m := new(dns.Msg)
	m.SetQuestion(target, qtype)
	m.RecursionDesired = true
	m.SetEdns0(4096, false)
	qs := dns.TypeToString[qtype] + " " + name
	r, _, err := c.udp.ExchangeContext(ctx, m, c.server)
	if err == nil && r.Truncated {
		r, _, err = c.tcp.ExchangeContext(ctx, m, c.server)
	}
	if err != nil {
		if ctx.Err() != nil {
			return Answer{}, fmt.Errorf("%w: %s: %w", ErrTemporary, qs, ctx.Err())
		}
		return Answer{}, fmt.Errorf("%w: %s: %w", ErrTemporary, qs, err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		return Answer{TTL: negativeTTL(r)}, fmt.Errorf("%w: %s: NXDOMAIN", ErrNotFound, qs)
	default:
		return Answer{}, fmt.Errorf("%w: %s: %s", ErrTemporary, qs, dns.RcodeToString[r.Rcode])
	}
	rrs, _ := pick(r.Answer, target, qtype)
	if len(rrs) == 0 {
		return Answer{TTL: negativeTTL(r)}, fmt.Errorf("%w: %s: no records", ErrNotFound, qs)
	}
	var a Answer
	ttl := rrs[0].Header().Ttl
	for _, rr := range rrs {
		ttl = min(ttl, rr.Header().Ttl)
		switch v := rr.(type) {
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(v.A.To4()); ok {
				a.Addrs = append(a.Addrs, ip)
			}
		case *dns.TXT:
			a.TXT = append(a.TXT, strings.Join(v.Txt, ""))
		}
	}
	a.TTL = time.Duration(ttl) * time.Second
	return a, nil
}

// negativeTTL is RFC 2308 §5: the smaller of the SOA record's TTL and its
// MINIMUM field, from the authority section.
func negativeTTL(r *dns.Msg) time.Duration {
	for _, rr := range r.Ns {
		if soa, ok := rr.(*dns.SOA); ok {
			return time.Duration(min(soa.Hdr.Ttl, soa.Minttl)) * time.Second
		}
	}
	return 0
}
