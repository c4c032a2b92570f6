package smtpserver

import (
	"strings"
	"unicode/utf8"

	"github.com/heraldmail/herald/internal/smtp"
)

// Syntax errors of commands and parameters.
var (
	errSyntaxMail = &smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Syntax: MAIL FROM:<address> [parameters]"}
	errSyntaxRcpt = &smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Syntax: RCPT TO:<address> [parameters]"}
	errBadParam   = &smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Invalid parameter syntax"}
	errBadAddress = &smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 1, 3}, Message: "Invalid address syntax"}
	errNeedUTF8   = &smtp.Error{Code: 553, Enhanced: smtp.EnhancedCode{5, 6, 7}, Message: "Non-ASCII address requires SMTPUTF8"}
)

// cutPrefixFold removes prefix from s, ignoring case.
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) < len(prefix) || !strings.EqualFold(s[:len(prefix)], prefix) {
		return s, false
	}
	return s[len(prefix):], true
}

// parsePath splits "<path> params" (after "FROM:" or "TO:") into the
// address inside the angle brackets (source route removed) and the
// parameter text. Spaces after the colon are tolerated.
func parsePath(s string) (addr, params string, err error) {
	s = strings.TrimLeft(s, " ")
	if !strings.HasPrefix(s, "<") {
		return "", "", errBadAddress
	}
	// A quoted local part may hold '>': find the closing bracket outside quotes.
	inQuote, end := false, -1
	for i := 1; i < len(s) && end < 0; i++ {
		switch s[i] {
		case '\\':
			if inQuote {
				i++
			}
		case '"':
			inQuote = !inQuote
		case '>':
			if !inQuote {
				end = i
			}
		}
	}
	if end < 0 {
		return "", "", errBadAddress
	}
	addr, params = s[1:end], s[end+1:]
	if params != "" && params[0] != ' ' {
		return "", "", errBadAddress
	}
	// RFC 5321 §4.1.2 source route "@a,@b:user@domain": ignored.
	if strings.HasPrefix(addr, "@") {
		i := strings.IndexByte(addr, ':')
		if i < 0 {
			return "", "", errBadAddress
		}
		addr = addr[i+1:]
	}
	return addr, strings.TrimSpace(params), nil
}

type param struct{ key, value string }

// parseParams splits "KEY=value KEY" into parameters with upper-case keys.
func parseParams(s string) ([]param, error) {
	var out []param
	for _, f := range strings.Fields(s) {
		k, v, hasValue := strings.Cut(f, "=")
		if k == "" || (hasValue && v == "") {
			return nil, errBadParam
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return nil, errBadParam
			}
		}
		k = strings.ToUpper(k)
		for _, p := range out {
			if p.key == k {
				return nil, errBadParam
			}
		}
		out = append(out, param{k, v})
	}
	return out, nil
}

// decodeXtext decodes RFC 3461 xtext ("+2B" escapes); the result must be
// printable ASCII.
func decodeXtext(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '+' {
			if i+2 >= len(s) {
				return "", false
			}
			h, ok1 := unhex(s[i+1])
			l, ok2 := unhex(s[i+2])
			if !ok1 || !ok2 {
				return "", false
			}
			c = h<<4 | l
			i += 2
		}
		if c < 0x20 || c > 0x7e {
			return "", false
		}
		b.WriteByte(c)
	}
	return b.String(), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// validNotify checks a NOTIFY value: NEVER, or a list of SUCCESS, FAILURE
// and DELAY without repeats. It returns the value upper-cased.
func validNotify(v string) (string, bool) {
	v = strings.ToUpper(v)
	if v == "NEVER" {
		return v, true
	}
	seen := map[string]bool{}
	for _, p := range strings.Split(v, ",") {
		switch p {
		case "SUCCESS", "FAILURE", "DELAY":
			if seen[p] {
				return "", false
			}
			seen[p] = true
		default:
			return "", false
		}
	}
	return v, true
}

// validORCPT checks "addr-type;xtext" (RFC 3461 §4.2) and keeps it as given.
func validORCPT(v string) bool {
	typ, addr, ok := strings.Cut(v, ";")
	if !ok || typ == "" || addr == "" || len(v) > 500 {
		return false
	}
	if !utf8.ValidString(v) {
		return false
	}
	for _, r := range v {
		if r < 0x21 || r == 0x7f {
			return false
		}
	}
	return true
}

// validLine reports whether a command line (without CRLF) is UTF-8 without
// NUL, CR, LF or other controls (TAB allowed).
func validLine(b []byte) bool {
	for _, c := range b {
		if c < 0x20 && c != '\t' || c == 0x7f {
			return false
		}
	}
	return utf8.Valid(b)
}
