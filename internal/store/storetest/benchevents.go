package storetest

import (
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// BenchEvents returns n events of the current time for the backends'
// AddEvents benchmarks: the outcome types of delivery attempts and some
// acceptances, of four accounts, to recipients of 50 domains; seq makes
// the recipients differ between calls.
func BenchEvents(n, seq int) []store.Event {
	now := time.Now()
	evs := make([]store.Event, n)
	types := []string{store.EventAccepted, store.EventDelivered, store.EventDelivered, store.EventDeferred, store.EventBounced}
	for i := range evs {
		k := seq*n + i
		evs[i] = store.Event{
			Time: now, Type: types[k%len(types)], Account: fmt.Sprintf("bench%d", k%4),
			MessageID: fmt.Sprintf("BM%d", k), Recipient: fmt.Sprintf("user%d@domain%d.example", k, k%50),
			Reply: "250 2.0.0 ok", RemoteMTA: "mx.example.com", TLS: "TLSv1.3",
		}
		if evs[i].Type == store.EventDelivered {
			evs[i].Queued = now.Add(-3 * time.Second)
		}
	}
	return evs
}
