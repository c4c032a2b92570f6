// Package dsn builds and parses delivery status notifications (RFC 3464
// reports inside RFC 6522 multipart/report messages), with the RFC 3461
// NOTIFY and RET semantics and the RFC 6533 "global" variants for
// internationalised addresses.
package dsn

import (
	"io"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
)

// Action is the per-recipient Action field of a DSN.
type Action int

// Actions (RFC 3464 §2.3.3). The zero value is an unknown or missing action.
const (
	ActionUnknown Action = iota
	Failed               // the message could not be delivered
	Delayed              // still trying; a warning
	Delivered            // delivered to the recipient's mailbox
	Relayed              // handed to a system that sends no DSN
	Expanded             // delivered and forwarded to several recipients
)

var actionNames = [...]string{"", "failed", "delayed", "delivered", "relayed", "expanded"}

// String returns the field value, e.g. "failed".
func (a Action) String() string {
	if a < 0 || int(a) >= len(actionNames) {
		return ""
	}
	return actionNames[a]
}

// ParseAction parses an Action field value (case-insensitive, comments
// after the word ignored); unknown values give ActionUnknown.
func ParseAction(s string) Action {
	s = strings.ToLower(strings.TrimSpace(s))
	if i := strings.IndexAny(s, " \t("); i >= 0 {
		s = s[:i]
	}
	for i, n := range actionNames {
		if i > 0 && n == s {
			return Action(i)
		}
	}
	return ActionUnknown
}

// ShouldNotify reports whether a DSN for action is wanted under the NOTIFY
// parameter notify of RFC 3461 §4.1: "" (not given) asks for failures and
// delays but not successes; "NEVER" asks for nothing; otherwise a comma list
// of SUCCESS (delivered, relayed, expanded), FAILURE and DELAY. Keywords are
// case-insensitive.
func ShouldNotify(notify string, action Action) bool {
	notify = strings.TrimSpace(notify)
	if notify == "" {
		return action == Failed || action == Delayed
	}
	for _, kw := range strings.Split(notify, ",") {
		switch strings.ToUpper(strings.TrimSpace(kw)) {
		case "NEVER":
			return false
		case "SUCCESS":
			if action == Delivered || action == Relayed || action == Expanded {
				return true
			}
		case "FAILURE":
			if action == Failed {
				return true
			}
		case "DELAY":
			if action == Delayed {
				return true
			}
		}
	}
	return false
}

// Report describes one DSN to build: one message, one action, one or more
// of its recipients.
type Report struct {
	// ReportingMTA is this host's name, used in Reporting-MTA, in the From
	// address (MAILER-DAEMON@ReportingMTA) and in the Message-ID.
	ReportingMTA string
	// Sender is the envelope sender of the original message, the DSN's
	// recipient. It must not be empty: a null-sender message never causes a
	// DSN (RFC 3461 §6.2, RFC 5321 §4.5.5), and Build refuses it.
	Sender string
	// EnvID is the original ENVID (decoded), "" if none.
	EnvID string
	// Ret is the RET parameter: "HDRS" returns headers only; "FULL" or ""
	// return the whole message if it is at most MaxReturnedSize bytes, its
	// headers otherwise.
	Ret string
	// Arrival is when the original message was accepted (zero: omitted).
	Arrival time.Time
	// Action is the action reported for every recipient.
	Action Action
	// Recipients are the recipients the report is about (at least one).
	Recipients []RecipientStatus
	// Original is the original message; nil returns nothing.
	Original io.Reader
	// Date is the DSN's Date; zero means now.
	Date time.Time
	// SMTPUTF8 tells that the original message was sent with SMTPUTF8.
	// Only then may the DSN carry UTF-8 (see Build).
	SMTPUTF8 bool
}

// Global reports whether Build renders r with the RFC 6533 types, which
// carry UTF-8: only when the original message needed SMTPUTF8 (or the
// sender, the DSN's recipient, is an internationalised address). A global
// DSN needs SMTPUTF8 to be sent when it is not ASCII; any other DSN never
// does (it may need 8BITMIME for an 8-bit original returned in full).
func (r *Report) Global() bool {
	return r.SMTPUTF8 || !smtp.IsASCII(r.Sender)
}

// RecipientStatus is the outcome for one recipient.
type RecipientStatus struct {
	Address string // final recipient (the RCPT TO address)
	ORCPT   string // ORCPT parameter as given ("rfc822;user@example.com"), "" if none
	// Status is the enhanced status; zero means 5.0.0, 4.0.0 or 2.0.0 by action.
	Status         smtp.EnhancedCode
	RemoteMTA      string    // host that gave the reply, "" for none
	Diagnostic     string    // the reply ("550 5.1.1 No such user") or an error text
	LastAttempt    time.Time // zero: omitted
	WillRetryUntil time.Time // for Delayed; zero: omitted
}
