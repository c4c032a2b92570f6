package app

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
)

// bouncer turns failed and delayed recipients into RFC 3464 DSNs to the
// envelope sender, honouring each recipient's NOTIFY and the message's RET.
type bouncer struct {
	hostname string
	store    store.Queue
	spool    *spool.Spool
	log      *slog.Logger
	metrics  *appMetrics
}

func (b *bouncer) Bounce(ctx context.Context, msg *store.Message, kind queue.BounceKind, rcpts []queue.BouncedRecipient) error {
	action := dsn.Failed
	switch kind {
	case queue.BounceDelayed:
		action = dsn.Delayed
	case queue.BounceDelivered:
		action = dsn.Delivered
	}
	rep := &dsn.Report{
		ReportingMTA: b.hostname,
		Sender:       msg.Sender,
		EnvID:        msg.EnvID,
		Ret:          msg.Ret,
		Arrival:      msg.Received,
		Action:       action,
		SMTPUTF8:     msg.SMTPUTF8,
	}
	for _, br := range rcpts {
		if !dsn.ShouldNotify(br.Recipient.Notify, action) {
			continue
		}
		a := br.Attempt
		if action == dsn.Delivered && a.RemoteMTA != "local" {
			rep.Action = dsn.Relayed // handed to a next hop without DSN support
		}
		status := a.Enhanced
		if status == ([3]int{}) {
			status = [3]int{4, 0, 0}
			if action == dsn.Failed {
				status = [3]int{5, 0, 0}
			}
		}
		diag := a.Reply()
		if br.Expired {
			status = [3]int{4, 4, 7}
			diag = "delivery time expired; last error: " + diag
			if a.Enhanced[0] == 5 {
				status = a.Enhanced
			}
		}
		if action == dsn.Failed && status[0] == 4 && !br.Expired {
			status[0] = 5
		}
		rep.Recipients = append(rep.Recipients, dsn.RecipientStatus{
			Address:        br.Recipient.Address,
			ORCPT:          br.Recipient.ORCPT,
			Status:         status,
			RemoteMTA:      a.RemoteMTA,
			Diagnostic:     diag,
			LastAttempt:    time.Now(),
			WillRetryUntil: br.RetryTill,
		})
	}
	if len(rep.Recipients) == 0 {
		return nil // every recipient asked for no notice
	}
	orig, err := b.store.OpenBody(ctx, msg.ID)
	if err != nil {
		return fmt.Errorf("bounce: open original %s: %w", msg.ID, err)
	}
	defer orig.Close()
	rep.Original = orig
	data, err := dsn.Build(rep)
	if err != nil {
		return fmt.Errorf("bounce: build DSN for %s: %w", msg.ID, err)
	}
	bounce := &store.Message{
		Sender:     "",
		Source:     "dsn",
		SMTPUTF8:   rep.Global() && !smtp.IsASCII(string(data)), // else 7-bit, or 8BITMIME for an 8-bit original
		Recipients: []store.Recipient{{Address: msg.Sender, Notify: "NEVER"}},
	}
	id, err := b.spool.Accept(ctx, bounce, bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("bounce: queue DSN for %s: %w", msg.ID, err)
	}
	b.metrics.bounces.Inc(action.String())
	b.log.Info("dsn queued", "id", msg.ID, "dsn_id", id, "action", action.String(), "to", msg.Sender, "rcpts", len(rep.Recipients))
	return nil
}
