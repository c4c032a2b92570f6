package queue

import (
	"context"
	"fmt"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// BounceMessage fails every pending recipient of message id at once, as
// expiry does: a failure DSN (5.0.0 with reason) is queued for them first,
// then they are recorded as failed; when no recipient is left pending the
// message is removed. It is the operator's "bounce" of the console.
//
// A recipient under a live lease (a delivery in progress) makes the
// update fail with an error wrapping store.ErrLeaseLost; the DSN was
// queued already in that case (the operator may try again once the
// delivery ended, which can duplicate the notice, never lose it).
func (s *Scheduler) BounceMessage(ctx context.Context, id, reason string) error {
	msg, err := s.store.Get(ctx, id)
	if err != nil {
		return fmt.Errorf("bounce %s: %w", id, err)
	}
	var rcpts []BouncedRecipient
	var outcomes []store.Outcome
	enh := smtp.EnhancedCode{5, 0, 0}
	for _, r := range msg.Recipients {
		if r.Status.Final() {
			continue
		}
		a := Attempt{RecipientID: r.ID, Result: Permanent, Code: 550, Enhanced: enh, Text: reason}
		rcpts = append(rcpts, BouncedRecipient{Recipient: r, Attempt: a})
		outcomes = append(outcomes, store.Outcome{RecipientID: r.ID, Status: store.StatusFailed, Reply: a.Reply(),
			Enhanced: enh.String(), DelayWarned: r.DelayWarned})
	}
	if len(rcpts) == 0 {
		return nil
	}
	if s.bouncer != nil {
		if err := s.bouncer.Bounce(ctx, msg, BounceFailed, rcpts); err != nil {
			return fmt.Errorf("bounce %s: queueing the DSN: %w", id, err)
		}
	}
	if err := s.store.Update(ctx, id, "", outcomes); err != nil {
		return fmt.Errorf("bounce %s: %w", id, err)
	}
	s.log.Info("message bounced by an operator", "id", id, "recipients", len(rcpts), "reason", reason)
	return nil
}
