package dkim

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"net/textproto"
	"strings"

	"github.com/heraldmail/herald/internal/smtp"
)

// FromDomain returns the domain of the author in a header block (the
// message up to, or including, the blank line that ends the header),
// lower-cased A-labels. The header must hold exactly one From field with
// exactly one address; anything else is an error and the message must not
// be signed.
func FromDomain(header []byte) (string, error) {
	r := textproto.NewReader(bufio.NewReader(bytes.NewReader(header)))
	h, err := r.ReadMIMEHeader()
	if err != nil && !(errors.Is(err, io.EOF) && len(h) > 0) {
		return "", fmt.Errorf("dkim: read header: %w", err)
	}
	froms := h.Values("From")
	switch len(froms) {
	case 0:
		return "", errors.New("dkim: no From field")
	case 1:
	default:
		return "", fmt.Errorf("dkim: %d From fields", len(froms))
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		// The display name does not matter here: never fail on its charset.
		CharsetReader: func(_ string, in io.Reader) (io.Reader, error) { return in, nil },
	}}
	list, err := p.ParseList(froms[0])
	if err != nil {
		return "", fmt.Errorf("dkim: From: %w", err)
	}
	if len(list) != 1 {
		return "", fmt.Errorf("dkim: From has %d addresses, want 1", len(list))
	}
	at := strings.LastIndexByte(list[0].Address, '@')
	if at < 0 {
		return "", fmt.Errorf("dkim: From address %q has no domain", list[0].Address)
	}
	d, err := smtp.NormalizeDomain(list[0].Address[at+1:])
	if err != nil || strings.HasPrefix(d, "[") {
		return "", fmt.Errorf("dkim: From address %q: invalid domain", list[0].Address)
	}
	return d, nil
}
