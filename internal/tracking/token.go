package tracking

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
)

// Token kinds: what a token may be used for. The kind is signed with the
// rest, so an open token cannot be presented as a click token.
const (
	kindOpen  = 'o'
	kindClick = 'c'
)

const (
	tokenVersion = 1
	macLen       = 16 // bytes of HMAC-SHA256 kept: 128 bits
	// Field bounds. A message whose ID or account is longer is not
	// tracked; a recipient that is longer is left out; a longer URL is
	// not rewritten.
	maxAccountLen   = 64
	maxMessageIDLen = 64
	maxRecipientLen = 320
	// MaxURLLen is the longest link rewritten; longer links are left
	// as they are.
	MaxURLLen = 2048
	// MaxTokenLen bounds a token's text: the longest a click token can be
	// (every field at its bound) is about 3,400 characters.
	MaxTokenLen = 4096
)

// macPrefix separates the tracking MAC from any other use of the key.
var macPrefix = []byte("herald tracking token v1\x00")

// claims is what a token says: whose message, which recipient, and for a
// click the URL it leads to.
type claims struct {
	kind      byte
	issued    int64 // Unix seconds: when the message was rewritten
	account   string
	messageID string
	recipient string // "" when the message had several recipients
	url       string // click tokens only
}

var errBadToken = errors.New("tracking: invalid token")

// sign encodes c as a token: base64url (no padding) of version, kind,
// length-prefixed fields and a truncated HMAC-SHA256 over all of it.
func sign(key []byte, c claims) string {
	b := make([]byte, 0, 2+binary.MaxVarintLen64+len(c.account)+len(c.messageID)+len(c.recipient)+len(c.url)+4*binary.MaxVarintLen16+macLen)
	b = append(b, tokenVersion, c.kind)
	b = binary.AppendUvarint(b, uint64(c.issued))
	for _, f := range []string{c.account, c.messageID, c.recipient, c.url} {
		b = binary.AppendUvarint(b, uint64(len(f)))
		b = append(b, f...)
	}
	b = append(b, mac(key, b)...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func mac(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(macPrefix)
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}

// verify decodes a token of the given kind, checking its MAC before
// anything else; it returns the claims and the MAC (the token's identity
// for deduplication). Any change to a token is refused.
func verify(key []byte, tok string, kind byte) (claims, []byte, error) {
	if len(tok) == 0 || len(tok) > MaxTokenLen {
		return claims{}, nil, errBadToken
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(tok)
	// The decoder skips CR and LF: only the canonical spelling is the
	// token, so that one token cannot be written several ways.
	if err != nil || len(b) < 2+4+macLen || base64.RawURLEncoding.EncodeToString(b) != tok {
		return claims{}, nil, errBadToken
	}
	payload, sum := b[:len(b)-macLen], b[len(b)-macLen:]
	if !hmac.Equal(sum, mac(key, payload)) {
		return claims{}, nil, errBadToken
	}
	if payload[0] != tokenVersion || payload[1] != kind {
		return claims{}, nil, errBadToken
	}
	c := claims{kind: kind}
	rest := payload[2:]
	issued, k := binary.Uvarint(rest)
	if k <= 0 || issued > 1<<40 {
		return claims{}, nil, errBadToken
	}
	c.issued, rest = int64(issued), rest[k:]
	for i, f := range []*string{&c.account, &c.messageID, &c.recipient, &c.url} {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) || n > uint64([]int{maxAccountLen, maxMessageIDLen, maxRecipientLen, MaxURLLen}[i]) {
			return claims{}, nil, errBadToken
		}
		*f = string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
	}
	if len(rest) != 0 || c.account == "" || c.messageID == "" || (kind == kindClick) != (c.url != "") {
		return claims{}, nil, errBadToken
	}
	return c, sum, nil
}
