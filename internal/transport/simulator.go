package transport

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/simulator"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// The mailbox simulator (package simulator) is a destination of the
// transport like Maildir and HTTP routes: Deliver routes its domain here
// before anything else (local-domain lookup, static routes, smarthost, MX
// resolution), so its mail never reaches the SMTP client and no DNS
// lookup or connection is made for it. The message has gone through the
// real acceptance path and queue, so its events, rollups, webhooks, DSNs
// and suppressions are those of real mail.

// simulatorMTA is the remote MTA named in the simulator's events; the
// throttle does not count its replies as a remote's.
const simulatorMTA = "simulator"

// SoftBounceRetry is when a soft-bounced simulator recipient is retried
// (or sooner, when queue.retry_initial is shorter): a test waits a minute,
// not the retry schedule.
const SoftBounceRetry = time.Minute

// Complainer is the feedback processing (internal/feedback) that the
// simulator's complaints go through, as a real feedback-loop report mailed
// to a message's VERP address does.
type Complainer interface {
	// Sender returns the VERP address of message msgID.
	Sender(msgID, sender string) string
	// Consume acts on a report mailed to a VERP address.
	Consume(ctx context.Context, rcpt string, report []byte) error
}

// SetComplaints installs the feedback processing of the simulator's
// complaints; without it complaint@ is only delivered.
func (t *Transport) SetComplaints(c Complainer) { t.complaints = c }

// deliverSimulated decides the outcome of simulator recipients from their
// local parts. Nothing is read or sent.
func deliverSimulated(rcpts []store.Recipient) []queue.Attempt {
	out := make([]queue.Attempt, 0, len(rcpts))
	for _, r := range rcpts {
		a := queue.Attempt{RecipientID: r.ID, RemoteMTA: simulatorMTA}
		o, _ := simulator.Lookup(r.Address)
		switch {
		case o == simulator.Delivered, o == simulator.Complaint, o == simulator.SoftBounce && r.Attempts > 0:
			a.Result, a.Code, a.Enhanced, a.Text = queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0}, "simulator: delivered"
		case o == simulator.SoftBounce:
			a.Result, a.Code, a.Enhanced, a.Text = queue.Temporary, 451, smtp.EnhancedCode{4, 2, 0},
				"simulator: mailbox temporarily unavailable (soft bounce; delivered at the retry)"
			a.RetryAfter = SoftBounceRetry
		case o == simulator.Bounce:
			a.Result, a.Code, a.Enhanced, a.Text = queue.Permanent, 550, smtp.EnhancedCode{5, 1, 1},
				"simulator: mailbox does not exist (hard bounce)"
		case o == simulator.Suppressed:
			// The acceptance path refuses it as suppressed; only mail that
			// skips that check (Herald's own) gets here.
			a.Result, a.Code, a.Enhanced, a.Text = queue.Permanent, 550, smtp.EnhancedCode{5, 7, 1},
				"simulator: recipient suppressed"
		default:
			a.Result, a.Code, a.Enhanced, a.Text = queue.Permanent, 550, smtp.EnhancedCode{5, 1, 1},
				"simulator: no such simulator address (known: "+simulator.Addresses+")"
		}
		out = append(out, a)
	}
	return out
}

// Recorded implements queue.FollowUp: once the delivery of a message to
// complaint@ is recorded, a feedback-loop report about it is handed to
// feedback processing, which records the "complained" event and suppresses
// the address exactly as for a provider's report. It comes after the
// "delivered" event, as a real complaint does.
func (t *Transport) Recorded(ctx context.Context, msg *store.Message, attempts []queue.Attempt) {
	if t.complaints == nil {
		return
	}
	byID := make(map[int64]string, len(msg.Recipients))
	for _, r := range msg.Recipients {
		byID[r.ID] = r.Address
	}
	for _, a := range attempts {
		addr := byID[a.RecipientID]
		if a.Result != queue.Delivered {
			continue
		}
		if o, ok := simulator.Lookup(addr); !ok || o != simulator.Complaint {
			continue
		}
		sender := msg.Sender
		if sender == "" {
			sender = "postmaster@" + simulator.Domain
		}
		verpAddr := t.complaints.Sender(msg.ID, sender)
		if err := t.complaints.Consume(ctx, verpAddr, complaintReport(verpAddr, addr, msg.ID, time.Now())); err != nil {
			t.log.Error("simulator: recording the complaint", "id", msg.ID, "rcpt", addr, "err", err)
			continue
		}
		t.log.Info("simulator: complaint reported", "id", msg.ID, "rcpt", addr)
	}
}

// complaintReport is the ARF report (RFC 5965) a mailbox provider's
// feedback loop would mail to verpAddr about the message to rcpt.
func complaintReport(verpAddr, rcpt, msgID string, now time.Time) []byte {
	const boundary = "herald-simulator-report"
	date := now.UTC().Format(time.RFC1123Z)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: <feedback@%s>\r\nTo: <%s>\r\nDate: %s\r\nSubject: Abuse report (Herald mailbox simulator)\r\n", simulator.Domain, verpAddr, date)
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; boundary=%q\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nThe recipient marked message %s as spam (simulated by Herald's mailbox simulator).\r\n", boundary, msgID)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: herald-simulator/1\r\nVersion: 1\r\n", boundary)
	fmt.Fprintf(&b, "Original-Mail-From: <%s>\r\nOriginal-Rcpt-To: <%s>\r\nArrival-Date: %s\r\nReporting-MTA: dns; %s\r\n\r\n", verpAddr, rcpt, date, simulator.Domain)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/rfc822-headers\r\n\r\nReturn-Path: <%s>\r\nTo: <%s>\r\n\r\n--%s--\r\n", boundary, verpAddr, rcpt, boundary)
	return b.Bytes()
}
