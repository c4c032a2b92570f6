// Package policy decides, per SMTP stage, whether a client may do what it
// asks: relay, use a sender address, or send to a recipient. It holds no
// state of its own; the directory and the relay allow-list are injected.
// Herald is not an open relay by construction: a recipient outside the
// local domains is accepted only from an authenticated user or an address
// in the explicit allow-list (empty by default).
package policy

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Directory is what policy needs to know about local domains and users.
type Directory interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	GetUser(ctx context.Context, address string) (store.User, error)
}

// RecipientExists reports whether a local address has a mailbox, an alias
// or a catch-all.
type RecipientExists func(ctx context.Context, address string) (bool, error)

// Client is who is asking.
type Client struct {
	IP       netip.Addr
	AuthUser string // "" if not authenticated
}

// Policy holds the relay rules.
type Policy struct {
	Dir        Directory
	Exists     RecipientExists
	RelayAllow []netip.Prefix
}

// MayRelay reports whether the client may send to non-local domains.
func (p *Policy) MayRelay(c Client) bool {
	if c.AuthUser != "" {
		return true
	}
	ip := c.IP.Unmap()
	for _, pfx := range p.RelayAllow {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckSender verifies that an authenticated user may use sender as MAIL
// FROM: an address of its own domain, or of a domain (or exact address) in
// its SendAs list. Unauthenticated senders are not restricted here (SPF and
// DMARC judge them). The null sender is allowed.
func (p *Policy) CheckSender(ctx context.Context, c Client, sender string) error {
	if c.AuthUser == "" || sender == "" {
		return nil
	}
	u, err := p.Dir.GetUser(ctx, c.AuthUser)
	if err != nil {
		return tempfail(fmt.Errorf("policy: user %s: %w", c.AuthUser, err))
	}
	addr, err := smtp.ParseAddress(sender)
	if err != nil {
		return err
	}
	if SenderAllowed(u, addr) {
		return nil
	}
	e := smtp.ErrSenderNotOwned
	return &e
}

// SenderAllowed applies a user's SendAs rules to a parsed sender address.
func SenderAllowed(u store.User, sender smtp.Address) bool {
	full := strings.ToLower(sender.String())
	allowed := u.SendAs
	if len(allowed) == 0 {
		allowed = []string{smtp.DomainOf(u.Address)}
	}
	for _, a := range allowed {
		a = strings.ToLower(a)
		if strings.Contains(a, "@") {
			if a == full {
				return true
			}
			continue
		}
		if d, err := smtp.NormalizeDomain(a); err == nil && d == sender.Domain {
			return true
		}
	}
	return false
}

// CheckRecipient decides on one RCPT TO: local addresses must exist; other
// domains need relay permission.
func (p *Policy) CheckRecipient(ctx context.Context, c Client, rcpt string) error {
	addr, err := smtp.ParseAddress(rcpt)
	if err != nil {
		return err
	}
	local, err := p.Dir.IsLocalDomain(ctx, addr.Domain)
	if err != nil {
		return tempfail(fmt.Errorf("policy: domain lookup: %w", err))
	}
	if local {
		ok, err := p.Exists(ctx, addr.String())
		if err != nil {
			return tempfail(fmt.Errorf("policy: recipient lookup: %w", err))
		}
		if !ok {
			e := smtp.ErrNoSuchUser
			return &e
		}
		return nil
	}
	if p.MayRelay(c) {
		return nil
	}
	e := smtp.ErrRelayDenied
	return &e
}

// tempfail wraps an internal failure into a 451 4.3.0 that reveals nothing
// to the client while keeping the cause for logs.
func tempfail(err error) error {
	e := smtp.ErrLocalError
	return &Internal{Reply: &e, Cause: err}
}

// Internal is a local failure: Reply is what the client sees, Cause is
// logged.
type Internal struct {
	Reply *smtp.Error
	Cause error
}

func (e *Internal) Error() string { return e.Reply.Error() + ": " + e.Cause.Error() }

// Unwrap exposes both the reply (for errors.As to *smtp.Error) and the cause.
func (e *Internal) Unwrap() []error { return []error{e.Reply, e.Cause} }
