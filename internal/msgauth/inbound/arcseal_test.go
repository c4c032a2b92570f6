package inbound_test

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/msgauth/dkim"
)

// arcSeal returns msg with the first ARC set (i=1, cv=none) a forwarder
// such as a mailing list adds (RFC 8617): ARC-Authentication-Results with
// the payload aar (starting with the forwarder's authserv-id), an
// ARC-Message-Signature over From, To, Subject and the body, and the
// ARC-Seal, both signed with keyPEM (Ed25519, published at
// selector._domainkey.domain), relaxed canonicalization throughout.
func arcSeal(t *testing.T, msg, domain, selector string, keyPEM []byte, aar string) string {
	t.Helper()
	key, algo, err := dkim.ParsePrivateKey(keyPEM)
	if err != nil || algo != dkim.AlgorithmEd25519 {
		t.Fatalf("arcSeal wants an Ed25519 key: %v %s", err, algo)
	}
	sign := func(data string) string {
		digest := sha256.Sum256([]byte(data))
		sig, err := key.Sign(rand.Reader, digest[:], crypto.Hash(0))
		if err != nil {
			t.Fatal(err)
		}
		return base64.StdEncoding.EncodeToString(sig)
	}
	hdr, body, ok := strings.Cut(msg, "\r\n\r\n")
	if !ok {
		t.Fatal("arcSeal: message without a body")
	}
	fields := splitFields(hdr + "\r\n")
	bh := sha256.Sum256([]byte(relaxedBody(body)))

	aarField := "ARC-Authentication-Results: i=1; " + aar + "\r\n"
	signed := []string{"from", "to", "subject"}
	ams := fmt.Sprintf("ARC-Message-Signature: i=1; a=ed25519-sha256; c=relaxed/relaxed; d=%s; s=%s; t=1767225600; h=%s; bh=%s; b=",
		domain, selector, strings.Join(signed, ":"), base64.StdEncoding.EncodeToString(bh[:]))
	var data strings.Builder
	for _, name := range signed {
		f := lastField(fields, name)
		if f == "" {
			t.Fatalf("arcSeal: no %s field", name)
		}
		data.WriteString(relaxedField(f))
	}
	data.WriteString(strings.TrimSuffix(relaxedField(ams), "\r\n"))
	ams += sign(data.String()) + "\r\n"

	as := fmt.Sprintf("ARC-Seal: i=1; a=ed25519-sha256; t=1767225600; cv=none; d=%s; s=%s; b=", domain, selector)
	sealed := relaxedField(aarField) + relaxedField(ams) + strings.TrimSuffix(relaxedField(as), "\r\n")
	as += sign(sealed) + "\r\n"
	return as + ams + aarField + msg
}

// splitFields splits a header section into its fields, folding kept.
func splitFields(hdr string) []string {
	var out []string
	for _, line := range strings.SplitAfter(hdr, "\r\n") {
		switch {
		case line == "":
		case (line[0] == ' ' || line[0] == '\t') && len(out) > 0:
			out[len(out)-1] += line
		default:
			out = append(out, line)
		}
	}
	return out
}

// lastField returns the bottom-most field called name (lower-case), as
// DKIM and ARC signers select it.
func lastField(fields []string, name string) string {
	for i := len(fields) - 1; i >= 0; i-- {
		n, _, _ := strings.Cut(fields[i], ":")
		if strings.EqualFold(strings.TrimRight(n, " \t"), name) {
			return fields[i]
		}
	}
	return ""
}

// relaxedField is the relaxed header canonicalization (RFC 6376 §3.4.2).
func relaxedField(f string) string {
	name, value, _ := strings.Cut(f, ":")
	value = strings.NewReplacer("\r", "", "\n", "").Replace(value)
	return strings.ToLower(strings.TrimRight(name, " \t")) + ":" + strings.Join(strings.Fields(value), " ") + "\r\n"
}

// relaxedBody is the relaxed body canonicalization (RFC 6376 §3.4.4).
func relaxedBody(body string) string {
	lines := strings.Split(body, "\r\n")
	for i, l := range lines {
		lines[i] = collapseWSP(l)
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\r\n") + "\r\n"
}

// collapseWSP reduces runs of spaces and tabs to one space and drops them
// at the end of the line.
func collapseWSP(l string) string {
	var b strings.Builder
	wsp := false
	for i := 0; i < len(l); i++ {
		c := l[i]
		if c == ' ' || c == '\t' {
			wsp = true
			continue
		}
		if wsp {
			b.WriteByte(' ')
			wsp = false
		}
		b.WriteByte(c)
	}
	return b.String()
}
