package submit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/heraldmail/herald/internal/alias"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// mayUse decides whether the transaction's identity may use addr as its
// envelope sender or in a From: or Sender: field (what names the field in
// the refusal). The rules, by kind:
//
//   - Anonymous and System: any address (SPF and DMARC judge the former;
//     the latter is Herald's own).
//   - User: its own address, an alias that delivers to it, an address its
//     SendAs grants name exactly, or any address of a domain it grants
//     ("@example.com"; a bare "example.com" is read the same way).
//   - APIKey: an address in a domain its account owns.
//   - Trusted and Local: any address except in a domain owned by another
//     account than the default one (they act for the default account).
func (t *Tx) mayUse(ctx context.Context, addr smtp.Address, what string) error {
	if t.ident.Kind == Anonymous || t.ident.Kind == System {
		return nil
	}
	// The same address is usually judged several times (MAIL FROM, From:,
	// the signer): decide once per transaction.
	key := strings.ToLower(addr.String())
	if ok, seen := t.allowed[key]; seen {
		if ok {
			return nil
		}
		return refuse(ReasonSenderNotAllowed, 550, smtp.EnhancedCode{5, 7, 1}, "%s <%s> not allowed for %s", what, addr, t.who())
	}
	var ok bool
	var err error
	switch t.ident.Kind {
	case User:
		ok, err = t.userMayUse(ctx, addr)
	case APIKey:
		ok, err = t.domainOwnedBy(ctx, addr.Domain, t.ident.account(), false)
	case Trusted, Local:
		ok, err = t.domainOwnedBy(ctx, addr.Domain, store.DefaultAccount, true)
	}
	if err != nil {
		return internal(fmt.Errorf("submit: sender check of %s: %w", addr, err))
	}
	if t.allowed == nil {
		t.allowed = make(map[string]bool)
	}
	t.allowed[key] = ok
	if ok {
		return nil
	}
	return refuse(ReasonSenderNotAllowed, 550, smtp.EnhancedCode{5, 7, 1}, "%s <%s> not allowed for %s", what, addr, t.who())
}

// who names the identity in refusals, without revealing anything the
// client does not know.
func (t *Tx) who() string {
	switch t.ident.Kind {
	case User:
		return "user " + t.ident.User
	case APIKey:
		return "account " + t.ident.account()
	}
	return "this client"
}

// domainOwnedBy reports whether domain belongs to account; unowned domains
// count as owned when orUnowned is set.
func (t *Tx) domainOwnedBy(ctx context.Context, domain, account string, orUnowned bool) (bool, error) {
	owner, err := t.p.st.DomainAccount(ctx, domain)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return orUnowned, nil
	case err != nil:
		return false, err
	}
	return owner == account, nil
}

// userMayUse applies a submission user's rights to addr.
func (t *Tx) userMayUse(ctx context.Context, addr smtp.Address) (bool, error) {
	u := t.user
	full := strings.ToLower(addr.String())
	if full == strings.ToLower(u.Address) {
		return true, nil
	}
	if SendAsAllows(u.SendAs, addr) {
		return true, nil
	}
	// An alias (not a catch-all) whose expansion delivers to the user.
	if _, err := t.p.st.GetAlias(ctx, full); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	targets, err := alias.Expand(ctx, t.p.st, full, nil)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	return slices.ContainsFunc(targets, func(s string) bool { return strings.EqualFold(s, u.Address) }), nil
}

// SendAsAllows reports whether a user's SendAs grants cover addr: an entry
// with a local part names one address; "@domain" (or a bare "domain") names
// every address of the domain.
func SendAsAllows(grants []string, addr smtp.Address) bool {
	full := strings.ToLower(addr.String())
	for _, g := range grants {
		g = strings.ToLower(strings.TrimSpace(g))
		if i := strings.LastIndexByte(g, '@'); i > 0 {
			if g == full {
				return true
			}
			continue
		}
		if d, err := smtp.NormalizeDomain(strings.TrimPrefix(g, "@")); err == nil && d == addr.Domain {
			return true
		}
	}
	return false
}
