package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/resolve"
)

// Resolver asks the DNS questions of a list lookup and says how long the
// answers may be kept (resolve.Client).
type Resolver interface {
	LookupATTL(ctx context.Context, name string) (resolve.Answer, error)
	LookupTXTTTL(ctx context.Context, name string) (resolve.Answer, error)
}

// Metrics are the series the lookups keep; any may be nil.
type Metrics struct {
	Hits     *metrics.CounterVec // by list: client lookups that found the client listed (also allow-lists)
	Timeouts *metrics.CounterVec // by list: lookups without an answer in time (counted as not listed)
	Errors   *metrics.CounterVec // by list: failed lookups (SERVFAIL, error codes such as 127.255.255.254)
	Rejects  *metrics.CounterVec // by list: sessions refused at RCPT because of the list
	Listed   *metrics.GaugeVec   // by target, list: 1 while an own IP or domain is listed (Monitor)
}

// NewMetrics registers the blocklist series in r.
func NewMetrics(r *metrics.Registry) Metrics {
	return Metrics{
		Hits:     r.NewCounterVec("herald_dnsbl_hits_total", "Client lookups that found the client on a DNS list (blocklists and allow-lists), by list.", "list"),
		Timeouts: r.NewCounterVec("herald_dnsbl_timeouts_total", "Client lookups that got no answer in time (counted as not listed), by list.", "list"),
		Errors:   r.NewCounterVec("herald_dnsbl_errors_total", "DNS list lookups that failed or got an error code (e.g. 127.255.255.254), by list.", "list"),
		Rejects:  r.NewCounterVec("herald_dnsbl_rejects_total", "SMTP sessions whose recipients were refused because of a DNS list, by list.", "list"),
		Listed:   r.NewGaugeVec("herald_blocklist_listed", "1 while one of our own IP addresses or domains is listed on a DNS list.", "target", "list"),
	}
}

func inc(c *metrics.CounterVec, label string) {
	if c != nil {
		c.Inc(label)
	}
}

// Config configures a Checker.
type Config struct {
	// Sites are the lists asked about every client, with their weights.
	Sites []Site
	// Threshold is the score from which a client is refused (default 1).
	Threshold int
	// Timeout bounds the lookups of one client, all lists in parallel
	// (default 5s); a list that has not answered by then counts as not
	// listing the client.
	Timeout time.Duration
	// CacheSize bounds the answers kept (default 10000); MinTTL and
	// MaxTTL clamp how long one is kept (default 1m and 1h, as postscreen).
	CacheSize      int
	MinTTL, MaxTTL time.Duration
	Resolver       Resolver
	Clock          clock.Clock // times the timeout and the cache
	Logger         *slog.Logger
	Metrics        Metrics
}

// Checker looks up clients on the configured lists. It is safe for
// concurrent use.
type Checker struct {
	cfg   Config
	cache *cache

	warnMu sync.Mutex
	warned map[string]time.Time // list -> when its failure was last logged
	// afterResult, when set (tests), is called in a lookup each time a
	// list's result arrives, with the number still awaited.
	afterResult func(left int)
}

// New returns a checker; with no Sites it is disabled (Enabled is false).
func New(cfg Config) *Checker {
	if cfg.Threshold <= 0 {
		cfg.Threshold = 1
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = 10000
	}
	if cfg.MinTTL <= 0 {
		cfg.MinTTL = time.Minute
	}
	if cfg.MaxTTL < cfg.MinTTL {
		cfg.MaxTTL = max(time.Hour, cfg.MinTTL)
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Checker{cfg: cfg, cache: newCache(cfg.CacheSize, cfg.MinTTL, cfg.MaxTTL, cfg.Clock), warned: make(map[string]time.Time)}
}

// Enabled reports whether any list is configured.
func (c *Checker) Enabled() bool { return c != nil && len(c.cfg.Sites) > 0 }

// Hit is one list that lists the client.
type Hit struct {
	Zone   string
	Weight int
	// Codes are the answers that counted (e.g. 127.0.0.2).
	Codes []netip.Addr
	// Reason is the list's TXT record for the client (sanitized, may be
	// empty); only fetched for blocklists (positive weight).
	Reason string
}

// Verdict is the outcome of a client's lookups.
type Verdict struct {
	IP    netip.Addr
	Score int
	// Listed is Score >= the threshold: the client is refused.
	Listed bool
	Hits   []Hit // in the order of the configured sites
	// TimedOut and Failed name the lists that did not answer in time or
	// failed; they count as not listing the client.
	TimedOut, Failed []string
}

// Lists names the blocklists (positive weight) that list the client.
func (v Verdict) Lists() []string {
	var out []string
	for _, h := range v.Hits {
		if h.Weight > 0 {
			out = append(out, h.Zone)
		}
	}
	return out
}

// Reason is the first TXT reason of a blocklist that lists the client.
func (v Verdict) Reason() string {
	for _, h := range v.Hits {
		if h.Weight > 0 && h.Reason != "" {
			return h.Reason
		}
	}
	return ""
}

// Lookup is a client's lookups running in the background.
type Lookup struct {
	c        *Checker
	done     chan struct{}
	v        Verdict
	rejected sync.Once
}

// Start begins looking ip up on every list, in parallel, and returns at
// once: the SMTP server starts it when the client connects and asks for
// the Verdict at RCPT, so the lookups overlap the greeting. Cancelling
// ctx (the session's end) stops them. On a disabled Checker it returns
// nil, whose Wait says "not listed".
func (c *Checker) Start(ctx context.Context, ip netip.Addr) *Lookup {
	if !c.Enabled() {
		return nil
	}
	l := &Lookup{c: c, done: make(chan struct{})}
	ip = ip.Unmap()
	if l.fromCache(ip) {
		return l // a client seen recently: no goroutine, no timer
	}
	go l.run(ctx, ip)
	return l
}

// fromCache decides from cached answers alone, when every list's are
// there.
func (l *Lookup) fromCache(ip netip.Addr) bool {
	c := l.c
	got := make([]siteResult, 0, len(c.cfg.Sites))
	for i, s := range c.cfg.Sites {
		name := ReverseName(ip, s.Zone)
		ans, ok, err := c.cache.peek(name, false)
		if !ok {
			return false
		}
		complete := true
		hit, err := evaluate(context.Background(), s, name, ans, err, func(context.Context, string) (resolve.Answer, error) {
			t, ok, terr := c.cache.peek(name, true)
			if !ok {
				complete = false
			}
			return t, terr
		})
		if !complete {
			return false
		}
		got = append(got, siteResult{i: i, hit: hit, err: err})
	}
	l.finish(ip, got)
	close(l.done)
	return true
}

// Check is Start then Wait.
func (c *Checker) Check(ctx context.Context, ip netip.Addr) Verdict {
	return c.Start(ctx, ip).Wait(ctx)
}

// Wait returns the verdict once every list has answered or the timeout
// has passed. If ctx ends first the verdict is "not listed".
func (l *Lookup) Wait(ctx context.Context) Verdict {
	if l == nil {
		return Verdict{}
	}
	select {
	case <-l.done:
		return l.v
	case <-ctx.Done():
		return Verdict{}
	}
}

// Rejected counts, once per lookup, a session refused because of the
// verdict's blocklists.
func (l *Lookup) Rejected() {
	if l == nil {
		return
	}
	l.rejected.Do(func() {
		for _, z := range l.v.Lists() {
			inc(l.c.cfg.Metrics.Rejects, z)
		}
	})
}

type siteResult struct {
	i      int
	hit    *Hit
	err    error
	silent bool // no answer in time
}

func (l *Lookup) run(parent context.Context, ip netip.Addr) {
	defer close(l.done)
	c := l.c
	// The deadline also ends the sockets of lists still silent when the
	// verdict is given (cancelling alone does not interrupt a UDP read).
	ctx, cancel := context.WithTimeout(parent, c.cfg.Timeout)
	defer cancel()
	timer := clock.NewTimer(c.cfg.Clock, c.cfg.Timeout)
	defer timer.Stop()
	results := make(chan siteResult, len(c.cfg.Sites))
	for i, s := range c.cfg.Sites {
		go func() {
			hit, err := c.lookupSite(ctx, ip, s)
			results <- siteResult{i: i, hit: hit, err: err, silent: err != nil && ctx.Err() != nil}
		}()
	}
	got := make([]siteResult, 0, len(c.cfg.Sites))
	answered := make([]bool, len(c.cfg.Sites))
wait:
	for len(got) < len(c.cfg.Sites) {
		select {
		case r := <-results:
			got = append(got, r)
			answered[r.i] = true
			if c.afterResult != nil {
				c.afterResult(len(c.cfg.Sites) - len(got))
			}
		case <-timer.C():
			// The lists still silent count as not listing the client;
			// their questions end at ctx's deadline, their results are
			// dropped.
			for i := range c.cfg.Sites {
				if !answered[i] {
					got = append(got, siteResult{i: i, err: context.DeadlineExceeded, silent: true})
				}
			}
			break wait
		case <-parent.Done():
			return // the session ended; nothing to report
		}
	}
	l.finish(ip, got)
}

// finish computes, counts and logs the verdict from every list's result.
func (l *Lookup) finish(ip netip.Addr, got []siteResult) {
	c := l.c
	slices.SortFunc(got, func(a, b siteResult) int { return a.i - b.i })
	v := Verdict{IP: ip}
	for _, r := range got {
		zone := c.cfg.Sites[r.i].Zone
		switch {
		case r.hit != nil:
			v.Hits = append(v.Hits, *r.hit)
			v.Score += r.hit.Weight
			inc(c.cfg.Metrics.Hits, zone)
		case r.silent:
			v.TimedOut = append(v.TimedOut, zone)
			inc(c.cfg.Metrics.Timeouts, zone)
		case r.err != nil:
			v.Failed = append(v.Failed, zone)
			inc(c.cfg.Metrics.Errors, zone)
		}
	}
	v.Listed = v.Score >= c.cfg.Threshold
	for _, r := range got {
		zone := c.cfg.Sites[r.i].Zone
		switch {
		case r.silent && c.mayWarn(zone):
			c.cfg.Logger.Warn("DNS list did not answer in time; counted as not listed (logged once a minute per list, all counted in herald_dnsbl_timeouts_total)",
				"client", ip.String(), "list", zone, "timeout", c.cfg.Timeout)
		case r.err != nil && !r.silent && c.mayWarn(zone):
			c.cfg.Logger.Warn("DNS list lookup failed; counted as not listed (logged once a minute per list, all counted in herald_dnsbl_errors_total)",
				"client", ip.String(), "list", zone, "err", r.err)
		}
	}
	if len(v.Hits) > 0 {
		level := slog.LevelDebug // allow-listed, or below the threshold
		if v.Listed {
			level = slog.LevelInfo
		}
		c.cfg.Logger.Log(context.Background(), level, "client on DNS lists", "client", ip.String(), "lists", hitNames(v.Hits),
			"score", v.Score, "threshold", c.cfg.Threshold, "refused", v.Listed)
	}
	l.v = v
}

// warnInterval is the least time between two warnings about one list: a
// list that is down or refuses us would otherwise log once per client.
const warnInterval = time.Minute

// mayWarn reports whether a failure of list may be logged now.
func (c *Checker) mayWarn(list string) bool {
	now := c.cfg.Clock.Now()
	c.warnMu.Lock()
	defer c.warnMu.Unlock()
	if last, ok := c.warned[list]; ok && now.Sub(last) < warnInterval {
		return false
	}
	c.warned[list] = now
	return true
}

func hitNames(hs []Hit) string {
	var b strings.Builder
	for i, h := range hs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s*%d", h.Zone, h.Weight)
	}
	return b.String()
}

// errErrorCode marks a list's answer made only of error codes.
var errErrorCode = errors.New("dnsbl: the list answered with an error code")

// lookupSite asks one list about ip: nil when not listed (or when the
// list failed, with the error).
func (c *Checker) lookupSite(ctx context.Context, ip netip.Addr, s Site) (*Hit, error) {
	name := ReverseName(ip, s.Zone)
	ans, err := c.cache.lookup(ctx, name, false, c.cfg.Resolver.LookupATTL)
	return evaluate(ctx, s, name, ans, err, func(ctx context.Context, n string) (resolve.Answer, error) {
		return c.cache.lookup(ctx, n, true, c.cfg.Resolver.LookupTXTTTL)
	})
}

// evaluate turns a list's A answer into a Hit, fetching the TXT reason of
// a blocklist listing with txt.
func evaluate(ctx context.Context, s Site, name string, ans resolve.Answer, err error,
	txt func(context.Context, string) (resolve.Answer, error)) (*Hit, error) {
	if errors.Is(err, resolve.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	hit := &Hit{Zone: s.Zone, Weight: s.Weight}
	errCode := false
	for _, a := range ans.Addrs {
		if s.Counts(a) {
			hit.Codes = append(hit.Codes, a)
		} else if ErrorCode(a) {
			errCode = true
		}
	}
	if len(hit.Codes) == 0 {
		if errCode {
			return nil, fmt.Errorf("%w: %s: %v", errErrorCode, name, ans.Addrs)
		}
		return nil, nil
	}
	if s.Weight > 0 && txt != nil {
		if t, err := txt(ctx, name); err == nil && len(t.TXT) > 0 {
			hit.Reason = Sanitize(t.TXT[0])
		}
	}
	return hit, nil
}

// maxReason bounds the TXT text passed on in a reply or a status.
const maxReason = 200

// Sanitize keeps a list's TXT text fit for an SMTP reply and a log: it
// is written by the list's operator (or whoever answers for the zone), so
// only printable ASCII is kept, runs of white space become one space, and
// it is cut at 200 bytes.
func Sanitize(s string) string {
	var b strings.Builder
	space := false
	for _, r := range s {
		if b.Len() >= maxReason {
			break
		}
		switch {
		case r == ' ' || r == '\t':
			space = b.Len() > 0
		case r > ' ' && r < 0x7f:
			if space {
				b.WriteByte(' ')
				space = false
			}
			b.WriteRune(r)
		}
	}
	return b.String()
}
