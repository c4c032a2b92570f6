// Package authres builds the Authentication-Results header field (RFC 8601)
// that Herald prepends to received mail, and strips forged fields that
// claim Herald's authserv-id. Formatting is done by
// github.com/emersion/go-msgauth/authres; the inputs are plain values so
// this package depends on none of the checkers.
package authres

import (
	"bytes"
	"strconv"
	"strings"
	"unicode"

	msgauthres "github.com/emersion/go-msgauth/authres"
)

// FieldName is the header field name written and stripped.
const FieldName = "Authentication-Results"

// SPF is the result of the SPF check (method "spf").
type SPF struct {
	Result   string // none, neutral, pass, fail, softfail, temperror, permerror
	MailFrom string // smtp.mailfrom: the MAIL FROM address or domain; "" for the null sender
	HELO     string // smtp.helo
	Reason   string // optional free text
}

// DKIM is the result of one DKIM signature (method "dkim").
type DKIM struct {
	Result     string // none, pass, fail, policy, neutral, temperror, permerror
	Domain     string // header.d
	Identifier string // header.i (optional)
	Selector   string // header.s
	Algorithm  string // header.a, e.g. rsa-sha256, ed25519-sha256
	Signature  string // the b= value; its first 12 characters become header.b (RFC 6008)
	Reason     string // optional free text
}

// DMARC is the DMARC result (method "dmarc").
type DMARC struct {
	Result string // none, pass, fail, temperror, permerror
	From   string // header.from: the RFC5322.From domain
	Policy string // policy.dmarc: the policy applied (none, quarantine, reject); optional
	Reason string // optional free text
}

// ARC is the ARC chain validation result (method "arc", RFC 8617).
type ARC struct {
	Result     string // none, pass, fail
	RemoteIP   string // smtp.remote-ip (optional)
	OldestPass int    // header.oldest-pass, 0 to omit
}

// Results are the checks reported in one Authentication-Results field.
// Nil or empty members are left out; with nothing at all the field says
// "none".
type Results struct {
	SPF *SPF
	// SPFHELO is the SPF result of the HELO identity (RFC 7208 §2.3),
	// reported beside the MAIL FROM one when both were checked.
	SPFHELO *SPF
	DKIM    []DKIM
	DMARC   *DMARC
	ARC     *ARC
}

// headerBLen is how many characters of b= go into header.b.
const headerBLen = 12

// Value returns the field value (after "Authentication-Results:") for
// authservID, on one line. Control characters in the inputs are dropped so
// no value can break out of the field.
func Value(authservID string, res Results) string {
	return join(authservID, res, "; ")
}

// Field returns the whole header field, folded after each result
// (";CRLF\t") and ending in CRLF, ready to prepend to a message.
func Field(authservID string, res Results) string {
	return FieldName + ": " + join(authservID, res, ";\r\n\t") + "\r\n"
}

// join formats each result with go-msgauth and joins them with sep, so
// folding never happens inside a quoted value.
func join(authservID string, res Results, sep string) string {
	rs := list(res)
	id := cleanID(authservID)
	if len(rs) == 0 {
		return msgauthres.Format(id, nil)
	}
	var b strings.Builder
	b.WriteString(id)
	for _, r := range rs {
		one := msgauthres.Format("", []msgauthres.Result{r}) // "; method=value params "
		b.WriteString(sep)
		b.WriteString(strings.TrimSpace(strings.TrimPrefix(one, "; ")))
	}
	return b.String()
}

func list(res Results) []msgauthres.Result {
	var out []msgauthres.Result
	for _, s := range []*SPF{res.SPF, res.SPFHELO} {
		if s == nil {
			continue
		}
		out = append(out, &msgauthres.GenericResult{
			Method: "spf",
			Value:  value(s.Result),
			Params: cleanParams(map[string]string{
				"reason":        s.Reason,
				"smtp.mailfrom": s.MailFrom,
				"smtp.helo":     s.HELO,
			}),
		})
	}
	for _, d := range res.DKIM {
		b := strings.ReplaceAll(clean(d.Signature), " ", "")
		if len(b) > headerBLen {
			b = b[:headerBLen]
		}
		// GenericResult carries header.s/a/b, which DKIMResult lacks.
		out = append(out, &msgauthres.GenericResult{
			Method: "dkim",
			Value:  value(d.Result),
			Params: cleanParams(map[string]string{
				"reason":   d.Reason,
				"header.d": d.Domain,
				"header.i": d.Identifier,
				"header.s": d.Selector,
				"header.a": d.Algorithm,
				"header.b": b,
			}),
		})
	}
	if d := res.DMARC; d != nil {
		out = append(out, &msgauthres.GenericResult{
			Method: "dmarc",
			Value:  value(d.Result),
			Params: cleanParams(map[string]string{
				"reason":       d.Reason,
				"header.from":  d.From,
				"policy.dmarc": d.Policy,
			}),
		})
	}
	if a := res.ARC; a != nil {
		// go-msgauth v0.7.0 formats ARCResult without its method name, so
		// a GenericResult is used.
		p := map[string]string{"smtp.remote-ip": a.RemoteIP}
		if a.OldestPass > 0 {
			p["header.oldest-pass"] = strconv.Itoa(a.OldestPass)
		}
		out = append(out, &msgauthres.GenericResult{Method: "arc", Value: value(a.Result), Params: cleanParams(p)})
	}
	return out
}

// clean drops ASCII control characters (CR and LF above all).
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}

// cleanID keeps only the characters of a host name in an authserv-id
// (letters, digits, '.', '-', '_'), so it stays one token.
func cleanID(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9',
			r == '.', r == '-', r == '_', r > 0x7f && unicode.IsPrint(r):
			return r
		}
		return -1
	}, s)
}

// cleanParams cleans every parameter value in place and returns p.
func cleanParams(p map[string]string) map[string]string {
	for k, v := range p {
		p[k] = strings.TrimSpace(clean(v))
	}
	return p
}

func value(s string) msgauthres.ResultValue {
	s = strings.ToLower(strings.TrimSpace(clean(s)))
	s = strings.Map(func(r rune) rune {
		if r == ' ' || r == ';' || r == '(' || r == ')' || r == '=' || r == '"' {
			return -1
		}
		return r
	}, s)
	if s == "" {
		s = "none"
	}
	return msgauthres.ResultValue(s)
}

// Strip removes from header every Authentication-Results field whose
// authserv-id equals authservID (case-insensitively, RFC 8601 section 5),
// whatever its folding, comments or quoting, and keeps every other field
// byte for byte. header is a message header block (fields up to and
// optionally including the blank line), with CRLF or LF line ends; what
// follows the blank line, if present, is kept as is. When nothing is
// removed, header itself is returned; otherwise a new slice.
func Strip(header []byte, authservID string) []byte {
	want := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(authservID), "."))
	var out []byte
	removed := false
	pos := 0
	for pos < len(header) {
		end := fieldEnd(header, pos)
		if end == pos { // blank line: end of the header block
			break
		}
		if isOurs(header[pos:end], want) {
			if !removed {
				out = make([]byte, 0, len(header))
				out = append(out, header[:pos]...)
				removed = true
			}
		} else if removed {
			out = append(out, header[pos:end]...)
		}
		pos = end
	}
	if !removed {
		return header
	}
	return append(out, header[pos:]...)
}

// fieldEnd returns the end of the field starting at pos: after its last
// line (continuation lines start with SP or HTAB). A blank line at pos
// returns pos.
func fieldEnd(h []byte, pos int) int {
	if h[pos] == '\n' || (h[pos] == '\r' && pos+1 < len(h) && h[pos+1] == '\n') {
		return pos
	}
	i := pos
	for {
		nl := bytes.IndexByte(h[i:], '\n')
		if nl < 0 {
			return len(h)
		}
		i += nl + 1
		if i >= len(h) || (h[i] != ' ' && h[i] != '\t') {
			return i
		}
	}
}

// isOurs reports whether the raw field f is an Authentication-Results
// field naming authserv-id want.
func isOurs(f []byte, want string) bool {
	colon := bytes.IndexByte(f, ':')
	if colon < 0 {
		return false
	}
	if !strings.EqualFold(strings.TrimRight(string(f[:colon]), " \t"), FieldName) {
		return false
	}
	id := authservID(string(f[colon+1:]))
	return id != "" && strings.TrimSuffix(strings.ToLower(id), ".") == want
}

// authservID extracts the authserv-id from a raw (possibly folded) field
// value: leading CFWS is skipped, then a token or quoted-string is read.
func authservID(v string) string {
	i := skipCFWS(v, 0)
	if i >= len(v) {
		return ""
	}
	if v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v); i++ {
			switch c := v[i]; c {
			case '\\':
				if i+1 < len(v) {
					i++
					b.WriteByte(v[i])
				}
			case '"':
				return b.String()
			case '\r', '\n':
			default:
				b.WriteByte(c)
			}
		}
		return b.String()
	}
	j := i
	for j < len(v) && !strings.ContainsRune(" \t\r\n;()\"", rune(v[j])) {
		j++
	}
	return v[i:j]
}

// skipCFWS skips folding white space and (nested) comments from i.
func skipCFWS(v string, i int) int {
	depth := 0
	for i < len(v) {
		c := v[i]
		switch {
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '\\' && depth > 0:
			i++
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
		case depth > 0:
		default:
			return i
		}
		i++
	}
	return i
}
