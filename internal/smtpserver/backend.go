package smtpserver

import (
	"context"
	"crypto/tls"
	"io"
	"net/netip"
)

// Mode is the kind of listener a session arrived on.
type Mode int

// Listener kinds.
const (
	ModeMX          Mode = iota // port 25: mail for local domains, relay only if authorised
	ModeSubmission              // port 587: STARTTLS, then AUTH required
	ModeSubmissions             // port 465: implicit TLS, AUTH required
)

func (m Mode) String() string {
	switch m {
	case ModeMX:
		return "smtp"
	case ModeSubmission:
		return "submission"
	case ModeSubmissions:
		return "submissions"
	}
	return "unknown"
}

// Conn describes a client session as the backend sees it.
type Conn struct {
	ID         string // session ID for logs
	Mode       Mode
	RemoteAddr netip.AddrPort
	HELO       string
	TLS        *tls.ConnectionState // nil until TLS is up
	AuthUser   string               // "" until AUTH succeeded
	// Meta is the backend's own per-session data, set in Connect (e.g. a
	// blocklist lookup started when the client connected).
	Meta any
}

// Rcpt is one RCPT TO with its DSN parameters.
type Rcpt struct {
	Address string // "local@domain"
	Notify  string // "", "NEVER" or a comma list of SUCCESS,FAILURE,DELAY
	ORCPT   string // "rfc822;addr", xtext-decoded; "" if none
}

// Envelope is the transaction being built.
type Envelope struct {
	From       string // "" for the null sender
	Ret        string // "FULL", "HDRS" or ""
	EnvID      string
	SMTPUTF8   bool
	Body8Bit   bool
	Size       int64 // SIZE= declared, 0 if none
	Recipients []Rcpt
	// Meta is the backend's own per-transaction data (e.g. an SPF result
	// computed at MAIL FROM); a new transaction starts with nil.
	Meta any
}

// Backend makes the policy decisions and stores messages. Every error it
// returns should be an *smtp.Error; any other error is answered with a
// generic 451 4.3.0 and logged.
type Backend interface {
	// Connect is called once per connection, before the greeting.
	Connect(ctx context.Context, c *Conn) error
	// Authenticate checks a username and password (only ever called over TLS).
	Authenticate(ctx context.Context, c *Conn, username, password string) error
	// Mail checks the sender of a new transaction.
	Mail(ctx context.Context, c *Conn, env *Envelope) error
	// Rcpt checks one recipient; env holds the recipients accepted so far.
	Rcpt(ctx context.Context, c *Conn, env *Envelope, r Rcpt) error
	// Deliver stores the message. body yields the message with CRLF line
	// endings and Herald's Received header prepended; reading it returns an
	// *smtp.Error if the client's data breaks a rule (bare LF, size, loop).
	// Deliver returns the queue ID only once the message is durable.
	Deliver(ctx context.Context, c *Conn, env *Envelope, body io.Reader) (queueID string, err error)
}
