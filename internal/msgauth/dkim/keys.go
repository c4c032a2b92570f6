// Package dkim signs and verifies DKIM signatures (RFC 6376, Ed25519 per
// RFC 8463) for Herald. It wraps github.com/emersion/go-msgauth/dkim, adding
// key generation and DNS records, a streaming signer that signs with every
// active key of a domain (RSA and Ed25519 side by side), the header list a
// mail administrator expects with From over-signed, and verification results
// in RFC 8601 words with DNS failures split into temperror and permerror.
package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/heraldmail/herald/internal/smtp"
)

// Key algorithms, as stored with a key ("rsa" or "ed25519").
const (
	AlgorithmRSA     = "rsa"
	AlgorithmEd25519 = "ed25519"
)

// RSABits is the size of generated RSA keys.
const RSABits = 2048

// GenerateKey creates a private key for algorithm AlgorithmRSA
// (2048 bits) or AlgorithmEd25519 and returns it as PKCS#8 PEM.
func GenerateKey(algorithm string) ([]byte, error) {
	var key any
	switch algorithm {
	case AlgorithmRSA:
		k, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate RSA key: %w", err)
		}
		key = k
	case AlgorithmEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate Ed25519 key: %w", err)
		}
		key = k
	default:
		return nil, fmt.Errorf("dkim: unknown key algorithm %q (want rsa or ed25519)", algorithm)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("dkim: encode %s key: %w", algorithm, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParsePrivateKey decodes a PKCS#8 PEM private key and returns it with its
// algorithm ("rsa" or "ed25519"). RSA keys under 1024 bits are refused,
// as verifiers ignore their signatures (RFC 8301).
func ParsePrivateKey(privPEM []byte) (crypto.Signer, string, error) {
	block, _ := pem.Decode(privPEM)
	if block == nil {
		return nil, "", errors.New("dkim: private key: no PEM block")
	}
	if block.Type != "PRIVATE KEY" {
		return nil, "", fmt.Errorf("dkim: private key: PEM type %q, want PRIVATE KEY (PKCS#8)", block.Type)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("dkim: private key: %w", err)
	}
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 1024 {
			return nil, "", fmt.Errorf("dkim: private key: RSA key of %d bits is too short", k.N.BitLen())
		}
		return k, AlgorithmRSA, nil
	case ed25519.PrivateKey:
		return k, AlgorithmEd25519, nil
	default:
		return nil, "", fmt.Errorf("dkim: private key: unsupported type %T", key)
	}
}

// parsedKey is a decoded private key and its algorithm.
type parsedKey struct {
	signer crypto.Signer
	algo   string
}

// keyCache keeps decoded private keys by PEM text: decoding an RSA key costs
// more than signing a small message with it. Keys rotate rarely, so the
// cache is simply emptied when it grows past maxCachedKeys.
var keyCache struct {
	sync.Mutex
	m map[string]parsedKey
}

const maxCachedKeys = 256

// cachedKey returns the decoded private key of privPEM.
func cachedKey(privPEM []byte) (parsedKey, error) {
	keyCache.Lock()
	k, ok := keyCache.m[string(privPEM)]
	keyCache.Unlock()
	if ok {
		return k, nil
	}
	signer, algo, err := ParsePrivateKey(privPEM)
	if err != nil {
		return parsedKey{}, err
	}
	k = parsedKey{signer: signer, algo: algo}
	keyCache.Lock()
	if keyCache.m == nil || len(keyCache.m) >= maxCachedKeys {
		keyCache.m = make(map[string]parsedKey)
	}
	keyCache.m[string(privPEM)] = k
	keyCache.Unlock()
	return k, nil
}

// DNSRecord returns the TXT record publishing the public half of privPEM:
// its owner name with a trailing dot ("s1._domainkey.example.com.") and its
// value ("v=DKIM1; k=rsa; p=MIIB..."). RSA keys are published as
// SubjectPublicKeyInfo, Ed25519 keys as the raw 32 bytes (RFC 8463).
func DNSRecord(domain, selector string, privPEM []byte) (name, value string, err error) {
	d, err := smtp.NormalizeDomain(domain)
	if err != nil || strings.HasPrefix(d, "[") {
		return "", "", fmt.Errorf("dkim: invalid domain %q", domain)
	}
	sel := strings.ToLower(selector)
	if !validSelector(sel) {
		return "", "", fmt.Errorf("dkim: invalid selector %q", selector)
	}
	signer, algo, err := ParsePrivateKey(privPEM)
	if err != nil {
		return "", "", err
	}
	var pub []byte
	switch algo {
	case AlgorithmRSA:
		pub, err = x509.MarshalPKIXPublicKey(signer.Public())
		if err != nil {
			return "", "", fmt.Errorf("dkim: encode public key: %w", err)
		}
	case AlgorithmEd25519:
		pub = signer.Public().(ed25519.PublicKey)
	}
	return sel + "._domainkey." + d + ".", "v=DKIM1; k=" + algo + "; p=" + base64.StdEncoding.EncodeToString(pub), nil
}

// ValidSelector reports whether s is a usable selector: dot-separated
// labels of letters, digits, hyphens and underscores.
func ValidSelector(s string) bool { return validSelector(s) }

func validSelector(s string) bool {
	return len(s) <= 63*2 && smtp.ValidHostname(s)
}

// maxTXTString is the longest character-string of a TXT record (RFC 1035).
const maxTXTString = 255

// FormatZoneLine returns the TXT record as one zone-file line: the value is
// split into quoted strings of at most 255 bytes each, which resolvers join
// back into one value.
//
//	s1._domainkey.example.com. IN TXT ( "v=DKIM1; k=rsa; p=MIIB..." "...AQAB" )
func FormatZoneLine(name, value string) string {
	var b strings.Builder
	b.WriteString(name)
	b.WriteString(" IN TXT (")
	for len(value) > 0 {
		n := min(len(value), maxTXTString)
		b.WriteString(` "`)
		for i := 0; i < n; i++ {
			if c := value[i]; c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(value[i])
		}
		b.WriteByte('"')
		value = value[n:]
	}
	b.WriteString(" )")
	return b.String()
}
