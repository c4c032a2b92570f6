package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"path"
	"sort"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	gomessage "github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// MessageRequest is the JSON body of POST /v1/messages.
type MessageRequest struct {
	From        string            `json:"from"`                    // "Name <addr>" or "addr"
	To          []string          `json:"to,omitempty"`            // each "Name <addr>" or "addr"
	Cc          []string          `json:"cc,omitempty"`            //
	Bcc         []string          `json:"bcc,omitempty"`           // envelope only, never in the header
	ReplyTo     string            `json:"reply_to,omitempty"`      // one address
	ReplyToList []string          `json:"reply_to_list,omitempty"` // several Reply-To addresses (not with reply_to)
	Subject     string            `json:"subject,omitempty"`
	Text        string            `json:"text,omitempty"`
	HTML        string            `json:"html,omitempty"`
	Attachments []Attachment      `json:"attachments,omitempty"`
	Headers     map[string]string `json:"headers,omitempty"` // custom header fields
	Tags        []string          `json:"tags,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// One-click unsubscribe (unsubscribe.go): the group the message
	// belongs to, and whether to add the link without a group.
	UnsubscribeGroup string `json:"unsubscribe_group,omitempty"`
	ListUnsubscribe  bool   `json:"list_unsubscribe,omitempty"`
	// Tracking turns open and click tracking of the HTML part on or off
	// for this message (tracking.go); absent: the account's default.
	Tracking *TrackingOptions `json:"tracking,omitempty"`
	// Sandbox: check and render the message and record a "sandboxed"
	// event per recipient, but queue and send nothing (answer 200).
	Sandbox bool `json:"sandbox,omitempty"`

	// Stored templates (issue 12): the template fills subject, text and
	// html from data; see templates.go.
	TemplateID      string       `json:"template_id,omitempty"`
	TemplateVersion int          `json:"template_version,omitempty"` // 0: the active version
	Data            TemplateData `json:"data,omitempty"`
	// Personalizations, if given, make the request a batch: one message
	// per personalization, its fields applied over the top level (see
	// Personalization). At most maxPersonalizations.
	Personalizations []Personalization `json:"personalizations,omitempty"`
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
	// Disposition is "attachment" (the default) or "inline": an inline
	// file is a part of the HTML (an image it shows through "cid:"
	// + ContentID), sent in a multipart/related with the HTML.
	Disposition string `json:"disposition,omitempty"`
	// ContentID names an inline file for "cid:" URLs: required for
	// inline files, without angle brackets (one pair is tolerated).
	ContentID string `json:"content_id,omitempty"`
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
	maxReplyTo       = 20  // addresses in reply_to_list
	maxContentIDLen  = 250 // an inline file's content_id
)

// Attachment dispositions.
const (
	dispositionAttachment = "attachment"
	dispositionInline     = "inline"
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

// built is a message ready for the Submitter.
type built struct {
	envelopeFrom string
	from         string
	recipients   []string
	raw          []byte
	messageID    string // the Message-ID header field's value, angle brackets included
}

// file is an attachment, checked and decoded.
type file struct {
	h    gomessage.Header
	data []byte
}

// content is what every message of a request shares, checked and decoded
// once: the From and Reply-To addresses and the files (the expensive
// part of a batch to check).
type content struct {
	from        *mail.Address
	replyTo     []*mail.Address
	attachments []file // Content-Disposition: attachment, in multipart/mixed
	inline      []file // Content-Disposition: inline with a Content-ID, in multipart/related
	batchRcpts  int    // envelope recipients of all the messages of a batch

	// The account's tracking default, read once for all the messages of
	// the request (trackMessage).
	trackingOnce sync.Once
	tracking     store.AccountTracking
	trackingErr  error
}

// buildMessage validates a single-message request (all problems at once)
// and writes the MIME message. Validation errors are an *Error naming the
// first field and listing every problem.
func buildMessage(req *MessageRequest, hostname string, now time.Time, maxRcpts int) (*built, error) {
	var ec fieldErrors
	ct := checkRequest(req, requestLimits{maxRcpts: maxRcpts}, &ec)
	if err := ec.err(); err != nil {
		return nil, err
	}
	return writeMessage(req, ct, hostname, now, maxRcpts)
}

// requestLimits are the configured bounds a request is checked against.
type requestLimits struct {
	maxRcpts      int   // to+cc+bcc of one message
	maxBatchRcpts int   // recipients of all the messages of a batch
	maxBatchBytes int64 // estimated size of all the messages of a batch
}

// checkRequest checks a whole request, top level and personalizations,
// recording every problem in ec. It returns the shared content (nil
// only if ec has problems).
func checkRequest(req *MessageRequest, lim requestLimits, ec *fieldErrors) *content {
	ct := &content{}
	var err error
	if ct.from, err = parseMailbox("from", req.From); err != nil {
		ec.check(err)
	}
	checkFields("", req.own(), ec)
	if req.Personalizations == nil {
		checkMerged(req, nil, "", lim.maxRcpts, ec)
	} else {
		checkPersonalizations(req, ct, lim, ec)
	}
	switch {
	case req.ReplyTo != "" && len(req.ReplyToList) > 0:
		ec.add("reply_to_list", "give reply_to or reply_to_list, not both")
	case req.ReplyTo != "":
		if rt, err := parseMailbox("reply_to", req.ReplyTo); err != nil {
			ec.check(err)
		} else {
			ct.replyTo = []*mail.Address{rt}
		}
	case len(req.ReplyToList) > maxReplyTo:
		ec.add("reply_to_list", "at most %d Reply-To addresses", maxReplyTo)
	default:
		for i, s := range req.ReplyToList {
			if rt, err := parseMailbox(fmt.Sprintf("reply_to_list[%d]", i), s); err != nil {
				ec.check(err)
			} else {
				ct.replyTo = append(ct.replyTo, rt)
			}
		}
	}
	checkAttachments(req, ct, ec)
	if !ec.empty() {
		return nil
	}
	return ct
}

// checkFields checks the fields a message may have of its own (top level
// or personalization): each address, the subject, each custom header
// field, tag and metadata entry. Counts are checked on the merged message
// (checkMerged). prefix names the personalization ("" for the top level).
func checkFields(prefix string, p *Personalization, ec *fieldErrors) {
	for _, l := range []struct {
		name string
		list []string
	}{{"to", p.To}, {"cc", p.Cc}, {"bcc", p.Bcc}} {
		for i, s := range l.list {
			if _, err := parseMailbox(fmt.Sprintf("%s%s[%d]", prefix, l.name, i), s); err != nil {
				ec.check(err)
			}
		}
	}
	ec.check(checkText(prefix+"subject", p.Subject, maxSubjectLen))
	for _, k := range sortedKeys(p.Headers) {
		ec.check(checkHeader(prefix+"headers."+k, k, p.Headers[k]))
	}
	for i, t := range p.Tags {
		f := fmt.Sprintf("%stags[%d]", prefix, i)
		if t == "" {
			ec.add(f, "a tag may not be empty")
			continue
		}
		ec.check(checkText(f, t, maxTagLen))
	}
	for _, k := range sortedKeys(p.Metadata) {
		f := prefix + "metadata." + k
		if k == "" {
			ec.add(prefix+"metadata", "a metadata key may not be empty")
			continue
		}
		ec.check(checkText(f, k, maxMetaKeyLen))
		ec.check(checkText(f, p.Metadata[k], maxMetaValueLen))
	}
}

// checkMerged checks a message as it will be sent (for a batch, one
// personalization applied over the top level): recipients (one at least,
// maxRcpts at most), the number of header fields, tags and metadata, text
// or html. A problem of a field the personalization p set is named by
// prefix, others by their top-level name. It returns the number of
// envelope recipients.
func checkMerged(m *MessageRequest, p *Personalization, prefix string, maxRcpts int, ec *fieldErrors) int {
	name := func(field, base string) string {
		if p != nil && p.sets(base) {
			return prefix + field
		}
		return field
	}
	seen := make(map[string]bool)
	n := 0
	for _, l := range []struct {
		name string
		list []string
	}{{"to", m.To}, {"cc", m.Cc}, {"bcc", m.Bcc}} {
		for i, s := range l.list {
			a, err := parseMailbox("", s)
			if err != nil {
				continue // named by checkFields
			}
			if k := strings.ToLower(a.Address); !seen[k] {
				seen[k] = true
				if n++; n == maxRcpts+1 {
					ec.add(name(fmt.Sprintf("%s[%d]", l.name, i), l.name), "too many recipients (at most %d in to, cc and bcc together)", maxRcpts)
				}
			}
		}
	}
	if len(m.To)+len(m.Cc)+len(m.Bcc) == 0 {
		ec.add(prefix+"to", "at least one recipient is needed in to, cc or bcc")
	}
	if len(m.Headers) > maxHeaders {
		ec.add(name("headers", "headers"), "at most %d custom header fields", maxHeaders)
	}
	if len(m.Tags) > maxTags {
		ec.add(name("tags", "tags"), "at most %d tags", maxTags)
	}
	if len(m.Metadata) > maxMetadata {
		ec.add(name("metadata", "metadata"), "at most %d metadata keys", maxMetadata)
	}
	if m.Text == "" && m.HTML == "" {
		ec.add("text", "a message needs text, html or both")
	}
	for _, f := range []struct{ name, v string }{{"text", m.Text}, {"html", m.HTML}} {
		if !utf8.ValidString(f.v) {
			ec.add(f.name, "must be valid UTF-8")
		}
	}
	return n
}

// checkAttachments checks and decodes the files into ct.
func checkAttachments(req *MessageRequest, ct *content, ec *fieldErrors) {
	if len(req.Attachments) > maxAttachments {
		ec.add("attachments", "at most %d attachments", maxAttachments)
		return
	}
	cids := make(map[string]bool)
	for i, at := range req.Attachments {
		field := fmt.Sprintf("attachments[%d]", i)
		ok := true
		bad := func(sub, format string, args ...any) {
			ec.add(field+sub, format, args...)
			ok = false
		}
		switch {
		case at.Filename == "":
			bad(".filename", "a file name is required")
		case strings.ContainsAny(at.Filename, "/\\"):
			bad(".filename", "a file name may not contain a path")
		default:
			if err := checkText(field+".filename", at.Filename, maxFilenameLen); err != nil {
				ec.check(err)
				ok = false
			}
		}
		ctype := at.ContentType
		if ctype == "" {
			ctype = mime.TypeByExtension(strings.ToLower(path.Ext(at.Filename)))
			if ctype == "" {
				ctype = "application/octet-stream"
			}
		}
		mt, params, err := mime.ParseMediaType(ctype)
		if err != nil || !strings.Contains(mt, "/") || strings.HasPrefix(mt, "multipart/") || strings.ContainsAny(ctype, "\r\n") {
			bad(".content_type", "not a valid media type")
		}
		data, err := decodeBase64(at.Content)
		if err != nil {
			bad(".content", "not valid base64")
		}
		cid := ""
		switch at.Disposition {
		case "", dispositionAttachment:
			if at.ContentID != "" {
				bad(".content_id", "a content_id is only for inline files (disposition \"inline\")")
			}
		case dispositionInline:
			var msg string
			if cid, msg = checkContentID(at.ContentID); msg != "" {
				bad(".content_id", "%s", msg)
			} else if cids[cid] {
				bad(".content_id", "content_id %q is used by another file of the message", cid)
			}
			cids[cid] = true
			if req.HTML == "" {
				bad(".disposition", "inline files are parts of the HTML: the message needs html")
			}
		default:
			bad(".disposition", "must be \"attachment\" or \"inline\"")
		}
		if !ok {
			continue
		}
		var h gomessage.Header
		delete(params, "name")
		if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") && !strings.EqualFold(cs, "us-ascii") {
			delete(params, "charset") // go-message refuses other charsets; the bytes are sent as given
		}
		h.SetContentType(mt, params)
		h.Set("Content-Transfer-Encoding", "base64")
		if cid != "" {
			h.SetContentDisposition(dispositionInline, map[string]string{"filename": at.Filename})
			h.Set("Content-Id", "<"+cid+">")
			ct.inline = append(ct.inline, file{h, data})
		} else {
			h.SetContentDisposition(dispositionAttachment, map[string]string{"filename": at.Filename})
			ct.attachments = append(ct.attachments, file{h, data})
		}
	}
}

// checkContentID returns an inline file's Content-ID without angle
// brackets, or what is wrong with it: 1 to maxContentIDLen characters
// that are RFC 5322 atext, "." or "@" (no white space, angle brackets or
// line breaks: the value goes into a header field and a "cid:" URL).
func checkContentID(s string) (string, string) {
	if strings.HasPrefix(s, "<") && strings.HasSuffix(s, ">") && len(s) >= 2 {
		s = s[1 : len(s)-1]
	}
	if s == "" {
		return "", "an inline file needs a content_id (for cid: URLs in the HTML)"
	}
	if len(s) > maxContentIDLen {
		return "", fmt.Sprintf("a content_id is at most %d characters", maxContentIDLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-/=?^_`{|}~.@", c) >= 0) {
			return "", "a content_id is letters, digits and !#$%&'*+-/=?^_`{|}~.@ only (no spaces, angle brackets or line breaks)"
		}
	}
	return s, ""
}

// writeMessage writes the MIME message of a checked request m (for a
// batch, one personalization applied) with the shared content ct.
func writeMessage(m *MessageRequest, ct *content, hostname string, now time.Time, maxRcpts int) (*built, error) {
	var h gomail.Header
	b := &built{envelopeFrom: ct.from.Address, from: ct.from.Address}
	seen := make(map[string]bool)
	var ec fieldErrors
	for _, l := range []struct {
		name, header string
		list         []string
	}{{"to", "To", m.To}, {"cc", "Cc", m.Cc}, {"bcc", "", m.Bcc}} {
		var addrs []*mail.Address
		for i, s := range l.list {
			a, err := parseMailbox(fmt.Sprintf("%s[%d]", l.name, i), s)
			if err != nil {
				ec.check(err)
				continue
			}
			addrs = append(addrs, a)
			if k := strings.ToLower(a.Address); !seen[k] {
				seen[k] = true
				b.recipients = append(b.recipients, a.Address)
			}
		}
		if l.header != "" {
			h.SetAddressList(l.header, addrs)
		}
	}
	if len(b.recipients) == 0 {
		ec.add("to", "at least one recipient is needed in to, cc or bcc")
	}
	if len(b.recipients) > maxRcpts {
		ec.add("to", "too many recipients (at most %d in to, cc and bcc together)", maxRcpts)
	}
	ec.check(checkText("subject", m.Subject, maxSubjectLen))
	for _, k := range sortedKeys(m.Headers) {
		ec.check(checkHeader("headers."+k, k, m.Headers[k]))
	}
	if m.Text == "" && m.HTML == "" {
		ec.add("text", "a message needs text, html or both")
	}
	if err := ec.err(); err != nil {
		return nil, err
	}
	h.SetAddressList("From", []*mail.Address{ct.from})
	h.SetAddressList("Reply-To", ct.replyTo)
	if m.Subject != "" {
		setText(&h, "Subject", m.Subject)
	}
	for _, k := range sortedKeys(m.Headers) {
		setText(&h, k, m.Headers[k])
	}
	b.messageID = message.NewID(hostname)
	h.SetDate(now)
	h.Set("Message-ID", b.messageID)
	h.Set("MIME-Version", "1.0")

	var buf bytes.Buffer
	if err := writeTree(&buf, h.Header, bodyTree(m, ct)); err != nil {
		return nil, fmt.Errorf("building message: %w", err)
	}
	b.raw = buf.Bytes()
	return b, nil
}

// part is a node of the MIME tree: a leaf with its body, or a multipart
// with its children.
type part struct {
	h    gomessage.Header
	body []byte
	kids []*part
}

// bodyTree arranges the parts: text and html as multipart/alternative;
// with inline files, the HTML (or the alternative) and the files in a
// multipart/related (RFC 2387); with attachments, all that and the files
// in a multipart/mixed.
func bodyTree(m *MessageRequest, ct *content) *part {
	text := func(mt, body string) *part {
		p := &part{body: []byte(normalizeNewlines(body))}
		p.h.SetContentType(mt, map[string]string{"charset": "utf-8"})
		p.h.Set("Content-Transfer-Encoding", "quoted-printable")
		return p
	}
	multi := func(mt string, params map[string]string, kids ...*part) *part {
		p := &part{kids: kids}
		p.h.SetContentType(mt, params)
		return p
	}
	var texts []*part
	if m.Text != "" {
		texts = append(texts, text("text/plain", m.Text))
	}
	if m.HTML != "" {
		texts = append(texts, text("text/html", m.HTML))
	}
	root := texts[0]
	if len(texts) > 1 {
		root = multi("multipart/alternative", nil, texts...)
	}
	files := func(fs []file) []*part {
		out := make([]*part, len(fs))
		for i, f := range fs {
			out[i] = &part{h: f.h.Copy(), body: f.data}
		}
		return out
	}
	if len(ct.inline) > 0 {
		rootType, _, _ := root.h.ContentType()
		root = multi("multipart/related", map[string]string{"type": rootType}, append([]*part{root}, files(ct.inline)...)...)
	}
	if len(ct.attachments) > 0 {
		root = multi("multipart/mixed", nil, append([]*part{root}, files(ct.attachments)...)...)
	}
	return root
}

// writeTree writes the message: the top-level header h with the root
// part's Content-* fields, then the root's body or children.
func writeTree(w io.Writer, h gomessage.Header, root *part) error {
	for _, k := range []string{"Content-Type", "Content-Transfer-Encoding"} {
		if v := root.h.Get(k); v != "" {
			h.Set(k, v)
		}
	}
	mw, err := gomessage.CreateWriter(w, h)
	if err != nil {
		return err
	}
	return writeKids(mw, root)
}

// writeKids writes p's body or its children into mw and closes mw.
func writeKids(mw *gomessage.Writer, p *part) error {
	if p.kids == nil {
		if _, err := mw.Write(p.body); err != nil {
			return err
		}
		return mw.Close()
	}
	for _, k := range p.kids {
		kw, err := mw.CreatePart(k.h)
		if err != nil {
			return err
		}
		if err := writeKids(kw, k); err != nil {
			return err
		}
	}
	return mw.Close()
}

// sortedKeys returns the keys of m in order, for stable results.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
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

// checkHeader checks one custom header field: a valid name that Herald
// or a dedicated field does not set, a single-line value, the field short
// enough for one line.
func checkHeader(field, k, v string) error {
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
	return nil
}

// checkTags bounds tags and metadata, which are copied onto every event.
func checkTags(tags []string, meta map[string]string) error {
	var ec fieldErrors
	if len(tags) > maxTags {
		ec.add("tags", "at most %d tags", maxTags)
	}
	if len(meta) > maxMetadata {
		ec.add("metadata", "at most %d metadata keys", maxMetadata)
	}
	checkFields("", &Personalization{Tags: tags, Metadata: meta}, &ec)
	return ec.err()
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
