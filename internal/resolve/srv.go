package resolve

import (
	"context"
	"strings"

	"github.com/miekg/dns"
)

// SRV is one SRV record (RFC 2782); Target has no trailing dot, and "" is
// the "." target that says the service is not offered.
type SRV struct {
	Priority, Weight, Port uint16
	Target                 string
}

// SRVResolver looks up SRV records. Client implements it; it is kept out
// of Resolver because only the DNS doctor asks for them.
type SRVResolver interface {
	// LookupSRV returns the SRV records at name
	// ("_submissions._tcp.example.com"), or ErrNotFound.
	LookupSRV(ctx context.Context, name string) ([]SRV, error)
}

// LookupSRV returns the SRV records at name.
func (c *Client) LookupSRV(ctx context.Context, name string) ([]SRV, error) {
	rrs, err := c.query(ctx, name, dns.TypeSRV)
	if err != nil {
		return nil, err
	}
	out := make([]SRV, 0, len(rrs))
	for _, rr := range rrs {
		s := rr.(*dns.SRV)
		out = append(out, SRV{Priority: s.Priority, Weight: s.Weight, Port: s.Port,
			Target: strings.TrimSuffix(strings.ToLower(s.Target), ".")})
	}
	return out, nil
}
