// Package auth checks the credentials of users who submit mail: password
// hashing (argon2id, with bcrypt accepted for imported accounts) and a SASL
// LOGIN server mechanism for go-smtp.
package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2id parameters used for new hashes. They follow the OWASP minimum for
// argon2id (19 MiB, 2 passes, 1 lane): one check costs a few tens of
// milliseconds on one core, cheap enough for a mail server that sees bursts
// of logins and expensive enough to slow down an offline attack.
const (
	ArgonMemory  = 19456 // KiB
	ArgonTime    = 2
	ArgonThreads = 1
	argonKeyLen  = 32
	argonSaltLen = 16
)

// Bounds on the parameters accepted from a stored hash, so that a corrupt or
// hostile hash cannot make a check allocate gigabytes or run for minutes.
const (
	maxArgonMemory = 256 << 10 // KiB (256 MiB)
	maxArgonTime   = 64
	maxArgonKeyLen = 128
	// MaxPasswordLen is the longest password accepted; longer ones never match.
	MaxPasswordLen = 1024
)

// ErrUnknownHash is returned by CheckPassword for a hash in a format it does
// not know or with parameters out of bounds.
var ErrUnknownHash = errors.New("auth: unknown or malformed password hash")

// ErrPasswordTooLong is returned by HashPassword for a password longer than
// MaxPasswordLen bytes.
var ErrPasswordTooLong = errors.New("auth: password too long")

var b64 = base64.RawStdEncoding

// HashPassword hashes pw with argon2id and a random salt, returning it in the
// PHC string format: $argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>.
func HashPassword(pw string) (string, error) {
	if len(pw) > MaxPasswordLen {
		return "", ErrPasswordTooLong
	}
	salt := make([]byte, argonSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: reading salt: %w", err)
	}
	key := argon2.IDKey([]byte(pw), salt, ArgonTime, ArgonMemory, ArgonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s",
		argon2.Version, ArgonMemory, ArgonTime, ArgonThreads, b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// CheckPassword reports whether pw matches hash. It accepts argon2id hashes
// in PHC format and bcrypt hashes ($2a$, $2b$, $2y$). The comparison is in
// constant time. A wrong password is (false, nil); an error means the hash
// itself is unusable (ErrUnknownHash).
func CheckPassword(hash, pw string) (bool, error) {
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		return checkArgon2id(hash, pw)
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		if len(pw) > MaxPasswordLen {
			return false, nil
		}
		err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw))
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, bcrypt.ErrMismatchedHashAndPassword), errors.Is(err, bcrypt.ErrPasswordTooLong):
			return false, nil
		default:
			return false, fmt.Errorf("%w: bcrypt: %v", ErrUnknownHash, err)
		}
	default:
		return false, ErrUnknownHash
	}
}

type argonParams struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

func parseArgon2id(hash string) (argonParams, error) {
	var p argonParams
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	f := strings.Split(hash, "$")
	if len(f) != 6 || f[0] != "" || f[1] != "argon2id" {
		return p, ErrUnknownHash
	}
	if f[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, fmt.Errorf("%w: argon2 version %q", ErrUnknownHash, f[2])
	}
	var seen [3]bool
	for _, kv := range strings.Split(f[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return p, ErrUnknownHash
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return p, ErrUnknownHash
		}
		switch k {
		case "m":
			p.memory, seen[0] = uint32(n), true
		case "t":
			p.time, seen[1] = uint32(n), true
		case "p":
			if n > 255 {
				return p, ErrUnknownHash
			}
			p.threads, seen[2] = uint8(n), true
		default:
			return p, ErrUnknownHash
		}
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return p, ErrUnknownHash
	}
	if p.time < 1 || p.time > maxArgonTime || p.threads < 1 ||
		p.memory < 8*uint32(p.threads) || p.memory > maxArgonMemory {
		return p, fmt.Errorf("%w: argon2id parameters out of bounds", ErrUnknownHash)
	}
	var err error
	if p.salt, err = b64.DecodeString(f[4]); err != nil || len(p.salt) < 8 {
		return p, ErrUnknownHash
	}
	if p.key, err = b64.DecodeString(f[5]); err != nil || len(p.key) < 16 || len(p.key) > maxArgonKeyLen {
		return p, ErrUnknownHash
	}
	return p, nil
}

func checkArgon2id(hash, pw string) (bool, error) {
	p, err := parseArgon2id(hash)
	if err != nil {
		return false, err
	}
	if len(pw) > MaxPasswordLen {
		// Still spend the time so length does not show in the timing.
		argon2.IDKey(nil, p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
		return false, nil
	}
	got := argon2.IDKey([]byte(pw), p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
	return subtle.ConstantTimeCompare(got, p.key) == 1, nil
}

var dummyHash = sync.OnceValue(func() string {
	h, err := HashPassword("herald dummy password")
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		panic(fmt.Sprintf("auth: building dummy hash: %v", err))
	}
	return h
})

// DummyCheck spends as much time as checking a password against a hash made
// by HashPassword. Call it when the user is unknown, so that the answer time
// does not tell whether an account exists.
func DummyCheck() {
	_, _ = CheckPassword(dummyHash(), "not the password")
}
