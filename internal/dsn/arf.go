package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/netip"
	nettextproto "net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-message/textproto"
)

// Limits applied while parsing untrusted feedback reports, in addition to
// those of Parse.
const (
	maxARFBytes       = 32 << 20 // total input read
	maxARFDescription = 4096     // human-readable part kept
	maxARFListValues  = 100      // Original-Rcpt-To, Reported-Domain values kept
	maxHeraldHeaders  = 32       // X-Herald-* headers kept
)

// ErrNotARF is returned by ParseARF for a message without a feedback report.
var ErrNotARF = errors.New("dsn: not an ARF feedback report")

// Feedback types of RFC 5965 §7.3 and RFC 6591 (auth-failure), plus
// "not-spam" used by some feedback loops.
const (
	FeedbackAbuse       = "abuse"
	FeedbackFraud       = "fraud"
	FeedbackVirus       = "virus"
	FeedbackOther       = "other"
	FeedbackNotSpam     = "not-spam"
	FeedbackAuthFailure = "auth-failure"
)

// Feedback is what ParseARF extracts from an RFC 5965 feedback report (an
// abuse complaint from a mailbox provider's feedback loop).
type Feedback struct {
	// Type is the Feedback-Type, lower-case: one of the Feedback*
	// constants or another registered type.
	Type      string
	UserAgent string // User-Agent of the reporting software
	Version   string // Version of the format, normally "1"
	// OriginalMailFrom is the envelope sender of the reported message,
	// without angle brackets: Herald's VERP address when it sent it.
	OriginalMailFrom string
	// OriginalRcptTo lists the envelope recipients reported, without angle
	// brackets; feedback loops often redact them.
	OriginalRcptTo []string
	// ArrivalDate is when the reporter received the message (Arrival-Date,
	// or the older Received-Date), zero if absent or unparsable.
	ArrivalDate    time.Time
	ReportingMTA   string     // without its type ("mx.example.net")
	SourceIP       netip.Addr // invalid if absent or unparsable
	ReportedDomain []string
	// Description is the start of the human-readable first part.
	Description string
	// Original holds headers of the returned message (message/rfc822 or
	// text/rfc822-headers part); HasOriginal is false when none was
	// returned.
	Original    OriginalHeaders
	HasOriginal bool
}

// OriginalHeaders are the headers of the reported message used to match it
// to a message Herald sent.
type OriginalHeaders struct {
	MessageID  string // without angle brackets
	From       string // raw header value
	To         string // raw header value (often redacted)
	Subject    string // raw header value
	ReturnPath string // without angle brackets: the VERP address if kept
	// Herald holds the X-Herald-* headers, keyed by canonical name
	// ("X-Herald-Queue-Id"), first value of each.
	Herald map[string]string
}

// ParseARF reads an RFC 5965 feedback report: a multipart/report message
// (report-type=feedback-report) whose parts are a human-readable text, a
// message/feedback-report with the fields and the original message
// (message/rfc822) or its headers (text/rfc822-headers). A message without a
// message/feedback-report part, or whose report has no Feedback-Type, gives
// ErrNotARF. Sizes and counts are bounded, so r may be untrusted.
func ParseARF(r io.Reader) (*Feedback, error) {
	var (
		fb     Feedback
		found  bool
		report []byte
	)
	walkErr := walkParts(io.LimitReader(r, maxARFBytes), "report", func(path []int, part *message.Entity) error {
		mt, _, _ := part.Header.ContentType()
		switch mt {
		case "message/feedback-report":
			if found {
				return nil // only the first report counts
			}
			b, err := io.ReadAll(io.LimitReader(part.Body, maxStatusBytes))
			if err != nil {
				return fmt.Errorf("reading feedback-report: %w", err)
			}
			report, found = b, true
		case "text/plain":
			if !found && fb.Description == "" && len(path) > 0 {
				b, _ := io.ReadAll(io.LimitReader(part.Body, maxARFDescription))
				fb.Description = strings.TrimSpace(string(b))
			}
		case "text/rfc822-headers", "message/rfc822", "message/global", "message/global-headers":
			if !fb.HasOriginal {
				fb.Original, fb.HasOriginal = originalHeaders(part.Body)
			}
		}
		return nil
	})
	if walkErr != nil && !errors.Is(walkErr, errTooManyParts) && !found {
		return nil, fmt.Errorf("dsn: reading report parts: %w", walkErr)
	}
	if !found {
		return nil, ErrNotARF
	}
	for _, g := range fieldGroups(report) {
		for _, f := range g {
			fb.setField(f)
		}
	}
	if fb.Type == "" {
		return nil, fmt.Errorf("%w: no Feedback-Type", ErrNotARF)
	}
	return &fb, nil
}

func (fb *Feedback) setField(f field) {
	v := f.value
	switch f.name {
	case "feedback-type":
		if fb.Type == "" {
			fb.Type = strings.ToLower(firstWord(v))
		}
	case "user-agent":
		setOnce(&fb.UserAgent, v)
	case "version":
		setOnce(&fb.Version, v)
	case "original-mail-from":
		setOnce(&fb.OriginalMailFrom, angleless(v))
	case "original-rcpt-to", "removal-recipient":
		if a := angleless(v); a != "" && len(fb.OriginalRcptTo) < maxARFListValues {
			fb.OriginalRcptTo = append(fb.OriginalRcptTo, a)
		}
	case "arrival-date", "received-date":
		if fb.ArrivalDate.IsZero() {
			fb.ArrivalDate = parseDate(v)
		}
	case "reporting-mta":
		setOnce(&fb.ReportingMTA, stripType(v))
	case "source-ip":
		if !fb.SourceIP.IsValid() {
			s := strings.Trim(firstWord(v), "[]")
			if a, err := netip.ParseAddr(s); err == nil {
				fb.SourceIP = a.Unmap()
			}
		}
	case "reported-domain":
		if d := strings.ToLower(strings.TrimSuffix(firstWord(v), ".")); d != "" && len(fb.ReportedDomain) < maxARFListValues {
			fb.ReportedDomain = append(fb.ReportedDomain, d)
		}
	}
}

func setOnce(dst *string, v string) {
	if *dst == "" {
		*dst = v
	}
}

// firstWord returns v up to its first white space, comment or semicolon.
func firstWord(v string) string {
	v = strings.TrimSpace(v)
	if i := strings.IndexAny(v, " \t(;"); i >= 0 {
		v = v[:i]
	}
	return v
}

// angleless returns an address field without white space and angle
// brackets.
func angleless(v string) string {
	v = strings.TrimSpace(v)
	v = strings.TrimPrefix(v, "<")
	if i := strings.IndexByte(v, '>'); i >= 0 {
		v = v[:i]
	}
	return strings.TrimSpace(v)
}

// originalHeaders reads the header block of a returned message.
func originalHeaders(body io.Reader) (OriginalHeaders, bool) {
	b, err := io.ReadAll(io.LimitReader(body, maxHeaderBytes))
	if err != nil && len(b) == 0 {
		return OriginalHeaders{}, false
	}
	// The block may lack its terminating blank line (text/rfc822-headers).
	b = append(b, "\r\n\r\n"...)
	h, _ := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(b)))
	var o OriginalHeaders
	get := func(name string) string {
		v := strings.TrimSpace(h.Get(name))
		if len(v) > maxParsedFieldSz {
			v = v[:maxParsedFieldSz]
		}
		return v
	}
	o.MessageID = angleless(get("Message-Id"))
	o.From = get("From")
	o.To = get("To")
	o.Subject = get("Subject")
	o.ReturnPath = angleless(get("Return-Path"))
	fields := h.Fields()
	for fields.Next() {
		k := nettextproto.CanonicalMIMEHeaderKey(fields.Key())
		if !strings.HasPrefix(k, "X-Herald-") {
			continue
		}
		if o.Herald == nil {
			o.Herald = make(map[string]string)
		}
		if _, dup := o.Herald[k]; dup || len(o.Herald) >= maxHeraldHeaders {
			continue
		}
		v := strings.TrimSpace(fields.Value())
		if len(v) > maxParsedFieldSz {
			v = v[:maxParsedFieldSz]
		}
		o.Herald[k] = v
	}
	if o.MessageID == "" && o.From == "" && o.To == "" && o.ReturnPath == "" && o.Herald == nil && o.Subject == "" {
		return OriginalHeaders{}, false
	}
	return o, true
}
