package arc

import (
	"context"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/heraldmail/herald/internal/resolve"
)

// RSA key sizes accepted, in bits (RFC 8301: at least 1024).
const (
	minRSABits = 1024
	maxRSABits = 8192
)

// errTempKey marks a key lookup that failed for a temporary reason.
var errTempKey = errors.New("temporary DNS failure")

// pubKey is a parsed key record: an *rsa.PublicKey or ed25519.PublicKey.
type pubKey struct {
	key any
}

type keyEntry struct {
	key pubKey
	err error
}

// keyCache looks keys up once per Verify call.
type keyCache struct {
	lookup LookupTXT
	seen   map[string]keyEntry
}

// get returns the key of selector s in domain d. Errors wrap errTempKey
// when the lookup failed temporarily; ctx errors are returned as they are.
func (c *keyCache) get(ctx context.Context, d, s string) (pubKey, error) {
	name := strings.ToLower(s + "._domainkey." + d)
	if e, ok := c.seen[name]; ok {
		return e.key, e.err
	}
	k, err := c.fetch(ctx, name)
	if ctx.Err() == nil {
		c.seen[name] = keyEntry{k, err}
	}
	return k, err
}

func (c *keyCache) fetch(ctx context.Context, name string) (pubKey, error) {
	txts, err := c.lookup(ctx, name)
	if err != nil {
		if ctx.Err() != nil {
			return pubKey{}, ctx.Err()
		}
		if isTemporary(err) {
			return pubKey{}, fmt.Errorf("key %s: %w: %w", name, errTempKey, err)
		}
		return pubKey{}, fmt.Errorf("key %s: %w", name, err)
	}
	if len(txts) == 0 {
		return pubKey{}, fmt.Errorf("key %s: no TXT record", name)
	}
	var firstErr error
	for _, txt := range txts {
		k, err := parseKeyRecord(txt)
		if err == nil {
			return k, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return pubKey{}, fmt.Errorf("key %s: %w", name, firstErr)
}

// isTemporary classifies a lookup error: resolve.ErrTemporary, or a
// net.DNSError that is a timeout or temporary.
func isTemporary(err error) bool {
	if errors.Is(err, resolve.ErrTemporary) {
		return true
	}
	if errors.Is(err, resolve.ErrNotFound) {
		return false
	}
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.IsTimeout || de.IsTemporary
	}
	return false
}

// parseKeyRecord parses a DKIM key record (RFC 6376 §3.6.1, RFC 8463).
func parseKeyRecord(txt string) (pubKey, error) {
	tags, err := parseTags(txt)
	if err != nil {
		return pubKey{}, fmt.Errorf("key record: %w", err)
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return pubKey{}, fmt.Errorf("key record: version %.10q", v)
	}
	if h, ok := tags["h"]; ok && !listHas(h, "sha256") {
		return pubKey{}, errors.New("key record: h= excludes sha256")
	}
	if s, ok := tags["s"]; ok && !listHas(s, "email") && !listHas(s, "*") {
		return pubKey{}, errors.New("key record: service type excludes email")
	}
	p, ok := tags["p"]
	if !ok {
		return pubKey{}, errors.New("key record: no p=")
	}
	if removeFWS(p) == "" {
		return pubKey{}, errors.New("key revoked (empty p=)")
	}
	der, err := decodeB64(p)
	if err != nil {
		return pubKey{}, fmt.Errorf("key record p=: %w", err)
	}
	k := tags["k"]
	if k == "" {
		k = "rsa"
	}
	switch k {
	case "rsa":
		var pub *rsa.PublicKey
		if parsed, err := x509.ParsePKIXPublicKey(der); err == nil {
			var isRSA bool
			if pub, isRSA = parsed.(*rsa.PublicKey); !isRSA {
				return pubKey{}, errors.New("key record: k=rsa but key is not RSA")
			}
		} else if pub, err = x509.ParsePKCS1PublicKey(der); err != nil {
			return pubKey{}, fmt.Errorf("key record: parse RSA key: %w", err)
		}
		if n := pub.N.BitLen(); n < minRSABits || n > maxRSABits {
			return pubKey{}, fmt.Errorf("key record: RSA key of %d bits", n)
		}
		return pubKey{pub}, nil
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return pubKey{}, fmt.Errorf("key record: ed25519 key of %d bytes", len(der))
		}
		return pubKey{ed25519.PublicKey(der)}, nil
	default:
		return pubKey{}, fmt.Errorf("key record: unknown key type %.20q", k)
	}
}

// listHas reports whether a colon-separated tag list contains want.
func listHas(list, want string) bool {
	for _, e := range strings.Split(list, ":") {
		if strings.EqualFold(strings.Trim(e, " \t\r\n"), want) {
			return true
		}
	}
	return false
}
