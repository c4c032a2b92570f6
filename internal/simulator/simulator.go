// Package simulator names Herald's mailbox simulator: addresses at the
// reserved domain simulator.herald.invalid whose delivery outcome is
// fixed, so that an application can test its bounce, complaint and
// webhook handling against a real Herald without sending anything to the
// internet (like the mailbox simulators of the cloud services).
//
//	delivered@   delivered
//	bounce@      hard bounce: 550 5.1.1, a "bounced" event, suppressed
//	softbounce@  deferred (451 4.2.0) at the first attempt, delivered at the retry
//	complaint@   delivered, then a "complained" event, suppressed
//	suppressed@  treated as on the suppression list at submission
//
// A local part may carry a tag after "+" (bounce+order-42@...), so one
// test run can use fresh addresses (a hard bounce or a complaint puts the
// address it names on the account's suppression list, as a real one does).
//
// Why the simulator cannot send anything out: the domain is under
// ".invalid", which RFC 2606 reserves and RFC 6761 §6.4 requires
// resolvers to answer with NXDOMAIN, so no DNS anywhere routes it; and
// Herald never asks: the transport routes the domain in process, before
// local-domain lookup, static routes, the smarthost and MX resolution
// (internal/transport), so not even a configured smarthost sees it.
//
// This package only classifies addresses; it imports nothing of Herald's.
// The acceptance path (internal/submit) uses it to refuse unknown
// simulator addresses and to suppress suppressed@, the transport to
// decide the outcome.
package simulator

import "strings"

// Domain is the simulator's domain.
const Domain = "simulator.herald.invalid"

// Outcome is what the simulator does with a recipient.
type Outcome int

// Outcomes, by local part (before any "+tag").
const (
	// Unknown is an address at Domain with a local part the simulator
	// does not know: refused at submission.
	Unknown Outcome = iota
	Delivered
	Bounce
	SoftBounce
	Complaint
	Suppressed
)

var names = map[string]Outcome{
	"delivered":  Delivered,
	"bounce":     Bounce,
	"softbounce": SoftBounce,
	"complaint":  Complaint,
	"suppressed": Suppressed,
}

// String returns the local part that selects o ("" for Unknown).
func (o Outcome) String() string {
	for k, v := range names {
		if v == o {
			return k
		}
	}
	return ""
}

// Addresses lists the simulator's local parts, for error messages.
const Addresses = "delivered, bounce, softbounce, complaint, suppressed"

// IsDomain reports whether domain (any case, with or without a final dot)
// is the simulator's.
func IsDomain(domain string) bool {
	return strings.EqualFold(strings.TrimSuffix(domain, "."), Domain)
}

// Lookup classifies address ("local@domain"). ok is false when the address
// is not at the simulator's domain; an address at it with a local part
// the simulator does not know is (Unknown, true). Local parts compare
// case-insensitively and may carry a "+tag".
func Lookup(address string) (o Outcome, ok bool) {
	at := strings.LastIndexByte(address, '@')
	if at < 0 || !IsDomain(address[at+1:]) {
		return Unknown, false
	}
	local, _, _ := strings.Cut(address[:at], "+")
	return names[strings.ToLower(local)], true
}
