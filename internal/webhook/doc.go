// Package webhook delivers Herald's delivery events to the HTTP endpoints
// accounts subscribe, and signs and verifies those requests.
//
// # Delivery
//
// The store fans every event out to the account's matching webhooks in the
// same transaction that records it (the outbox). A Dispatcher leases due
// deliveries from the store, POSTs each event and records every attempt.
// A 2xx answer marks the delivery delivered; any other status, a timeout or
// a connection error schedules a retry with exponential backoff (10s, 30s,
// 1m, 5m, 15m, then hourly, with ±10% jitter) until MaxAge (24h) after the
// event, when the delivery is marked failed. No redirect is followed: a
// 3xx answer is a failed attempt. Delivery is at least once: a
// receiver must use the event id to discard duplicates. A restart loses
// nothing: pending deliveries stay in the store and the lease of one that
// was in flight expires.
//
// What an account can read back about an attempt (the delivery's
// last_error) is the HTTP status and a fixed text ("HTTP 500", "connection
// refused", "timeout"), never anything the destination sent; the full
// transport error goes to the operator's log only.
//
// # Destinations
//
// Accounts choose webhook URLs, so Herald must not become their proxy into
// the operator's network (SSRF). ValidateURL refuses, when a webhook is
// created, URLs that are not absolute http(s) URLs, that carry user
// information, and (unless platform.webhook_allow_private) hosts that are
// private, loopback or special-purpose IP literals, localhost and other
// internal names, or numbers in notations some resolvers read as IPv4.
// NewPublicClient then checks every address it connects to, after DNS
// resolution, against the IANA special-purpose registries (CheckAddr), so
// a public name resolving to an internal address is refused too.
//
// # Request
//
//	POST <webhook URL>
//	Content-Type: application/json
//	User-Agent: Herald-Webhook/1
//	Herald-Event-Id: 1234
//	Herald-Event-Type: delivered
//	Herald-Signature: t=1735689600,v1=<64 hex digits>
//
//	{"id":1234,"type":"delivered","time":"2025-01-01T00:00:00Z",
//	 "account":"acme","message_id":"0GZ3...","recipient":"bob@example.org",
//	 "sender":"bounces+...@acme.example","remote_mta":"mx.example.org",
//	 "reply":"250 2.0.0 OK","enhanced_status":"2.0.0","tls":"TLSv1.3",
//	 "bounce":"","attempt":1,"tags":["welcome"],"metadata":{"user":"42"}}
//
// Every field of the body is always present (empty strings, 0, [] and {}
// when unset); see Payload. Fields may be added in the future, never
// removed or renamed.
//
// # Batches
//
// A webhook whose batch max_events (store.Webhook.BatchMax) is above 1
// receives its events in batches: every request carries
//
//	{"events":[<Payload>, <Payload>, ...]}
//
// (BatchPayload: 1 to max_events events in the order they happened, each
// exactly the single-event body) with the header Herald-Event-Count and
// without Herald-Event-Id and Herald-Event-Type; the signature covers the
// whole body. A webhook with max_events 1 (the default) keeps receiving
// one event per request in the single-event body.
//
// A worker that leased one delivery of a batched webhook leases that
// webhook's other ready deliveries up to max_events
// (store.WebhookAdmin.LeaseWebhookBatch), under the same claim as every
// lease, so dispatchers on several nodes never send the same delivery at
// the same time. If the batch is not full and its oldest event is younger
// than max_wait, the deliveries are held (leases released, no attempt
// counted) until that event is max_wait old, and whichever dispatcher
// leases one of them then sends them all with the events that arrived
// meanwhile; no worker waits. A 2xx answer marks every delivery in the
// batch delivered; a failure schedules the whole batch again with one
// backoff (from its least-tried delivery), and each delivery gives up at
// its own event's MaxAge. Every delivery keeps its own status, attempts
// and attempt log.
//
// # Secret rotation
//
// Rotating a webhook's secret keeps the previous secret active until
// store.Webhook.PreviousExpires: every request is signed with both
// (SignAll, ActiveSecrets), the current secret's v1 first, so a receiver
// verifies with whichever of the two it has deployed.
//
// # Signature
//
// Herald-Signature is "t=<unix seconds>,v1=<hex HMAC-SHA256>", where the
// HMAC is keyed with the webhook's secret and computed over the bytes
//
//	<t> "." <raw request body>
//
// A receiver recomputes the HMAC over the body exactly as received (before
// any JSON parsing), compares it in constant time with each v1 value, and
// rejects a timestamp more than a few minutes from its clock to defeat
// replays. Verify does all of this. Unknown keys in the header (a future
// "v2") must be ignored; during a secret rotation there are two v1 values,
// "t=<t>,v1=<HMAC with the new secret>,v1=<HMAC with the old one>", and a
// request is genuine if any of them matches. A webhook with an empty
// secret is sent unsigned.
//
// Test vector: secret "whsec_test", t=1735689600 and body {"id":1} give
//
//	t=1735689600,v1=8f1a3fef95ed7ec5882c49a5fe0c74a2b97c46d13fde2e873ded26a7699530e8
//
// In a shell, for a body saved in body.json:
//
//	printf '%s.%s' "$t" "$(cat body.json)" | openssl dgst -sha256 -hmac "$secret"
package webhook
