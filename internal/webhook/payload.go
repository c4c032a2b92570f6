package webhook

import (
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Payload is the JSON body of a webhook request: one event. Every field is
// always present; the schema only ever grows.
type Payload struct {
	ID             int64             `json:"id"`              // event ID, increasing; use it to discard duplicates
	Type           string            `json:"type"`            // store.Event* type: "delivered", "bounced", ...
	Time           time.Time         `json:"time"`            // when the event happened, RFC 3339 UTC
	Account        string            `json:"account"`         // owning account
	MessageID      string            `json:"message_id"`      // Herald queue ID
	Recipient      string            `json:"recipient"`       // envelope recipient
	Sender         string            `json:"sender"`          // envelope sender
	RemoteMTA      string            `json:"remote_mta"`      // host that answered, "local" for local delivery
	Reply          string            `json:"reply"`           // SMTP reply, "550 5.1.1 text"
	EnhancedStatus string            `json:"enhanced_status"` // "5.1.1"
	TLS            string            `json:"tls"`             // TLS outcome of the attempt
	Bounce         string            `json:"bounce"`          // "hard:mailbox-unknown", "soft:mailbox-full", ...
	Attempt        int               `json:"attempt"`         // delivery attempt of the message that produced the event
	Tags           []string          `json:"tags"`            // sender's tags, [] if none
	Metadata       map[string]string `json:"metadata"`        // sender's metadata, {} if none
}

// NewPayload converts a store event to its webhook form.
func NewPayload(ev store.Event) Payload {
	p := Payload{
		ID:             ev.ID,
		Type:           ev.Type,
		Time:           ev.Time.UTC(),
		Account:        ev.Account,
		MessageID:      ev.MessageID,
		Recipient:      ev.Recipient,
		Sender:         ev.Sender,
		RemoteMTA:      ev.RemoteMTA,
		Reply:          ev.Reply,
		EnhancedStatus: ev.Enhanced,
		TLS:            ev.TLS,
		Bounce:         ev.Bounce,
		Attempt:        ev.Attempt,
		Tags:           ev.Tags,
		Metadata:       ev.Metadata,
	}
	if p.Tags == nil {
		p.Tags = []string{}
	}
	if p.Metadata == nil {
		p.Metadata = map[string]string{}
	}
	return p
}

// BatchPayload is the JSON body of a request of a batched webhook (batch
// max_events > 1): the events in the order they happened, at most the
// webhook's max_events, at least one. Each element is a Payload, exactly
// as an unbatched webhook receives it alone.
type BatchPayload struct {
	Events []Payload `json:"events"`
}
