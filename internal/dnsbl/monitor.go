package dnsbl

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/resolve"
)

// Target kinds of a Listing.
const (
	KindIP     = "ip"
	KindDomain = "domain"
)

// Listing is one of our own IP addresses or domains found on a list.
type Listing struct {
	Target string // the IP address or domain
	Kind   string // KindIP or KindDomain
	List   string // the list's zone
	// Since is when the monitor first found the listing (this node's
	// clock; a node that restarts finds it again at its first round).
	Since time.Time
	// Checked is when the listing was last confirmed.
	Checked time.Time
	// Codes are the list's answers (e.g. "127.0.0.2"); Reason its TXT
	// record, sanitized (may be empty).
	Codes  []string
	Reason string
}

// Change is a listing that appeared (Listed) or went away.
type Change struct {
	Listing
	Listed bool
}

// MonitorConfig configures a Monitor.
type MonitorConfig struct {
	// IPs are our own sending addresses, looked up on IPSites.
	IPs     []netip.Addr
	IPSites []Site
	// Domains returns our own domains (each round), looked up on
	// DomainSites as "domain.zone".
	Domains     func(ctx context.Context) ([]string, error)
	DomainSites []Site
	// Interval is the time between rounds (default 30m); Timeout bounds
	// one question (default 10s).
	Interval time.Duration
	Timeout  time.Duration
	// MaxDomains bounds the domains looked up per round (default 1000).
	MaxDomains int
	Resolver   Resolver
	Clock      clock.Clock // times the rounds and the listings
	Logger     *slog.Logger
	Metrics    Metrics // Listed and Errors are used
	// OnChange, if set, is called (outside the monitor's lock) for each
	// listing that appears or goes away.
	OnChange func(Change)
}

// Monitor checks our own IP addresses and domains on DNS lists
// periodically and keeps what it found in memory. Each node runs its own:
// the lists answer every node the same, and a node's own addresses may
// differ from the others'. It is safe for concurrent use.
type Monitor struct {
	cfg MonitorConfig

	mu       sync.Mutex
	listings map[listingKey]Listing
	last     time.Time
	subs     []func(Change)
}

type listingKey struct{ target, list string }

// NewMonitor returns a monitor; Run starts it.
func NewMonitor(cfg MonitorConfig) *Monitor {
	if cfg.Interval <= 0 {
		cfg.Interval = 30 * time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxDomains <= 0 {
		cfg.MaxDomains = 1000
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Monitor{cfg: cfg, listings: make(map[listingKey]Listing)}
}

// Enabled reports whether the monitor has anything to check.
func (m *Monitor) Enabled() bool {
	return m != nil && (len(m.cfg.IPs) > 0 && len(m.cfg.IPSites) > 0 || m.cfg.Domains != nil && len(m.cfg.DomainSites) > 0)
}

// Status returns the current listings, sorted by target and list. It is
// empty when nothing is listed (or before the first round: see
// LastCheck).
func (m *Monitor) Status() []Listing {
	if m == nil {
		return nil
	}
	m.mu.Lock()
	out := make([]Listing, 0, len(m.listings))
	for _, l := range m.listings {
		l.Codes = slices.Clone(l.Codes)
		out = append(out, l)
	}
	m.mu.Unlock()
	slices.SortFunc(out, func(a, b Listing) int {
		if c := strings.Compare(a.Target, b.Target); c != 0 {
			return c
		}
		return strings.Compare(a.List, b.List)
	})
	return out
}

// Subscribe adds f to the functions called, after each round and outside
// the monitor's lock, with every listing that appeared or went away (the
// alert engine). f must not block for long: the next round waits for it.
func (m *Monitor) Subscribe(f func(Change)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.subs = append(m.subs, f)
}

// LastCheck is when the last round ended (zero before the first).
func (m *Monitor) LastCheck() time.Time {
	if m == nil {
		return time.Time{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// Run checks at once, then every Interval, until ctx ends.
func (m *Monitor) Run(ctx context.Context) {
	if !m.Enabled() {
		return
	}
	for {
		m.CheckNow(ctx)
		t := clock.NewTimer(m.cfg.Clock, m.cfg.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
	}
}

type probe struct {
	target, kind, name string
	site               Site
}

type probeResult struct {
	probe
	hit *Hit
	err error
}

// maxParallel bounds the questions of a round in flight at once.
const maxParallel = 16

// CheckNow runs one round: every IP on every IP list and every domain on
// every domain list. A listing stays until a list answers that the target
// is not listed: a failed or timed-out question changes nothing.
func (m *Monitor) CheckNow(ctx context.Context) {
	var probes []probe
	for _, ip := range m.cfg.IPs {
		for _, s := range m.cfg.IPSites {
			probes = append(probes, probe{target: ip.Unmap().String(), kind: KindIP, name: ReverseName(ip, s.Zone), site: s})
		}
	}
	domainsKnown := true
	if m.cfg.Domains != nil && len(m.cfg.DomainSites) > 0 {
		domains, err := m.cfg.Domains(ctx)
		if err != nil {
			domainsKnown = false
			m.cfg.Logger.Error("blocklist monitor: listing our domains", "err", err)
		}
		if len(domains) > m.cfg.MaxDomains {
			m.cfg.Logger.Warn("blocklist monitor: too many domains; checking the first ones", "domains", len(domains), "checked", m.cfg.MaxDomains)
			domains = domains[:m.cfg.MaxDomains]
		}
		for _, d := range domains {
			d = strings.ToLower(strings.TrimSuffix(d, "."))
			for _, s := range m.cfg.DomainSites {
				probes = append(probes, probe{target: d, kind: KindDomain, name: d + "." + s.Zone, site: s})
			}
		}
	}
	results := make([]probeResult, len(probes))
	sem := make(chan struct{}, maxParallel)
	var wg sync.WaitGroup
	for i, p := range probes {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			qctx, cancel := context.WithTimeout(ctx, m.cfg.Timeout)
			defer cancel()
			ans, err := m.cfg.Resolver.LookupATTL(qctx, p.name)
			hit, err := evaluate(qctx, p.site, p.name, ans, err, func(ctx context.Context, n string) (resolve.Answer, error) {
				return m.cfg.Resolver.LookupTXTTTL(ctx, n)
			})
			results[i] = probeResult{probe: p, hit: hit, err: err}
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return // shutting down: the answers are incomplete
	}
	m.apply(results, domainsKnown)
}

// apply records a round's results and reports the changes. Listings of
// targets no longer checked (a domain removed, a list no longer
// configured) are dropped, unless the domains could not be listed.
func (m *Monitor) apply(results []probeResult, domainsKnown bool) {
	now := m.cfg.Clock.Now()
	var changes []Change
	m.mu.Lock()
	probed := make(map[listingKey]bool, len(results))
	for _, r := range results {
		k := listingKey{r.target, r.site.Zone}
		probed[k] = true
		old, was := m.listings[k]
		switch {
		case r.err != nil:
			inc(m.cfg.Metrics.Errors, r.site.Zone)
			level := slog.LevelWarn
			if errors.Is(r.err, errErrorCode) {
				level = slog.LevelError // the list refuses our queries: the resolver is misconfigured
			}
			m.cfg.Logger.Log(context.Background(), level, "blocklist monitor: lookup failed; status unchanged",
				"target", r.target, "list", r.site.Zone, "err", r.err)
		case r.hit != nil:
			l := Listing{Target: r.target, Kind: r.kind, List: r.site.Zone, Since: now, Checked: now, Reason: r.hit.Reason}
			for _, c := range r.hit.Codes {
				l.Codes = append(l.Codes, c.String())
			}
			if was {
				l.Since = old.Since
			} else {
				changes = append(changes, Change{Listing: l, Listed: true})
			}
			m.listings[k] = l
			if g := m.cfg.Metrics.Listed; g != nil {
				g.Set(1, r.target, r.site.Zone)
			}
		case was:
			delete(m.listings, k)
			old.Checked = now
			changes = append(changes, Change{Listing: old, Listed: false})
			if g := m.cfg.Metrics.Listed; g != nil {
				g.Delete(r.target, r.site.Zone)
			}
		}
	}
	for k, l := range m.listings {
		if !probed[k] && (domainsKnown || l.Kind == KindIP) {
			delete(m.listings, k)
			if g := m.cfg.Metrics.Listed; g != nil {
				g.Delete(k.target, k.list)
			}
		}
	}
	m.last = now
	subs := slices.Clone(m.subs)
	m.mu.Unlock()
	for _, c := range changes {
		if c.Listed {
			m.cfg.Logger.Warn("blocklist monitor: we are listed", "target", c.Target, "kind", c.Kind, "list", c.List,
				"codes", strings.Join(c.Codes, ","), "reason", c.Reason)
		} else {
			m.cfg.Logger.Info("blocklist monitor: no longer listed", "target", c.Target, "kind", c.Kind, "list", c.List,
				"listed_since", c.Since)
		}
		if m.cfg.OnChange != nil {
			m.cfg.OnChange(c)
		}
		for _, f := range subs {
			f(c)
		}
	}
}
