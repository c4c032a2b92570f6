package submit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// SandboxResult is what a sandbox send found: what a real send of the
// same request would have been, without it.
type SandboxResult struct {
	// ID is the queue ID the message would have had; the "sandboxed"
	// events carry it.
	ID string
	// Recipients are the final recipients a real send would queue
	// (aliases expanded); Suppressed those it would skip.
	Recipients []string
	Suppressed []string
	// Message is the message as it would be queued: the DKIM signature
	// and the fields Herald adds (Date, Message-ID, From) in place.
	Message []byte
	// Rate is the account's sending limit after this request, when it has
	// one.
	Rate RateStatus
}

// maxSandboxHeader bounds the header section, as the spool does
// (spool.MaxHeaderBytes).
const maxSandboxHeader = 1 << 20

// Sandbox runs req through every check of Submit — sender rights,
// recipients, the suppression list, the rate limits, the header policy
// and DKIM signing — without queueing it, and records one "sandboxed"
// event per recipient (whose reply says what a real send would do), which
// webhooks deliver like any other. A refusal is the error Submit would
// return, and records nothing.
//
// A sandbox send is charged to the rate limits like a real one: it costs
// the store an event and a webhook delivery per recipient, and the
// answer, including X-RateLimit-Remaining, is the one a real send would
// get. Reports for feedback (VERP) addresses are not consumed.
func (p *Pipeline) Sandbox(ctx context.Context, req *Request) (SandboxResult, error) {
	tx, err := p.Begin(ctx, req.Identity)
	if err != nil {
		return SandboxResult{}, err
	}
	if req.ID != "" {
		tx.id = req.ID
	}
	tx.tags, tx.metadata, tx.sandbox = req.Tags, req.Metadata, true
	tx.group = req.UnsubscribeGroup
	if err := tx.Mail(ctx, Mail{From: req.From, Ret: req.Ret, EnvID: req.EnvID, SMTPUTF8: req.SMTPUTF8}); err != nil {
		return SandboxResult{}, err
	}
	for _, r := range req.Recipients {
		if err := tx.Rcpt(ctx, r); err != nil && !errors.Is(err, ErrSuppressed) {
			return SandboxResult{}, err
		}
	}
	return tx.sandboxData(ctx, req.Body)
}

// sandboxData is Data for a sandbox send: the same checks, the processors
// run over the message in memory instead of the spool.
func (t *Tx) sandboxData(ctx context.Context, body io.Reader) (SandboxResult, error) {
	lr := &limitReader{r: body, left: t.p.cfg.MaxMessageSize + traceAllowance}
	raw, err := io.ReadAll(lr)
	if err != nil {
		if lr.over {
			return SandboxResult{}, refuseWith(ReasonTooBig, smtp.ErrMessageTooBig)
		}
		return SandboxResult{}, readError(err)
	}
	res := SandboxResult{ID: t.id, Suppressed: t.sandboxSuppressed, Message: raw}
	if len(t.rcpts) > 0 {
		if err := t.p.CheckSize(int64(len(raw))); err != nil {
			return SandboxResult{}, err
		}
		if res.Rate, err = t.takeRates(ctx, t.accepted); err != nil {
			return SandboxResult{}, err
		}
		msg := t.message(ctx)
		// The processors of Data, but for mail from outside (whose
		// checks a sandbox send, an API feature, never needs).
		var procs []store.Processor
		switch {
		case t.ident.Kind == Anonymous:
		case t.ident.Kind.submits():
			procs = append(procs, &headerPolicy{tx: t}, &signer{tx: t})
		default:
			procs = append(procs, &signer{tx: t})
		}
		if res.Message, err = process(ctx, msg, raw, procs); err != nil {
			return SandboxResult{}, classify(err)
		}
		for _, r := range t.rcpts {
			res.Recipients = append(res.Recipients, r.Address)
		}
	}
	var evs []store.Event
	ev := func(rcpt, reply string) store.Event {
		return store.Event{Time: t.p.now(), Type: store.EventSandboxed, Account: t.ident.account(), MessageID: t.id,
			Recipient: rcpt, Sender: t.mail.From, Tags: t.tags, Metadata: t.metadata, Reply: reply}
	}
	for _, r := range res.Recipients {
		evs = append(evs, ev(r, "sandbox: not sent; a real send would queue it"))
	}
	for _, r := range res.Suppressed {
		evs = append(evs, ev(r, "sandbox: not sent; a real send would skip it: the address is on the suppression list"))
	}
	if len(evs) > 0 {
		if err := t.p.st.AddEvents(ctx, evs); err != nil {
			return SandboxResult{}, internal(fmt.Errorf("submit: recording sandbox events: %w", err))
		}
	}
	return res, nil
}

// process runs procs over raw as the spool does (header rewrites in
// order, the message as stored written to each, the fields each returns
// from Finish prepended) and returns the message as it would be read
// back from the queue.
func process(ctx context.Context, msg *store.Message, raw []byte, procs []store.Processor) (out []byte, err error) {
	defer func() {
		if err != nil {
			for _, p := range procs {
				p.Abort()
			}
		}
	}()
	n := headerEnd(raw)
	if n > maxSandboxHeader {
		e := smtp.Error{Code: 552, Enhanced: smtp.EnhancedCode{5, 3, 4}, Message: "Message header too large"}
		return nil, &e
	}
	hdr, rest := raw[:n], raw[n:]
	for _, p := range procs {
		if hdr, err = p.Header(ctx, msg, hdr); err != nil {
			return nil, err
		}
	}
	for _, p := range procs {
		p.Write(hdr)
		p.Write(rest)
	}
	var pre []byte
	for _, p := range procs {
		h, err := p.Finish(ctx, msg)
		if err != nil {
			return nil, err
		}
		pre = append(pre, h...)
	}
	return bytes.Join([][]byte{pre, hdr, rest}, nil), nil
}

// headerEnd is the length of the header section of raw, through the blank
// line that ends it (all of raw when there is none), as the spool reads it.
func headerEnd(raw []byte) int {
	for i := 0; i < len(raw); {
		j := bytes.IndexByte(raw[i:], '\n')
		if j < 0 {
			return len(raw)
		}
		line := raw[i : i+j+1]
		i += j + 1
		if len(line) == 1 || len(line) == 2 && line[0] == '\r' {
			return i
		}
	}
	return len(raw)
}
