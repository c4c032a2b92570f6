package submit

import (
	"errors"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
)

// Reasons a Refusal gives, for metrics and logs.
const (
	ReasonRelayDenied      = "relay_denied"
	ReasonSenderNotAllowed = "sender_not_owned"
	ReasonHeaderFrom       = "header_from"
	ReasonUnknownRecipient = "unknown_recipient"
	ReasonSuppressed       = "suppressed"
	ReasonRateLimit        = "rate_limit"
	ReasonTooManyRcpts     = "too_many_rcpts"
	ReasonTooBig           = "size"
	ReasonStorageFull      = "storage_full"
	ReasonSequence         = "sequence"
	ReasonSPF              = "spf_fail"
	ReasonDMARC            = "dmarc_reject"
	ReasonDNSBL            = "dnsbl"
	ReasonTemporary        = "temporary"
)

// ErrSuppressed marks the refusal of a recipient on the account's
// suppression list; the API skips such a recipient instead of failing.
var ErrSuppressed = errors.New("recipient suppressed")

// Refusal is the pipeline's decision not to accept something. Reply is
// what an SMTP client is told (the API maps it to an HTTP status); Reason
// labels it for metrics and logs.
type Refusal struct {
	Reply  *smtp.Error
	Reason string
	// RetryAfter is set for rate limits: when the same request could pass.
	RetryAfter time.Duration
	// Rate is the limit that refused a rate-limited request.
	Rate *RateStatus
	// Cause is logged, never shown (internal failures).
	Cause error
	mark  error
}

func (r *Refusal) Error() string {
	if r.Cause != nil {
		return fmt.Sprintf("%v: %v", r.Reply, r.Cause)
	}
	return r.Reply.Error()
}

// Unwrap exposes the reply (for smtp.AsError), the cause and any marker
// such as ErrSuppressed.
func (r *Refusal) Unwrap() []error {
	out := []error{r.Reply}
	if r.Cause != nil {
		out = append(out, r.Cause)
	}
	if r.mark != nil {
		out = append(out, r.mark)
	}
	return out
}

func refuse(reason string, code int, enh smtp.EnhancedCode, format string, args ...any) *Refusal {
	return &Refusal{Reply: smtp.Errorf(code, enh, format, args...), Reason: reason}
}

func refuseWith(reason string, e smtp.Error) *Refusal {
	return &Refusal{Reply: &e, Reason: reason}
}

// internal is a local failure: the client is told 451 4.3.0 and nothing
// about the cause, which is logged.
func internal(err error) *Refusal {
	e := smtp.ErrLocalError
	return &Refusal{Reply: &e, Reason: ReasonTemporary, Cause: err}
}
