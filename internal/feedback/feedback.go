// Package feedback acts on what comes back about mail Herald sent: bounces
// (DSNs) and complaints (ARF feedback reports) mailed to the VERP envelope
// sender of a message, complaints that reach an ordinary mailbox, and
// synchronous hard bounces reported by the queue. Each becomes an event of
// the message's account, and hard bounces and complaints put the recipient
// on the account's suppression list.
//
// Anyone can mail a report, so a report is acted on only for recipients of
// the message its VERP token authenticates: a forged DSN naming an address
// that never received that message changes nothing.
package feedback

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/bounce"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/verp"
)

// Store is the state feedback reads and writes.
type Store interface {
	Get(ctx context.Context, id string) (*store.Message, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	AddEvents(ctx context.Context, evs []store.Event) error
	AddSuppression(ctx context.Context, s store.Suppression) error
}

// Processor handles feedback. It is safe for concurrent use.
type Processor struct {
	st    Store
	key   []byte
	clock clock.Clock
	log   *slog.Logger
}

// New returns a Processor authenticating VERP addresses with key.
func New(st Store, key []byte, clk clock.Clock, log *slog.Logger) *Processor {
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Processor{st: st, key: key, clock: clk, log: log}
}

// IsVERP reports whether address has the form of a VERP address
// (bounces+TOKEN@domain), authentic or not.
func (p *Processor) IsVERP(address string) bool {
	local, _, _ := strings.Cut(address, "@")
	return verp.IsVERP(local)
}

// Valid reports whether address is a VERP address with an authentic token.
func (p *Processor) Valid(address string) bool {
	_, _, ok := verp.Decode(p.key, address)
	return ok
}

// Sender returns bounces+TOKEN@domain-of-sender for message msgID, or
// sender itself if a token cannot be made (a queue ID too long).
func (p *Processor) Sender(msgID, sender string) string {
	if sender == "" {
		return ""
	}
	domain := sender[strings.LastIndexByte(sender, '@')+1:]
	if v := verp.Encode(p.key, msgID, 0, domain); v != "" {
		return v
	}
	return sender
}

// maxReport bounds the report Consume parses.
const maxReport = 10 << 20

// Consume handles a message mailed to a VERP address: a DSN records a
// "bounced" event for each failed recipient of the message and suppresses
// hard bounces; an ARF report records a complaint and suppresses the
// complainer. Anything else, and anything about an address that was not a
// recipient of the message, is dropped (and logged). The report is never
// delivered anywhere.
func (p *Processor) Consume(ctx context.Context, rcpt string, report []byte) error {
	msgID, _, ok := verp.Decode(p.key, rcpt)
	if !ok {
		return nil
	}
	if len(report) > maxReport {
		report = report[:maxReport]
	}
	mc, err := p.messageContext(ctx, msgID)
	if err != nil {
		return err
	}
	if mc == nil {
		p.log.Info("report for an unknown message dropped", "id", msgID)
		return nil
	}
	if fb, err := dsn.ParseARF(bytes.NewReader(report)); err == nil {
		return p.recordComplaint(ctx, mc, fb)
	}
	rep, err := dsn.Parse(bytes.NewReader(report))
	if err != nil {
		p.log.Info("VERP message is neither a DSN nor a complaint; dropped", "id", msgID, "err", err)
		return nil
	}
	var evs []store.Event
	for _, r := range rep.Recipients {
		if r.Action != dsn.Failed {
			continue
		}
		addr, ok := mc.recipient(r.OriginalRecipient, r.FinalRecipient)
		if !ok {
			p.log.Warn("DSN names an address that is not a recipient of the message; ignored",
				"id", msgID, "final_recipient", r.FinalRecipient, "original_recipient", r.OriginalRecipient)
			continue
		}
		class := bounce.Classify(0, r.Status, r.Diagnostic)
		evs = append(evs, mc.event(p.clock.Now(), store.EventBounced, addr, func(e *store.Event) {
			e.RemoteMTA, e.Reply, e.Enhanced, e.Bounce = r.RemoteMTA, r.Diagnostic, r.Status.String(), class.String()
		}))
		if class.Hard {
			p.suppress(ctx, mc.account, addr, store.SuppressHardBounce, r.Diagnostic)
		}
	}
	if len(evs) == 0 {
		return nil
	}
	p.log.Info("asynchronous bounce matched", "id", msgID, "account", mc.account, "recipients", len(evs))
	return p.st.AddEvents(ctx, evs)
}

// Complaint handles an ARF report that reached an ordinary mailbox (the
// address registered with a provider's feedback loop): it is matched to
// the message through the VERP envelope sender it quotes.
func (p *Processor) Complaint(ctx context.Context, fb *dsn.Feedback) {
	for _, cand := range []string{fb.OriginalMailFrom, fb.Original.ReturnPath} {
		msgID, _, ok := verp.Decode(p.key, cand)
		if !ok {
			continue
		}
		mc, err := p.messageContext(ctx, msgID)
		if err != nil {
			p.log.Error("looking up the message of a complaint", "id", msgID, "err", err)
			return
		}
		if mc == nil {
			p.log.Info("complaint about an unknown message dropped", "id", msgID)
			return
		}
		if err := p.recordComplaint(ctx, mc, fb); err != nil {
			p.log.Error("recording complaint", "id", msgID, "err", err)
		}
		return
	}
	p.log.Info("feedback report could not be matched to a message", "type", fb.Type, "from", fb.ReportingMTA)
}

// recordComplaint records a complaint for each recipient of the message it
// names (or for the message's only recipient when the report, as many
// providers do, redacts it) and suppresses them.
func (p *Processor) recordComplaint(ctx context.Context, mc *msgContext, fb *dsn.Feedback) error {
	var who []string
	for _, r := range fb.OriginalRcptTo {
		if addr, ok := mc.recipient(r); ok {
			who = append(who, addr)
		} else {
			p.log.Warn("complaint names an address that is not a recipient of the message; ignored", "id", mc.id, "rcpt", r)
		}
	}
	if len(fb.OriginalRcptTo) == 0 && len(mc.rcpts) == 1 {
		for addr := range mc.rcpts {
			who = append(who, addr)
		}
	}
	var evs []store.Event
	for _, addr := range who {
		evs = append(evs, mc.event(p.clock.Now(), store.EventComplained, addr, func(e *store.Event) {
			e.Reply, e.RemoteMTA = "complaint: "+fb.Type, fb.ReportingMTA
		}))
		p.suppress(ctx, mc.account, addr, store.SuppressComplaint, "feedback report ("+fb.Type+") from "+fb.ReportingMTA)
	}
	p.log.Info("complaint matched", "id", mc.id, "account", mc.account, "recipients", len(evs), "type", fb.Type)
	if len(evs) == 0 {
		return nil
	}
	return p.st.AddEvents(ctx, evs)
}

func (p *Processor) suppress(ctx context.Context, account, rcpt, reason, detail string) {
	if err := p.st.AddSuppression(ctx, store.Suppression{Account: account, Address: rcpt, Reason: reason, Detail: detail, Created: p.clock.Now()}); err != nil {
		p.log.Error("adding suppression", "account", account, "rcpt", rcpt, "err", err)
	}
}

// AttemptDone implements queue.Observer: a synchronous hard bounce puts
// the recipient on the account's suppression list.
func (p *Processor) AttemptDone(msg *store.Message, a queue.Attempt, _ time.Duration) {
	if a.Result != queue.Permanent || !bounce.Classify(a.Code, a.Enhanced, a.Text).Hard {
		return
	}
	for _, r := range msg.Recipients {
		if r.ID == a.RecipientID {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			p.suppress(ctx, accountOr(msg.Account), strings.ToLower(r.Address), store.SuppressHardBounce, a.Reply())
			cancel()
			return
		}
	}
}

// msgContext is what a report is matched against: the message's account,
// sender, tags, metadata and recipients.
type msgContext struct {
	id      string
	account string
	sender  string
	tags    []string
	meta    map[string]string
	rcpts   map[string]bool // lower-cased addresses
}

// recipient returns the first candidate ("rfc822;addr" or "addr") that is a
// recipient of the message.
func (mc *msgContext) recipient(cands ...string) (string, bool) {
	for _, c := range cands {
		if i := strings.IndexByte(c, ';'); i >= 0 {
			c = c[i+1:]
		}
		c = strings.ToLower(strings.Trim(strings.TrimSpace(c), "<>"))
		if c != "" && mc.rcpts[c] {
			return c, true
		}
	}
	return "", false
}

func (mc *msgContext) event(t time.Time, typ, rcpt string, set func(*store.Event)) store.Event {
	e := store.Event{Time: t, Type: typ, Account: mc.account, MessageID: mc.id, Recipient: rcpt,
		Sender: mc.sender, Tags: mc.tags, Metadata: mc.meta}
	set(&e)
	return e
}

// messageContext finds a message in the queue or, once it has left, in its
// events; nil if it is known in neither.
func (p *Processor) messageContext(ctx context.Context, msgID string) (*msgContext, error) {
	mc := &msgContext{id: msgID, rcpts: make(map[string]bool)}
	m, err := p.st.Get(ctx, msgID)
	switch {
	case err == nil:
		mc.account, mc.sender, mc.tags, mc.meta = accountOr(m.Account), m.Sender, m.Tags, m.Metadata
		for _, r := range m.Recipients {
			mc.rcpts[strings.ToLower(r.Address)] = true
		}
		return mc, nil
	case !errors.Is(err, store.ErrNotFound):
		return nil, err
	}
	f := store.EventFilter{MessageID: msgID, Types: []string{store.EventAccepted}, Limit: 1000}
	for {
		evs, err := p.st.ListEvents(ctx, f)
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if mc.account == "" {
				mc.account, mc.sender, mc.tags, mc.meta = accountOr(e.Account), e.Sender, e.Tags, e.Metadata
			}
			if e.Recipient != "" {
				mc.rcpts[strings.ToLower(e.Recipient)] = true
			}
			f.After = e.ID
		}
		if len(evs) < f.Limit {
			break
		}
	}
	if len(mc.rcpts) == 0 {
		return nil, nil
	}
	return mc, nil
}

func accountOr(a string) string {
	if a == "" {
		return store.DefaultAccount
	}
	return a
}
