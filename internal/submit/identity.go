package submit

import (
	"net/netip"

	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/store"
)

// Kind is the kind of sender behind a transaction. It decides which sender
// addresses may be used, whether mail may be relayed, which checks and
// limits apply and which keys sign.
type Kind int

// Kinds of identity.
const (
	// Anonymous is an unauthenticated peer on the MX listener: it may only
	// send to local recipients, and its mail is authenticated (SPF, DKIM,
	// DMARC) rather than trusted.
	Anonymous Kind = iota
	// User is an authenticated submission user. It may use its own address,
	// the aliases that deliver to it and what its SendAs grants name.
	User
	// APIKey is an HTTP API key: it may use addresses in the domains its
	// account owns.
	APIKey
	// Trusted is a client in relay.allow, sending without a login. It acts
	// for the default account: any address except those in domains owned
	// by another account.
	Trusted
	// Local is a local system user running `herald sendmail`; it acts like
	// Trusted.
	Local
	// System is Herald itself: DSNs and reports it writes. Its addresses are
	// its own, never a client's.
	System
)

var kindNames = [...]string{"anonymous", "user", "api_key", "trusted", "local", "system"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// relays reports whether the kind may send to non-local recipients.
func (k Kind) relays() bool { return k != Anonymous }

// submits reports whether the kind submits its own mail (as opposed to
// receiving it from the outside or generating it): its header section must
// name only addresses it may use, and gets missing Date and Message-ID.
func (k Kind) submits() bool { return k == User || k == APIKey || k == Trusted || k == Local }

// Identity is who is sending.
type Identity struct {
	Kind Kind
	// User is the login of a User identity.
	User string
	// Account is the account the mail is sent for: the API key's account,
	// the user's account (filled in by Begin), or the default account.
	// Anonymous mail is charged to the account owning its first recipient.
	Account string
	// ClientIP and HELO describe a network client (zero otherwise).
	ClientIP netip.Addr
	HELO     string
	// Source is the protocol label recorded with the message: "smtp",
	// "submission", "submissions", "api", "sendmail", "dsn", "tlsrpt".
	Source string
	// Blocklists is the DNS list lookup of the client started when it
	// connected (Pipeline.Screen); nil when it is not screened. Only an
	// Anonymous identity's is used.
	Blocklists *dnsbl.Lookup
}

func (id Identity) account() string {
	if id.Account == "" {
		return store.DefaultAccount
	}
	return id.Account
}
