package resolve

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// maxCNAMEChain bounds how many CNAMEs are followed for one question.
const maxCNAMEChain = 8

// Client is a Resolver that asks one DNS server directly over UDP, retrying
// over TCP when the answer is truncated. Asking a chosen server (rather than
// the system resolver) lets tests point Herald at their own DNS and lets
// DANE read the AD bit later.
type Client struct {
	server  string
	timeout time.Duration
	udp     *dns.Client
	tcp     *dns.Client
}

var _ Resolver = (*Client)(nil)

// New returns a Resolver asking server ("host:port"). An empty server means
// the first nameserver of /etc/resolv.conf. timeout bounds each exchange
// (default 5s).
func New(server string, timeout time.Duration) (Resolver, error) {
	return NewClient(server, timeout)
}

// NewClient is New returning the concrete type.
func NewClient(server string, timeout time.Duration) (*Client, error) {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	if server == "" {
		cfg, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("resolve: reading /etc/resolv.conf: %w", err)
		}
		if len(cfg.Servers) == 0 {
			return nil, errors.New("resolve: no nameserver in /etc/resolv.conf")
		}
		server = net.JoinHostPort(cfg.Servers[0], cfg.Port)
	}
	if _, _, err := net.SplitHostPort(server); err != nil {
		return nil, fmt.Errorf("resolve: server %q: %w", server, err)
	}
	return &Client{
		server:  server,
		timeout: timeout,
		udp:     &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 4096},
		tcp:     &dns.Client{Net: "tcp", Timeout: timeout},
	}, nil
}

// Server returns the "host:port" of the server asked.
func (c *Client) Server() string { return c.server }

// exchange asks one question and returns the reply, mapping failures to
// ErrTemporary and NXDOMAIN to ErrNotFound.
func (c *Client) exchange(ctx context.Context, name string, qtype uint16) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	m.RecursionDesired = true
	m.SetEdns0(4096, false)
	m.AuthenticatedData = true
	qs := dns.TypeToString[qtype] + " " + name
	r, _, err := c.udp.ExchangeContext(ctx, m, c.server)
	if err == nil && r.Truncated {
		r, _, err = c.tcp.ExchangeContext(ctx, m, c.server)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrTemporary, qs, ctx.Err())
		}
		return nil, fmt.Errorf("%w: %s: %w", ErrTemporary, qs, err)
	}
	switch r.Rcode {
	case dns.RcodeSuccess:
		return r, nil
	case dns.RcodeNameError:
		return nil, fmt.Errorf("%w: %s: NXDOMAIN", ErrNotFound, qs)
	default:
		return nil, fmt.Errorf("%w: %s: %s", ErrTemporary, qs, dns.RcodeToString[r.Rcode])
	}
}

// query asks for qtype at name and returns the matching answer records,
// following CNAMEs found in the answer (and asking again when the answer
// stops at a CNAME). No matching record is ErrNotFound.
func (c *Client) query(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	target := dns.Fqdn(strings.ToLower(name))
	for range maxCNAMEChain {
		r, err := c.exchange(ctx, target, qtype)
		if err != nil {
			return nil, err
		}
		rrs, next := pick(r.Answer, target, qtype)
		if len(rrs) > 0 {
			return rrs, nil
		}
		if next == "" {
			return nil, fmt.Errorf("%w: %s %s: no records", ErrNotFound, dns.TypeToString[qtype], name)
		}
		target = next
	}
	return nil, fmt.Errorf("%w: %s %s: CNAME chain too long", ErrTemporary, dns.TypeToString[qtype], name)
}

// pick follows the CNAME chain from owner within answer and returns the
// records of qtype at its end, or the unresolved CNAME target.
func pick(answer []dns.RR, owner string, qtype uint16) ([]dns.RR, string) {
	for range maxCNAMEChain {
		var out []dns.RR
		cname := ""
		for _, rr := range answer {
			h := rr.Header()
			if !strings.EqualFold(h.Name, owner) {
				continue
			}
			if h.Rrtype == qtype {
				out = append(out, rr)
			} else if cn, ok := rr.(*dns.CNAME); ok && qtype != dns.TypeCNAME {
				cname = strings.ToLower(cn.Target)
			}
		}
		if len(out) > 0 {
			return out, ""
		}
		if cname == "" {
			return nil, ""
		}
		if !slices.ContainsFunc(answer, func(rr dns.RR) bool { return strings.EqualFold(rr.Header().Name, cname) }) {
			return nil, cname
		}
		owner = cname
	}
	return nil, ""
}

// LookupMX returns the MX records of domain sorted by preference. A null MX
// (RFC 7505) is returned as a single MX with Host "".
func (c *Client) LookupMX(ctx context.Context, domain string) ([]MX, error) {
	rrs, err := c.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		host := strings.TrimSuffix(strings.ToLower(mx.Mx), ".")
		out = append(out, MX{Host: host, Pref: mx.Preference})
	}
	slices.SortStableFunc(out, func(a, b MX) int { return int(a.Pref) - int(b.Pref) })
	return out, nil
}

// LookupIP returns the IPv4 and IPv6 addresses of host (A first, then
// AAAA). It fails with ErrNotFound only when neither type exists; a
// temporary failure of one type is reported when the other has nothing.
func (c *Client) LookupIP(ctx context.Context, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	var errs []error
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		rrs, err := c.query(ctx, host, t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, rr := range rrs {
			var ip net.IP
			switch v := rr.(type) {
			case *dns.A:
				ip = v.A
			case *dns.AAAA:
				ip = v.AAAA
			}
			if a, ok := netip.AddrFromSlice(ip); ok {
				out = append(out, a.Unmap())
			}
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	for _, err := range errs {
		if errors.Is(err, ErrTemporary) {
			return nil, err
		}
	}
	return nil, fmt.Errorf("%w: no address for %s", ErrNotFound, host)
}

// LookupTXT returns the TXT records of name, each record's strings joined.
func (c *Client) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := c.query(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupPTR returns the names addr points back to, without trailing dots.
func (c *Client) LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error) {
	rev, err := dns.ReverseAddr(addr.Unmap().String())
	if err != nil {
		return nil, fmt.Errorf("resolve: reverse name of %s: %w", addr, err)
	}
	rrs, err := c.query(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.TrimSuffix(strings.ToLower(rr.(*dns.PTR).Ptr), "."))
	}
	return out, nil
}
