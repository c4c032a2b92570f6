package app

import (
	"context"
	"log/slog"

	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
)

// signer is the spool processor that DKIM-signs outbound mail with the
// active keys of the From header's domain (RSA and Ed25519 both when both
// are active: dual signing). A message whose From has no key, or is not a
// single parsable address, goes out unsigned.
type signer struct {
	keys store.DKIMKeys
	log  *slog.Logger
	s    *dkim.Signer
}

// NewSigner returns a fresh signing processor for one message.
func NewSigner(keys store.DKIMKeys, log *slog.Logger) spool.Processor {
	return &signer{keys: keys, log: log}
}

func (p *signer) Header(ctx context.Context, msg *store.Message, header []byte) ([]byte, error) {
	domain, err := dkim.FromDomain(header)
	if err != nil {
		p.log.Debug("not signing: no usable From", "err", err)
		return header, nil
	}
	keys, err := p.keys.ActiveDKIMKeys(ctx, domain)
	if err != nil {
		p.log.Error("not signing: DKIM key lookup failed", "domain", domain, "err", err)
		return header, nil
	}
	if len(keys) == 0 {
		return header, nil
	}
	if p.s, err = dkim.NewSigner(keys, dkim.SignOptions{}); err != nil {
		p.log.Error("not signing: bad DKIM key", "domain", domain, "err", err)
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
		p.log.Error("DKIM signing failed; sending unsigned", "err", err)
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
