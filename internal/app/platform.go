package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/bounce"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/verp"
)

// platform is the delivery-platform glue around the spool: tenants,
// sending limits, suppressions, VERP envelopes and the matching of
// asynchronous bounces and complaints to the messages they are about.
type platform struct {
	st      store.Store
	spool   *spool.Spool
	limits  *ratelimit.Windows
	verpKey []byte
	cfg     config.PlatformConfig
	log     *slog.Logger
	now     func() time.Time
}

// Submit implements httpapi.Submitter: the same path as SMTP submission.
func (p *platform) Submit(ctx context.Context, s *httpapi.Submission) (string, error) {
	from, err := smtp.ParseAddress(s.From)
	if err != nil {
		return "", &httpapi.ForbiddenError{Message: "the From address is not valid"}
	}
	for _, a := range []string{s.From, s.EnvelopeFrom} {
		if a == "" {
			continue
		}
		addr, err := smtp.ParseAddress(a)
		if err != nil {
			return "", &httpapi.ForbiddenError{Message: "invalid sender address " + a}
		}
		owner, err := p.st.DomainAccount(ctx, addr.Domain)
		if err != nil || owner != s.Account {
			return "", &httpapi.ForbiddenError{Message: "sender domain " + addr.Domain + " does not belong to your account"}
		}
	}
	if err := p.takeAccount(ctx, s.Account); err != nil {
		return "", err
	}
	msg := &store.Message{ID: spool.NewID(), Sender: s.EnvelopeFrom, Account: s.Account, Tags: s.Tags,
		Metadata: s.Metadata, Source: "api", SMTPUTF8: !smtp.IsASCII(s.EnvelopeFrom + strings.Join(s.Recipients, ""))}
	if msg.Sender == "" {
		msg.Sender = from.String()
	}
	var suppressed []store.Event
	for _, r := range s.Recipients {
		sup, err := p.st.IsSuppressed(ctx, s.Account, r)
		if err != nil {
			return "", fmt.Errorf("suppression lookup: %w", err)
		}
		if sup {
			suppressed = append(suppressed, store.Event{Time: p.now(), Type: store.EventSuppressed, Account: s.Account,
				MessageID: msg.ID, Recipient: r, Sender: msg.Sender, Tags: s.Tags, Metadata: s.Metadata,
				Reply: "not sent: the address is on the suppression list"})
			continue
		}
		msg.Recipients = append(msg.Recipients, store.Recipient{Address: r})
	}
	if len(suppressed) > 0 {
		if err := p.st.AddEvents(ctx, suppressed); err != nil {
			return "", fmt.Errorf("recording suppressed recipients: %w", err)
		}
	}
	if len(msg.Recipients) == 0 {
		return msg.ID, nil // every recipient suppressed: nothing to send
	}
	if p.cfg.VERP != "none" {
		msg.Sender = p.verpSender(msg.ID, msg.Sender)
	}
	return p.spool.Accept(ctx, msg, bytes.NewReader(s.Raw), NewSigner(p.st, p.log))
}

// verpSender returns bounces+TOKEN@domain-of-sender, or sender itself if a
// token cannot be made.
func (p *platform) verpSender(msgID, sender string) string {
	if sender == "" {
		return ""
	}
	domain := sender[strings.LastIndexByte(sender, '@')+1:]
	if v := verp.Encode(p.verpKey, msgID, 0, domain); v != "" {
		return v
	}
	return sender
}

// takeAccount charges one message to an account's limits.
func (p *platform) takeAccount(ctx context.Context, account string) error {
	acct, err := p.st.GetAccount(ctx, account)
	if err != nil {
		return fmt.Errorf("account %s: %w", account, err)
	}
	l := ratelimit.Limits{PerMinute: acct.Limits.PerMinute, PerHour: acct.Limits.PerHour, PerDay: acct.Limits.PerDay}
	if ok, wait := p.limits.Take("account:"+account, l, 1); !ok {
		return &httpapi.RateLimitError{RetryAfter: wait, Message: "account " + account + " is over its sending limit"}
	}
	return nil
}

// takeUser charges one message to an SMTP user's limits and its account's;
// over a limit it answers 451 4.7.1.
func (p *platform) takeUser(ctx context.Context, user string) error {
	l := ratelimit.Limits{PerMinute: p.cfg.UserPerMinute, PerHour: p.cfg.UserPerHour, PerDay: p.cfg.UserPerDay}
	if ok, wait := p.limits.Take("user:"+user, l, 1); !ok {
		return smtp.Errorf(451, smtp.EnhancedCode{4, 7, 1}, "Sending rate limit exceeded for %s, try again in %s", user, wait.Round(time.Second))
	}
	account, err := p.st.UserAccount(ctx, user)
	if err != nil {
		account = store.DefaultAccount
	}
	if err := p.takeAccount(ctx, account); err != nil {
		var rl *httpapi.RateLimitError
		if errors.As(err, &rl) {
			return smtp.Errorf(451, smtp.EnhancedCode{4, 7, 1}, "Sending rate limit of the account exceeded, try again in %s", rl.RetryAfter.Round(time.Second))
		}
		return err
	}
	return nil
}

// accountOf is the account an SMTP client sends for.
func (p *platform) accountOf(ctx context.Context, user string) string {
	if user == "" {
		return store.DefaultAccount
	}
	if a, err := p.st.UserAccount(ctx, user); err == nil {
		return a
	}
	return store.DefaultAccount
}

// checkSuppressed refuses a recipient on the sending account's list.
func (p *platform) checkSuppressed(ctx context.Context, account, rcpt string) error {
	sup, err := p.st.IsSuppressed(ctx, account, rcpt)
	if err != nil || !sup {
		return nil // a lookup failure must not stop mail
	}
	p.st.AddEvents(ctx, []store.Event{{Time: p.now(), Type: store.EventSuppressed, Account: account, Recipient: rcpt,
		Reply: "550 5.1.1 recipient suppressed"}})
	return smtp.Errorf(550, smtp.EnhancedCode{5, 1, 1}, "Recipient <%s> is on the suppression list (earlier hard bounce or complaint)", rcpt)
}

// isVERP reports whether rcpt is one of our valid VERP bounce addresses.
func (p *platform) isVERP(rcpt string) bool {
	local, _, _ := strings.Cut(rcpt, "@")
	if !verp.IsVERP(local) {
		return false
	}
	_, _, ok := verp.Decode(p.verpKey, rcpt)
	return ok
}

// maxFeedback bounds the report a VERP address or complaint parse reads.
const maxFeedback = 10 << 20

// consumeBounce handles a message sent to a VERP address: a DSN records
// "bounced" events (and suppresses hard bounces); an ARF report records a
// complaint. The report is consumed, not delivered.
func (p *platform) consumeBounce(ctx context.Context, rcpt string, body io.Reader) error {
	msgID, _, ok := verp.Decode(p.verpKey, rcpt)
	if !ok {
		return nil
	}
	data, err := io.ReadAll(io.LimitReader(body, maxFeedback))
	if err != nil {
		return err
	}
	io.Copy(io.Discard, body)
	account, sender, tags, meta := p.messageContext(ctx, msgID)
	if account == "" {
		p.log.Info("report for a message no longer known (account deleted or events pruned); dropped", "id", msgID)
		return nil
	}
	if fb, err := dsn.ParseARF(bytes.NewReader(data)); err == nil {
		return p.recordComplaint(ctx, msgID, account, sender, tags, meta, fb)
	}
	rep, err := dsn.Parse(bytes.NewReader(data))
	if err != nil {
		p.log.Info("VERP message is neither a DSN nor a complaint; dropped", "id", msgID, "err", err)
		return nil
	}
	var evs []store.Event
	for _, r := range rep.Recipients {
		if r.Action != dsn.Failed {
			continue
		}
		rcpt := strings.ToLower(r.FinalRecipient)
		if r.OriginalRecipient != "" {
			rcpt = strings.ToLower(r.OriginalRecipient)
		}
		class := bounce.Classify(0, r.Status, r.Diagnostic)
		evs = append(evs, store.Event{Time: p.now(), Type: store.EventBounced, Account: account, MessageID: msgID,
			Recipient: rcpt, Sender: sender, RemoteMTA: r.RemoteMTA, Reply: r.Diagnostic, Enhanced: r.Status.String(),
			Bounce: class.String(), Tags: tags, Metadata: meta})
		if class.Hard {
			p.suppress(ctx, account, rcpt, store.SuppressHardBounce, r.Diagnostic)
		}
	}
	if len(evs) > 0 {
		p.log.Info("asynchronous bounce matched", "id", msgID, "account", account, "recipients", len(evs))
		return p.st.AddEvents(ctx, evs)
	}
	return nil
}

// recordComplaint records a feedback-loop complaint and suppresses the
// recipient who complained.
func (p *platform) recordComplaint(ctx context.Context, msgID, account, sender string, tags []string, meta map[string]string, fb *dsn.Feedback) error {
	var evs []store.Event
	for _, r := range fb.OriginalRcptTo {
		r = strings.ToLower(r)
		evs = append(evs, store.Event{Time: p.now(), Type: store.EventComplained, Account: account, MessageID: msgID,
			Recipient: r, Sender: sender, Reply: "complaint: " + fb.Type, RemoteMTA: fb.ReportingMTA, Tags: tags, Metadata: meta})
		p.suppress(ctx, account, r, store.SuppressComplaint, "feedback report ("+fb.Type+") from "+fb.ReportingMTA)
	}
	p.log.Info("complaint matched", "id", msgID, "account", account, "recipients", len(evs), "type", fb.Type)
	if len(evs) == 0 {
		return nil
	}
	return p.st.AddEvents(ctx, evs)
}

// complaint handles an ARF report that reached an ordinary mailbox (the
// address registered with a feedback loop): it is matched through the VERP
// envelope sender it quotes.
func (p *platform) complaint(ctx context.Context, fb *dsn.Feedback) {
	for _, cand := range []string{fb.OriginalMailFrom, fb.Original.ReturnPath} {
		if msgID, _, ok := verp.Decode(p.verpKey, cand); ok {
			account, sender, tags, meta := p.messageContext(ctx, msgID)
			if account == "" {
				p.log.Info("complaint about a message no longer known (account deleted or events pruned); dropped", "id", msgID)
				return
			}
			if err := p.recordComplaint(ctx, msgID, account, sender, tags, meta, fb); err != nil {
				p.log.Error("recording complaint", "id", msgID, "err", err)
			}
			return
		}
	}
	p.log.Info("feedback report could not be matched to a message", "type", fb.Type, "from", fb.ReportingMTA)
}

func (p *platform) suppress(ctx context.Context, account, rcpt, reason, detail string) {
	if err := p.st.AddSuppression(ctx, store.Suppression{Account: account, Address: rcpt, Reason: reason, Detail: detail, Created: p.now()}); err != nil {
		p.log.Error("adding suppression", "account", account, "rcpt", rcpt, "err", err)
	}
}

// messageContext finds the account, sender, tags and metadata of a message
// from the queue or, once it has left, from its events; account is "" for
// a message known to neither (its account was deleted, or its events
// pruned), whose reports must not land in another account.
func (p *platform) messageContext(ctx context.Context, msgID string) (account, sender string, tags []string, meta map[string]string) {
	if m, err := p.st.Get(ctx, msgID); err == nil {
		return m.Account, m.Sender, m.Tags, m.Metadata
	}
	evs, err := p.st.ListEvents(ctx, store.EventFilter{MessageID: msgID, Limit: 1})
	if err == nil && len(evs) > 0 {
		return evs[0].Account, evs[0].Sender, evs[0].Tags, evs[0].Metadata
	}
	return "", "", nil, nil
}

// AttemptDone implements queue.Observer: a synchronous hard bounce puts
// the recipient on the account's suppression list.
func (p *platform) AttemptDone(msg *store.Message, a queue.Attempt, _ time.Duration) {
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

// observers fans queue notifications out.
type observers []queue.Observer

func (o observers) AttemptDone(msg *store.Message, a queue.Attempt, d time.Duration) {
	for _, ob := range o {
		ob.AttemptDone(msg, a, d)
	}
}

func accountOr(a string) string {
	if a == "" {
		return store.DefaultAccount
	}
	return a
}
