// Package tlsrpt implements SMTP TLS Reporting (RFC 8460) for outbound
// mail: delivery reports every TLS session (or failure to establish one)
// to an Aggregator, which counts them in memory and adds the counts to the
// store every minute, where every node's counts meet; Report turns a day
// into RFC 8460 JSON reports, and a Sender delivers them once a day to the
// addresses in the domain's _smtp._tls TXT record: each domain's report by
// one node, the one that claims it in the store.
package tlsrpt

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

// Policy types (RFC 8460 §4.4).
const (
	PolicySTS      = "sts"
	PolicyTLSA     = "tlsa"
	PolicyNotFound = "no-policy-found"
)

// Result types (RFC 8460 §4.3).
const (
	ResultSTARTTLSNotSupported = "starttls-not-supported"
	ResultCertHostMismatch     = "certificate-host-mismatch"
	ResultCertExpired          = "certificate-expired"
	ResultCertNotTrusted       = "certificate-not-trusted"
	ResultValidationFailure    = "validation-failure"
	ResultTLSAInvalid          = "tlsa-invalid"
	ResultDNSSECInvalid        = "dnssec-invalid"
	ResultDANERequired         = "dane-required"
	ResultSTSPolicyFetchError  = "sts-policy-fetch-error"
	ResultSTSPolicyInvalid     = "sts-policy-invalid"
	ResultSTSWebPKIInvalid     = "sts-webpki-invalid"
)

// Session is the TLS outcome of one connection attempt (or one policy
// failure) for mail to PolicyDomain.
type Session struct {
	PolicyDomain string   // the recipient domain
	PolicyType   string   // PolicySTS, PolicyTLSA or PolicyNotFound
	PolicyString []string // the MTA-STS policy lines or the TLSA records
	MXPatterns   []string // the MTA-STS policy's mx patterns ("mx-host")
	Success      bool
	ResultType   string // for failures: one of the Result* constants
	SendingIP    string // our address, if known
	MXHost       string // the receiving MX host name
	ReceivingIP  string // the receiving address, if known
	Info         string // additional information for failures
}

// DefaultMaxPending bounds the counters an Aggregator holds between two
// flushes; sessions with a new outcome beyond it are not counted (and
// logged once per flush).
const DefaultMaxPending = 50_000

// Aggregator counts sessions in memory and adds them to the store on
// Flush, where the counts of every node meet: a report covers all the
// sessions of the cluster. It is safe for concurrent use.
type Aggregator struct {
	clock clock.Clock
	st    store.TLSReports

	mu         sync.Mutex
	pending    map[pendingKey]*store.TLSCount
	maxPending int
	dropped    int64
}

type pendingKey struct {
	day         int64
	domain, key string
}

// NewAggregator returns an Aggregator dating sessions with clk (nil =
// clock.Real) and keeping the counts in st.
func NewAggregator(clk clock.Clock, st store.TLSReports) *Aggregator {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Aggregator{clock: clk, st: st, pending: map[pendingKey]*store.TLSCount{}, maxPending: DefaultMaxPending}
}

// dayOf returns the UTC day of t.
func dayOf(t time.Time) time.Time { return t.UTC().Truncate(24 * time.Hour) }

// RecordTLS counts s on the current (UTC) day. It does not block on the
// store: the count waits in memory for the next Flush.
func (a *Aggregator) RecordTLS(s Session) {
	if s.PolicyDomain == "" {
		return
	}
	if s.PolicyType == "" {
		s.PolicyType = PolicyNotFound
	}
	c := store.TLSCount{Day: dayOf(a.clock.Now()), Domain: strings.ToLower(strings.TrimSuffix(s.PolicyDomain, ".")),
		PolicyType: s.PolicyType, PolicyString: slices.Clone(s.PolicyString), MXPatterns: slices.Clone(s.MXPatterns), Count: 1}
	if !s.Success {
		c.Result = s.ResultType
		if c.Result == "" {
			c.Result = ResultValidationFailure
		}
		c.SendingIP, c.MXHost, c.ReceivingIP, c.Info = s.SendingIP, s.MXHost, s.ReceivingIP, s.Info
	}
	k := pendingKey{day: c.Day.Unix(), domain: c.Domain, key: c.Key()}
	a.mu.Lock()
	defer a.mu.Unlock()
	if p := a.pending[k]; p != nil {
		p.Count++
		return
	}
	if len(a.pending) >= a.maxPending {
		a.dropped++
		return
	}
	a.pending[k] = &c
}

// Flush adds the counts held in memory to the store. If the store fails
// they are kept for the next Flush. It returns how many sessions with a
// new outcome were not counted since the last Flush (beyond
// DefaultMaxPending).
func (a *Aggregator) Flush(ctx context.Context) (dropped int64, err error) {
	a.mu.Lock()
	pending, dropped := a.pending, a.dropped
	a.pending, a.dropped = map[pendingKey]*store.TLSCount{}, 0
	a.mu.Unlock()
	if len(pending) == 0 {
		return dropped, nil
	}
	counts := make([]store.TLSCount, 0, len(pending))
	for _, c := range pending {
		counts = append(counts, *c)
	}
	if err := a.st.AddTLSCounts(ctx, counts); err != nil {
		a.mu.Lock()
		for k, c := range pending {
			if p := a.pending[k]; p != nil {
				p.Count += c.Count
			} else {
				a.pending[k] = c
			}
		}
		a.mu.Unlock()
		return dropped, fmt.Errorf("tlsrpt: keeping session counts: %w", err)
	}
	return dropped, nil
}

// ReportJSON is one RFC 8460 §4.4 report: one policy domain, one day.
type ReportJSON struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyReport `json:"policies"`

	// Domain is the policy domain the report is about (not serialised
	// at top level; it is in each policy).
	Domain string `json:"-"`
}

// DateRange is the report's period.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyReport is one policy's counts.
type PolicyReport struct {
	Policy         PolicyDesc      `json:"policy"`
	Summary        Summary         `json:"summary"`
	FailureDetails []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyDesc describes the policy applied.
type PolicyDesc struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Summary holds the session totals.
type Summary struct {
	Success int64 `json:"total-successful-session-count"`
	Failure int64 `json:"total-failure-session-count"`
}

// FailureDetail is the count of one kind of failure.
type FailureDetail struct {
	ResultType          string `json:"result-type"`
	SendingMTAIP        string `json:"sending-mta-ip,omitempty"`
	ReceivingMXHostname string `json:"receiving-mx-hostname,omitempty"`
	ReceivingIP         string `json:"receiving-ip,omitempty"`
	FailedSessionCount  int64  `json:"failed-session-count"`
	AdditionalInfo      string `json:"additional-information,omitempty"`
}

// Report builds the reports of the UTC day containing day from the counts
// in the store (every node's, as far as they flushed them), one per policy
// domain, sorted by domain. Organization name, contact and report id are
// left for the caller (the Sender fills them in).
func (a *Aggregator) Report(ctx context.Context, day time.Time) ([]ReportJSON, error) {
	start := dayOf(day)
	counts, err := a.st.TLSCounts(ctx, start)
	if err != nil {
		return nil, fmt.Errorf("tlsrpt: reading session counts: %w", err)
	}
	type policyKey struct{ domain, typ, str, mx string }
	byDomain := map[string]*ReportJSON{}
	byPolicy := map[policyKey]*PolicyReport{}
	var order []policyKey
	for _, c := range counts {
		r := byDomain[c.Domain]
		if r == nil {
			r = &ReportJSON{Domain: c.Domain, DateRange: DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)}}
			byDomain[c.Domain] = r
		}
		pk := policyKey{c.Domain, c.PolicyType, strings.Join(c.PolicyString, "\n"), strings.Join(c.MXPatterns, "\n")}
		pr := byPolicy[pk]
		if pr == nil {
			pr = &PolicyReport{Policy: PolicyDesc{Type: c.PolicyType, String: c.PolicyString, Domain: c.Domain, MXHost: c.MXPatterns}}
			byPolicy[pk] = pr
			order = append(order, pk)
		}
		if c.Result == "" {
			pr.Summary.Success += c.Count
			continue
		}
		pr.Summary.Failure += c.Count
		pr.FailureDetails = append(pr.FailureDetails, FailureDetail{
			ResultType: c.Result, SendingMTAIP: c.SendingIP, ReceivingMXHostname: c.MXHost,
			ReceivingIP: c.ReceivingIP, FailedSessionCount: c.Count, AdditionalInfo: c.Info,
		})
	}
	for _, pk := range order {
		pr := byPolicy[pk]
		sort.Slice(pr.FailureDetails, func(i, j int) bool {
			x, y := pr.FailureDetails[i], pr.FailureDetails[j]
			if x.ResultType != y.ResultType {
				return x.ResultType < y.ResultType
			}
			if x.ReceivingMXHostname != y.ReceivingMXHostname {
				return x.ReceivingMXHostname < y.ReceivingMXHostname
			}
			return x.ReceivingIP+x.AdditionalInfo < y.ReceivingIP+y.AdditionalInfo
		})
		r := byDomain[pk.domain]
		r.Policies = append(r.Policies, *pr)
	}
	out := make([]ReportJSON, 0, len(byDomain))
	for _, r := range byDomain {
		sort.Slice(r.Policies, func(i, j int) bool {
			x, y := r.Policies[i].Policy, r.Policies[j].Policy
			if x.Type != y.Type {
				return x.Type < y.Type
			}
			return strings.Join(x.String, "\n") < strings.Join(y.String, "\n")
		})
		out = append(out, *r)
	}
	slices.SortFunc(out, func(x, y ReportJSON) int { return strings.Compare(x.Domain, y.Domain) })
	return out, nil
}
