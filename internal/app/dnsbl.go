package app

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"slices"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/store"
)

// newBlocklists builds the client checker and the monitor of our own
// listings from [dnsbl]; both do nothing while their lists are empty.
func newBlocklists(cfg *config.Config, res dnsbl.Resolver, st store.Directory, reg *metrics.Registry, clk clock.Clock,
	log *slog.Logger) (*dnsbl.Checker, *dnsbl.Monitor) {
	d := cfg.DNSBL
	m := dnsbl.NewMetrics(reg)
	chk := dnsbl.New(dnsbl.Config{Sites: d.ClientLists, Threshold: d.Threshold, Timeout: d.Timeout, CacheSize: d.CacheSize,
		Resolver: res, Clock: clk, Logger: log, Metrics: m})
	ips := d.OwnIPs
	if len(ips) == 0 {
		ips = publicAddrs(cfg)
	}
	domains := func(ctx context.Context) ([]string, error) { return st.ListDomains(ctx) }
	if len(d.OwnDomains) > 0 {
		domains = func(context.Context) ([]string, error) { return d.OwnDomains, nil }
	}
	mon := dnsbl.NewMonitor(dnsbl.MonitorConfig{IPs: ips, IPSites: d.ReputationIPLists, Domains: domains,
		DomainSites: d.ReputationDomainLists, Interval: d.ReputationInterval, Resolver: res, Clock: clk, Logger: log, Metrics: m})
	if len(d.ReputationIPLists) > 0 && len(ips) == 0 {
		log.Warn("dnsbl.reputation_ip_lists is set but no public sending address is known: set dnsbl.own_ips")
	}
	if chk.Enabled() {
		log.Info("screening MX clients on DNS lists", "lists", len(d.ClientLists), "threshold", d.Threshold)
	}
	return chk, mon
}

// publicAddrs are the public addresses among the outbound source
// addresses and the MX listener's: the addresses others see our mail come
// from.
func publicAddrs(cfg *config.Config) []netip.Addr {
	var out []netip.Addr
	add := func(a netip.Addr) {
		a = a.Unmap()
		if a.IsValid() && a.IsGlobalUnicast() && !a.IsPrivate() && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	add(cfg.Delivery.SourceIPv4)
	add(cfg.Delivery.SourceIPv6)
	for _, l := range cfg.SMTP.Listen {
		if host, _, err := net.SplitHostPort(l); err == nil {
			if a, err := netip.ParseAddr(host); err == nil {
				add(a)
			}
		}
	}
	return out
}

// Blocklists returns the monitor of this node's own listings on DNS lists
// (Status is empty when none is configured or nothing is listed).
func (a *App) Blocklists() *dnsbl.Monitor { return a.monitor }
