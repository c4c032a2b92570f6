package submit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/alias"
	"github.com/heraldmail/herald/internal/simulator"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Tx is one message transaction: Mail, then Rcpt for each recipient, then
// Data. It is not safe for concurrent use.
type Tx struct {
	p     *Pipeline
	ident Identity
	user  store.User // the User identity's directory entry
	id    string     // queue ID, chosen up front so events can name it

	mail     Mail
	mailDone bool
	rcpts    []store.Recipient // final recipients, aliases expanded
	accepted int               // envelope recipients accepted (rate limits count these)
	seen     map[string]bool   // final recipients, lower-cased
	verps    []string          // feedback addresses to consume
	dropped  int               // Herald's own mail to feedback addresses
	domain   string            // the local domain whose inbound policy applies
	inbound  InboundChecks
	allowed  map[string]bool // sender addresses judged so far (mayUse)
	author   *smtp.Address   // the single From: address, once the header policy found it
	rates    []rateKey       // the identity's limiters, once looked up
	ratesSet bool
	tags     []string
	metadata map[string]string
	group    string // unsubscribe group whose suppressions apply too (Request)
	// sandbox: a sandbox send (Pipeline.Sandbox) checks, records no
	// "suppressed" event and queues nothing; sandboxSuppressed are the
	// recipients a real send would skip.
	sandbox           bool
	sandboxSuppressed []string
	sendAt            time.Time // scheduled send (Request.SendAt)
	batchID           string    // Request.BatchID
}

// Mail is the envelope sender and its parameters.
type Mail struct {
	From     string // "" is the null sender
	Ret      string
	EnvID    string
	SMTPUTF8 bool
	Size     int64 // declared size (SIZE=), 0 if unknown
}

// Mail checks the envelope sender: the identity must be allowed to use it,
// the declared size must fit, and a sending identity must not already be
// over its rate limits.
func (t *Tx) Mail(ctx context.Context, m Mail) error {
	if t.mailDone {
		return refuse(ReasonSequence, 503, smtp.EnhancedCode{5, 5, 1}, "Sender already specified")
	}
	if m.Size > t.p.cfg.MaxMessageSize {
		return refuseWith(ReasonTooBig, smtp.ErrMessageTooBig)
	}
	if err := t.p.CheckSize(m.Size); err != nil {
		return err
	}
	if m.From != "" {
		addr, err := smtp.ParseAddress(m.From)
		if err != nil {
			return refuse(ReasonSenderNotAllowed, 553, smtp.EnhancedCode{5, 1, 7}, "Invalid sender address")
		}
		if err := t.mayUse(ctx, addr, "Sender address"); err != nil {
			return err
		}
		m.From = addr.String()
	}
	if err := t.checkRates(ctx, 1); err != nil {
		return err
	}
	if t.ident.Kind == Anonymous && t.p.inbound != nil {
		t.inbound = t.p.inbound(ctx, t.ident.ClientIP, t.ident.HELO, m.From)
	}
	if !smtp.IsASCII(m.From) {
		m.SMTPUTF8 = true
	}
	t.mail, t.mailDone = m, true
	return nil
}

// Rcpt resolves one recipient: a feedback address, a local address (an
// inbound HTTP route, a mailbox, or an alias or catch-all expanded to its
// targets), or a remote one for identities that may relay. Recipients on
// the account's suppression list are refused with ErrSuppressed.
func (t *Tx) Rcpt(ctx context.Context, r Recipient) error {
	if !t.mailDone {
		return refuse(ReasonSequence, 503, smtp.EnhancedCode{5, 5, 1}, "Need MAIL command first")
	}
	if t.accepted+len(t.verps)+t.dropped >= t.p.cfg.MaxRecipients {
		return refuseWith(ReasonTooManyRcpts, smtp.ErrTooManyRcpts)
	}
	addr, err := smtp.ParseAddress(r.Address)
	if err != nil {
		return refuse(ReasonUnknownRecipient, 501, smtp.EnhancedCode{5, 1, 3}, "Invalid recipient address")
	}
	isLocal, err := t.p.st.IsLocalDomain(ctx, addr.Domain)
	if err != nil {
		return internal(fmt.Errorf("submit: domain lookup: %w", err))
	}
	norm := strings.ToLower(addr.String())
	if isLocal {
		if err := t.screen(ctx, addr); err != nil {
			return err
		}
	}
	if isLocal && t.p.feedback != nil && t.p.feedback.IsVERP(norm) {
		return t.feedbackRcpt(norm)
	}
	if !isLocal && !t.ident.Kind.relays() {
		return refuseWith(ReasonRelayDenied, smtp.ErrRelayDenied)
	}
	if !isLocal {
		if err := t.simulatorRcpt(norm); err != nil {
			return err
		}
	}
	if t.ident.Kind.relays() && t.ident.Kind != System {
		if err := t.checkSuppressed(ctx, norm); err != nil {
			return err
		}
	}
	var targets []store.Recipient
	if isLocal {
		if targets, err = t.resolveLocal(ctx, addr, r); err != nil {
			return err
		}
		if t.inbound != nil {
			if err := t.inbound.Rcpt(ctx, addr.Domain); err != nil {
				return &Refusal{Reply: mustSMTP(err), Reason: ReasonSPF}
			}
		}
		if t.domain == "" {
			t.domain = addr.Domain
		}
	} else {
		targets = []store.Recipient{{Address: addr.String(), Notify: r.Notify, ORCPT: r.ORCPT}}
	}
	t.accepted++
	for _, tr := range targets {
		key := strings.ToLower(tr.Address)
		if !t.seen[key] {
			t.seen[key] = true
			t.rcpts = append(t.rcpts, tr)
		}
	}
	return nil
}

// screen refuses a recipient of an anonymous client that DNS lists put
// at or over the threshold, naming the lists (and the first one's reason).
// postmaster@ and abuse@ of our domains stay reachable (RFC 5321 §4.5.1,
// RFC 2142): a listed sender must be able to ask why.
func (t *Tx) screen(ctx context.Context, addr smtp.Address) error {
	l := t.ident.Blocklists
	if t.ident.Kind != Anonymous || l == nil || isRoleAccount(addr.Local) {
		return nil
	}
	v := l.Wait(ctx)
	if !v.Listed {
		return nil
	}
	l.Rejected()
	msg := fmt.Sprintf("Service unavailable; client [%s] blocked using %s", v.IP, strings.Join(v.Lists(), ", "))
	if why := v.Reason(); why != "" {
		msg += "; " + why
	}
	return &Refusal{Reply: &smtp.Error{Code: 554, Enhanced: smtp.EnhancedCode{5, 7, 1}, Message: msg}, Reason: ReasonDNSBL}
}

// isRoleAccount reports whether local is postmaster or abuse, which a
// blocklisted client may still write to.
func isRoleAccount(local string) bool {
	return strings.EqualFold(local, "postmaster") || strings.EqualFold(local, "abuse")
}

// feedbackRcpt accepts a VERP address for consumption at Data. Herald's
// own mail to one (the DSN of a bounced API message) is dropped: the event
// log already holds that outcome.
func (t *Tx) feedbackRcpt(addr string) error {
	if !t.p.feedback.Valid(addr) {
		return refuseWith(ReasonUnknownRecipient, smtp.ErrNoSuchUser)
	}
	if t.ident.Kind == System {
		t.dropped++
		return nil
	}
	for _, v := range t.verps {
		if v == addr {
			return nil
		}
	}
	t.verps = append(t.verps, addr)
	return nil
}

// resolveLocal turns a local address into final recipients: itself when an
// HTTP route takes it or it is a mailbox, else its alias or catch-all
// targets, each keeping the original address as ORCPT for DSNs.
func (t *Tx) resolveLocal(ctx context.Context, addr smtp.Address, r Recipient) ([]store.Recipient, error) {
	norm := strings.ToLower(addr.String())
	if rt, err := t.p.st.GetRoute(ctx, norm); err == nil && rt.Action == "http" {
		return []store.Recipient{{Address: norm, Notify: r.Notify, ORCPT: r.ORCPT}}, nil
	} else if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, internal(fmt.Errorf("submit: route lookup: %w", err))
	}
	targets, err := alias.Expand(ctx, t.p.st, norm, nil)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return nil, refuseWith(ReasonUnknownRecipient, smtp.ErrNoSuchUser)
		}
		return nil, internal(fmt.Errorf("submit: expanding %s: %w", norm, err))
	}
	orcpt := r.ORCPT
	if orcpt == "" && (len(targets) != 1 || !strings.EqualFold(targets[0], norm)) {
		orcpt = "rfc822;" + addr.String()
	}
	out := make([]store.Recipient, 0, len(targets))
	for _, tg := range targets {
		out = append(out, store.Recipient{Address: tg, Notify: r.Notify, ORCPT: orcpt})
	}
	return out, nil
}

// checkSuppressed refuses a recipient on the account's suppression list
// (the global one, and the message's unsubscribe group's) and records a
// "suppressed" event. A failed lookup does not stop mail.
func (t *Tx) checkSuppressed(ctx context.Context, addr string) error {
	acct := t.ident.account()
	var sup bool
	var err error
	if t.group != "" {
		sup, err = t.p.st.SuppressedFor(ctx, acct, addr, t.group)
	} else {
		sup, err = t.p.st.IsSuppressed(ctx, acct, addr)
	}
	if o, ok := simulator.Lookup(addr); ok && o == simulator.Suppressed {
		sup, err = true, nil // the simulator's suppressed@ is on every list
	}
	if err != nil || !sup {
		return nil
	}
	if t.sandbox {
		// A sandbox send records its own event for every recipient.
		t.sandboxSuppressed = append(t.sandboxSuppressed, addr)
		return t.suppressedRefusal(addr)
	}
	reply := "not sent: the address is on the suppression list"
	if t.group != "" {
		reply = "not sent: the address is on the suppression list (globally or for unsubscribe group " + t.group + ")"
	}
	ev := store.Event{Time: t.p.now(), Type: store.EventSuppressed, Account: acct, MessageID: t.id, Recipient: addr,
		Sender: t.mail.From, Tags: t.tags, Metadata: t.metadata, Reply: reply}
	if err := t.p.st.AddEvents(ctx, []store.Event{ev}); err != nil {
		t.p.log.Error("recording a suppressed recipient", "account", acct, "rcpt", addr, "err", err)
	}
	return t.suppressedRefusal(addr)
}

func (t *Tx) suppressedRefusal(addr string) error {
	r := refuse(ReasonSuppressed, 550, smtp.EnhancedCode{5, 1, 1}, "Recipient <%s> is on the suppression list (earlier hard bounce, complaint or unsubscribe)", addr)
	r.mark = ErrSuppressed
	return r
}

// Data reads the message, consumes reports for feedback addresses, applies
// the header rules, signs and spools it. It returns once the message is
// durable. body must yield the message with CRLF line endings.
func (t *Tx) Data(ctx context.Context, body io.Reader) (Result, error) {
	if !t.mailDone {
		return Result{}, refuse(ReasonSequence, 503, smtp.EnhancedCode{5, 5, 1}, "Need MAIL command first")
	}
	lr := &limitReader{r: body, left: t.p.cfg.MaxMessageSize + traceAllowance}
	body = lr
	var res Result
	// A report for feedback addresses is kept (its first maxReport bytes:
	// the report parts come before any returned original) while the
	// message streams; it is acted on once the message is read whole.
	var report *capped
	if len(t.verps) > 0 {
		report = &capped{max: maxReport}
		body = io.TeeReader(body, report)
	}
	if len(t.rcpts) == 0 {
		if _, err := io.Copy(io.Discard, body); err != nil {
			return Result{}, readError(err)
		}
		if report != nil {
			n, err := t.consume(ctx, report.b)
			res.Consumed = n
			if err != nil {
				return res, internal(err) // the sender retries; nothing was queued
			}
		}
		return res, nil
	}
	rate, err := t.takeRates(ctx, t.accepted)
	if err != nil {
		return Result{}, err
	}
	res.Rate = rate
	msg := t.message(ctx)
	var procs []store.Processor
	switch {
	case t.ident.Kind == Anonymous:
		if t.inbound != nil {
			procs = t.inbound.Processors(ctx, t.domain)
		}
	case t.ident.Kind.submits():
		procs = append(procs, &headerPolicy{tx: t}, &signer{tx: t})
	default: // System
		procs = append(procs, &signer{tx: t})
	}
	id, err := t.p.spool.Accept(ctx, msg, body, procs...)
	if err != nil {
		if lr.over {
			return Result{}, refuseWith(ReasonTooBig, smtp.ErrMessageTooBig)
		}
		return Result{}, classify(err)
	}
	res.ID, res.Queued = id, len(msg.Recipients)
	if report != nil {
		// The message is queued for its other recipients: a failure here
		// can only be logged.
		n, err := t.consume(ctx, report.b)
		res.Consumed = n
		if err != nil {
			t.p.log.Error("processing a report to a feedback address", "id", id, "err", err)
		}
	}
	return res, nil
}

// maxReport bounds the part of a message kept for feedback processing.
const maxReport = 1 << 20

// consume hands the report to feedback processing once per VERP address.
func (t *Tx) consume(ctx context.Context, report []byte) (int, error) {
	n := 0
	for _, v := range t.verps {
		if err := t.p.feedback.Consume(ctx, v, report); err != nil {
			return n, fmt.Errorf("submit: processing the report to %s: %w", v, err)
		}
		n++
	}
	return n, nil
}

// capped keeps the first max bytes written to it and ignores the rest.
type capped struct {
	b   []byte
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - len(c.b); room > 0 {
		c.b = append(c.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// message builds the queue entry.
func (t *Tx) message(ctx context.Context) *store.Message {
	m := &store.Message{
		ID: t.id, Sender: t.mail.From, Ret: t.mail.Ret, EnvID: t.mail.EnvID,
		AuthUser: t.ident.User, Source: t.ident.Source, SMTPUTF8: t.mail.SMTPUTF8,
		Account: t.ident.Account, Tags: t.tags, Metadata: t.metadata,
		SendAt: t.sendAt, BatchID: t.batchID,
		Recipients: t.rcpts,
	}
	if t.ident.ClientIP.IsValid() {
		m.ClientIP = t.ident.ClientIP.String()
	}
	m.HELO = t.ident.HELO
	if m.Account == "" && t.domain != "" {
		if a, err := t.p.st.DomainAccount(ctx, t.domain); err == nil {
			m.Account = a // inbound mail belongs to the account of its domain
		}
	}
	for _, r := range t.rcpts {
		if !smtp.IsASCII(r.Address) {
			m.SMTPUTF8 = true
		}
	}
	verp := t.p.cfg.VERP
	if t.p.feedback != nil && m.Sender != "" &&
		(t.ident.Kind == APIKey && verp != "none" || t.ident.Kind == User && verp == "all") {
		m.Sender = t.p.feedback.Sender(m.ID, m.Sender)
	}
	return m
}

// classify turns a spool error into a Refusal, keeping the verdicts of
// processors (DMARC, header rules) and the spool's own failures.
func classify(err error) error {
	var r *Refusal
	if errors.As(err, &r) {
		return r
	}
	if errors.Is(err, store.ErrStorageFull) {
		return storageRefusal(err)
	}
	if e, ok := smtp.AsError(err); ok {
		reason := ReasonTemporary
		switch {
		case e.Enhanced == smtp.EnhancedCode{5, 7, 1}:
			reason = ReasonDMARC
		case e.Code == 552:
			reason = ReasonTooBig
		case e.Permanent():
			reason = "rejected"
		}
		return &Refusal{Reply: e, Reason: reason, Cause: err}
	}
	return internal(err)
}

func storageRefusal(err error) *Refusal {
	if r, ok := err.(*Refusal); ok {
		return r
	}
	e := smtp.ErrStorageFull
	if se, ok := smtp.AsError(err); ok {
		e = *se
	}
	return &Refusal{Reply: &e, Reason: ReasonStorageFull, Cause: err}
}

// readError keeps the SMTP reader's verdicts (bare LF, size, loop) as they
// are and reports anything else as a local failure.
func readError(err error) error {
	if _, ok := smtp.AsError(err); ok {
		return err
	}
	return internal(err)
}

func mustSMTP(err error) *smtp.Error {
	if e, ok := smtp.AsError(err); ok {
		return e
	}
	e := smtp.ErrLocalError
	return &e
}

// limitReader fails once more than left bytes were read.
type limitReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left < 0 {
		l.over = true
		e := smtp.ErrMessageTooBig
		return n, &e
	}
	return n, err
}
