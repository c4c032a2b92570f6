package dnscheck

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
)

// dkimPublic derives the public key of a stored key and the p= value to
// publish: base64 SubjectPublicKeyInfo DER for RSA, the raw 32 bytes for
// Ed25519 (RFC 8463).
func dkimPublic(k store.DKIMKey) (crypto.PublicKey, string, error) {
	block, _ := pem.Decode(k.PrivateKey)
	if block == nil {
		return nil, "", errors.New("private key is not PEM")
	}
	priv, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, "", fmt.Errorf("parse private key: %w", err)
	}
	switch p := priv.(type) {
	case *rsa.PrivateKey:
		der, err := x509.MarshalPKIXPublicKey(&p.PublicKey)
		if err != nil {
			return nil, "", fmt.Errorf("encode public key: %w", err)
		}
		return &p.PublicKey, base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PrivateKey:
		pub := p.Public().(ed25519.PublicKey)
		return pub, base64.StdEncoding.EncodeToString(pub), nil
	}
	return nil, "", fmt.Errorf("unsupported private key type %T", priv)
}

// parseTags parses a "tag=value; tag=value" record (DKIM, DMARC, MTA-STS
// and TLS-RPT share this syntax). Tag names are lower-cased; a repeated
// tag is an error.
func parseTags(s string) (map[string]string, []string, error) {
	tags := map[string]string{}
	var order []string
	for part := range strings.SplitSeq(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, nil, fmt.Errorf("%q is not tag=value", part)
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if _, dup := tags[k]; dup {
			return nil, nil, fmt.Errorf("tag %s appears twice", k)
		}
		tags[k] = strings.TrimSpace(v)
		order = append(order, k)
	}
	return tags, order, nil
}

// dkimRecordKey parses a DKIM key record and returns its key type and
// decoded public key bytes.
func dkimRecordKey(txt string) (string, []byte, error) {
	tags, _, err := parseTags(txt)
	if err != nil {
		return "", nil, err
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return "", nil, fmt.Errorf("v=%s, want DKIM1", v)
	}
	kt := strings.ToLower(tags["k"])
	if kt == "" {
		kt = "rsa"
	}
	p, ok := tags["p"]
	if !ok {
		return "", nil, errors.New("no p= tag")
	}
	p = strings.Join(strings.Fields(p), "")
	if p == "" {
		return kt, nil, nil
	}
	raw, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return "", nil, fmt.Errorf("p= is not base64: %w", err)
	}
	return kt, raw, nil
}

// samePublicKey compares a published p= (decoded) with our key. RSA keys
// may be published as SubjectPublicKeyInfo or as a bare PKCS#1 key.
func samePublicKey(kt string, raw []byte, pub crypto.PublicKey) bool {
	switch want := pub.(type) {
	case *rsa.PublicKey:
		if kt != "rsa" {
			return false
		}
		if k, err := x509.ParsePKIXPublicKey(raw); err == nil {
			if rk, ok := k.(*rsa.PublicKey); ok {
				return rk.Equal(want)
			}
			return false
		}
		if k, err := x509.ParsePKCS1PublicKey(raw); err == nil {
			return k.Equal(want)
		}
	case ed25519.PublicKey:
		return kt == "ed25519" && want.Equal(ed25519.PublicKey(raw))
	}
	return false
}

func (c *checker) checkDKIM(ctx context.Context) {
	d := c.opts.Domain
	if c.keys == nil {
		c.add(CheckDKIM, LevelWarn, "", "DKIM keys were not checked (no key store)")
		return
	}
	keys, err := c.keys.ActiveDKIMKeys(ctx, d)
	if err != nil {
		c.add(CheckDKIM, LevelError, "", "reading the DKIM keys of %s: %v", d, err)
		return
	}
	if len(keys) == 0 {
		c.add(CheckDKIM, LevelWarn, "run: herald dkim keygen "+d, "Herald holds no active DKIM key for %s: its mail is not signed", d)
		return
	}
	for _, k := range keys {
		name := normName(k.Selector) + "._domainkey." + d
		pub, p, err := dkimPublic(k)
		if err != nil {
			c.add(CheckDKIM, LevelError, "", "DKIM key %s of %s is unusable: %v", k.Selector, d, err)
			continue
		}
		kt := "rsa"
		if _, ok := pub.(ed25519.PublicKey); ok {
			kt = "ed25519"
		}
		fix := txtRecord(name, "v=DKIM1; k="+kt+"; p="+p)
		txts, err := c.txtWithPrefix(ctx, name, "v=DKIM1")
		if err != nil && !errors.Is(err, resolve.ErrNotFound) {
			c.add(CheckDKIM, LevelError, "", "DKIM record %s: %s", name, describe(err))
			continue
		}
		if len(txts) == 0 {
			// Records without v= are valid too (v is optional).
			all, _ := c.r.LookupTXT(ctx, name)
			for _, t := range all {
				if strings.Contains(t, "p=") {
					txts = append(txts, t)
				}
			}
		}
		switch {
		case len(txts) == 0:
			c.add(CheckDKIM, LevelError, fix, "no DKIM record at %s: signatures with selector %s fail", name, k.Selector)
			continue
		case len(txts) > 1:
			c.add(CheckDKIM, LevelError, fix, "%s has %d DKIM records: keep exactly one", name, len(txts))
			continue
		}
		rkt, raw, err := dkimRecordKey(txts[0])
		switch {
		case err != nil:
			c.add(CheckDKIM, LevelError, fix, "DKIM record at %s does not parse: %v", name, err)
		case raw == nil:
			c.add(CheckDKIM, LevelError, fix, "DKIM record at %s has an empty p= (key revoked), but Herald signs with it", name)
		case !samePublicKey(rkt, raw, pub):
			c.add(CheckDKIM, LevelError, fix, "DKIM record at %s does not match Herald's %s key %s: signatures fail", name, kt, k.Selector)
		default:
			c.add(CheckDKIM, LevelOK, "", "DKIM record at %s matches Herald's %s key", name, kt)
		}
	}
}
