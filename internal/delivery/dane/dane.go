// Package dane implements DANE for SMTP (RFC 7672): it looks up the TLSA
// records of an MX host through a DNSSEC-validating resolver and checks a
// server's certificate chain against them. Only usages DANE-TA(2) and
// DANE-EE(3), selectors Cert(0) and SPKI(1) and matching types Full(0),
// SHA2-256(1) and SHA2-512(2) are usable; PKIX usages 0 and 1 are not
// (RFC 7672 §3.1.3).
package dane

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
)

// TLSA certificate usages, selectors and matching types used by SMTP.
const (
	UsageDANETA  = 2
	UsageDANEEE  = 3
	SelectorCert = 0
	SelectorSPKI = 1
	MatchFull    = 0
	MatchSHA256  = 1
	MatchSHA512  = 2
)

// State is what the TLSA lookup for one host means for delivery.
type State int

// States of a host's DANE status.
const (
	// None: no secure TLSA records; DANE does not apply.
	None State = iota
	// Authenticated: usable TLSA records; STARTTLS is required and the
	// certificate chain must match one of them.
	Authenticated
	// Unusable: secure TLSA records exist but none is usable; STARTTLS is
	// required without authentication (RFC 7672 §2.2).
	Unusable
	// Failed: the TLSA lookup failed for a host whose address records are
	// DNSSEC-signed; the host must not be used now (RFC 7672 §2.2.1).
	Failed
)

// Policy is the DANE outcome for one host.
type Policy struct {
	State   State
	Records []resolve.TLSA // usable records (Authenticated)
	All     []resolve.TLSA // every record found, for reports
	Err     error          // the lookup failure (Failed)
}

// Lookup finds the DANE policy of host:port. Only answers with the AD bit
// count; anything else means State None.
func Lookup(ctx context.Context, r resolve.TLSAResolver, host string, port int) Policy {
	name := "_" + strconv.Itoa(port) + "._tcp." + strings.TrimSuffix(host, ".")
	recs, secure, err := r.LookupTLSA(ctx, name)
	switch {
	case errors.Is(err, resolve.ErrNotFound):
		return Policy{State: None}
	case err != nil:
		// A bogus or unreachable answer. If the host's addresses are
		// signed, the TLSA records might exist: do not use the host.
		if hs, herr := r.HostSecure(ctx, host); herr == nil && hs {
			return Policy{State: Failed, Err: fmt.Errorf("dane: TLSA lookup for %s failed: %w", name, err)}
		}
		return Policy{State: None}
	case !secure || len(recs) == 0:
		return Policy{State: None}
	}
	usable := Usable(recs)
	if len(usable) == 0 {
		return Policy{State: Unusable, All: recs}
	}
	return Policy{State: Authenticated, Records: usable, All: recs}
}

// Usable returns the records SMTP clients can use (RFC 7672 §3.1).
func Usable(recs []resolve.TLSA) []resolve.TLSA {
	var out []resolve.TLSA
	for _, r := range recs {
		if (r.Usage == UsageDANETA || r.Usage == UsageDANEEE) &&
			r.Selector <= SelectorSPKI && r.MatchingType <= MatchSHA512 && len(r.Data) > 0 {
			out = append(out, r)
		}
	}
	return out
}

// ErrNoMatch is returned by Verify when no record matches the chain.
var ErrNoMatch = errors.New("dane: no TLSA record matches the certificate chain")

// Verify checks chain (leaf first, as presented by the server) against the
// usable records for MX host. DANE-EE matches the leaf alone, without name
// or expiry checks (RFC 7672 §3.1.1); DANE-TA matches a certificate of the
// chain above the leaf, which must then issue the leaf (directly or through
// the presented intermediates) for host (RFC 7672 §3.1.2). It returns nil on
// the first match.
func Verify(recs []resolve.TLSA, chain []*x509.Certificate, host string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("dane: no certificate presented")
	}
	var taErr error
	for _, r := range recs {
		switch r.Usage {
		case UsageDANEEE:
			if Match(r, chain[0]) {
				return nil
			}
		case UsageDANETA:
			for i, ca := range chain[1:] {
				if !Match(r, ca) {
					continue
				}
				roots := x509.NewCertPool()
				roots.AddCert(ca)
				inter := x509.NewCertPool()
				for _, c := range chain[1 : i+1] {
					inter.AddCert(c)
				}
				_, err := chain[0].Verify(x509.VerifyOptions{
					DNSName: strings.TrimSuffix(host, "."), Roots: roots, Intermediates: inter, CurrentTime: now,
				})
				if err == nil {
					return nil
				}
				taErr = fmt.Errorf("dane: trust anchor matched but the chain does not verify: %w", err)
			}
		}
	}
	if taErr != nil {
		return taErr
	}
	return ErrNoMatch
}

// Match reports whether cert matches the selector and matching type of r.
func Match(r resolve.TLSA, cert *x509.Certificate) bool {
	var data []byte
	switch r.Selector {
	case SelectorCert:
		data = cert.Raw
	case SelectorSPKI:
		data = cert.RawSubjectPublicKeyInfo
	default:
		return false
	}
	switch r.MatchingType {
	case MatchFull:
	case MatchSHA256:
		h := sha256.Sum256(data)
		data = h[:]
	case MatchSHA512:
		h := sha512.Sum512(data)
		data = h[:]
	default:
		return false
	}
	return bytes.Equal(data, r.Data)
}

// Association computes the TLSA association data of cert for selector and
// matching type, e.g. to publish a "3 1 1" record.
func Association(cert *x509.Certificate, selector, matchingType uint8) []byte {
	var data []byte
	if selector == SelectorSPKI {
		data = cert.RawSubjectPublicKeyInfo
	} else {
		data = cert.Raw
	}
	switch matchingType {
	case MatchSHA256:
		h := sha256.Sum256(data)
		return h[:]
	case MatchSHA512:
		h := sha512.Sum512(data)
		return h[:]
	}
	return append([]byte(nil), data...)
}
