package config

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/heraldmail/herald/internal/dnsbl"
)

// DNSBLConfig is the [dnsbl] section: DNS blocklists and allow-lists asked
// about clients of the MX listener, and the lists on which the monitor
// looks up our own addresses and domains. Everything is off while the
// lists are empty (the default).
type DNSBLConfig struct {
	// ClientLists are the lists asked about every client of the MX
	// listener that is not authenticated and not in relay.allow, in
	// postscreen's syntax "zone[=pattern][*weight]": a client whose
	// weights add up to Threshold or more has its recipients refused
	// (554 5.7.1), except postmaster@ and abuse@.
	ClientLists []dnsbl.Site `toml:"client_lists"`
	// Threshold is the score from which a client is refused.
	Threshold int `toml:"threshold"`
	// Timeout bounds the lookups of one client (all lists in parallel); a
	// list that has not answered by then counts as not listing it.
	Timeout time.Duration `toml:"timeout"`
	// CacheSize bounds the list answers kept (for their TTL, 1m to 1h).
	CacheSize int `toml:"cache_size"`
	// ReputationIPLists are the lists our own IPs are checked on,
	// "zone[=pattern]"; ReputationDomainLists those our domains are
	// checked on (as domain.zone).
	ReputationIPLists     []dnsbl.Site `toml:"reputation_ip_lists"`
	ReputationDomainLists []dnsbl.Site `toml:"reputation_domain_lists"`
	// ReputationInterval is the time between two checks of our own
	// listings.
	ReputationInterval time.Duration `toml:"reputation_interval"`
	// OwnIPs are the sending addresses checked; empty means the public
	// addresses among delivery.source_ipv4/ipv6 and the MX listener's.
	OwnIPs []netip.Addr `toml:"own_ips"`
	// OwnDomains are the domains checked; empty means every domain of
	// the store.
	OwnDomains []string `toml:"own_domains"`
}

// maxDNSBLLists bounds each list of lists: every client costs a question
// to each.
const maxDNSBLLists = 32

func defaultDNSBL() DNSBLConfig {
	return DNSBLConfig{
		ClientLists:           []dnsbl.Site{},
		Threshold:             1,
		Timeout:               5 * time.Second,
		CacheSize:             10000,
		ReputationIPLists:     []dnsbl.Site{},
		ReputationDomainLists: []dnsbl.Site{},
		ReputationInterval:    30 * time.Minute,
		OwnIPs:                []netip.Addr{},
		OwnDomains:            []string{},
	}
}

// siteListField is an array of DNS lists in postscreen's syntax; weighted
// says whether "*weight" is allowed.
func siteListField(name string, p *[]dnsbl.Site, weighted bool) field {
	return field{name: name, kind: kList,
		set: func(v any) error {
			items, ok := v.([]any)
			if !ok {
				return wrongType("an array of DNS list strings", v)
			}
			if len(items) > maxDNSBLLists {
				return fmt.Errorf("%d lists: at most %d", len(items), maxDNSBLLists)
			}
			out := make([]dnsbl.Site, 0, len(items))
			for _, it := range items {
				s, ok := it.(string)
				if !ok {
					return fmt.Errorf("expected an array of DNS list strings, found %s", describe(it))
				}
				site, err := dnsbl.ParseSite(s, weighted)
				if err != nil {
					return err
				}
				if slices.ContainsFunc(out, func(o dnsbl.Site) bool { return o.Zone == site.Zone }) {
					return fmt.Errorf("the list %s is named twice", site.Zone)
				}
				out = append(out, site)
			}
			*p = out
			return nil
		},
		get: func() any {
			out := make([]any, len(*p))
			for i, s := range *p {
				out[i] = s.String()
			}
			return out
		},
	}
}

// addrListField is an array of IP addresses.
func addrListField(name string, p *[]netip.Addr) field {
	return field{name: name, kind: kList,
		set: func(v any) error {
			items, ok := v.([]any)
			if !ok {
				return wrongType("an array of IP address strings", v)
			}
			out := make([]netip.Addr, 0, len(items))
			for _, it := range items {
				s, ok := it.(string)
				if !ok {
					return fmt.Errorf("expected an array of IP address strings, found %s", describe(it))
				}
				a, err := netip.ParseAddr(s)
				if err != nil || a.Zone() != "" {
					return fmt.Errorf("%q is not an IP address", s)
				}
				a = a.Unmap()
				if slices.Contains(out, a) {
					return fmt.Errorf("%q is listed twice", s)
				}
				out = append(out, a)
			}
			*p = out
			return nil
		},
		get: func() any {
			out := make([]any, len(*p))
			for i, a := range *p {
				out[i] = a.String()
			}
			return out
		},
	}
}

func (c *Config) dnsblFields() []field {
	d := &c.DNSBL
	return []field{
		siteListField("dnsbl.client_lists", &d.ClientLists, true),
		intField("dnsbl.threshold", &d.Threshold, 1, 100000),
		durField("dnsbl.timeout", &d.Timeout, false),
		intField("dnsbl.cache_size", &d.CacheSize, 1, 10_000_000),
		siteListField("dnsbl.reputation_ip_lists", &d.ReputationIPLists, false),
		siteListField("dnsbl.reputation_domain_lists", &d.ReputationDomainLists, false),
		durField("dnsbl.reputation_interval", &d.ReputationInterval, false),
		addrListField("dnsbl.own_ips", &d.OwnIPs),
		listField("dnsbl.own_domains", &d.OwnDomains, checkHostname),
	}
}

// maxDNSBLTimeout bounds dnsbl.timeout: a listed client's recipients wait
// for it (postscreen's default is 10s).
const maxDNSBLTimeout = time.Minute

// minReputationInterval keeps the monitor from hammering the lists (and
// being blocked by them for excessive queries).
const minReputationInterval = time.Minute

func (c *Config) dnsblCrossCheck(at func(keys ...string) source) errList {
	var errs errList
	d := c.DNSBL
	if len(d.ClientLists) > 0 {
		sum := 0
		for _, s := range d.ClientLists {
			sum += max(s.Weight, 0)
		}
		if d.Threshold > sum {
			errs = append(errs, at("dnsbl.threshold", "dnsbl.client_lists").err(
				"dnsbl.threshold (%d) is more than the positive weights of dnsbl.client_lists add up to (%d): no client could ever be refused", d.Threshold, sum))
		}
	}
	if d.Timeout > maxDNSBLTimeout {
		errs = append(errs, at("dnsbl.timeout").err("dnsbl.timeout (%s) is more than %s: clients would wait that long at RCPT", d.Timeout, maxDNSBLTimeout))
	}
	if d.ReputationInterval < minReputationInterval {
		errs = append(errs, at("dnsbl.reputation_interval").err("dnsbl.reputation_interval (%s) is less than %s: the lists would block us for excessive queries", d.ReputationInterval, minReputationInterval))
	}
	return errs
}
