// Package notify writes the delivery status notifications (RFC 3464) the
// queue asks for and submits them through the acceptance path as mail
// from Herald itself. A notification that cannot be delivered is not lost:
// the postmaster gets a copy (Postfix's "double bounce"); only a failed
// copy to the postmaster is dropped, logged and counted.
package notify

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
)

// Sources of the mail Notifier writes (store.Message.Source).
const (
	SourceDSN          = "dsn"           // a notification to a message's sender
	SourceDoubleBounce = "double-bounce" // an undeliverable notification, to the postmaster
)

// Bodies opens stored messages (the original a notification returns).
type Bodies interface {
	OpenBody(ctx context.Context, id string) (io.ReadCloser, error)
}

// Submitter is the acceptance path.
type Submitter interface {
	Submit(ctx context.Context, req *submit.Request) (submit.Result, error)
}

// Notifier implements queue.Bouncer.
type Notifier struct {
	// Hostname is the Reporting-MTA.
	Hostname string
	// Postmaster receives notifications that could not be delivered.
	Postmaster string
	Bodies     Bodies
	Submit     Submitter
	Log        *slog.Logger
	// Counter, if set, counts notifications by action ("failed",
	// "delayed", "delivered", "relayed", "double-bounce", "dropped").
	Counter *metrics.CounterVec
}

// Bounce writes and queues a notification for rcpts of msg. A failed
// notification (null sender) goes to the postmaster instead, once.
func (n *Notifier) Bounce(ctx context.Context, msg *store.Message, kind queue.BounceKind, rcpts []queue.BouncedRecipient) error {
	action := dsn.Failed
	switch kind {
	case queue.BounceDelayed:
		action = dsn.Delayed
	case queue.BounceDelivered:
		action = dsn.Delivered
	}
	to, source := msg.Sender, SourceDSN
	if msg.Sender == "" {
		if action != dsn.Failed {
			return nil
		}
		if msg.Source == SourceDoubleBounce || n.Postmaster == "" {
			n.Log.Error("undeliverable notice to the postmaster dropped", "id", msg.ID, "rcpts", len(rcpts))
			n.count("dropped")
			return nil
		}
		to, source = n.Postmaster, SourceDoubleBounce
	}
	rep := &dsn.Report{
		ReportingMTA: n.Hostname,
		Sender:       to,
		EnvID:        msg.EnvID,
		Ret:          msg.Ret,
		Arrival:      msg.Received,
		Action:       action,
		SMTPUTF8:     msg.SMTPUTF8,
	}
	for _, br := range rcpts {
		if source == SourceDSN && !dsn.ShouldNotify(br.Recipient.Notify, action) {
			continue
		}
		rep.Recipients = append(rep.Recipients, recipientStatus(br, action, &rep.Action))
	}
	if len(rep.Recipients) == 0 {
		return nil // every recipient asked for no notice
	}
	orig, err := n.Bodies.OpenBody(ctx, msg.ID)
	if err != nil {
		return fmt.Errorf("notify: open original %s: %w", msg.ID, err)
	}
	defer orig.Close()
	rep.Original = orig
	data, err := dsn.Build(rep)
	if err != nil {
		return fmt.Errorf("notify: build DSN for %s: %w", msg.ID, err)
	}
	req := &submit.Request{
		// The notification belongs to the account of the message it is about.
		Identity: submit.Identity{Kind: submit.System, Source: source, Account: msg.Account},
		// 7-bit, or 8BITMIME for an 8-bit original; SMTPUTF8 only when the
		// original needed it.
		SMTPUTF8:   rep.Global() && !smtp.IsASCII(string(data)),
		Recipients: []submit.Recipient{{Address: to, Notify: "NEVER"}},
		Body:       bytes.NewReader(data),
	}
	res, err := n.Submit.Submit(ctx, req)
	if refusedForGood(err) && source == SourceDSN && n.Postmaster != "" {
		// The sender's address cannot take mail at all (an unknown local
		// user): the postmaster gets the notification instead.
		n.Log.Warn("notification refused; sending it to the postmaster", "id", msg.ID, "to", to, "err", err)
		to, source = n.Postmaster, SourceDoubleBounce
		req.Identity.Source = source
		req.Recipients = []submit.Recipient{{Address: to, Notify: "NEVER"}}
		req.Body = bytes.NewReader(data)
		res, err = n.Submit.Submit(ctx, req)
	}
	switch {
	case refusedForGood(err):
		// Retrying cannot help and must not keep the message in the queue.
		n.Log.Error("notification refused for good; dropped", "id", msg.ID, "to", to, "err", err)
		n.count("dropped")
		return nil
	case err != nil:
		return fmt.Errorf("notify: queue DSN for %s: %w", msg.ID, err)
	}
	label := rep.Action.String()
	if source == SourceDoubleBounce {
		label = "double-bounce"
		n.Log.Warn("notification undeliverable; sent to the postmaster", "id", msg.ID, "postmaster", to, "dsn_id", res.ID)
	}
	n.count(label)
	n.Log.Info("dsn queued", "id", msg.ID, "dsn_id", res.ID, "action", rep.Action.String(), "to", to, "rcpts", len(rep.Recipients))
	return nil
}

// refusedForGood reports a permanent refusal by the acceptance path.
func refusedForGood(err error) bool {
	e, ok := smtp.AsError(err)
	return ok && e.Permanent()
}

func (n *Notifier) count(label string) {
	if n.Counter != nil {
		n.Counter.Inc(label)
	}
}

// recipientStatus is one recipient's part of a DSN. A recipient delivered
// to a next hop without DSN support makes the whole report "relayed".
func recipientStatus(br queue.BouncedRecipient, action dsn.Action, reportAction *dsn.Action) dsn.RecipientStatus {
	a := br.Attempt
	if action == dsn.Delivered && a.RemoteMTA != "local" {
		*reportAction = dsn.Relayed
	}
	status := a.Enhanced
	if status == (smtp.EnhancedCode{}) {
		status = smtp.EnhancedCode{4, 0, 0}
		if action == dsn.Failed {
			status = smtp.EnhancedCode{5, 0, 0}
		}
	}
	diag := a.Reply()
	if br.Expired {
		status = smtp.EnhancedCode{4, 4, 7}
		diag = "delivery time expired; last error: " + diag
		if a.Enhanced[0] == 5 {
			status = a.Enhanced
		}
	}
	if action == dsn.Failed && status[0] == 4 && !br.Expired {
		status[0] = 5
	}
	return dsn.RecipientStatus{
		Address:        br.Recipient.Address,
		ORCPT:          br.Recipient.ORCPT,
		Status:         status,
		RemoteMTA:      a.RemoteMTA,
		Diagnostic:     diag,
		LastAttempt:    time.Now(),
		WillRetryUntil: br.RetryTill,
	}
}
