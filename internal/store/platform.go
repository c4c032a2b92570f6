package store

import (
	"context"
	"fmt"
	"time"
)

// This file declares the delivery-platform state (issue 4): accounts and
// their API keys, the event log (which doubles as the outbox feeding
// webhooks), suppression lists, webhooks, idempotency keys and inbound
// routes. A backend implements Platform; the event rows for a queue change
// are written in the same transaction as the change itself, so a crash can
// never lose an event or record one for a change that did not happen.

// DefaultAccount owns domains and users created without an account.
const DefaultAccount = "default"

// Account is a tenant: it owns sending domains, SMTP users, API keys,
// suppressions, webhooks and its own limits.
type Account struct {
	ID     string // short name, [a-z0-9-], unique
	Name   string // display name
	Limits AccountLimits
	// Tracking is the account's default for open and click tracking of
	// the messages it sends through the API (a message may override it).
	Tracking AccountTracking
	Created  time.Time
}

// AccountLimits are per-account sending limits; zero means unlimited.
type AccountLimits struct {
	PerMinute int `json:"per_minute"`
	PerHour   int `json:"per_hour"`
	PerDay    int `json:"per_day"`
}

// Scope of an API key.
const (
	ScopeSend  = "send"  // POST /v1/messages
	ScopeRead  = "read"  // GET messages, events, suppressions...
	ScopeAdmin = "admin" // everything of its account; the admin account's keys manage accounts
)

// APIKey is a credential for the HTTP API. Only a hash of its secret is
// stored; the full token is shown once, at creation.
type APIKey struct {
	ID         string   // public part of the token, unique
	Account    string   // owning account
	Name       string   // operator's label
	Scopes     []string // ScopeSend, ScopeRead, ScopeAdmin
	SecretHash []byte   // SHA-256 of the secret part (secrets are 256-bit random)
	Created    time.Time
	LastUsed   time.Time
}

// Event types: every state change of a message recipient.
const (
	EventAccepted   = "accepted"   // queued (SMTP 250 or API 202)
	EventDeferred   = "deferred"   // temporary failure, will retry
	EventDelivered  = "delivered"  // accepted by the next hop or a local mailbox
	EventBounced    = "bounced"    // permanent failure (sync, or an async DSN matched by VERP)
	EventExpired    = "expired"    // queue lifetime ran out
	EventComplained = "complained" // a feedback-loop complaint (ARF) matched
	EventSuppressed = "suppressed" // not sent: the recipient is on the suppression list
	EventRejected   = "rejected"   // refused before queueing (policy, rate limit)
	EventOpened     = "opened"     // the tracking pixel of the message was fetched (tracking.go)
	// EventClicked: a tracked link of the message was followed; the
	// event's Reply holds the link's URL (tracking.go).
	EventClicked   = "clicked"
	EventSandboxed = "sandboxed" // a sandbox send: checked and rendered, never queued
)

// Event is one entry of the delivery log.
type Event struct {
	ID        int64 // increasing; the cursor for pagination and webhooks
	Time      time.Time
	Type      string
	Account   string
	MessageID string // queue ID
	Recipient string
	Sender    string
	RemoteMTA string
	Reply     string // "550 5.1.1 text"
	Enhanced  string // "5.1.1"
	TLS       string // TLS outcome of the attempt
	Bounce    string // bounce class: "hard" or "soft" and a category, e.g. "hard:mailbox-unknown"
	Attempt   int
	Tags      []string
	Metadata  map[string]string

	// Queued is, for a delivered event passed to AddEvents, when its
	// message was accepted: the latency rollup counts Time - Queued. It is
	// not stored with the event (zero when read back). The queue's own
	// delivered events (Queue.Update) take the message's Received instead,
	// which every node sees in the shared queue.
	Queued time.Time
}

// EventFilter selects events. Zero fields do not filter.
type EventFilter struct {
	Account   string // required for tenants; "" only for the admin view
	MessageID string
	Recipient string
	Types     []string
	Tag       string
	Since     time.Time // inclusive
	Until     time.Time // exclusive
	After     int64     // cursor: events with ID > After
	Limit     int       // default 100, max 1000
}

// Suppression reasons.
const (
	SuppressHardBounce = "hard_bounce"
	SuppressComplaint  = "complaint"
	SuppressManual     = "manual"
)

// Suppression is an address an account must not send to.
type Suppression struct {
	Account string
	Address string // lower-cased
	Reason  string
	Detail  string // the bounce reply or complaint summary
	Created time.Time
	// Kind is KindBounce, KindComplaint, KindUnsubscribe or KindManual;
	// "" when adding means SuppressionKind(Reason).
	Kind string
	// Group is the unsubscribe group the suppression applies to; "" is
	// global: all mail of the account (unsubscribe.go).
	Group string
}

// Webhook is an account's subscription to event types.
type Webhook struct {
	ID         string
	Account    string
	URL        string
	Secret     string   // HMAC-SHA256 key for the signature header
	EventTypes []string // empty: all
	Created    time.Time
	// BatchMax and BatchWait batch the webhook's requests (see
	// WebhookAdmin): at most BatchMax events per request, waiting up to
	// BatchWait for a batch to fill. BatchMax 0 or 1 is one event per
	// request in the single-event body.
	BatchMax  int
	BatchWait time.Duration
	// PreviousSecret, during a secret rotation, signs every request
	// beside Secret until PreviousExpires; SecretRotated is when Secret
	// was last replaced (zero: never).
	PreviousSecret  string
	PreviousExpires time.Time
	SecretRotated   time.Time
}

// WebhookDelivery is one event due to one webhook.
type WebhookDelivery struct {
	ID          int64
	WebhookID   string
	Event       Event
	Attempts    int
	NextAttempt time.Time
	LastError   string
	Status      string // "pending", "delivered", "failed" (gave up after a day)
}

// Route decides what happens to mail for a local address besides Maildir.
type Route struct {
	Address string // "user@domain" or "@domain"
	Account string
	Action  string // "http" (POST JSON to URL) or "maildir"
	URL     string
	Secret  string // HMAC key for the POST signature
}

// AccountDeletion is what DeleteAccount did.
type AccountDeletion struct {
	Domains  int  // domains handed back to DefaultAccount (force)
	Users    int  // users handed back to DefaultAccount (force)
	Messages int  // queued messages deleted (force)
	Events   int  // events deleted, with their webhook deliveries
	Pending  bool // the purge was cut short; PruneEvents finishes it
}

// AccountInUseError is returned by DeleteAccount without force while the
// account still owns domains or users or has messages in the queue. It
// wraps ErrExists.
type AccountInUseError struct {
	Account  string
	Domains  int // domains the account owns
	Users    int // SMTP users of the account
	Messages int // messages of the account in the queue
}

// Error implements error.
func (e *AccountInUseError) Error() string {
	return fmt.Sprintf("account %s owns %d domains and %d users and has %d queued messages", e.Account, e.Domains, e.Users, e.Messages)
}

// Unwrap makes errors.Is(err, ErrExists) true.
func (e *AccountInUseError) Unwrap() error { return ErrExists }

// Platform is the delivery-platform state. Every method scoping data to an
// account takes the account ID; a tenant can never reach another
// account's rows through it.
type Platform interface {
	AddAccount(ctx context.Context, a Account) error // ErrExists
	GetAccount(ctx context.Context, id string) (Account, error)
	ListAccounts(ctx context.Context) ([]Account, error)
	UpdateAccountLimits(ctx context.Context, id string, l AccountLimits) error
	// DeleteAccount deletes an account and everything that is its own:
	// API keys, webhooks with all their deliveries and attempt logs,
	// suppressions, idempotency keys, inbound routes, templates and events. Without
	// force it refuses with an *AccountInUseError (wrapping ErrExists),
	// changing nothing, while the account owns domains or users or has
	// messages in the queue. With force its domains and users are handed
	// back to DefaultAccount (they stay on the server) and its queued
	// messages are deleted without DSNs (a delivery already in progress
	// may complete). Until every row is gone (the events are deleted in
	// short transactions) the ID cannot be reused: AddAccount returns
	// ErrExists, so a new account with that ID never sees the old one's
	// data. A purge cut short (ctx, crash) is resumed by PruneEvents and
	// reported in AccountDeletion.Pending. DefaultAccount is never deleted
	// (ErrExists); an unknown account returns ErrNotFound.
	DeleteAccount(ctx context.Context, id string, force bool) (AccountDeletion, error)

	// SetDomainAccount assigns a domain (local or sending) to an account.
	SetDomainAccount(ctx context.Context, domain, account string) error
	// DomainAccount returns the account owning domain (ErrNotFound if none).
	DomainAccount(ctx context.Context, domain string) (string, error)
	ListAccountDomains(ctx context.Context, account string) ([]string, error)
	SetUserAccount(ctx context.Context, address, account string) error
	UserAccount(ctx context.Context, address string) (string, error)

	AddAPIKey(ctx context.Context, k APIKey) error
	GetAPIKey(ctx context.Context, id string) (APIKey, error)
	ListAPIKeys(ctx context.Context, account string) ([]APIKey, error)
	DeleteAPIKey(ctx context.Context, account, id string) error
	TouchAPIKey(ctx context.Context, id string, t time.Time) error

	// AddEvents appends events that are not tied to a queue change
	// (rejected, suppressed, bounced by async DSN, complained); it fans
	// them out to matching webhooks in the same transaction.
	AddEvents(ctx context.Context, evs []Event) error
	ListEvents(ctx context.Context, f EventFilter) ([]Event, error)
	// PruneEvents deletes events older than before; returns how many.
	PruneEvents(ctx context.Context, before time.Time) (int, error)

	// AddSuppression adds or replaces the suppression of s.Address in
	// s.Group ("" global). The other three act on global suppressions
	// only; Unsubscribes has the per-group ones.
	AddSuppression(ctx context.Context, s Suppression) error // replaces
	DeleteSuppression(ctx context.Context, account, address string) error
	IsSuppressed(ctx context.Context, account, address string) (bool, error)
	ListSuppressions(ctx context.Context, account string, after string, limit int) ([]Suppression, error)

	AddWebhook(ctx context.Context, w Webhook) error // ErrExists
	// AddWebhookLimited is AddWebhook that refuses (ErrLimit, adding
	// nothing) when w's account already has max webhooks or more; max < 1
	// means no limit. Count and insert are one atomic step, so concurrent
	// calls cannot exceed max together.
	AddWebhookLimited(ctx context.Context, w Webhook, max int) error
	ListWebhooks(ctx context.Context, account string) ([]Webhook, error)
	DeleteWebhook(ctx context.Context, account, id string) error
	// LeaseWebhookDeliveries returns due pending deliveries, leased for d.
	LeaseWebhookDeliveries(ctx context.Context, now time.Time, d time.Duration, limit int) ([]WebhookDelivery, error)
	// RecordWebhookAttempt stores one attempt's outcome (status, next
	// attempt, error) and appends it to the attempt log.
	RecordWebhookAttempt(ctx context.Context, id int64, status string, next time.Time, errText string, httpStatus int) error
	ListWebhookDeliveries(ctx context.Context, account, webhookID string, limit int) ([]WebhookDelivery, error)

	// Idempotency: PutIdempotency stores key -> value unless the key
	// exists (and is younger than a day), in which case it returns the
	// stored value and ErrExists. The value is opaque to the store (the
	// HTTP API keeps a reservation with the request's fingerprint, or an
	// outcome, there); the parameter name is historical.
	PutIdempotency(ctx context.Context, account, key, messageID string, t time.Time) (string, error)

	AddRoute(ctx context.Context, r Route) error // replaces
	GetRoute(ctx context.Context, address string) (Route, error)
	ListRoutes(ctx context.Context, account string) ([]Route, error)
	DeleteRoute(ctx context.Context, account, address string) error
}
