package alert

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/diskguard"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/store"
)

// Counts are the delivery outcomes of a window.
type Counts struct {
	Delivered, Bounced, Deferred, Complained int64
}

// Backlog is the queue's state.
type Backlog struct {
	Messages, Recipients int
	Oldest               time.Time // the oldest pending message's arrival; zero if none
}

// Listing is one blocklist listing of one of our sending IP addresses or
// domains.
type Listing struct {
	Subject string // the IP address or domain listed
	List    string // the blocklist's zone
	Detail  string // its TXT reason, if any
}

// DNSProblem is one broken DNS authentication record of a local domain.
type DNSProblem struct {
	Domain  string
	Check   string // dnscheck.CheckSPF, CheckDKIM, CheckDMARC, CheckMTASTS
	Message string
}

// Signals are the measurements the rules judge. A method that cannot
// measure returns an error wrapping ErrNoData, and the rules using it keep
// their state.
type Signals interface {
	// Counts returns the outcomes of the window ending now.
	Counts(ctx context.Context, window time.Duration) (Counts, error)
	// DestinationCounts returns the outcomes of the window per destination
	// (recipient domain), for at most limit destinations, the busiest.
	DestinationCounts(ctx context.Context, window time.Duration, limit int) (map[string]Counts, error)
	// LatencyP99 returns the 99th percentile of the time from acceptance to
	// final delivery over the window, and how many deliveries it is of.
	LatencyP99(ctx context.Context, window time.Duration) (time.Duration, int64, error)
	// Queue returns the queue's backlog.
	Queue(ctx context.Context) (Backlog, error)
	// Blocklistings returns the current listings of our addresses and
	// domains.
	Blocklistings(ctx context.Context) ([]Listing, error)
	// DNSAuthProblems returns the broken authentication records of the
	// local domains.
	DNSAuthProblems(ctx context.Context) ([]DNSProblem, error)
	// CertificateExpiry returns when the TLS certificate in use expires.
	CertificateExpiry(ctx context.Context) (time.Time, error)
	// DiskFree returns the free and total bytes of the data directory's
	// filesystem.
	DiskFree(ctx context.Context) (free, total int64, err error)
	// FailingWebhooks returns the account webhooks whose deliveries fail.
	FailingWebhooks(ctx context.Context) ([]store.WebhookFailure, error)
}

// SignalStore is what NodeSignals reads from the store.
type SignalStore interface {
	Stats(ctx context.Context) (store.QueueStats, error)
	ListDomains(ctx context.Context) ([]string, error)
	store.AlertInputs
}

// NodeSignals are the Signals Herald has today: the queue and webhook
// deliveries from the store, the free disk space (diskguard), the TLS
// certificate in use (tlsconf) and the DNS doctor (dnscheck).
//
// Interim: Counts and DestinationCounts count the event log in the store
// (store.AlertInputs.CountEvents) until the windowed rollups of
// internal/stats replace them; LatencyP99 and Blocklistings return
// ErrNoData until internal/stats and internal/dnsbl provide them (set
// Latency and Blocklists to plug them in).
type NodeSignals struct {
	Store   SignalStore
	DataDir string
	// Certificate returns the certificate in use (tlsconf.Manager.Certificate).
	Certificate func() *tls.Certificate
	// DNSReport runs the DNS doctor on a local domain (app.DNSReport); nil
	// disables the dns_auth rule's input.
	DNSReport func(ctx context.Context, domain string) dnscheck.Report
	// Latency and Blocklists, when set, answer LatencyP99 and
	// Blocklistings.
	Latency    func(ctx context.Context, window time.Duration) (time.Duration, int64, error)
	Blocklists func(ctx context.Context) ([]Listing, error)
	Clock      clock.Clock
	// DNSEvery is how long a domain's DNS doctor report is reused; default
	// DefaultDNSEvery.
	DNSEvery time.Duration

	mu       sync.Mutex
	dnsAt    time.Time
	dnsCache []DNSProblem
	dnsErr   error

	cmu    sync.Mutex
	counts map[countKey]countEntry // the event log's counts, reused for a 60th of their window
}

type countKey struct {
	window  time.Duration
	perDest bool
	limit   int
}

type countEntry struct {
	at    time.Time
	total Counts
	per   map[string]Counts
}

// cached returns the counts of k measured less than a 60th of its window
// ago: a day's window is counted again every 24 minutes, an hour's every
// minute.
func (s *NodeSignals) cached(k countKey) (countEntry, bool) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	e, ok := s.counts[k]
	return e, ok && s.now().Sub(e.at) < k.window/60
}

func (s *NodeSignals) keep(k countKey, e countEntry) {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	if s.counts == nil {
		s.counts = map[countKey]countEntry{}
	}
	s.counts[k] = e
}

// Limits of NodeSignals.
const (
	// DefaultDNSEvery is how often the DNS doctor runs for the alerts.
	DefaultDNSEvery = time.Hour
	// MaxDNSDomains bounds the local domains checked per run.
	MaxDNSDomains = 50
	// MaxFailingWebhooks bounds the webhooks judged per evaluation.
	MaxFailingWebhooks = 100
)

var countTypes = []string{store.EventDelivered, store.EventBounced, store.EventDeferred, store.EventComplained}

func (s *NodeSignals) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

func add(c *Counts, typ string, n int64) {
	switch typ {
	case store.EventDelivered:
		c.Delivered += n
	case store.EventBounced:
		c.Bounced += n
	case store.EventDeferred:
		c.Deferred += n
	case store.EventComplained:
		c.Complained += n
	}
}

// Counts counts the event log (interim; see NodeSignals).
func (s *NodeSignals) Counts(ctx context.Context, window time.Duration) (Counts, error) {
	k := countKey{window: window}
	if e, ok := s.cached(k); ok {
		return e.total, nil
	}
	now := s.now()
	cs, err := s.Store.CountEvents(ctx, now.Add(-window), countTypes, false, 0)
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, e := range cs {
		add(&c, e.Type, e.Count)
	}
	s.keep(k, countEntry{at: now, total: c})
	return c, nil
}

// DestinationCounts counts the event log per recipient domain (interim;
// see NodeSignals).
func (s *NodeSignals) DestinationCounts(ctx context.Context, window time.Duration, limit int) (map[string]Counts, error) {
	k := countKey{window: window, perDest: true, limit: limit}
	if e, ok := s.cached(k); ok {
		return e.per, nil
	}
	now := s.now()
	cs, err := s.Store.CountEvents(ctx, now.Add(-window), countTypes[:3], true, limit)
	if err != nil {
		return nil, err
	}
	out := map[string]Counts{}
	for _, e := range cs {
		if e.Domain == "" {
			continue
		}
		c := out[e.Domain]
		add(&c, e.Type, e.Count)
		out[e.Domain] = c
	}
	s.keep(k, countEntry{at: now, per: out})
	return out, nil
}

// LatencyP99 returns ErrNoData unless Latency is set.
func (s *NodeSignals) LatencyP99(ctx context.Context, window time.Duration) (time.Duration, int64, error) {
	if s.Latency == nil {
		return 0, 0, fmt.Errorf("delivery latency is not measured yet: %w", ErrNoData)
	}
	return s.Latency(ctx, window)
}

// Queue reads the queue's statistics.
func (s *NodeSignals) Queue(ctx context.Context) (Backlog, error) {
	st, err := s.Store.Stats(ctx)
	if err != nil {
		return Backlog{}, err
	}
	return Backlog{Messages: st.Messages, Recipients: st.Recipients, Oldest: st.Oldest}, nil
}

// Blocklistings returns ErrNoData unless Blocklists is set.
func (s *NodeSignals) Blocklistings(ctx context.Context) ([]Listing, error) {
	if s.Blocklists == nil {
		return nil, fmt.Errorf("blocklists are not checked yet: %w", ErrNoData)
	}
	return s.Blocklists(ctx)
}

// authChecks are the DNS doctor's checks of authentication records.
var authChecks = map[string]bool{dnscheck.CheckSPF: true, dnscheck.CheckDKIM: true, dnscheck.CheckDMARC: true, dnscheck.CheckMTASTS: true}

// DNSAuthProblems runs the DNS doctor on the local domains (at most
// MaxDNSDomains) every DNSEvery and returns its ERROR findings about
// SPF, DKIM, DMARC and MTA-STS.
func (s *NodeSignals) DNSAuthProblems(ctx context.Context) ([]DNSProblem, error) {
	if s.DNSReport == nil {
		return nil, fmt.Errorf("no DNS doctor: %w", ErrNoData)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	every := s.DNSEvery
	if every <= 0 {
		every = DefaultDNSEvery
	}
	if !s.dnsAt.IsZero() && s.now().Sub(s.dnsAt) < every {
		return s.dnsCache, s.dnsErr
	}
	domains, err := s.Store.ListDomains(ctx)
	if err != nil {
		return nil, err // not cached: try again next time
	}
	var out []DNSProblem
	for i, d := range domains {
		if i == MaxDNSDomains {
			break
		}
		rep := s.DNSReport(ctx, d)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for _, f := range rep.Findings {
			if f.Level == dnscheck.LevelError && authChecks[f.Check] {
				out = append(out, DNSProblem{Domain: d, Check: f.Check, Message: f.Message})
			}
		}
	}
	s.dnsAt, s.dnsCache, s.dnsErr = s.now(), out, nil
	return out, nil
}

// CertificateExpiry returns the NotAfter of the certificate in use.
func (s *NodeSignals) CertificateExpiry(context.Context) (time.Time, error) {
	if s.Certificate == nil {
		return time.Time{}, fmt.Errorf("no certificate: %w", ErrNoData)
	}
	c := s.Certificate()
	if c == nil {
		return time.Time{}, fmt.Errorf("no certificate: %w", ErrNoData)
	}
	leaf := c.Leaf
	if leaf == nil {
		if len(c.Certificate) == 0 {
			return time.Time{}, fmt.Errorf("empty certificate: %w", ErrNoData)
		}
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return time.Time{}, fmt.Errorf("alert: parse the certificate in use: %w", err)
		}
	}
	return leaf.NotAfter, nil
}

// DiskFree reads the data directory's filesystem.
func (s *NodeSignals) DiskFree(context.Context) (int64, int64, error) {
	if s.DataDir == "" {
		return 0, 0, errors.Join(errors.New("no data directory"), ErrNoData)
	}
	return diskguard.Space(s.DataDir)
}

// FailingWebhooks reads the webhook deliveries in the store.
func (s *NodeSignals) FailingWebhooks(ctx context.Context) ([]store.WebhookFailure, error) {
	return s.Store.FailingWebhooks(ctx, MaxFailingWebhooks)
}
