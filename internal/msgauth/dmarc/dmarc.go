// Package dmarc evaluates DMARC (RFC 7489) for inbound mail: it discovers
// the policy record of the RFC5322.From domain (falling back to its
// organisational domain from the public suffix list), checks identifier
// alignment of the SPF and DKIM results it is given (relaxed or strict),
// and picks the policy to apply (p, sp, pct). Record syntax is parsed by
// github.com/emersion/go-msgauth/dmarc; alignment and policy are ours.
package dmarc

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"

	msgdmarc "github.com/emersion/go-msgauth/dmarc"
	"golang.org/x/net/publicsuffix"

	"github.com/heraldmail/herald/internal/resolve"
)

// Status is the DMARC result (RFC 7489 section 11.2, RFC 8601).
type Status string

// DMARC results.
const (
	// None: no DMARC record was found for the From domain.
	None Status = "none"
	// Pass: at least one of SPF and DKIM passed with an aligned identifier.
	Pass Status = "pass"
	// Fail: a record exists and no aligned identifier passed.
	Fail Status = "fail"
	// TempError: the record could not be fetched (DNS trouble).
	TempError Status = "temperror"
	// PermError: the From domain is unusable or the record is invalid.
	PermError Status = "permerror"
)

// Policy is a DMARC disposition.
type Policy string

// DMARC policies, from the weakest to the strongest.
const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// SPFInput is the SPF result for the MAIL FROM identity (or HELO for the
// null sender): Domain is the checked domain, Result the SPF result
// ("pass", "fail", ...; only "pass" counts).
type SPFInput struct {
	Domain string
	Result string
}

// DKIMInput is the result of one DKIM signature: Domain is its d= tag,
// Result the verification result ("pass", "fail", ...; only "pass" counts).
type DKIMInput struct {
	Domain string
	Result string
}

// Result is the outcome of a DMARC evaluation.
type Result struct {
	// Result is the DMARC result.
	Result Status
	// Policy is the disposition to apply to the message: PolicyNone unless
	// Result is Fail, then the record policy after sp and pct sampling
	// (a reject not sampled becomes quarantine, a quarantine becomes none,
	// RFC 7489 section 6.6.4).
	Policy Policy
	// RecordPolicy is the policy the record asks for this domain (p, or sp
	// for a subdomain covered by its organisational domain's record),
	// before pct; empty without a record.
	RecordPolicy Policy
	// Domain is the RFC5322.From domain, lower case.
	Domain string
	// OrgDomain is the organisational domain of Domain.
	OrgDomain string
	// RecordDomain is the domain whose _dmarc record was used (Domain or
	// OrgDomain); empty without a record.
	RecordDomain string
	// SPFAligned and DKIMAligned report which identifiers passed aligned.
	SPFAligned  bool
	DKIMAligned bool
	// Record is the parsed policy record (for rua reporting), nil if none.
	Record *msgdmarc.Record
	// Err explains a TempError or PermError.
	Err error
}

// Option changes how Evaluate works.
type Option func(*options)

type options struct {
	intn func(n int) int
}

// WithRand sets the random source for pct sampling: intn(100) must return
// a number in [0, 100). The default is math/rand/v2's IntN.
func WithRand(intn func(n int) int) Option {
	return func(o *options) { o.intn = intn }
}

// Evaluate runs DMARC for a message whose RFC5322.From domain is
// fromDomain, given the SPF result and the DKIM signature results. It never
// fails: DNS trouble gives TempError, an unusable domain or record
// PermError, and both leave Policy at PolicyNone.
func Evaluate(ctx context.Context, r resolve.Resolver, fromDomain string, spf SPFInput, dkim []DKIMInput, opts ...Option) Result {
	o := options{intn: rand.IntN}
	for _, opt := range opts {
		opt(&o)
	}
	res := Result{Result: None, Policy: PolicyNone, Domain: normDomain(fromDomain)}
	if !validDomain(res.Domain) {
		res.Result = PermError
		res.Err = fmt.Errorf("dmarc: invalid From domain %q", fromDomain)
		return res
	}
	res.OrgDomain = OrgDomain(res.Domain)

	rec, recDomain, err := discover(ctx, r, res.Domain, res.OrgDomain)
	switch {
	case errors.Is(err, resolve.ErrTemporary):
		res.Result, res.Err = TempError, err
		return res
	case err != nil:
		res.Result, res.Err = PermError, err
		return res
	case rec == nil:
		return res
	}
	res.Record, res.RecordDomain = rec, recDomain
	res.RecordPolicy = Policy(rec.Policy)
	if recDomain != res.Domain && rec.SubdomainPolicy != "" {
		res.RecordPolicy = Policy(rec.SubdomainPolicy)
	}

	if strings.EqualFold(spf.Result, "pass") {
		res.SPFAligned = aligned(spf.Domain, res.Domain, rec.SPFAlignment)
	}
	for _, d := range dkim {
		if strings.EqualFold(d.Result, "pass") && aligned(d.Domain, res.Domain, rec.DKIMAlignment) {
			res.DKIMAligned = true
			break
		}
	}
	if res.SPFAligned || res.DKIMAligned {
		res.Result = Pass
		return res
	}
	res.Result = Fail
	res.Policy = res.RecordPolicy
	if pct := rec.Percent; pct != nil && *pct < 100 && o.intn(100) >= *pct {
		// Not sampled: apply the next weaker policy (RFC 7489 6.6.4).
		switch res.Policy {
		case PolicyReject:
			res.Policy = PolicyQuarantine
		case PolicyQuarantine:
			res.Policy = PolicyNone
		}
	}
	return res
}

// discover finds the DMARC record for domain, then for org (RFC 7489
// section 6.6.3). No record at either is (nil, "", nil).
func discover(ctx context.Context, r resolve.Resolver, domain, org string) (*msgdmarc.Record, string, error) {
	rec, err := lookup(ctx, r, domain)
	if rec != nil || err != nil || org == domain {
		return rec, domain, err
	}
	rec, err = lookup(ctx, r, org)
	return rec, org, err
}

// lookup fetches and parses the record at _dmarc.domain. Several DMARC
// records, like none, mean no policy.
func lookup(ctx context.Context, r resolve.Resolver, domain string) (*msgdmarc.Record, error) {
	txts, err := r.LookupTXT(ctx, "_dmarc."+domain)
	if errors.Is(err, resolve.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		if !errors.Is(err, resolve.ErrTemporary) {
			err = fmt.Errorf("%w: %w", resolve.ErrTemporary, err)
		}
		return nil, fmt.Errorf("dmarc: lookup _dmarc.%s: %w", domain, err)
	}
	var found []string
	for _, t := range txts {
		if isDMARC(t) {
			found = append(found, t)
		}
	}
	if len(found) != 1 {
		return nil, nil
	}
	rec, err := msgdmarc.Parse(found[0])
	if err != nil {
		return nil, fmt.Errorf("dmarc: record at _dmarc.%s: %w", domain, err)
	}
	return rec, nil
}

// isDMARC reports whether a TXT record starts with the v=DMARC1 tag.
func isDMARC(txt string) bool {
	first, _, _ := strings.Cut(txt, ";")
	k, v, ok := strings.Cut(first, "=")
	return ok && strings.TrimSpace(k) == "v" && strings.TrimSpace(v) == "DMARC1"
}

// aligned reports whether the authenticated domain id is aligned with the
// From domain: equal in strict mode, same organisational domain in relaxed
// mode (the default).
func aligned(id, from string, mode msgdmarc.AlignmentMode) bool {
	id = normDomain(id)
	if id == "" {
		return false
	}
	if id == from {
		return true
	}
	if mode == msgdmarc.AlignmentStrict {
		return false
	}
	return OrgDomain(id) == OrgDomain(from)
}

// OrgDomain returns the organisational domain of domain (RFC 7489 section
// 3.2): the public suffix plus one label, from the public suffix list. A
// domain that is itself a public suffix is its own organisational domain.
func OrgDomain(domain string) string {
	d := normDomain(domain)
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return d
	}
	return org
}

func normDomain(d string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
}

// validDomain reports whether d is a plausible DNS name.
func validDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for l := range strings.SplitSeq(d, ".") {
		if l == "" || len(l) > 63 || strings.ContainsAny(l, " \t\r\n;\\@[]") {
			return false
		}
	}
	return true
}
