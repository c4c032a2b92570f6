package app

import (
	"context"
	"net/netip"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
)

// dnsDoctor serves the DNS doctor's report on the HTTP API (the data of
// `herald dns check`, for the dashboard).
type dnsDoctor struct {
	res  resolve.Resolver
	keys store.DKIMKeys
	cfg  *config.Config
}

func (d *dnsDoctor) CheckDomain(ctx context.Context, domain string) (any, error) {
	return DNSReport(ctx, d.cfg, d.res, d.keys, domain, nil), nil
}

// DNSReport runs the DNS doctor for domain as this node sees it: its
// hostname, and as sending addresses ips or else delivery.source_ipv4/6 (or,
// when neither is set, the hostname's own addresses).
func DNSReport(ctx context.Context, cfg *config.Config, res resolve.Resolver, keys dnscheck.KeySource, domain string, ips []netip.Addr) dnscheck.Report {
	if len(ips) == 0 {
		for _, ip := range []netip.Addr{cfg.Delivery.SourceIPv4, cfg.Delivery.SourceIPv6} {
			if ip.IsValid() && !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
		}
	}
	return dnscheck.Check(ctx, res, keys, dnscheck.Options{
		Domain:     domain,
		Hostname:   cfg.Server.Hostname,
		SendingIPs: ips,
		HTTPGet:    dnscheck.NewHTTPGet(res, nil, 2*cfg.DNS.Timeout),
	})
}
