package delivery

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"time"

	"github.com/heraldmail/herald/internal/delivery/dane"
	"github.com/heraldmail/herald/internal/delivery/mtasts"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/tlsrpt"
)

// PolicySource returns the MTA-STS policy of a recipient domain;
// *mtasts.Cache implements it. A nil policy means none; an error means the
// domain advertises a policy that could not be obtained (an *mtasts.Error),
// reported to TLS-RPT while delivery goes on without MTA-STS.
type PolicySource interface {
	Get(ctx context.Context, domain string) (*mtasts.Policy, error)
}

// TLSReporter receives the TLS outcome of every new SMTP session to an MX
// (and of policy failures), for TLS-RPT; *tlsrpt.Aggregator implements it.
type TLSReporter interface {
	RecordTLS(s tlsrpt.Session)
}

// TLS policy labels, used as Result.TLSPolicy and as the first word of
// Result.TLS when a session is encrypted.
const (
	PolicyOpportunistic = "opportunistic"   // no policy: TLS if offered, any certificate
	PolicyRequired      = "required"        // RequireTLS or smarthost: verified TLS
	PolicyMTASTS        = "mta-sts"         // MTA-STS enforce
	PolicyMTASTSTesting = "mta-sts-testing" // MTA-STS testing: as opportunistic, failures reported
	PolicyDANE          = "dane"            // DANE TLSA records (DNSSEC)
	PolicyDANEUnusable  = "dane-unusable"   // secure TLSA records, none usable: TLS required, unauthenticated
)

// hostPolicy is the TLS policy applying to one target host.
type hostPolicy struct {
	kind   string // one of the Policy* labels
	domain string // the policy (recipient) domain; "" outside MX routing
	sts    *mtasts.Policy
	dane   dane.Policy
	// failure and rptType: a failure known before connecting that the
	// policy tolerates (MTA-STS testing: MX not in the policy).
	failure, rptType string
}

// requireTLS reports whether the policy forbids clear text.
func (p *hostPolicy) requireTLS() bool {
	switch p.kind {
	case PolicyMTASTS, PolicyDANE, PolicyDANEUnusable:
		return true
	}
	return false
}

// authenticated reports whether the policy verifies the certificate
// itself (rather than by the Config's RequireTLS rules).
func (p *hostPolicy) authenticated() bool { return p.kind == PolicyMTASTS || p.kind == PolicyDANE }

// label is the prefix of failure reasons.
func (p *hostPolicy) label() string {
	switch p.kind {
	case PolicyMTASTS, PolicyMTASTSTesting:
		return "mta-sts"
	case PolicyDANE, PolicyDANEUnusable:
		return "dane"
	}
	return "tls"
}

// rptPolicy returns the TLS-RPT policy type and string of p.
func (p *hostPolicy) rptPolicy() (typ string, str, mx []string) {
	switch {
	case p.kind == PolicyDANE || p.kind == PolicyDANEUnusable:
		for _, r := range p.dane.All {
			str = append(str, r.String())
		}
		return tlsrpt.PolicyTLSA, str, nil
	case p.sts != nil:
		return tlsrpt.PolicySTS, p.sts.Lines, p.sts.MX
	}
	return tlsrpt.PolicyNotFound, nil, nil
}

// stsPolicy fetches the MTA-STS policy of the request's domain (nil when
// MTA-STS is off, the domain has none, or its mode is none).
func (d *attempt) stsPolicy(ctx context.Context) *mtasts.Policy {
	src := d.c.cfg.MTASTS
	if src == nil {
		return nil
	}
	p, err := src.Get(ctx, d.req.Domain)
	if err != nil {
		typ := tlsrpt.ResultSTSPolicyFetchError
		var me *mtasts.Error
		if errors.As(err, &me) {
			typ = me.Type
		}
		d.c.log.Info("delivery: MTA-STS policy unavailable", slog.String("domain", d.req.Domain), slog.String("err", err.Error()))
		d.report(&hostPolicy{kind: PolicyMTASTS, domain: d.req.Domain}, "", "", false, typ, err.Error())
		return nil
	}
	if p == nil || p.Mode == mtasts.None {
		return nil
	}
	return p
}

// policyFor decides the TLS policy for target t: DANE when the host has
// DNSSEC-validated TLSA records (it takes precedence, RFC 8461 §2), else
// the domain's MTA-STS policy, else opportunistic TLS. A non-nil *smtp
// failure (as an openError) means the host must not be used.
func (d *attempt) policyFor(ctx context.Context, t target, sts *mtasts.Policy) (*hostPolicy, *openError) {
	p := &hostPolicy{kind: PolicyOpportunistic, domain: d.req.Domain}
	if tr, ok := d.c.r.(resolve.TLSAResolver); ok && !d.c.cfg.DisableDANE {
		p.dane = dane.Lookup(ctx, tr, t.host, t.port)
		switch p.dane.State {
		case dane.Authenticated:
			p.kind = PolicyDANE
			return p, nil
		case dane.Unusable:
			p.kind = PolicyDANEUnusable
			return p, nil
		case dane.Failed:
			p.kind = PolicyDANE
			oe := policyFail(451, smtp.EnhancedCode{4, 4, 3}, t.host, "dane: TLSA lookup for "+t.host+" failed", tlsrpt.ResultDNSSECInvalid)
			oe.cause = p.dane.Err
			return p, oe
		}
	}
	if sts == nil {
		return p, nil
	}
	p.sts = sts
	p.kind = PolicyMTASTSTesting
	if sts.Mode == mtasts.Enforce {
		p.kind = PolicyMTASTS
	}
	if !sts.Match(t.host) {
		reason := "mta-sts: " + t.host + " is not an MX host allowed by the policy of " + sts.Domain
		if p.kind == PolicyMTASTS {
			return p, policyFail(451, smtp.EnhancedCode{4, 7, 5}, t.host, reason, tlsrpt.ResultValidationFailure)
		}
		// testing: deliver as usual; the session reports the failure.
		p.failure, p.rptType = reason, tlsrpt.ResultValidationFailure
	}
	return p, nil
}

// policyFail builds the openError of a TLS policy failure.
func policyFail(code int, enh smtp.EnhancedCode, host, reason, result string) *openError {
	return &openError{
		reply:   &smtp.Error{Code: code, Enhanced: enh, Message: host + ": " + reason},
		tlsFail: reason,
		rptType: result,
	}
}

// tlsConfigFor returns the STARTTLS configuration for t under p. For
// policies that authenticate, the handshake fails unless the policy's
// check passes; *verr receives that check's error.
func (c *Client) tlsConfigFor(t target, p *hostPolicy, verr *error) *tls.Config {
	if !p.authenticated() || t.smarthost {
		// Only RequireTLS and the smarthost verify by the configured
		// roots; DANE with unusable records is unauthenticated TLS.
		return c.tlsConfig(t.host, c.cfg.RequireTLS || t.smarthost)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: true} //nolint:gosec // verified by VerifyConnection
	if _, err := netip.ParseAddr(t.host); err != nil {
		cfg.ServerName = t.host
	}
	cfg.VerifyConnection = func(st tls.ConnectionState) error {
		*verr = c.policyVerify(t.host, p, &st)
		return *verr
	}
	return cfg
}

// policyVerify checks the server's chain under p.
func (c *Client) policyVerify(host string, p *hostPolicy, st *tls.ConnectionState) error {
	if p.kind == PolicyDANE {
		return dane.Verify(p.dane.Records, st.PeerCertificates, host, time.Now())
	}
	return c.verify(host, st)
}

// classifyCertError returns the TLS-RPT result type and a short reason for
// a certificate verification failure.
func classifyCertError(host string, err error) (string, string) {
	var (
		he  x509.HostnameError
		cie x509.CertificateInvalidError
		ua  x509.UnknownAuthorityError
	)
	switch {
	case errors.As(err, &he):
		return tlsrpt.ResultCertHostMismatch, "certificate not valid for " + host
	case errors.As(err, &cie) && cie.Reason == x509.Expired:
		return tlsrpt.ResultCertExpired, "certificate of " + host + " expired or not yet valid"
	case errors.As(err, &ua):
		return tlsrpt.ResultCertNotTrusted, "certificate of " + host + " not trusted"
	case errors.Is(err, dane.ErrNoMatch):
		return tlsrpt.ResultValidationFailure, "no TLSA record matches the certificate of " + host
	}
	return tlsrpt.ResultValidationFailure, fmt.Sprintf("certificate of %s rejected: %v", host, err)
}

// report hands one session outcome to the TLS reporter, if any, for MX
// deliveries.
func (d *attempt) report(p *hostPolicy, mx, ip string, ok bool, result, info string) {
	r := d.c.cfg.TLSReport
	if r == nil || p == nil || p.domain == "" {
		return
	}
	typ, str, mxs := p.rptPolicy()
	s := tlsrpt.Session{
		PolicyDomain: p.domain, PolicyType: typ, PolicyString: str, MXPatterns: mxs,
		Success: ok, MXHost: mx, ReceivingIP: ip,
	}
	if !ok {
		s.ResultType, s.Info = result, info
	}
	r.RecordTLS(s)
}

// reportSession reports a newly opened session's TLS outcome.
func (d *attempt) reportSession(p *hostPolicy, t target, ip netip.Addr, s *session) {
	if p == nil || p.domain == "" {
		return
	}
	switch {
	case s.tlsFailure != "":
		d.report(p, t.host, ip.String(), false, s.rptType, s.tlsFailure)
	case s.conn.TLS() == nil:
		d.report(p, t.host, ip.String(), false, tlsrpt.ResultSTARTTLSNotSupported, "STARTTLS not offered or failed")
	default:
		d.report(p, t.host, ip.String(), true, "", "")
	}
}

// describe returns the Result.TLS text of an encrypted session.
func describeWith(kind string, st *tls.ConnectionState, verified bool) string {
	return kind + " " + describeTLS(st, verified)
}
