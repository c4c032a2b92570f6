// Package unsubscribe is one-click unsubscribe (RFC 8058, RFC 2369): the
// signed tokens of the List-Unsubscribe links Herald puts into mail, the
// key they are signed with (a store secret every node shares), and the
// public handler of GET and POST /unsubscribe/{token}, which records the
// recipient's suppression (globally or in the message's unsubscribe
// group) with an "unsubscribed" event.
package unsubscribe

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/heraldmail/herald/internal/store"
)

// KeySecret is the name of the store secret holding the token key.
const KeySecret = "unsubscribe"

// keyLen is the length of the token key.
const keyLen = 32

// LoadKey returns the key every node signs and checks tokens with: the
// store's secret KeySecret, made on first use (the first node to store
// one wins; the others read it).
func LoadKey(ctx context.Context, st store.Secrets) ([]byte, error) {
	initial := make([]byte, keyLen)
	if _, err := rand.Read(initial); err != nil {
		return nil, fmt.Errorf("unsubscribe key: %w", err)
	}
	key, err := st.Secret(ctx, KeySecret, initial)
	if err != nil {
		return nil, fmt.Errorf("unsubscribe key: %w", err)
	}
	if len(key) < keyLen {
		return nil, fmt.Errorf("unsubscribe key in the store is %d bytes, want %d", len(key), keyLen)
	}
	return key, nil
}

// Token is what a link says: whose list the recipient leaves.
type Token struct {
	Account   string
	Recipient string // lower-cased address
	Group     string // unsubscribe group; "" all mail of the account
	MessageID string // queue ID of the message that carried the link
}

// Token layout, before base64url (no padding): version byte, then each
// field as a uvarint length and its bytes, then the first macLen bytes of
// HMAC-SHA256(key, context || everything before). 128 bits of MAC are far
// beyond what an online guesser can try.
const (
	tokenVersion = 1
	macLen       = 16
	// maxField bounds each field when signing and parsing.
	maxField = 512
	// MaxTokenLen bounds an encoded token: four maximal fields and the MAC.
	MaxTokenLen = (1 + 4*(2+maxField) + macLen + 2) * 4 / 3
)

var macContext = []byte("herald unsubscribe token v1\x00")

// ErrInvalid is returned for every token that is not authentic: malformed,
// altered, or signed with another key. Callers must not tell these apart
// to the client.
var ErrInvalid = errors.New("invalid unsubscribe token")

// Sign returns the token for t, signed with key.
func Sign(key []byte, t Token) (string, error) {
	t.Recipient = strings.ToLower(t.Recipient)
	var b bytes.Buffer
	b.WriteByte(tokenVersion)
	for _, f := range []string{t.Account, t.Recipient, t.Group, t.MessageID} {
		if len(f) > maxField {
			return "", fmt.Errorf("unsubscribe token: a field is longer than %d bytes", maxField)
		}
		b.Write(binary.AppendUvarint(nil, uint64(len(f))))
		b.WriteString(f)
	}
	if t.Account == "" || t.Recipient == "" {
		return "", errors.New("unsubscribe token: account and recipient are required")
	}
	b.Write(mac(key, b.Bytes()))
	return base64.RawURLEncoding.EncodeToString(b.Bytes()), nil
}

// Verify checks s and returns its token, or ErrInvalid.
func Verify(key []byte, s string) (Token, error) {
	if len(s) == 0 || len(s) > MaxTokenLen {
		return Token{}, ErrInvalid
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(s)
	// The decoder skips CR and LF: only the canonical spelling is the
	// token, so that one token cannot be written several ways.
	if err != nil || len(raw) < 1+4+macLen || base64.RawURLEncoding.EncodeToString(raw) != s {
		return Token{}, ErrInvalid
	}
	body, sum := raw[:len(raw)-macLen], raw[len(raw)-macLen:]
	if !hmac.Equal(sum, mac(key, body)) {
		return Token{}, ErrInvalid
	}
	// Authentic: only this code wrote it, but parse defensively anyway.
	if body[0] != tokenVersion {
		return Token{}, ErrInvalid
	}
	rest := body[1:]
	var fields [4]string
	for i := range fields {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > maxField || uint64(len(rest)-k) < n {
			return Token{}, ErrInvalid
		}
		fields[i] = string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
	}
	if len(rest) != 0 || fields[0] == "" || fields[1] == "" {
		return Token{}, ErrInvalid
	}
	return Token{Account: fields[0], Recipient: fields[1], Group: fields[2], MessageID: fields[3]}, nil
}

func mac(key, body []byte) []byte {
	h := hmac.New(sha256.New, key)
	h.Write(macContext)
	h.Write(body)
	return h.Sum(nil)[:macLen]
}

// Links makes the List-Unsubscribe header fields of messages.
type Links struct {
	Key     []byte
	BaseURL string // platform.public_url, without a trailing slash
}

// Headers returns the values of List-Unsubscribe and
// List-Unsubscribe-Post for a message to one recipient.
func (l *Links) Headers(account, recipient, group, messageID string) (listUnsubscribe, listUnsubscribePost string, err error) {
	tok, err := Sign(l.Key, Token{Account: account, Recipient: recipient, Group: group, MessageID: messageID})
	if err != nil {
		return "", "", err
	}
	return "<" + strings.TrimSuffix(l.BaseURL, "/") + Path + tok + ">", "List-Unsubscribe=One-Click", nil
}

// Path is where the handler is mounted; the token follows it.
const Path = "/unsubscribe/"
