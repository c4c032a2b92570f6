package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/mail"
	"path"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	gomail "github.com/emersion/go-message/mail"
	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/smtp"
)

// MessageRequest is the JSON body of POST /v1/messages.
type MessageRequest struct {
	From        string            `json:"from"`               // "Name <addr>" or "addr"
	To          []string          `json:"to,omitempty"`       // each "Name <addr>" or "addr"
	Cc          []string          `json:"cc,omitempty"`       //
	Bcc         []string          `json:"bcc,omitempty"`      // envelope only, never in the header
	ReplyTo     string            `json:"reply_to,omitempty"` // one address
	Subject     string            `json:"subject,omitempty"`
	Text        string            `json:"text,omitempty"`
	HTML        string            `json:"html,omitempty"`
	Attachments []Attachment      `json:"attachments,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"` // custom header fields
	Tags        []string          `json:"tags,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// SendAt schedules the message: an RFC 3339 time or a Unix time in
	// seconds, at most 72 hours ahead (schedule.go). BatchID puts it in a
	// batch created with POST /v1/batches.
	SendAt  json.RawMessage `json:"send_at,omitempty"`
	BatchID string          `json:"batch_id,omitempty"`
}

// Attachment is a file attached to a message; Content is base64.
type Attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type,omitempty"` // default: from the file name's extension
	Content     string `json:"content"`                // standard base64, padding and line breaks tolerated
}

// Limits of one JSON message.
const (
	maxTags          = 20
	maxTagLen        = 128
	maxMetadata      = 50
	maxMetaKeyLen    = 128
	maxMetaValueLen  = 1024
	maxHeaders       = 50
	maxHeaderNameLen = 76
	maxHeaderLen     = 900 // name + value, so the field fits a 998-octet line
	maxSubjectLen    = 2000
	maxAttachments   = 100
	maxFilenameLen   = 255
)

// reservedHeaders are set by Herald or by dedicated fields; custom headers
// may not override them.
var reservedHeaders = map[string]bool{
	"from": true, "to": true, "cc": true, "bcc": true, "sender": true, "reply-to": true,
	"subject": true, "date": true, "message-id": true, "mime-version": true,
	"content-type": true, "content-transfer-encoding": true, "content-disposition": true,
	"content-id": true, "content-description": true,
	"return-path": true, "received": true, "dkim-signature": true, "domainkey-signature": true,
	"authentication-results": true, "arc-seal": true, "arc-message-signature": true,
	"arc-authentication-results": true, "received-spf": true, "delivered-to": true,
	"resent-from": true, "resent-to": true, "resent-cc": true, "resent-bcc": true,
	"resent-date": true, "resent-sender": true, "resent-message-id": true,
	"x-herald-account": true,
}

type textPart struct {
	h    gomail.InlineHeader
	body []byte
}

// built is a message ready for the Submitter.
type built struct {
	envelopeFrom string
	from         string
	recipients   []string
	raw          []byte
}

// buildMessage validates req and writes the MIME message. Validation
// errors are *Error naming the field.
func buildMessage(req *MessageRequest, hostname string, now time.Time, maxRcpts int) (*built, error) {
	var h gomail.Header
	from, err := parseMailbox("from", req.From)
	if err != nil {
		return nil, err
	}
	b := &built{envelopeFrom: from.Address, from: from.Address}
	seen := make(map[string]bool)
	addList := func(field string, list []string, header string) error {
		var addrs []*mail.Address
		for i, s := range list {
			a, err := parseMailbox(fmt.Sprintf("%s[%d]", field, i), s)
			if err != nil {
				return err
			}
			addrs = append(addrs, a)
			if k := strings.ToLower(a.Address); !seen[k] {
				seen[k] = true
				b.recipients = append(b.recipients, a.Address)
				if len(b.recipients) > maxRcpts {
					return errInvalid(fmt.Sprintf("%s[%d]", field, i), "too many recipients (at most %d in to, cc and bcc together)", maxRcpts)
				}
			}
		}
		if header != "" {
			h.SetAddressList(header, addrs)
		}
		return nil
	}
	if err := addList("to", req.To, "To"); err != nil {
		return nil, err
	}
	if err := addList("cc", req.Cc, "Cc"); err != nil {
		return nil, err
	}
	if err := addList("bcc", req.Bcc, ""); err != nil {
		return nil, err
	}
	if len(b.recipients) == 0 {
		return nil, errInvalid("to", "at least one recipient is needed in to, cc or bcc")
	}
	h.SetAddressList("From", []*mail.Address{from})
	if req.ReplyTo != "" {
		rt, err := parseMailbox("reply_to", req.ReplyTo)
		if err != nil {
			return nil, err
		}
		h.SetAddressList("Reply-To", []*mail.Address{rt})
	}
	if err := checkText("subject", req.Subject, maxSubjectLen); err != nil {
		return nil, err
	}
	if req.Subject != "" {
		setText(&h, "Subject", req.Subject)
	}
	if req.Text == "" && req.HTML == "" {
		return nil, errInvalid("text", "a message needs text, html or both")
	}
	for _, f := range []struct{ name, v string }{{"text", req.Text}, {"html", req.HTML}} {
		if !utf8.ValidString(f.v) {
			return nil, errInvalid(f.name, "must be valid UTF-8")
		}
	}
	if err := customHeaders(&h, req.Headers); err != nil {
		return nil, err
	}
	if err := checkTags(req.Tags, req.Metadata); err != nil {
		return nil, err
	}
	type file struct {
		h    gomail.AttachmentHeader
		data []byte
	}
	if len(req.Attachments) > maxAttachments {
		return nil, errInvalid("attachments", "at most %d attachments", maxAttachments)
	}
	files := make([]file, 0, len(req.Attachments))
	for i, at := range req.Attachments {
		field := fmt.Sprintf("attachments[%d]", i)
		if at.Filename == "" {
			return nil, errInvalid(field+".filename", "a file name is required")
		}
		if err := checkText(field+".filename", at.Filename, maxFilenameLen); err != nil {
			return nil, err
		}
		if strings.ContainsAny(at.Filename, "/\\") {
			return nil, errInvalid(field+".filename", "a file name may not contain a path")
		}
		ct := at.ContentType
		if ct == "" {
			ct = mime.TypeByExtension(strings.ToLower(path.Ext(at.Filename)))
			if ct == "" {
				ct = "application/octet-stream"
			}
		}
		mt, params, err := mime.ParseMediaType(ct)
		if err != nil || !strings.Contains(mt, "/") || strings.HasPrefix(mt, "multipart/") || strings.ContainsAny(ct, "\r\n") {
			return nil, errInvalid(field+".content_type", "not a valid media type")
		}
		data, err := decodeBase64(at.Content)
		if err != nil {
			return nil, errInvalid(field+".content", "not valid base64")
		}
		var ah gomail.AttachmentHeader
		delete(params, "name")
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
			delete(params, "charset") // go-message refuses other charsets; the bytes are sent as given
		}
		ah.SetContentType(mt, params)
		ah.SetFilename(at.Filename)
		ah.Set("Content-Transfer-Encoding", "base64")
		files = append(files, file{ah, data})
	}

	h.SetDate(now)
	h.Set("Message-ID", message.NewID(hostname))
	h.Set("MIME-Version", "1.0")

	var buf bytes.Buffer
	text := func(ct, body string) (gomail.InlineHeader, []byte) {
		var ih gomail.InlineHeader
		ih.SetContentType(ct, map[string]string{"charset": "utf-8"})
		ih.Set("Content-Transfer-Encoding", "quoted-printable")
		return ih, []byte(normalizeNewlines(body))
	}
	var parts []textPart
	if req.Text != "" {
		ih, body := text("text/plain", req.Text)
		parts = append(parts, textPart{ih, body})
	}
	if req.HTML != "" {
		ih, body := text("text/html", req.HTML)
		parts = append(parts, textPart{ih, body})
	}
	if len(files) == 0 && len(parts) == 1 {
		// A single text part: the message itself is that part.
		for _, k := range []string{"Content-Type", "Content-Transfer-Encoding"} {
			h.Set(k, parts[0].h.Get(k))
		}
		w, err := gomail.CreateSingleInlineWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
		if err := writeClose(w, parts[0].body); err != nil {
			return nil, err
		}
	} else if len(files) == 0 {
		iw, err := gomail.CreateInlineWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
		if err := writeInlineParts(iw, parts); err != nil {
			return nil, err
		}
	} else {
		mw, err := gomail.CreateWriter(&buf, h)
		if err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
		if len(parts) == 1 {
			w, err := mw.CreateSingleInline(parts[0].h)
			if err != nil {
				return nil, fmt.Errorf("building message: %w", err)
			}
			if err := writeClose(w, parts[0].body); err != nil {
				return nil, err
			}
		} else {
			iw, err := mw.CreateInline()
			if err != nil {
				return nil, fmt.Errorf("building message: %w", err)
			}
			if err := writeInlineParts(iw, parts); err != nil {
				return nil, err
			}
		}
		for _, f := range files {
			w, err := mw.CreateAttachment(f.h)
			if err != nil {
				return nil, fmt.Errorf("building message: %w", err)
			}
			if err := writeClose(w, f.data); err != nil {
				return nil, err
			}
		}
		if err := mw.Close(); err != nil {
			return nil, fmt.Errorf("building message: %w", err)
		}
	}
	b.raw = buf.Bytes()
	return b, nil
}

// writeInlineParts writes the alternative text parts into iw and closes it.
func writeInlineParts(iw *gomail.InlineWriter, parts []textPart) error {
	for _, p := range parts {
		w, err := iw.CreatePart(p.h)
		if err != nil {
			return fmt.Errorf("building message: %w", err)
		}
		if err := writeClose(w, p.body); err != nil {
			return err
		}
	}
	if err := iw.Close(); err != nil {
		return fmt.Errorf("building message: %w", err)
	}
	return nil
}

func writeClose(w interface {
	Write([]byte) (int, error)
	Close() error
}, data []byte) error {
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("building message: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("building message: %w", err)
	}
	return nil
}

// parseMailbox parses "Name <addr>" or "addr" and checks the address as
// SMTP would; the domain is returned in A-label form.
func parseMailbox(field, s string) (*mail.Address, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errInvalid(field, "an address is required")
	}
	if len(s) > 512 || strings.ContainsAny(s, "\r\n\x00") || !utf8.ValidString(s) {
		return nil, errInvalid(field, "not a valid address")
	}
	a, err := gomail.ParseAddress(s)
	if err != nil {
		return nil, errInvalid(field, "not a valid address: %q", s)
	}
	sa, err := smtp.ParseAddress(a.Address)
	if err != nil || sa.Local == "" || sa.Domain == "" || strings.HasPrefix(sa.Domain, "[") {
		return nil, errInvalid(field, "not a valid address: %q", a.Address)
	}
	if hasControl(a.Name) {
		return nil, errInvalid(field, "the display name has control characters")
	}
	return &mail.Address{Name: a.Name, Address: sa.String()}, nil
}

// checkText refuses control characters (tab excepted), invalid UTF-8 and
// over-long values in a single-line field.
func checkText(field, s string, max int) error {
	if !utf8.ValidString(s) {
		return errInvalid(field, "must be valid UTF-8")
	}
	if hasControl(s) {
		return errInvalid(field, "may not contain line breaks or control characters")
	}
	if utf8.RuneCountInString(s) > max {
		return errInvalid(field, "longer than %d characters", max)
	}
	return nil
}

func hasControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}

// customHeaders validates and adds the caller's header fields, sorted by
// name for a stable result.
func customHeaders(h *gomail.Header, m map[string]string) error {
	if len(m) > maxHeaders {
		return errInvalid("headers", "at most %d custom header fields", maxHeaders)
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v := m[k]
		field := "headers." + k
		if k == "" || len(k) > maxHeaderNameLen {
			return errInvalid(field, "invalid header field name")
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; c < '!' || c > '~' || c == ':' {
				return errInvalid(field, "invalid header field name")
			}
		}
		lk := strings.ToLower(k)
		if reservedHeaders[lk] || strings.HasPrefix(lk, "content-") || strings.HasPrefix(lk, "resent-") || strings.HasPrefix(lk, "arc-") {
			return errInvalid(field, "%s is set by Herald or by a dedicated field and cannot be given as a custom header", k)
		}
		if err := checkText(field, v, maxHeaderLen); err != nil {
			return err
		}
		if len(k)+2+len(v) > maxHeaderLen {
			return errInvalid(field, "header field too long")
		}
		setText(h, k, v)
	}
	return nil
}

// checkTags bounds tags and metadata, which are copied onto every event.
func checkTags(tags []string, meta map[string]string) error {
	if len(tags) > maxTags {
		return errInvalid("tags", "at most %d tags", maxTags)
	}
	for i, t := range tags {
		f := fmt.Sprintf("tags[%d]", i)
		if t == "" {
			return errInvalid(f, "a tag may not be empty")
		}
		if err := checkText(f, t, maxTagLen); err != nil {
			return err
		}
	}
	if len(meta) > maxMetadata {
		return errInvalid("metadata", "at most %d metadata keys", maxMetadata)
	}
	for k, v := range meta {
		f := "metadata." + k
		if k == "" {
			return errInvalid("metadata", "a metadata key may not be empty")
		}
		if err := checkText(f, k, maxMetaKeyLen); err != nil {
			return err
		}
		if err := checkText(f, v, maxMetaValueLen); err != nil {
			return err
		}
	}
	return nil
}

// decodeBase64 accepts standard base64 with or without padding and with
// line breaks or spaces.
func decodeBase64(s string) ([]byte, error) {
	s = strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, s)
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

// normalizeNewlines turns CRLF and lone CR into LF; the quoted-printable
// writer then emits CRLF.
func normalizeNewlines(s string) string {
	if !strings.ContainsRune(s, '\r') {
		return s
	}
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n", "\n"), "\r", "\n")
}

// setText sets an unstructured header field, RFC 2047-encoding non-ASCII
// text; ASCII text that would read as an encoded word ("=?...?=") is
// encoded too, so it arrives as written.
func setText(h *gomail.Header, k, v string) {
	// Text that looks like an encoded word, or whose leading or trailing
	// white space a reader would drop, is encoded so it arrives as sent.
	if !strings.Contains(v, "=?") && strings.TrimSpace(v) == v {
		h.SetText(k, v)
		return
	}
	h.Set(k, qEncodeAll(v))
}

// qEncodeAll encodes s as RFC 2047 Q encoded words of at most 75
// characters, never splitting a character between words.
func qEncodeAll(s string) string {
	const prefix, suffix, max = "=?utf-8?q?", "?=", 75
	var out, word strings.Builder
	flush := func() {
		if word.Len() == 0 {
			return
		}
		if out.Len() > 0 {
			out.WriteByte(' ')
		}
		out.WriteString(prefix + word.String() + suffix)
		word.Reset()
	}
	for _, r := range s {
		var enc strings.Builder
		var buf [utf8.UTFMax]byte
		n := utf8.EncodeRune(buf[:], r)
		for _, c := range buf[:n] {
			switch {
			case c == ' ':
				enc.WriteByte('_')
			case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!*+-/", c) >= 0:
				enc.WriteByte(c)
			default:
				fmt.Fprintf(&enc, "=%02X", c)
			}
		}
		if len(prefix)+word.Len()+enc.Len()+len(suffix) > max {
			flush()
		}
		word.WriteString(enc.String())
	}
	flush()
	return out.String()
}
