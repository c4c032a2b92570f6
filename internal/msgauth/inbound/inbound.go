// Package inbound authenticates mail received from anonymous peers on the
// MX listener: SPF at MAIL FROM (the MAIL FROM and HELO identities) and at
// RCPT TO (a domain's policy may refuse hard fails), then, while the message
// streams into the spool, DKIM and ARC verification and the DMARC verdict,
// written into an Authentication-Results field. Forged
// Authentication-Results claiming this server are removed. DMARC aggregate
// reports and feedback-loop reports addressed to local mailboxes are caught
// on the way (Catcher).
package inbound

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/msgauth/arc"
	"github.com/heraldmail/herald/internal/msgauth/authres"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/msgauth/dmarc"
	"github.com/heraldmail/herald/internal/msgauth/spf"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// QuarantineHeader marks a message that failed DMARC for a domain asking
// for quarantine; local delivery files such messages in .Junk.
const QuarantineHeader = "X-Herald-Quarantine"

// Checker runs the authentication checks of mail received from outside
// and writes an Authentication-Results field.
type Checker struct {
	Resolver resolve.Resolver
	Config   config.ChecksConfig
	Policies DomainPolicies
	// AuthservID names this server in Authentication-Results.
	AuthservID string
	Log        *slog.Logger
	// Catcher, if set, keeps DMARC aggregate and feedback reports.
	Catcher *Catcher
}

// DomainPolicies gives a local domain's inbound policy.
type DomainPolicies interface {
	GetDomainPolicy(ctx context.Context, domain string) (store.DomainPolicy, error)
}

// DMARC modes of a domain policy.
const (
	dmarcEnforce    = "enforce"    // refuse p=reject failures, mark p=quarantine
	dmarcQuarantine = "quarantine" // mark both, refuse nothing
	dmarcMonitor    = "monitor"    // record only
)

// policyFor is the effective policy of a local domain: its own settings,
// else the [checks] configuration.
func (ck *Checker) policyFor(ctx context.Context, domain string) (dmarcMode string, spfReject bool) {
	p, _ := ck.Policies.GetDomainPolicy(ctx, domain)
	switch dmarcMode = p.DMARC; {
	case dmarcMode != "":
	case ck.Config.DMARCReject:
		dmarcMode = dmarcEnforce
	case ck.Config.DMARCQuarantine:
		dmarcMode = dmarcQuarantine
	default:
		dmarcMode = dmarcMonitor
	}
	spfReject = p.SPFReject == "on" || p.SPFReject == "" && ck.Config.SPFRejectFail
	return dmarcMode, spfReject
}

// spfResults are the SPF verdicts of a transaction: MAIL FROM (or HELO for
// the null sender) and, separately, the HELO identity.
type spfResults struct {
	mailFrom spf.Result
	helo     *spf.Result // nil when not checked (null sender: mailFrom is the HELO check)
}

// spf runs SPF for a transaction at MAIL FROM: the MAIL FROM identity and
// the HELO identity (RFC 7208 §2.3), concurrently.
func (ck *Checker) spf(ctx context.Context, ip netip.Addr, helo, from string) spfResults {
	if from == "" {
		return spfResults{mailFrom: spf.Check(ctx, ck.Resolver, ip, helo, from)}
	}
	ch := make(chan spf.Result, 1)
	go func() { ch <- spf.CheckHELO(ctx, ck.Resolver, ip, helo) }()
	res := spfResults{mailFrom: spf.Check(ctx, ck.Resolver, ip, helo, from)}
	h := <-ch
	res.helo = &h
	return res
}

// Tx is the checks of one transaction: the SPF verdicts computed at MAIL
// FROM, used again at RCPT TO and in Authentication-Results.
type Tx struct {
	ck   *Checker
	ip   netip.Addr
	helo string
	from string
	spf  spfResults
}

// Begin runs SPF for a transaction at MAIL FROM: the MAIL FROM identity and
// the HELO identity (RFC 7208 §2.3), concurrently.
func (ck *Checker) Begin(ctx context.Context, ip netip.Addr, helo, from string) *Tx {
	return &Tx{ck: ck, ip: ip, helo: helo, from: from, spf: ck.spf(ctx, ip, helo, from)}
}

// Rcpt refuses a recipient of a domain whose policy refuses SPF hard
// fails, when the transaction's SPF result is a fail.
func (tx *Tx) Rcpt(ctx context.Context, rcptDomain string) error {
	res := tx.spf.mailFrom
	if res.Result != spf.Fail {
		return nil
	}
	if _, reject := tx.ck.policyFor(ctx, rcptDomain); !reject {
		return nil
	}
	return smtp.Errorf(550, smtp.EnhancedCode{5, 7, 23}, "SPF check failed for %s: %s is not allowed to send for it", res.Domain, tx.ip.Unmap())
}

// Processors returns the spool processors for the message; rcptDomain is
// the local domain whose policy applies (the first recipient's).
func (tx *Tx) Processors(ctx context.Context, rcptDomain string) []store.Processor {
	mode, _ := tx.ck.policyFor(ctx, rcptDomain)
	procs := []store.Processor{&inbound{ck: tx.ck, ip: tx.ip, helo: tx.helo, from: tx.from, spf: tx.spf, mode: mode}}
	if tx.ck.Catcher != nil {
		procs = append(procs, tx.ck.Catcher.Processor())
	}
	return procs
}

// inbound is the per-message part of the checks: it strips forged
// Authentication-Results, verifies DKIM while the message streams into the
// spool, and decides DMARC at the end.
type inbound struct {
	ck       *Checker
	ip       netip.Addr
	helo     string
	from     string
	spf      spfResults
	mode     string // DMARC mode of the recipient domain
	fromDom  string
	fromErr  error
	pw       *io.PipeWriter // feeds the DKIM verifier
	arcPW    *io.PipeWriter // feeds the ARC verifier
	dkimDone chan []dkim.Result
	arcDone  chan arc.Result
}

func (p *inbound) Header(ctx context.Context, msg *store.Message, header []byte) ([]byte, error) {
	header = authres.Strip(header, p.ck.AuthservID)
	p.fromDom, p.fromErr = dkim.FromDomain(header)
	// DKIM and ARC verify concurrently with the transfer, each reading its
	// own pipe; each drains its pipe to the end so writes never block.
	pr, pw := io.Pipe()
	p.pw = pw
	p.dkimDone = make(chan []dkim.Result, 1)
	go func() {
		res, err := dkim.Verify(ctx, pr, p.ck.Resolver.LookupTXT)
		if err != nil {
			res = []dkim.Result{{Result: dkim.ResultPermError, Reason: err.Error()}}
		}
		io.Copy(io.Discard, pr)
		p.dkimDone <- res
	}()
	apr, apw := io.Pipe()
	p.arcPW = apw
	p.arcDone = make(chan arc.Result, 1)
	go func() {
		res, err := arc.Verify(ctx, apr, p.ck.Resolver.LookupTXT)
		if err != nil {
			res = arc.Result{ChainValidation: arc.StatusFail, Reason: err.Error()}
		}
		io.Copy(io.Discard, apr)
		p.arcDone <- res
	}()
	return header, nil
}

func (p *inbound) Write(b []byte) (int, error) {
	if p.pw != nil {
		p.pw.Write(b) // a verifier error is reported by its result
		p.arcPW.Write(b)
	}
	return len(b), nil
}

func (p *inbound) Finish(ctx context.Context, msg *store.Message) ([]byte, error) {
	p.pw.Close()
	p.arcPW.Close()
	dkimRes := <-p.dkimDone
	arcRes := <-p.arcDone
	p.pw, p.arcPW = nil, nil

	mf := p.spf.mailFrom
	res := authres.Results{SPF: &authres.SPF{Result: string(mf.Result), MailFrom: p.from, Reason: mf.Explanation}}
	if p.from == "" {
		res.SPF.HELO = p.helo // the null sender's SPF identity is the HELO name
	}
	if h := p.spf.helo; h != nil {
		res.SPFHELO = &authres.SPF{Result: string(h.Result), HELO: p.helo, Reason: h.Explanation}
	}
	var dkimIn []dmarc.DKIMInput
	for _, d := range dkimRes {
		res.DKIM = append(res.DKIM, authres.DKIM{Result: d.Result, Domain: d.Domain, Identifier: d.Identifier,
			Selector: d.Selector, Algorithm: d.Algorithm, Signature: d.HeaderB, Reason: d.Reason})
		if d.Domain != "" {
			dkimIn = append(dkimIn, dmarc.DKIMInput{Domain: d.Domain, Result: d.Result})
		}
	}
	var extra string
	var dm dmarc.Result
	if p.fromErr != nil {
		res.DMARC = &authres.DMARC{Result: string(dmarc.PermError), Reason: "no single From address"}
	} else {
		dm = dmarc.Evaluate(ctx, p.ck.Resolver, p.fromDom, dmarc.SPFInput{Domain: mf.Domain, Result: string(mf.Result)}, dkimIn)
		res.DMARC = &authres.DMARC{Result: string(dm.Result), From: dm.Domain, Policy: string(dm.Policy)}
		if dm.Err != nil {
			res.DMARC.Reason = dm.Err.Error()
		}
	}
	if arcRes.ChainValidation != arc.StatusNone {
		res.ARC = &authres.ARC{Result: string(arcRes.ChainValidation), RemoteIP: p.ip.Unmap().String(), OldestPass: arcRes.OldestPass}
	}
	policy := dm.Policy
	if policy != dmarc.PolicyNone && p.ck.arcOverride(arcRes) {
		// A trusted forwarder (mailing list) sealed the message and its
		// first hop recorded a DMARC pass (RFC 8617 §7.2.1).
		policy = dmarc.PolicyNone
		res.DMARC.Reason = "overridden by ARC seal of " + arcRes.Domain
	}
	p.ck.Log.Info("authentication checks", "client", p.ip.String(), "from", p.from, "header_from", p.fromDom,
		"spf", mf.Result, "dkim", dkimSummary(dkimRes), "dmarc", dm.Result, "policy", policy,
		"arc", arcRes.ChainValidation, "arc_sealer", arcRes.Domain)

	switch {
	case policy == dmarc.PolicyReject && p.mode == dmarcEnforce:
		return nil, smtp.Errorf(550, smtp.EnhancedCode{5, 7, 1}, "Message rejected: DMARC policy of %s (neither SPF nor DKIM passed aligned)", dm.Domain)
	case policy != dmarc.PolicyNone && p.mode != dmarcMonitor:
		extra = QuarantineHeader + ": dmarc policy of " + dm.Domain + "\r\n"
	}
	return []byte(authres.Field(p.ck.AuthservID, res) + extra), nil
}

func (p *inbound) Abort() {
	if p.pw != nil {
		p.pw.CloseWithError(io.ErrUnexpectedEOF)
		p.arcPW.CloseWithError(io.ErrUnexpectedEOF)
		<-p.dkimDone
		<-p.arcDone
		p.pw, p.arcPW = nil, nil
	}
}

// arcOverride reports whether a valid ARC chain sealed by a trusted
// forwarder vouches for the message: its first hop's recorded results
// (ARC-Authentication-Results i=1) include a DMARC pass.
func (ck *Checker) arcOverride(r arc.Result) bool {
	if r.ChainValidation != arc.StatusPass || len(r.AAR) == 0 {
		return false
	}
	if !slices.ContainsFunc(ck.Config.ARCTrustedSealers, func(d string) bool { return strings.EqualFold(d, r.Domain) }) {
		return false
	}
	return strings.Contains(strings.ToLower(r.AAR[0]), "dmarc=pass")
}

func dkimSummary(rs []dkim.Result) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		if r.Domain == "" {
			parts = append(parts, r.Result)
			continue
		}
		parts = append(parts, r.Domain+"="+r.Result)
	}
	return strings.Join(parts, ",")
}

// Quarantined reports whether a stored message carries the quarantine mark.
func Quarantined(msg *store.Message) bool {
	return slices.ContainsFunc(strings.Split(string(msg.Headers), "\r\n"), func(l string) bool {
		return strings.HasPrefix(l, QuarantineHeader+":")
	})
}
