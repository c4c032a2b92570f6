package dsn

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/heraldmail/herald/internal/smtp"
)

// MaxReturnedSize is the largest original message returned in full; a
// larger one is returned as its headers only.
const MaxReturnedSize = 256 << 10

// maxFieldLen bounds each value written into the report.
const maxFieldLen = 900

// ErrNullSender is returned by Build for a Report whose Sender is empty: a
// message with the null sender must never be bounced.
var ErrNullSender = errors.New("dsn: refusing to notify the null sender")

const dateLayout = "Mon, 02 Jan 2006 15:04:05 -0700"

// Build renders r as a complete RFC 5322 message with CRLF line endings: a
// multipart/report (report-type=delivery-status) holding a human-readable
// explanation, the message/delivery-status report and the returned original
// (text/rfc822-headers or message/rfc822, per Ret and MaxReturnedSize).
//
// The report is 7-bit unless the original message needed SMTPUTF8
// (Report.SMTPUTF8, or a UTF-8 Sender): a bounce must reach a sender whose
// MX lacks SMTPUTF8, so a remote's reply text with UTF-8 or raw 8-bit bytes
// must not make it need that extension. In a 7-bit report, non-ASCII
// characters and invalid bytes of diagnostics and other fields become '?',
// internationalised addresses use the RFC 6533 "utf-8" address type in its
// 7-bit utf-8-addr-xtext form (\x{HEX}), and the human-readable text is
// valid UTF-8 in quoted-printable. Only for an SMTPUTF8 original are the
// RFC 6533 types used (global-delivery-status, message/global,
// message/global-headers), with UTF-8 in the fields; the DSN then needs
// SMTPUTF8 when it is not ASCII (see Report.Global). The returned original
// is returned as it is (8bit when it is 8-bit).
//
// Build refuses an empty Sender with ErrNullSender.
func Build(r *Report) ([]byte, error) {
	if r.Sender == "" {
		return nil, ErrNullSender
	}
	if strings.ContainsAny(r.Sender, "<>") || strings.ContainsFunc(r.Sender, isControl) {
		return nil, fmt.Errorf("dsn: invalid sender %q", r.Sender)
	}
	if r.ReportingMTA == "" || strings.ContainsAny(r.ReportingMTA, "<>@ ;") || strings.ContainsFunc(r.ReportingMTA, isControl) {
		return nil, fmt.Errorf("dsn: invalid reporting MTA %q", r.ReportingMTA)
	}
	if len(r.Recipients) == 0 {
		return nil, errors.New("dsn: report has no recipient")
	}
	if r.Action == ActionUnknown || r.Action.String() == "" {
		return nil, fmt.Errorf("dsn: invalid action %d", r.Action)
	}

	orig, err := readOriginal(r.Original, r.Ret)
	if err != nil {
		return nil, err
	}

	global := r.Global()

	date := r.Date
	if date.IsZero() {
		date = time.Now()
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	reportType := "delivery-status"
	if global {
		reportType = "global-delivery-status"
	}

	// Top-level header.
	hdr := func(k, v string) { buf.WriteString(k + ": " + v + "\r\n") }
	hdr("From", `"Mail Delivery System" <MAILER-DAEMON@`+r.ReportingMTA+">")
	hdr("To", "<"+r.Sender+">")
	hdr("Subject", subject(r.Action))
	hdr("Date", date.Format(dateLayout))
	hdr("Message-ID", "<"+randomID()+"@"+r.ReportingMTA+">")
	hdr("Auto-Submitted", "auto-replied")
	hdr("MIME-Version", "1.0")
	hdr("Content-Type", fmt.Sprintf("multipart/report; report-type=%s;\r\n\tboundary=%q", reportType, mw.Boundary()))
	buf.WriteString("\r\nThis is a MIME-encapsulated message.\r\n\r\n")

	// 1. Human-readable part.
	text := humanText(r, orig) // valid UTF-8, quoted-printable unless ASCII
	th := textproto.MIMEHeader{}
	th.Set("Content-Description", "Notification")
	th.Set("Content-Type", "text/plain; charset=utf-8")
	if smtp.IsASCII(text) {
		th.Set("Content-Transfer-Encoding", "7bit")
	} else {
		th.Set("Content-Transfer-Encoding", "quoted-printable")
	}
	pw, err := mw.CreatePart(th)
	if err != nil {
		return nil, fmt.Errorf("dsn: writing text part: %w", err)
	}
	if smtp.IsASCII(text) {
		_, err = io.WriteString(pw, text)
	} else {
		qp := quotedprintable.NewWriter(pw)
		if _, err = io.WriteString(qp, text); err == nil {
			err = qp.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("dsn: writing text part: %w", err)
	}

	// 2. The machine-readable report.
	sh := textproto.MIMEHeader{}
	sh.Set("Content-Description", "Delivery report")
	if global {
		sh.Set("Content-Type", "message/global-delivery-status")
		sh.Set("Content-Transfer-Encoding", "8bit")
	} else {
		sh.Set("Content-Type", "message/delivery-status")
		sh.Set("Content-Transfer-Encoding", "7bit")
	}
	if pw, err = mw.CreatePart(sh); err == nil {
		_, err = pw.Write(statusFields(r, global))
	}
	if err != nil {
		return nil, fmt.Errorf("dsn: writing status part: %w", err)
	}

	// 3. The returned original.
	if orig.data != nil {
		oh := textproto.MIMEHeader{}
		switch {
		case orig.full && global:
			oh.Set("Content-Type", "message/global")
			oh.Set("Content-Description", "Undelivered message")
		case orig.full:
			oh.Set("Content-Type", "message/rfc822")
			oh.Set("Content-Description", "Undelivered message")
		case global:
			oh.Set("Content-Type", "message/global-headers")
			oh.Set("Content-Description", "Undelivered message headers")
		default:
			oh.Set("Content-Type", "text/rfc822-headers")
			oh.Set("Content-Description", "Undelivered message headers")
		}
		if orig.body8bit || orig.headers8bit {
			oh.Set("Content-Transfer-Encoding", "8bit")
		} else {
			oh.Set("Content-Transfer-Encoding", "7bit")
		}
		if pw, err = mw.CreatePart(oh); err == nil {
			_, err = pw.Write(orig.data)
		}
		if err != nil {
			return nil, fmt.Errorf("dsn: writing original: %w", err)
		}
	}
	if err := mw.Close(); err != nil {
		return nil, fmt.Errorf("dsn: closing multipart: %w", err)
	}
	buf.WriteString("\r\n")
	return buf.Bytes(), nil
}

func subject(a Action) string {
	switch a {
	case Failed:
		return "Undelivered Mail Returned to Sender"
	case Delayed:
		return "Delivery Status Notification (Delay)"
	default:
		return "Delivery Status Notification (Success)"
	}
}

func randomID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

type original struct {
	data        []byte // what to return; nil for nothing
	full        bool   // data is the whole message
	truncated   bool   // FULL was possible but the message was too large
	headers8bit bool
	body8bit    bool
}

// readOriginal reads at most MaxReturnedSize+1 bytes of the original and
// decides what to return.
func readOriginal(r io.Reader, ret string) (original, error) {
	var o original
	if r == nil {
		return o, nil
	}
	b, err := io.ReadAll(io.LimitReader(r, MaxReturnedSize+1))
	if err != nil {
		return o, fmt.Errorf("dsn: reading original message: %w", err)
	}
	hdrs := headerSection(b)
	o.headers8bit = !smtp.IsASCII(string(hdrs))
	if !strings.EqualFold(strings.TrimSpace(ret), "HDRS") && len(b) <= MaxReturnedSize {
		o.data, o.full = b, true
		o.body8bit = !smtp.IsASCII(string(b[len(hdrs):]))
		if len(b) > 0 && !bytes.HasSuffix(b, []byte("\r\n")) {
			o.data = append(b, '\r', '\n')
		}
		return o, nil
	}
	o.truncated = len(b) > MaxReturnedSize && !strings.EqualFold(strings.TrimSpace(ret), "HDRS")
	o.data = hdrs
	return o, nil
}

// headerSection returns the header block of msg, up to and including the
// CRLF ending its last field (not the blank line). A header block cut by
// the size limit is cut after its last complete line.
func headerSection(msg []byte) []byte {
	if i := bytes.Index(msg, []byte("\r\n\r\n")); i >= 0 {
		return msg[:i+2]
	}
	if i := bytes.Index(msg, []byte("\n\n")); i >= 0 {
		return msg[:i+1]
	}
	if len(msg) <= MaxReturnedSize {
		if len(msg) > 0 && !bytes.HasSuffix(msg, []byte("\n")) {
			return append(msg[:len(msg):len(msg)], '\r', '\n')
		}
		return msg
	}
	if i := bytes.LastIndex(msg[:MaxReturnedSize], []byte("\r\n")); i >= 0 {
		return msg[:i+2]
	}
	return nil
}

// clean makes s safe as a one-line field value: control characters become
// spaces, runs of spaces collapse, invalid UTF-8 bytes become U+FFFD (or
// '?' when ascii is set, as do all non-ASCII characters), and it is cut to
// maxFieldLen bytes on a character boundary.
func clean(s string, ascii bool) string {
	var b strings.Builder
	space := false
	for i, c := range s {
		switch {
		case isControl(c):
			c = ' '
		case c == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				c = utf8.RuneError // an invalid byte
			}
			if ascii {
				c = '?'
			}
		case ascii && c >= utf8.RuneSelf:
			c = '?'
		}
		if c == ' ' {
			if space {
				continue
			}
			space = true
		} else {
			space = false
		}
		if b.Len()+utf8.RuneLen(c) > maxFieldLen {
			break
		}
		b.WriteRune(c)
	}
	return strings.TrimSpace(b.String())
}

// addrType renders an address field value: "rfc822; addr" for an ASCII
// address, "utf-8; addr" for an internationalised one in a global report,
// and "utf-8; " with the 7-bit utf-8-addr-xtext form of RFC 6533 §3
// otherwise.
func addrType(addr string, global bool) string {
	switch {
	case smtp.IsASCII(addr):
		return "rfc822; " + clean(addr, true)
	case global:
		return "utf-8; " + clean(addr, false)
	default:
		return "utf-8; " + utf8AddrXtext(clean(addr, false))
	}
}

// utf8AddrXtext encodes addr as RFC 6533 utf-8-addr-xtext: printable ASCII
// except backslash, '+' and '=' as is, everything else as \x{HEX}.
func utf8AddrXtext(addr string) string {
	var b strings.Builder
	for _, c := range addr {
		if c > ' ' && c < 0x7f && c != '\\' && c != '+' && c != '=' {
			b.WriteRune(c)
			continue
		}
		fmt.Fprintf(&b, "\\x{%X}", c)
	}
	return b.String()
}

func defaultStatus(a Action) smtp.EnhancedCode {
	switch a {
	case Failed:
		return smtp.EnhancedCode{5, 0, 0}
	case Delayed:
		return smtp.EnhancedCode{4, 0, 0}
	default:
		return smtp.EnhancedCode{2, 0, 0}
	}
}

// statusFields renders the message/delivery-status body.
func statusFields(r *Report, global bool) []byte {
	var b bytes.Buffer
	f := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	f("Reporting-MTA", "dns; "+r.ReportingMTA)
	if r.EnvID != "" {
		f("Original-Envelope-Id", clean(r.EnvID, !global))
	}
	if !r.Arrival.IsZero() {
		f("Arrival-Date", r.Arrival.Format(dateLayout))
	}
	for _, rc := range r.Recipients {
		b.WriteString("\r\n")
		if rc.ORCPT != "" {
			typ, addr, ok := strings.Cut(rc.ORCPT, ";")
			if addr = strings.TrimSpace(addr); ok && smtp.IsASCII(addr) {
				f("Original-Recipient", clean(strings.TrimSpace(typ), true)+"; "+clean(addr, true))
			} else if ok {
				f("Original-Recipient", addrType(addr, global))
			}
		}
		f("Final-Recipient", addrType(rc.Address, global))
		f("Action", r.Action.String())
		st := rc.Status
		if st == (smtp.EnhancedCode{}) {
			st = defaultStatus(r.Action)
		}
		f("Status", st.String())
		if rc.RemoteMTA != "" {
			f("Remote-MTA", "dns; "+clean(rc.RemoteMTA, !global))
		}
		if d := clean(rc.Diagnostic, !global); d != "" {
			f("Diagnostic-Code", diagnosticType(d)+"; "+d)
		}
		if !rc.LastAttempt.IsZero() {
			f("Last-Attempt-Date", rc.LastAttempt.Format(dateLayout))
		}
		if r.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			f("Will-Retry-Until", rc.WillRetryUntil.Format(dateLayout))
		}
	}
	return b.Bytes()
}

// diagnosticType is "smtp" for an SMTP reply ("550 ...") and "x-herald" for
// any other explanation (DNS failure, connection error).
func diagnosticType(d string) string {
	if len(d) >= 3 && d[0] >= '2' && d[0] <= '5' && d[1] >= '0' && d[1] <= '9' && d[2] >= '0' && d[2] <= '9' &&
		(len(d) == 3 || d[3] == ' ' || d[3] == '-') {
		return "smtp"
	}
	return "x-herald"
}

func humanText(r *Report, o original) string {
	var b strings.Builder
	b.WriteString("This is the mail system at host " + r.ReportingMTA + ".\r\n\r\n")
	switch r.Action {
	case Failed:
		b.WriteString("I'm sorry to have to inform you that your message could not\r\n" +
			"be delivered to one or more recipients. It's attached below.\r\n")
	case Delayed:
		b.WriteString("Your message could not be delivered yet to one or more recipients.\r\n" +
			"The mail system will keep trying; you do not need to send it again.\r\n")
	default:
		b.WriteString("Your message was successfully delivered to the destination(s)\r\n" +
			"listed below.\r\n")
	}
	b.WriteString("\r\n")
	for _, rc := range r.Recipients {
		line := "<" + clean(rc.Address, false) + ">"
		if d := clean(rc.Diagnostic, false); d != "" {
			if rc.RemoteMTA != "" {
				line += ": host " + clean(rc.RemoteMTA, false) + " said: " + d
			} else {
				line += ": " + d
			}
		}
		if r.Action == Delayed && !rc.WillRetryUntil.IsZero() {
			line += " (will retry until " + rc.WillRetryUntil.Format(dateLayout) + ")"
		}
		b.WriteString(cutLine(line) + "\r\n")
	}
	switch {
	case o.truncated:
		b.WriteString("\r\nThe message was larger than " + fmt.Sprint(MaxReturnedSize/1024) +
			" KiB; only its headers are returned.\r\n")
	case o.data != nil && !o.full:
		b.WriteString("\r\nOnly the headers of the message are returned, as requested.\r\n")
	}
	return b.String()
}

// cutLine keeps a text line under the 998-byte limit, on a character
// boundary.
func cutLine(s string) string {
	const max = 990
	if len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }
