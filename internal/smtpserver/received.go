package smtpserver

import (
	"strings"
	"time"
)

// receivedHeader builds the trace header for the current transaction
// (RFC 5321 §4.4, protocol keywords of RFC 3848 and RFC 6531, TLS details
// as a comment in the style of RFC 8314 §7.4), folded at 78 characters.
func (s *session) receivedHeader(env *Envelope, now time.Time) string {
	proto := "SMTP"
	if s.extended {
		proto = "ESMTP"
		if env.SMTPUTF8 {
			proto = "UTF8SMTP"
		}
	}
	if s.c.TLS != nil {
		proto += "S"
	}
	if s.c.AuthUser != "" {
		proto += "A"
	}
	ip := s.c.RemoteAddr.Addr()
	lit := "[" + ip.String() + "]"
	if ip.Is6() {
		lit = "[IPv6:" + ip.String() + "]"
	}
	tok := []string{"from", sanitize(s.c.HELO), "(" + lit + ")",
		"by", s.srv.cfg.Hostname, "(Herald)", "with", proto}
	if s.c.TLS != nil {
		tok = append(tok, strings.Fields("(tls "+strings.Map(commentSafe, s.srv.cfg.DescribeTLS(s.c.TLS))+")")...)
	}
	if s.c.AuthUser != "" {
		tok = append(tok, "(authenticated", "user", sanitize(s.c.AuthUser)+")")
	}
	if len(env.Recipients) == 1 {
		tok = append(tok, "for", "<"+env.Recipients[0].Address+">")
	}
	tok[len(tok)-1] += ";"
	tok = append(tok, strings.Fields(now.Format(time.RFC1123Z))...)
	return fold("Received:", tok)
}

// fold joins tokens after name with spaces, starting a new line (CRLF TAB)
// before a token that would take a line past 78 characters.
func fold(name string, tok []string) string {
	var b strings.Builder
	b.WriteString(name)
	lineLen := len(name)
	for _, t := range tok {
		if lineLen+1+len(t) > 78 && lineLen > 1 {
			b.WriteString("\r\n\t")
			lineLen = 1
		} else {
			b.WriteByte(' ')
			lineLen++
		}
		b.WriteString(t)
		lineLen += len(t)
	}
	b.WriteString("\r\n")
	return b.String()
}

// sanitize makes client-supplied text safe inside a header comment: no
// controls, no parentheses or backslashes, no spaces.
func sanitize(s string) string {
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' {
			return '_'
		}
		return commentSafe(r)
	}, s)
}

// commentSafe maps characters that could break out of a header comment.
func commentSafe(r rune) rune {
	switch {
	case r < 0x20 || r == 0x7f || r == '(' || r == ')' || r == '\\' || r == ';':
		return '_'
	}
	return r
}
