package submit

import (
	"bytes"
	"context"
	"io"
	"mime"
	"net/mail"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// headerPolicy is the spool processor of submitted mail: it checks every
// address of the From: and Sender: fields against the identity's rights and
// adds the fields a submission may lack (RFC 6409 §8).
type headerPolicy struct {
	tx *Tx
}

var errContent = smtp.EnhancedCode{5, 6, 0}

// maxFromAddresses bounds the authors of one message.
const maxFromAddresses = 50

func (h *headerPolicy) Header(ctx context.Context, msg *store.Message, header []byte) ([]byte, error) {
	t := h.tx
	if len(header) > 0 && (header[0] == ' ' || header[0] == '\t') {
		// A continuation line with no field before it: readers disagree on
		// what it means (a field, garbage, the body), so no reading of it
		// may carry an unchecked From.
		return nil, refuse(ReasonHeaderFrom, 550, errContent, "The message header starts with a continuation line")
	}
	fields := message.Fields(header)
	froms := message.FieldValues(fields, "From")
	var add []string
	switch len(froms) {
	case 0:
		if t.mail.From == "" {
			return nil, refuse(ReasonHeaderFrom, 550, errContent, "The message has no From: header field")
		}
		add = append(add, "From: <"+t.mail.From+">")
		if a, err := smtp.ParseAddress(t.mail.From); err == nil {
			t.author = &a
		}
	case 1:
		addrs, err := parseMailboxes(froms[0])
		if err != nil || len(addrs) == 0 {
			return nil, refuse(ReasonHeaderFrom, 550, errContent, "The From: header field cannot be parsed")
		}
		if len(addrs) > maxFromAddresses {
			// Each address may cost directory lookups; no real author list is this long.
			return nil, refuse(ReasonHeaderFrom, 550, errContent, "The From: header field has more than %d addresses", maxFromAddresses)
		}
		for _, a := range addrs {
			if err := t.mayUse(ctx, a, "From: address"); err != nil {
				return nil, err
			}
		}
		if len(addrs) == 1 {
			t.author = &addrs[0]
		}
	default:
		return nil, refuse(ReasonHeaderFrom, 550, errContent, "The message has %d From: header fields; exactly one is allowed", len(froms))
	}
	switch senders := message.FieldValues(fields, "Sender"); len(senders) {
	case 0:
	case 1:
		addrs, err := parseMailboxes(senders[0])
		if err != nil || len(addrs) != 1 {
			return nil, refuse(ReasonHeaderFrom, 550, errContent, "The Sender: header field must hold one address")
		}
		if err := t.mayUse(ctx, addrs[0], "Sender: address"); err != nil {
			return nil, err
		}
	default:
		return nil, refuse(ReasonHeaderFrom, 550, errContent, "The message has %d Sender: header fields; at most one is allowed", len(senders))
	}
	if len(message.FieldValues(fields, "Date")) == 0 {
		add = append(add, "Date: "+t.p.now().Format(time.RFC1123Z))
	}
	if len(message.FieldValues(fields, "Message-ID")) == 0 {
		add = append(add, "Message-ID: "+message.NewID(t.p.cfg.Hostname))
	}
	if len(add) == 0 {
		return header, nil
	}
	return insertFields(header, add), nil
}

func (h *headerPolicy) Write(b []byte) (int, error) { return len(b), nil }

func (h *headerPolicy) Finish(context.Context, *store.Message) ([]byte, error) { return nil, nil }

func (h *headerPolicy) Abort() {}

// insertFields adds fields at the end of a header section, before the
// blank line that ends it (or at the end of a message that is all header).
func insertFields(header []byte, fields []string) []byte {
	end := len(header)
	switch {
	case bytes.Equal(header, []byte("\r\n")):
		end = 0
	case bytes.HasSuffix(header, []byte("\r\n\r\n")):
		end -= 2
	}
	var b bytes.Buffer
	b.Grow(len(header) + 128)
	b.Write(header[:end])
	if end > 0 && !bytes.HasSuffix(header[:end], []byte("\n")) {
		b.WriteString("\r\n") // a last line without its line ending
	}
	for _, f := range fields {
		b.WriteString(f)
		b.WriteString("\r\n")
	}
	b.Write(header[end:])
	return b.Bytes()
}

// wordDecoder decodes RFC 2047 display names without failing on an
// unknown charset: only the addresses matter here.
var wordDecoder = &mime.WordDecoder{CharsetReader: func(_ string, in io.Reader) (io.Reader, error) { return in, nil }}

// parseMailboxes parses an address-list field value (groups flattened)
// into addresses.
func parseMailboxes(value string) ([]smtp.Address, error) {
	p := mail.AddressParser{WordDecoder: wordDecoder}
	list, err := p.ParseList(value)
	if err != nil {
		return nil, err
	}
	out := make([]smtp.Address, 0, len(list))
	for _, a := range list {
		addr, err := smtp.ParseAddress(strings.TrimSpace(a.Address))
		if err != nil {
			return nil, err
		}
		out = append(out, addr)
	}
	return out, nil
}
