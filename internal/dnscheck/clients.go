package dnscheck

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/heraldmail/herald/internal/resolve"
)

// CheckClients is the check of what mail clients look up to configure
// themselves: autoconfig and autodiscover hosts, RFC 6186/8314 SRV
// records. Optional: findings are OK or WARN, never ERROR.
const CheckClients = "clients"

// LookupSRV asks the wrapped resolver for SRV records when it can.
func (c *cachedResolver) LookupSRV(ctx context.Context, name string) ([]resolve.SRV, error) {
	sr, ok := c.r.(resolve.SRVResolver)
	if !ok {
		return nil, errors.ErrUnsupported
	}
	name = normName(name)
	return cached(c, "srv "+name, func() ([]resolve.SRV, error) { return sr.LookupSRV(ctx, name) })
}

// checkHostAddrs says whether the hostname's addresses include the
// sending addresses given (--ip): a mismatch is a stale A/AAAA record or a
// wrong --ip, and breaks forward-confirmed reverse DNS.
func (c *checker) checkHostAddrs(given []netip.Addr) {
	if len(c.ourAddrs) == 0 || len(given) == 0 {
		return
	}
	var missing []netip.Addr
	for _, ip := range given {
		if !slices.Contains(c.ourAddrs, ip) {
			missing = append(missing, ip)
		}
	}
	if len(missing) == 0 {
		c.add(CheckHost, LevelOK, "", "hostname %s has the addresses %s", c.opts.Hostname, joinAddrs(given))
		return
	}
	c.add(CheckHost, LevelWarn, addrRecords(c.opts.Hostname, missing),
		"hostname %s resolves to %s, not to %s: a stale A/AAAA record, or not the address mail leaves from",
		c.opts.Hostname, joinAddrs(c.ourAddrs), joinAddrs(missing))
}

// checkClients checks the records that let mail clients find the
// submission servers from an address alone.
func (c *checker) checkClients(ctx context.Context) {
	d, h := c.opts.Domain, c.opts.Hostname
	for _, host := range []string{"autoconfig." + d, "autodiscover." + d} {
		ips, err := c.r.LookupIP(ctx, host)
		switch {
		case err != nil:
			c.add(CheckClients, LevelWarn, fmt.Sprintf("%s CNAME %s", fqdn(host), fqdn(h)),
				"%s does not resolve (%s): mail clients cannot fetch their settings from Herald", host, describe(err))
		case !c.isOurs(ips):
			c.add(CheckClients, LevelWarn, fmt.Sprintf("%s CNAME %s", fqdn(host), fqdn(h)),
				"%s resolves to %s, not to this server", host, joinAddrs(ips))
		default:
			c.add(CheckClients, LevelOK, "", "%s points to this server", host)
		}
	}
	srvs := []struct {
		name   string
		port   uint16
		target string
		data   string
	}{
		{"_submissions._tcp." + d, 465, h, "0 1 465 " + fqdn(h)},
		{"_submission._tcp." + d, 587, h, "10 1 587 " + fqdn(h)},
		{"_autodiscover._tcp." + d, 443, "autodiscover." + d, "0 1 443 " + fqdn("autodiscover."+d)},
	}
	for _, s := range srvs {
		fix := fqdn(s.name) + " SRV " + s.data
		got, err := c.r.LookupSRV(ctx, s.name)
		switch {
		case errors.Is(err, errors.ErrUnsupported):
			return // the resolver cannot tell
		case err != nil:
			c.add(CheckClients, LevelWarn, fix, "no SRV record %s (%s, optional: RFC 6186)", s.name, describe(err))
			continue
		}
		ok := false
		var have []string
		for _, r := range got {
			have = append(have, fmt.Sprintf("%d %d %d %s", r.Priority, r.Weight, r.Port, r.Target))
			ok = ok || r.Port == s.port && (r.Target == s.target || r.Target == h)
		}
		if ok {
			c.add(CheckClients, LevelOK, "", "SRV %s: %s", s.name, strings.Join(have, ", "))
		} else {
			c.add(CheckClients, LevelWarn, fix, "SRV %s is %s, not port %d of %s", s.name, strings.Join(have, ", "), s.port, s.target)
		}
	}
}
