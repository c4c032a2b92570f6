// Package verp builds and reads VERP envelope senders (variable envelope
// return paths): "bounces+TOKEN@domain", where TOKEN carries a queue ID and a
// recipient ID authenticated with a truncated HMAC-SHA256, so that a bounce
// arriving later is matched to the message and recipient it is about, and a
// forged bounce is not.
//
// TOKEN is the lower-case, unpadded base32 encoding of
//
//	varint(rcptID) || msgID || HMAC-SHA256(key, varint(rcptID) || msgID)[:8]
//
// Decoding is case-insensitive, since some MTAs lower- or upper-case local
// parts. The whole local part is at most 64 characters (RFC 5321 §4.5.3.1.1),
// which leaves room for message IDs of up to MaxIDLen bytes.
package verp

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
)

const (
	// Prefix starts the local part of every VERP address, before the "+".
	Prefix = "bounces"
	// KeySize is the size of the key made by NewKey.
	KeySize = 32
	// MaxLocalLen is the longest local part Encode produces.
	MaxLocalLen = 64
	// MaxIDLen is the longest message ID Encode accepts for recipient IDs
	// below 2^20 (3 varint bytes); larger recipient IDs leave less room.
	MaxIDLen = maxTokenBytes - macLen - 3

	macLen        = 8
	sep           = "+"
	maxTokenChars = MaxLocalLen - len(Prefix) - len(sep) // 56
	maxTokenBytes = maxTokenChars * 5 / 8                // 35
	minTokenBytes = 1 + 1 + macLen                       // varint, one ID byte, MAC
)

var enc = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Encode returns the VERP address for recipient rcptID of queue message msgID
// at domain: "bounces+TOKEN@domain". It returns "" when msgID is empty or too
// long for the token to fit in a 64-character local part (see MaxIDLen).
func Encode(key []byte, msgID string, rcptID int64, domain string) string {
	if msgID == "" {
		return ""
	}
	payload := binary.AppendVarint(nil, rcptID)
	payload = append(payload, msgID...)
	if len(payload)+macLen > maxTokenBytes {
		return ""
	}
	token := append(payload, sum(key, payload)...)
	return Prefix + sep + enc.EncodeToString(token) + "@" + domain
}

// Decode parses a VERP address (or a bare local part) made by Encode with the
// same key and returns the message ID and recipient ID it carries. ok is
// false when the address is not a VERP address, is malformed, or its MAC does
// not verify (a forged or altered token). Case is ignored.
func Decode(key []byte, address string) (msgID string, rcptID int64, ok bool) {
	token, found := tokenOf(localPart(address))
	if !found {
		return "", 0, false
	}
	payload, mac := token[:len(token)-macLen], token[len(token)-macLen:]
	if !hmac.Equal(mac, sum(key, payload)) {
		return "", 0, false
	}
	rcptID, n := binary.Varint(payload)
	if n <= 0 || n >= len(payload) {
		return "", 0, false
	}
	return string(payload[n:]), rcptID, true
}

// IsVERP reports whether local (a local part, or a whole address) has the
// shape of a VERP address: the "bounces+" prefix (any case) and a
// well-formed token. It does not verify the MAC; use Decode for that.
func IsVERP(local string) bool {
	_, ok := tokenOf(localPart(local))
	return ok
}

// localPart returns the part of addr before its last "@", without angle
// brackets; addr without "@" is returned as is.
func localPart(addr string) string {
	addr = strings.TrimSpace(addr)
	addr = strings.TrimPrefix(addr, "<")
	addr = strings.TrimSuffix(addr, ">")
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		addr = addr[:i]
	}
	return addr
}

// tokenOf decodes the token of a VERP local part.
func tokenOf(local string) ([]byte, bool) {
	if len(local) > MaxLocalLen || len(local) <= len(Prefix)+len(sep) {
		return nil, false
	}
	if !strings.EqualFold(local[:len(Prefix)+len(sep)], Prefix+sep) {
		return nil, false
	}
	text := strings.ToLower(local[len(Prefix)+len(sep):])
	token, err := enc.DecodeString(text)
	if err != nil || len(token) < minTokenBytes {
		return nil, false
	}
	if enc.EncodeToString(token) != text {
		return nil, false // non-zero trailing bits: not a token Encode made
	}
	return token, true
}

func sum(key, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	return m.Sum(nil)[:macLen]
}

// NewKey returns a new random key of KeySize bytes.
func NewKey() ([]byte, error) {
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("verp: generating key: %w", err)
	}
	return key, nil
}

// CheckKey reports whether key can authenticate tokens: KeySize bytes, not
// all zeros.
func CheckKey(key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("verp: key has %d bytes, want %d", len(key), KeySize)
	}
	if bytes.Equal(key, make([]byte, KeySize)) {
		return errors.New("verp: key is all zeros")
	}
	return nil
}

// ReadKey reads a key file, as Herald kept the key before the store held
// it (DATA_DIR/verp.key): KeySize raw bytes. A missing file is an error
// wrapping fs.ErrNotExist.
func ReadKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("verp: reading key: %w", err)
	}
	if err := CheckKey(b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}
