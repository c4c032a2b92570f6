package submit

import (
	"context"

	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// oversign are the fields signed once more than they occur: From, and the
// one-click unsubscribe fields (RFC 8058 §4 wants them signed), so that
// nobody can add another instance without breaking the signature.
var oversign = []string{"From", "List-Unsubscribe", "List-Unsubscribe-Post"}

// signer is the spool processor that DKIM-signs outgoing mail with the
// active keys of its From: domain (RSA and Ed25519 both when both are
// active). It signs only a domain the identity may use: for submissions the
// header policy has already refused any other, and the check is repeated
// here so that no path can sign for a domain it does not own. A message
// whose From: is not one parsable address goes out unsigned.
type signer struct {
	tx *Tx
	s  *dkim.Signer
}

func (p *signer) Header(ctx context.Context, msg *store.Message, header []byte) ([]byte, error) {
	t := p.tx
	log := t.p.log
	from := t.author // found by the header policy, for submissions
	if from == nil {
		a, ok := singleFrom(header)
		if !ok {
			log.Debug("not signing: the From field does not hold one address", "id", msg.ID)
			return header, nil
		}
		from = &a
	}
	if err := t.mayUse(ctx, *from, "From: address"); err != nil {
		log.Warn("not signing: the sender may not use the From address", "id", msg.ID, "from", from.String(), "identity", t.ident.Kind.String())
		return header, nil
	}
	domain := from.Domain
	keys, err := t.p.st.ActiveDKIMKeys(ctx, domain)
	if err != nil {
		log.Error("not signing: DKIM key lookup failed", "domain", domain, "err", err)
		return header, nil
	}
	if len(keys) == 0 {
		return header, nil
	}
	dk := make([]dkim.Key, len(keys))
	for i, k := range keys {
		dk[i] = dkim.Key{Domain: k.Domain, Selector: k.Selector, PrivateKey: k.PrivateKey}
	}
	if p.s, err = dkim.NewSigner(dk, dkim.SignOptions{Oversign: oversign}); err != nil {
		log.Error("not signing: bad DKIM key", "domain", domain, "err", err)
	}
	return header, nil
}

func (p *signer) Write(b []byte) (int, error) {
	if p.s == nil {
		return len(b), nil
	}
	return p.s.Write(b)
}

func (p *signer) Finish(ctx context.Context, msg *store.Message) ([]byte, error) {
	if p.s == nil {
		return nil, nil
	}
	h, err := p.s.Headers()
	p.s = nil
	if err != nil {
		// Sending unsigned beats refusing the user's mail; the log says why.
		p.tx.p.log.Error("DKIM signing failed; sending unsigned", "id", msg.ID, "err", err)
		return nil, nil
	}
	return h, nil
}

func (p *signer) Abort() {
	if p.s != nil {
		p.s.Close()
		p.s = nil
	}
}

// singleFrom returns the address of a header section's only From field
// when it holds exactly one.
func singleFrom(header []byte) (smtp.Address, bool) {
	froms := message.FieldValues(message.Fields(header), "From")
	if len(froms) != 1 {
		return smtp.Address{}, false
	}
	addrs, err := parseMailboxes(froms[0])
	if err != nil || len(addrs) != 1 {
		return smtp.Address{}, false
	}
	return addrs[0], true
}
