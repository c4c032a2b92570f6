package submit

import (
	"github.com/heraldmail/herald/internal/simulator"
	"github.com/heraldmail/herald/internal/smtp"
)

// simulatorRcpt refuses an address at the mailbox simulator's domain that
// the simulator does not know, so a typo is an error at once rather than a
// bounce later. The simulator's addresses need no local domain and no
// DKIM: any identity that may relay may send to them, and the transport
// answers for them in process (package simulator says why nothing leaves).
// suppressed@ is refused by the suppression check like a listed address.
func (t *Tx) simulatorRcpt(addr string) error {
	if o, ok := simulator.Lookup(addr); ok && o == simulator.Unknown {
		return refuse(ReasonUnknownRecipient, 550, smtp.EnhancedCode{5, 1, 1},
			"Recipient <%s> is not a mailbox simulator address (known local parts: %s, each with an optional +tag)", addr, simulator.Addresses)
	}
	return nil
}
