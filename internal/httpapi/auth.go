package httpapi

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Token format: "hk_" + 12 lower-case base32 characters (the key ID, public
// and stored) + "_" + 43 base64url characters (the 32-byte secret, of which
// only the SHA-256 is stored).
const (
	tokenPrefix = "hk_"
	keyIDLen    = 12
	secretLen   = 32
)

var (
	idEncoding     = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)
	secretEncoding = base64.RawURLEncoding
)

// ErrMalformedToken is returned by ParseToken for a string that is not a
// Herald API token.
var ErrMalformedToken = errors.New("malformed API token")

// NewToken returns a new API token, its key ID and the SHA-256 of its secret
// (what the store keeps in APIKey.SecretHash). The token is shown once.
func NewToken() (token, id string, hash []byte) {
	id = randomID(keyIDLen)
	var secret [secretLen]byte
	_, _ = rand.Read(secret[:]) // crypto/rand.Read never fails (Go 1.24+)
	h := sha256.Sum256(secret[:])
	return tokenPrefix + id + "_" + secretEncoding.EncodeToString(secret[:]), id, h[:]
}

// ParseToken splits a token into its key ID and secret.
func ParseToken(token string) (id string, secret []byte, err error) {
	rest, ok := strings.CutPrefix(token, tokenPrefix)
	if !ok || len(rest) != keyIDLen+1+secretEncoding.EncodedLen(secretLen) || rest[keyIDLen] != '_' {
		return "", nil, ErrMalformedToken
	}
	id = rest[:keyIDLen]
	if _, err := idEncoding.DecodeString(id); err != nil {
		return "", nil, ErrMalformedToken
	}
	secret, err = secretEncoding.DecodeString(rest[keyIDLen+1:])
	if err != nil || len(secret) != secretLen {
		return "", nil, ErrMalformedToken
	}
	return id, secret, nil
}

// randomID returns n random lower-case base32 characters.
func randomID(n int) string {
	b := make([]byte, (n*5+7)/8)
	_, _ = rand.Read(b)
	return idEncoding.EncodeToString(b)[:n]
}

// ValidScope reports whether s is a known API key scope.
func ValidScope(s string) bool {
	return s == store.ScopeSend || s == store.ScopeRead || s == store.ScopeAdmin
}

// caller is the authenticated key of a request.
type caller struct {
	key store.APIKey
}

// account is the caller's account; never "" (which would mean every
// account to the store's admin views).
func (c *caller) account() string { return accountOf(c.key.Account) }

func (c *caller) has(scope string) bool {
	return slices.Contains(c.key.Scopes, store.ScopeAdmin) || slices.Contains(c.key.Scopes, scope)
}

// isOperator reports whether the key may manage every account.
func (c *caller) isOperator() bool {
	return accountOf(c.key.Account) == store.DefaultAccount && slices.Contains(c.key.Scopes, store.ScopeAdmin)
}

func (c *caller) allow(a access) error {
	ok := false
	switch a {
	case public:
		ok = true
	case needSend:
		ok = c.has(store.ScopeSend)
	case needRead:
		ok = c.has(store.ScopeRead)
	case needAdmin:
		ok = c.has(store.ScopeAdmin)
	case operator:
		ok = c.isOperator()
	}
	if ok {
		return nil
	}
	if a == operator {
		return errForbidden("this endpoint needs an operator key (admin scope of the default account)")
	}
	return errForbidden("this API key lacks the scope this endpoint needs")
}

var errUnauthorized = &Error{Status: http.StatusUnauthorized, Code: "unauthorized", Message: "missing or invalid API key: send Authorization: Bearer hk_..."}

// touchEvery throttles the LastUsed updates to one write per key a minute.
const touchEvery = time.Minute

// authenticate checks the bearer token of r.
func (a *api) authenticate(r *http.Request) (*caller, error) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, errUnauthorized
	}
	id, secret, err := ParseToken(strings.TrimSpace(token))
	if err != nil {
		return nil, errUnauthorized
	}
	k, err := a.p.GetAPIKey(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errUnauthorized
	}
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(sum[:], k.SecretHash) != 1 {
		return nil, errUnauthorized
	}
	if now := a.clock.Now(); now.Sub(k.LastUsed) >= touchEvery {
		if err := a.p.TouchAPIKey(r.Context(), id, now); err != nil {
			a.log.Warn("http api: recording key use", "key", id, "err", err)
		}
	}
	return &caller{key: k}, nil
}
