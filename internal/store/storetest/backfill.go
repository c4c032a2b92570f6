package storetest

import (
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// BackfillEvents returns events for a backend's backfill test: the
// accepted, delivered, deferred and bounced events of messages of two
// accounts over a few hours, each delivered event's Queued the time of
// its message's accepted event (which is what a backfill, reading only
// the events, takes as the accept time), and some events of other types.
func BackfillEvents() []store.Event {
	var evs []store.Event
	for i := range 300 {
		acct := []string{"bf1", "bf2"}[i%2]
		id := fmt.Sprintf("BF%06d", i)
		acc := base.Add(time.Duration(i*47) * time.Second)
		rcpt := fmt.Sprintf("u%d@Dom%d.Example", i, i%7)
		evs = append(evs, store.Event{Time: acc, Type: store.EventAccepted, Account: acct, MessageID: id, Recipient: rcpt})
		done := acc.Add(time.Duration(i*i%5000+3) * time.Millisecond * 37)
		tls := []string{"TLSv1.3", "none", ""}[i%3]
		switch i % 5 {
		case 0, 1, 2:
			evs = append(evs, store.Event{Time: done, Type: store.EventDelivered, Account: acct, MessageID: id, Recipient: rcpt,
				TLS: tls, Queued: acc})
		case 3:
			evs = append(evs, store.Event{Time: done, Type: store.EventDeferred, Account: acct, MessageID: id, Recipient: rcpt, TLS: tls})
		case 4:
			evs = append(evs, store.Event{Time: done, Type: store.EventBounced, Account: acct, MessageID: id, Recipient: rcpt, TLS: tls},
				store.Event{Time: done.Add(time.Minute), Type: store.EventComplained, Account: acct, MessageID: id, Recipient: rcpt})
		}
	}
	return evs
}
