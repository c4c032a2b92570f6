package httproute

import (
	"bytes"
	"io"
	"mime"
	"strings"
	"time"

	_ "github.com/emersion/go-message/charset" // decode non-UTF-8 charsets
	"github.com/emersion/go-message/mail"

	"github.com/heraldmail/herald/internal/store"
)

// Payload is the JSON body POSTed to an HTTP route. Every field is always
// present (empty values when absent from the message).
type Payload struct {
	MessageID   string       `json:"message_id"`  // Herald queue ID
	Envelope    Envelope     `json:"envelope"`    // SMTP envelope
	Headers     []Header     `json:"headers"`     // top-level header fields in order, RFC 2047 decoded
	From        []Address    `json:"from"`        // From: mailboxes
	To          []Address    `json:"to"`          // To: mailboxes
	Cc          []Address    `json:"cc"`          // Cc: mailboxes
	Subject     string       `json:"subject"`     // decoded
	Date        string       `json:"date"`        // Date: as RFC 3339, "" if absent or invalid
	Text        string       `json:"text"`        // first text/plain body part, UTF-8
	HTML        string       `json:"html"`        // first text/html body part, UTF-8
	Attachments []Attachment `json:"attachments"` // every other leaf part
	Raw         []byte       `json:"raw"`         // the full message as received, base64
}

// Envelope is the SMTP envelope of the delivery.
type Envelope struct {
	From string `json:"from"` // MAIL FROM, "" for the null sender
	To   string `json:"to"`   // the recipient this POST delivers to
}

// Header is one header field.
type Header struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// Address is a mailbox; Name is the decoded display name.
type Address struct {
	Name    string `json:"name"`
	Address string `json:"address"`
}

// Attachment is a non-body MIME part, decoded from its transfer encoding.
type Attachment struct {
	Filename    string `json:"filename"`
	ContentType string `json:"content_type"`
	ContentID   string `json:"content_id"` // without angle brackets, for inline images
	Size        int    `json:"size"`       // decoded bytes
	Content     []byte `json:"content"`    // base64
}

// Parse builds the Payload of raw for recipient rcpt of msg. It is
// lenient: what cannot be parsed is left empty (the raw message is always
// included), and only the first maxParts leaf parts are examined.
func Parse(msg *store.Message, rcpt string, raw []byte, maxParts int) Payload {
	p := Payload{
		MessageID:   msg.ID,
		Envelope:    Envelope{From: msg.Sender, To: rcpt},
		Headers:     []Header{},
		From:        []Address{},
		To:          []Address{},
		Cc:          []Address{},
		Attachments: []Attachment{},
		Raw:         raw,
	}
	mr, _ := mail.CreateReader(bytes.NewReader(raw)) // an unknown charset still gives a reader
	if mr == nil {
		return p // not even a header: raw only
	}
	defer mr.Close()
	for f := mr.Header.Fields(); f.Next(); {
		name := f.Key()
		if b, err := f.Raw(); err == nil {
			if n, _, ok := bytes.Cut(b, []byte(":")); ok {
				name = strings.TrimSpace(string(n))
			}
		}
		v, err := f.Text()
		if err != nil {
			v = f.Value()
		}
		p.Headers = append(p.Headers, Header{Name: name, Value: v})
	}
	p.From = addresses(mr.Header, "From")
	p.To = addresses(mr.Header, "To")
	p.Cc = addresses(mr.Header, "Cc")
	if s, err := mr.Header.Subject(); err == nil {
		p.Subject = s
	} else {
		p.Subject = mr.Header.Get("Subject")
	}
	if d, err := mr.Header.Date(); err == nil && !d.IsZero() {
		p.Date = d.Format(time.RFC3339)
	}

	for range maxParts {
		part, _ := mr.NextPart()
		if part == nil {
			break // the end, or malformed MIME: keep what was parsed
		}
		content, rerr := io.ReadAll(part.Body)
		if rerr != nil {
			continue // a damaged part; it stays in raw
		}
		switch h := part.Header.(type) {
		case *mail.InlineHeader:
			ct, _, _ := h.ContentType()
			switch {
			case ct == "text/plain" && p.Text == "":
				p.Text = string(content)
				continue
			case ct == "text/html" && p.HTML == "":
				p.HTML = string(content)
				continue
			}
			p.Attachments = append(p.Attachments, attachment(h.Get("Content-Type"), h.Get("Content-Id"), filename(h.Get("Content-Disposition"), h.Get("Content-Type")), content))
		case *mail.AttachmentHeader:
			fn, err := h.Filename()
			if err != nil || fn == "" {
				fn = filename("", h.Get("Content-Type"))
			}
			p.Attachments = append(p.Attachments, attachment(h.Get("Content-Type"), h.Get("Content-Id"), fn, content))
		}
	}
	return p
}

// addresses parses an address-list header, falling back to the decoded
// text as a display name when it is not a valid list.
func addresses(h mail.Header, key string) []Address {
	out := []Address{}
	if h.Get(key) == "" {
		return out
	}
	list, err := h.AddressList(key)
	if err != nil {
		t, terr := h.Text(key)
		if terr != nil {
			t = h.Get(key)
		}
		return append(out, Address{Name: t})
	}
	for _, a := range list {
		out = append(out, Address{Name: a.Name, Address: a.Address})
	}
	return out
}

func attachment(contentType, contentID, fn string, content []byte) Attachment {
	ct, _, err := mime.ParseMediaType(contentType)
	if err != nil || ct == "" {
		ct = "application/octet-stream"
	}
	return Attachment{
		Filename:    fn,
		ContentType: ct,
		ContentID:   strings.Trim(strings.TrimSpace(contentID), "<>"),
		Size:        len(content),
		Content:     content,
	}
}

// filename takes the file name from Content-Disposition's filename or
// Content-Type's name parameter, RFC 2047/2231 decoded.
func filename(disposition, contentType string) string {
	dec := new(mime.WordDecoder)
	for _, hp := range [][2]string{{disposition, "filename"}, {contentType, "name"}} {
		if hp[0] == "" {
			continue
		}
		if _, params, err := mime.ParseMediaType(hp[0]); err == nil && params[hp[1]] != "" {
			if s, err := dec.DecodeHeader(params[hp[1]]); err == nil {
				return s
			}
			return params[hp[1]]
		}
	}
	return ""
}
