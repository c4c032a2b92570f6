// Package tlsrpt implements SMTP TLS Reporting (RFC 8460) for outbound
// mail: delivery reports every TLS session (or failure to establish one)
// to an Aggregator, which keeps daily counts per policy domain; Report
// turns a day into RFC 8460 JSON reports, and a Sender delivers them once
// a day to the addresses in the domain's _smtp._tls TXT record.
package tlsrpt

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
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

// Aggregator keeps daily session counts in memory. It is safe for
// concurrent use.
type Aggregator struct {
	clock clock.Clock

	mu   sync.Mutex
	days map[string]map[policyKey]*policyStats // by "2006-01-02" (UTC)
}

type policyKey struct {
	domain, typ, str string
}

type failureKey struct {
	result, sendingIP, mxHost, receivingIP, info string
}

type policyStats struct {
	strs     []string
	mx       []string
	success  int64
	failure  int64
	failures map[failureKey]int64
}

// NewAggregator returns an Aggregator dating sessions with clk (nil =
// clock.Real).
func NewAggregator(clk clock.Clock) *Aggregator {
	if clk == nil {
		clk = clock.Real{}
	}
	return &Aggregator{clock: clk, days: map[string]map[policyKey]*policyStats{}}
}

// dayKey returns the UTC day of t as "2006-01-02".
func dayKey(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// RecordTLS counts s on the current (UTC) day.
func (a *Aggregator) RecordTLS(s Session) {
	if s.PolicyDomain == "" {
		return
	}
	if s.PolicyType == "" {
		s.PolicyType = PolicyNotFound
	}
	k := policyKey{domain: strings.ToLower(s.PolicyDomain), typ: s.PolicyType, str: strings.Join(s.PolicyString, "\n")}
	day := dayKey(a.clock.Now())
	a.mu.Lock()
	defer a.mu.Unlock()
	d := a.days[day]
	if d == nil {
		d = map[policyKey]*policyStats{}
		a.days[day] = d
	}
	ps := d[k]
	if ps == nil {
		ps = &policyStats{strs: slices.Clone(s.PolicyString), mx: slices.Clone(s.MXPatterns), failures: map[failureKey]int64{}}
		d[k] = ps
	}
	if s.Success {
		ps.success++
		return
	}
	ps.failure++
	rt := s.ResultType
	if rt == "" {
		rt = ResultValidationFailure
	}
	ps.failures[failureKey{result: rt, sendingIP: s.SendingIP, mxHost: s.MXHost, receivingIP: s.ReceivingIP, info: s.Info}]++
}

// Forget drops the counts of day (after its reports were sent).
func (a *Aggregator) Forget(day time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.days, dayKey(day))
}

// Days returns the days (UTC midnight) that have counts, oldest first.
func (a *Aggregator) Days() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []time.Time
	for k := range a.days {
		if t, err := time.Parse(time.DateOnly, k); err == nil {
			out = append(out, t)
		}
	}
	slices.SortFunc(out, func(x, y time.Time) int { return x.Compare(y) })
	return out
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

// Report builds the reports of the UTC day containing day, one per policy
// domain, sorted by domain. Organization name, contact and report id are
// left for the caller (the Sender fills them in).
func (a *Aggregator) Report(day time.Time) []ReportJSON {
	start := day.UTC().Truncate(24 * time.Hour)
	a.mu.Lock()
	defer a.mu.Unlock()
	byDomain := map[string]*ReportJSON{}
	for k, ps := range a.days[dayKey(start)] {
		r := byDomain[k.domain]
		if r == nil {
			r = &ReportJSON{
				Domain:    k.domain,
				DateRange: DateRange{Start: start, End: start.Add(24*time.Hour - time.Second)},
			}
			byDomain[k.domain] = r
		}
		pr := PolicyReport{
			Policy:  PolicyDesc{Type: k.typ, String: slices.Clone(ps.strs), Domain: k.domain, MXHost: slices.Clone(ps.mx)},
			Summary: Summary{Success: ps.success, Failure: ps.failure},
		}
		for fk, n := range ps.failures {
			pr.FailureDetails = append(pr.FailureDetails, FailureDetail{
				ResultType: fk.result, SendingMTAIP: fk.sendingIP, ReceivingMXHostname: fk.mxHost,
				ReceivingIP: fk.receivingIP, FailedSessionCount: n, AdditionalInfo: fk.info,
			})
		}
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
		r.Policies = append(r.Policies, pr)
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
	return out
}
