package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"

	"github.com/heraldmail/herald/internal/smtp"
)

// Limits applied while parsing untrusted reports.
const (
	maxStatusBytes   = 1 << 20 // size of the delivery-status part read
	maxHeaderBytes   = 1 << 20 // size of the returned headers read
	maxParts         = 64      // MIME parts visited
	maxParsedRcpts   = 1000    // recipient groups kept
	maxParsedFieldSz = 4096    // a field value kept
)

// ErrNotDSN is returned by Parse for a message without a delivery-status
// report.
var ErrNotDSN = errors.New("dsn: not a delivery status notification")

// Parsed is what Parse extracts from a DSN.
type Parsed struct {
	ReportingMTA string    // without its type ("mx.example.com")
	EnvID        string    // Original-Envelope-Id, "" if none
	Arrival      time.Time // Arrival-Date, zero if none or unparsable
	// MessageID is the Message-ID of the returned original (without angle
	// brackets), "" if the original or its Message-ID is not included.
	MessageID  string
	Recipients []ParsedRecipient
}

// ParsedRecipient is one per-recipient group of a DSN.
type ParsedRecipient struct {
	FinalRecipient    string // address without its type
	OriginalRecipient string // address without its type, "" if none
	Action            Action
	Status            smtp.EnhancedCode // zero if missing or malformed
	RemoteMTA         string            // without its type
	Diagnostic        string            // without its type ("550 5.1.1 ...")
	LastAttempt       time.Time
}

// Parse reads a DSN: a message holding a message/delivery-status (or
// message/global-delivery-status) part, normally inside multipart/report.
// It returns the per-message and per-recipient fields and, when the
// original or its headers are returned, the original's Message-ID. A message
// without such a part gives ErrNotDSN. Sizes and counts are bounded, so r
// may be untrusted.
func Parse(r io.Reader) (*Parsed, error) {
	var (
		p      Parsed
		found  bool
		status []byte
	)
	walkErr := walkParts(r, "message", func(path []int, part *message.Entity) error {
		mt, _, _ := part.Header.ContentType()
		switch mt {
		case "message/delivery-status", "message/global-delivery-status":
			if found {
				return nil // only the first report counts
			}
			b, err := io.ReadAll(io.LimitReader(part.Body, maxStatusBytes))
			if err != nil {
				return fmt.Errorf("reading delivery-status: %w", err)
			}
			status, found = b, true
		case "text/rfc822-headers", "message/global-headers", "message/rfc822", "message/global":
			if p.MessageID == "" {
				p.MessageID = originalMessageID(part.Body)
			}
		}
		return nil
	})
	if walkErr != nil && !errors.Is(walkErr, errTooManyParts) {
		if !found {
			return nil, fmt.Errorf("dsn: reading parts: %w", walkErr)
		}
	}
	if !found {
		return nil, ErrNotDSN
	}
	groups := fieldGroups(status)
	if len(groups) == 0 {
		return nil, fmt.Errorf("%w: empty delivery-status", ErrNotDSN)
	}
	msg := groups[0]
	p.ReportingMTA = stripType(msg.get("reporting-mta"))
	p.EnvID = msg.get("original-envelope-id")
	p.Arrival = parseDate(msg.get("arrival-date"))
	for _, g := range groups[1:] {
		if len(p.Recipients) >= maxParsedRcpts {
			break
		}
		rc := ParsedRecipient{
			FinalRecipient:    addrValue(g.get("final-recipient")),
			OriginalRecipient: addrValue(g.get("original-recipient")),
			Action:            ParseAction(g.get("action")),
			Status:            parseStatus(g.get("status")),
			RemoteMTA:         stripType(g.get("remote-mta")),
			Diagnostic:        stripType(g.get("diagnostic-code")),
			LastAttempt:       parseDate(g.get("last-attempt-date")),
		}
		if rc.FinalRecipient == "" && rc.OriginalRecipient == "" {
			continue // not a recipient group
		}
		p.Recipients = append(p.Recipients, rc)
	}
	return &p, nil
}

var errTooManyParts = errors.New("too many MIME parts")

// originalMessageID reads a header block and returns its Message-ID
// without angle brackets.
func originalMessageID(body io.Reader) string {
	b, err := io.ReadAll(io.LimitReader(body, maxHeaderBytes))
	if err != nil && len(b) == 0 {
		return ""
	}
	// The block may lack its terminating blank line (text/rfc822-headers).
	b = append(b, "\r\n\r\n"...)
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	id := strings.TrimSpace(h.Get("Message-Id"))
	id = strings.TrimPrefix(id, "<")
	if i := strings.IndexByte(id, '>'); i >= 0 {
		id = id[:i]
	}
	if len(id) > maxParsedFieldSz {
		return ""
	}
	return id
}

type field struct{ name, value string }

type group []field

// get returns the first value of name (lower-case), or "".
func (g group) get(name string) string {
	for _, f := range g {
		if f.name == name {
			return f.value
		}
	}
	return ""
}

// fieldGroups splits a delivery-status body into its groups of fields:
// lines "Name: value", continuation lines starting with white space, groups
// separated by blank lines. Malformed lines are skipped.
func fieldGroups(b []byte) []group {
	var (
		groups []group
		cur    group
	)
	flush := func() {
		if len(cur) > 0 && len(groups) <= maxParsedRcpts {
			groups = append(groups, cur)
		}
		cur = nil
	}
	for len(b) > 0 {
		var line []byte
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			line, b = b, nil
		}
		line = bytes.TrimRight(line, "\r")
		if len(bytes.TrimSpace(line)) == 0 {
			flush()
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			if n := len(cur); n > 0 && len(cur[n-1].value) < maxParsedFieldSz {
				cur[n-1].value = strings.TrimSpace(cur[n-1].value + " " + strings.TrimSpace(string(line)))
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok || len(name) == 0 || len(cur) >= 64 {
			continue
		}
		v := strings.TrimSpace(string(value))
		if len(v) > maxParsedFieldSz {
			v = v[:maxParsedFieldSz]
		}
		cur = append(cur, field{strings.ToLower(strings.TrimSpace(string(name))), v})
	}
	flush()
	return groups
}

// stripType removes the "type;" prefix of an address or diagnostic field.
func stripType(v string) string {
	if _, rest, ok := strings.Cut(v, ";"); ok {
		return strings.TrimSpace(rest)
	}
	return strings.TrimSpace(v)
}

// addrValue returns the address of an address field without its type; a
// "utf-8" address has its RFC 6533 \x{HEX} escapes decoded.
func addrValue(v string) string {
	typ, _, _ := strings.Cut(v, ";")
	a := stripType(v)
	if !strings.EqualFold(strings.TrimSpace(typ), "utf-8") || !strings.Contains(a, `\x{`) {
		return a
	}
	var b strings.Builder
	for {
		i := strings.Index(a, `\x{`)
		if i < 0 {
			break
		}
		j := strings.IndexByte(a[i:], '}')
		if j < 0 {
			break
		}
		n, err := strconv.ParseUint(a[i+3:i+j], 16, 32)
		if err != nil || j > 9 || n > unicode.MaxRune || n < 0x20 || n == 0x7f { // no control characters
			b.WriteString(a[:i+3]) // not an escape: keep it as it is
			a = a[i+3:]
			continue
		}
		b.WriteString(a[:i])
		b.WriteRune(rune(n))
		a = a[i+j+1:]
	}
	b.WriteString(a)
	return b.String()
}

// parseStatus parses "5.1.1" (comments after it are ignored); malformed
// values give the zero code.
func parseStatus(s string) smtp.EnhancedCode {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t("); i >= 0 {
		s = s[:i]
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return smtp.EnhancedCode{}
	}
	var c smtp.EnhancedCode
	for i, p := range parts {
		if len(p) == 0 || len(p) > 3 {
			return smtp.EnhancedCode{}
		}
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return smtp.EnhancedCode{}
		}
		c[i] = n
	}
	if c[0] != 2 && c[0] != 4 && c[0] != 5 {
		return smtp.EnhancedCode{}
	}
	return c
}

func parseDate(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	t, err := mail.ParseDate(s)
	if err != nil {
		return time.Time{}
	}
	return t
}

// walkParts reads a report message from r and calls visit for each MIME
// part, tolerating unknown charsets and encodings and stopping after
// maxParts parts (errTooManyParts). what names the message in errors.
func walkParts(r io.Reader, what string, visit func(path []int, part *message.Entity) error) error {
	e, err := message.ReadWithOptions(r, &message.ReadOptions{MaxHeaderBytes: maxHeaderBytes})
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return fmt.Errorf("dsn: reading %s: %w", what, err)
	}
	parts := 0
	return e.Walk(func(path []int, part *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return err
		}
		if part == nil {
			return nil
		}
		parts++
		if parts > maxParts {
			return errTooManyParts
		}
		return visit(path, part)
	})
}
