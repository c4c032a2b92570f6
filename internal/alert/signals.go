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
	"github.com/heraldmail/herald/internal/stats"
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
	store.Rollups
}

// NodeSignals are the Signals Herald has: event counts, destinations and
// latency from the store's rollups (internal/stats, every node's events),
// the queue and webhook deliveries from the store, the free disk space
// (diskguard), the TLS certificate in use (tlsconf) and the DNS doctor
// (dnscheck); Blocklistings from the DNS list monitor when set.
type NodeSignals struct {
	Store   SignalStore
	DataDir string
	// Certificate returns the certificate in use (tlsconf.Manager.Certificate).
	Certificate func() *tls.Certificate
	// DNSReport runs the DNS doctor on a local domain (app.DNSReport); nil
	// disables the dns_auth rule's input.
	DNSReport func(ctx context.Context, domain string) dnscheck.Report
	// Blocklists, when set, answers Blocklistings (internal/dnsbl's
	// monitor); nil means no data.
	Blocklists func(ctx context.Context) ([]Listing, error)
	Clock      clock.Clock
	// DNSEvery is how long a domain's DNS doctor report is reused; default
	// DefaultDNSEvery.
	DNSEvery time.Duration

	mu       sync.Mutex
	dnsAt    time.Time
	dnsCache []DNSProblem
	dnsErr   error

	smu   sync.Mutex
	stats *stats.Stats
}

// rates reads the rollups of every account over the window ending now.
func (s *NodeSignals) rates(ctx context.Context, window time.Duration) (stats.Rates, error) {
	s.smu.Lock()
	if s.stats == nil {
		s.stats = stats.New(s.Store)
	}
	st := s.stats
	s.smu.Unlock()
	return st.Rates(ctx, store.AllAccounts, window, s.now())
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

func (s *NodeSignals) now() time.Time {
	if s.Clock == nil {
		return time.Now()
	}
	return s.Clock.Now()
}

// Counts reads the window's outcomes from the rollups.
func (s *NodeSignals) Counts(ctx context.Context, window time.Duration) (Counts, error) {
	r, err := s.rates(ctx, window)
	if err != nil {
		return Counts{}, err
	}
	return Counts{Delivered: r.Counts.Delivered, Bounced: r.Counts.Bounced, Deferred: r.Counts.Deferred,
		Complained: r.Counts.Complained}, nil
}

// DestinationCounts reads the window's outcomes per recipient domain from
// the rollups, the limit busiest.
func (s *NodeSignals) DestinationCounts(ctx context.Context, window time.Duration, limit int) (map[string]Counts, error) {
	r, err := s.rates(ctx, window)
	if err != nil {
		return nil, err
	}
	out := map[string]Counts{}
	for i, d := range r.Destinations {
		if limit > 0 && i >= limit {
			break
		}
		out[d.Domain] = Counts{Delivered: d.Delivered, Bounced: d.Bounced, Deferred: d.Deferred}
	}
	return out, nil
}

// LatencyP99 reads the window's latency histogram from the rollups.
func (s *NodeSignals) LatencyP99(ctx context.Context, window time.Duration) (time.Duration, int64, error) {
	r, err := s.rates(ctx, window)
	if err != nil {
		return 0, 0, err
	}
	return r.Latency.P99, r.Latency.Samples, nil
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
