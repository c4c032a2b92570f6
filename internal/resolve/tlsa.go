package resolve

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/miekg/dns"
)

// TLSA is one TLSA record (RFC 6698): certificate usage, selector, matching
// type and the association data (raw bytes, not hex).
type TLSA struct {
	Usage, Selector, MatchingType uint8
	Data                          []byte
}

// String returns the record's presentation form, e.g. "3 1 1 ab12...".
func (t TLSA) String() string {
	return fmt.Sprintf("%d %d %d %s", t.Usage, t.Selector, t.MatchingType, hex.EncodeToString(t.Data))
}

// TLSAResolver is implemented by resolvers that can answer TLSA questions
// and tell whether an answer was DNSSEC-validated (the AD bit set by a
// validating resolver). DANE (RFC 7672) relies on it; it is optional so
// that other Resolver implementations need not provide it.
type TLSAResolver interface {
	// LookupTLSA returns the TLSA records at name (e.g.
	// "_25._tcp.mx.example.com") and whether every answer on the way
	// (including CNAMEs followed) carried the AD bit. No record is
	// ErrNotFound (with secure telling whether the denial validated).
	LookupTLSA(ctx context.Context, name string) (records []TLSA, secure bool, err error)
	// HostSecure reports whether the address records of host (A, or AAAA
	// when there is no A) are DNSSEC-validated.
	HostSecure(ctx context.Context, host string) (bool, error)
}

var _ TLSAResolver = (*Client)(nil)

// querySecure is query that also reports whether every reply had the AD
// bit set.
func (c *Client) querySecure(ctx context.Context, name string, qtype uint16) ([]dns.RR, bool, error) {
	target := dns.Fqdn(strings.ToLower(name))
	secure := true
	for range maxCNAMEChain {
		r, err := c.exchange(ctx, target, qtype)
		if err != nil {
			return nil, false, err
		}
		secure = secure && r.AuthenticatedData
		rrs, next := pick(r.Answer, target, qtype)
		if len(rrs) > 0 {
			return rrs, secure, nil
		}
		if next == "" {
			return nil, secure, fmt.Errorf("%w: %s %s: no records", ErrNotFound, dns.TypeToString[qtype], name)
		}
		target = next
	}
	return nil, false, fmt.Errorf("%w: %s %s: CNAME chain too long", ErrTemporary, dns.TypeToString[qtype], name)
}

// LookupTLSA returns the TLSA records at name and whether the answer was
// DNSSEC-validated (AD bit). NXDOMAIN is reported as ErrNotFound with
// secure false, since exchange does not expose the reply.
func (c *Client) LookupTLSA(ctx context.Context, name string) ([]TLSA, bool, error) {
	rrs, secure, err := c.querySecure(ctx, name, dns.TypeTLSA)
	if err != nil {
		return nil, secure, err
	}
	out := make([]TLSA, 0, len(rrs))
	for _, rr := range rrs {
		t := rr.(*dns.TLSA)
		data, err := hex.DecodeString(t.Certificate)
		if err != nil {
			continue // malformed: unusable (RFC 7672 §2.2)
		}
		out = append(out, TLSA{Usage: t.Usage, Selector: t.Selector, MatchingType: t.MatchingType, Data: data})
	}
	return out, secure, nil
}

// HostSecure reports whether host's A (or, without A, AAAA) answer carried
// the AD bit.
func (c *Client) HostSecure(ctx context.Context, host string) (bool, error) {
	_, secure, err := c.querySecure(ctx, host, dns.TypeA)
	if err == nil {
		return secure, nil
	}
	_, secure, err6 := c.querySecure(ctx, host, dns.TypeAAAA)
	if err6 == nil {
		return secure, nil
	}
	return false, err
}
