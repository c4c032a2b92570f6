package httpapi

import (
	"context"
	"net/http"
	"slices"

	"github.com/heraldmail/herald/internal/smtp"
)

// DNSChecker runs the DNS doctor (`herald dns check`) for a domain and
// returns its report, JSON-encodable.
type DNSChecker interface {
	CheckDomain(ctx context.Context, domain string) (any, error)
}

// dnsCheck handles GET /v1/domains/{domain}/dns: the DNS doctor's findings
// for one of the caller's domains (any domain for the operator), for the
// dashboard.
func (a *api) dnsCheck(w http.ResponseWriter, r *http.Request, c *caller) error {
	if a.dns == nil {
		return errNotFound("the DNS check is not available")
	}
	d, err := smtp.NormalizeDomain(r.PathValue("domain"))
	if err != nil {
		return errInvalid("domain", "not a valid domain: %q", r.PathValue("domain"))
	}
	if !c.isOperator() {
		ds, err := a.p.ListAccountDomains(r.Context(), c.account())
		if err != nil {
			return err
		}
		if !slices.Contains(ds, d) {
			return errNotFound("no such domain in your account")
		}
	}
	rep, err := a.dns.CheckDomain(r.Context(), d)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}
