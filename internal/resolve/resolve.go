// Package resolve is Herald's view of DNS: MX, address, TXT, PTR and TLSA
// lookups with a clear split between "does not exist" (permanent) and
// temporary failures, asked of a configurable server.
package resolve

import (
	"context"
	"errors"
	"net/netip"
)

// ErrNotFound means the name does not exist (NXDOMAIN) or has no records of
// the asked type (NODATA). It is a permanent answer.
var ErrNotFound = errors.New("dns: no such record")

// ErrTemporary wraps failures that may succeed later (timeouts, SERVFAIL).
var ErrTemporary = errors.New("dns: temporary failure")

// MX is one mail exchanger.
type MX struct {
	Host string // lower-case, no trailing dot; "" (".") for a null MX
	Pref uint16
}

// Resolver answers DNS questions. Implementations must return errors that
// wrap ErrNotFound or ErrTemporary so callers can classify them.
type Resolver interface {
	LookupMX(ctx context.Context, domain string) ([]MX, error)
	LookupIP(ctx context.Context, host string) ([]netip.Addr, error) // A and AAAA
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupPTR(ctx context.Context, addr netip.Addr) ([]string, error)
}
