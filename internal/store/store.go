// Package store defines Herald's state: the durable queue of accepted
// messages, their bodies, and the directory of local domains, users and
// aliases. Backends (sqlite, postgres) implement these interfaces and must
// pass the conformance suite in store/storetest.
package store

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"io"
	"sync/atomic"
	"time"
)

// ErrNotFound is returned when a message, user, domain or alias is unknown.
var ErrNotFound = errors.New("not found")

// ErrExists is returned when creating something that already exists.
var ErrExists = errors.New("already exists")

// ErrLimit is returned when creating something would exceed a configured
// per-account limit (e.g. the number of webhooks). Nothing was created.
var ErrLimit = errors.New("limit reached")

// ErrStorageFull is returned when the spool cannot take more data because the
// disk is full. Nothing already committed is affected.
var ErrStorageFull = errors.New("storage full")

// ErrLeaseLost is returned (wrapped) by Queue.Update and Queue.Renew when the
// caller no longer holds the lease it names: it expired and another node (or
// worker) leased the recipients again, or the outcome was already recorded,
// or the message is gone. Nothing was written; the lease's new owner, if
// any, delivers the recipients and records their outcome.
var ErrLeaseLost = errors.New("lease lost")

// Status is the state of one recipient of a queued message.
type Status string

// Recipient states. Queued and Deferred are pending; the others are final.
const (
	StatusQueued    Status = "queued"    // waiting for its first attempt
	StatusDeferred  Status = "deferred"  // a temporary failure; retried at NextAttempt
	StatusDelivered Status = "delivered" // accepted by the next hop or a local mailbox
	StatusFailed    Status = "failed"    // a permanent failure (DSN sent if asked)
	StatusExpired   Status = "expired"   // the queue lifetime ran out (DSN sent if asked)
)

// Final reports whether s is a terminal state.
func (s Status) Final() bool {
	return s == StatusDelivered || s == StatusFailed || s == StatusExpired
}

// Message is an accepted message's envelope and trace data.
type Message struct {
	ID       string    // queue ID: unique, time-ordered, safe in file names
	Sender   string    // envelope MAIL FROM; "" is the null sender <>
	Received time.Time // when the message was accepted (250 sent)
	Size     int64     // body size in bytes, as stored (trace headers included)

	// DSN parameters from MAIL FROM (RFC 3461).
	Ret   string // "FULL", "HDRS" or "" (unspecified)
	EnvID string // ENVID, "" if none

	// Where it came from.
	ClientIP string // remote address of the submitting client, "" for local
	HELO     string // EHLO/HELO name given
	AuthUser string // authenticated user, "" if none
	Source   string // "smtp", "submission", "sendmail", "dsn", "local"

	// SMTPUTF8 is set when the message or envelope needs SMTPUTF8.
	SMTPUTF8 bool

	// Delivery-platform data: the owning account, and the caller's tags
	// and metadata, copied onto every event of the message.
	Account  string
	Tags     []string
	Metadata map[string]string

	// Scheduled send (issue 12): BatchID is the batch the message belongs
	// to ("" for none; see Batches), SendAt the time it was scheduled for
	// (zero when it was sent at once). Enqueue makes the recipients due at
	// SendAt when it is after Received; the queue lifetime counts from it.
	BatchID string
	SendAt  time.Time

	// Headers are complete header fields (CRLF-terminated) that Herald
	// prepends to the body when it is read back: DKIM-Signature and
	// Authentication-Results, computed while the body streamed in. Set
	// before Enqueue; Size includes them.
	Headers []byte

	Recipients []Recipient
}

// Recipient is one envelope recipient of a message with its delivery state.
type Recipient struct {
	ID      int64  // assigned by the store; unique within the store
	Address string // RCPT TO address
	Notify  string // NOTIFY: "" (default), "NEVER", or a comma list of SUCCESS,FAILURE,DELAY
	ORCPT   string // ORCPT xtext-decoded, "type;address" ("rfc822;user@example.com"), "" if none

	Status      Status
	Attempts    int       // delivery attempts so far
	NextAttempt time.Time // when the next attempt is due (pending states)
	LastReply   string    // last reply or error text, for DSNs and queue listings
	RemoteMTA   string    // host that gave LastReply
	DelayWarned bool      // a delay DSN was already sent
	UpdatedAt   time.Time
}

// Body is a message body being written to the spool. Small bodies are
// buffered in memory and stored inline with the queue row; large ones spill
// to a blob file. The body is not durable until it is passed to Enqueue.
type Body interface {
	io.Writer
	// Size is the number of bytes written so far.
	Size() int64
	// Abort discards the body; it is safe to call after Enqueue (no-op).
	Abort()
}

// Lease is a set of due recipients of one message handed to a delivery
// worker. The recipients stay leased (invisible to other Lease calls, on
// every node) until Until, or until Update records their outcome; Renew
// moves Until. After Until another Lease call may take them over under a
// new token, which makes this one lost.
type Lease struct {
	Message *Message // Recipients holds only the leased recipients
	Until   time.Time
	// Token identifies this lease: Renew and Update must present it. It is
	// random (unguessable), unique per lease, never "" for a real lease.
	Token string
}

// Outcome is the result of a delivery attempt for one recipient.
type Outcome struct {
	RecipientID int64
	Status      Status    // new state
	NextAttempt time.Time // for StatusDeferred
	Reply       string    // reply text or error, recorded as LastReply
	RemoteMTA   string
	DelayWarned bool // set once a delay DSN has been sent
	// For the event log: TLS outcome, enhanced code ("5.1.1") and bounce
	// class ("hard:mailbox-unknown") of the attempt.
	TLS      string
	Enhanced string
	Bounce   string
}

// QueueStats summarises the queue for metrics.
type QueueStats struct {
	Messages   int       // messages with at least one pending recipient
	Recipients int       // pending recipients
	Oldest     time.Time // Received of the oldest pending message (zero if none)
}

// Queue is the durable message queue.
//
// A store handle belongs to one node (sqlite.Options.Node,
// postgres.Options.Node; "" is a single node). Several nodes may share one
// queue: leases carry the owner node and a token, and expire, so that the
// recipients of a node that died are taken over by the others once its
// leases run out. A lease's holder renews it while its delivery runs and
// records the outcome with its token; an outcome presented with a token
// that no longer holds the lease is refused (ErrLeaseLost), so a node whose
// lease was taken over cannot overwrite the new owner's result.
type Queue interface {
	// NewBody starts a body to be passed to Enqueue.
	NewBody() (Body, error)
	// Enqueue stores msg (ID, envelope, recipients all pending) and body
	// durably: when it returns nil, both are on stable storage (fsync done,
	// shared with concurrent callers by group commit). Recipient IDs are
	// filled in msg. A full disk returns an error wrapping ErrStorageFull.
	//
	// The recipients are due at msg.Received, or at msg.SendAt when it is
	// later (a scheduled message).
	//
	// If leaseUntil is not zero, the recipients are created leased by this
	// node until then, so the caller may deliver them at once without
	// another worker taking them, and the new lease's token is returned;
	// otherwise the token is "".
	Enqueue(ctx context.Context, msg *Message, body Body, leaseUntil time.Time) (token string, err error)
	// OpenBody returns the stored body of message id.
	OpenBody(ctx context.Context, id string) (io.ReadCloser, error)
	// Lease returns up to limit messages with recipients due at or before
	// now and not leased, or whose lease expired (its Until is before now),
	// whoever held it. Those recipients are leased to this node until now+d
	// under a new random token, one token per returned Lease; an expired
	// lease taken over this way is lost to its previous holder. Concurrent
	// calls, from this node or others, never lease a recipient twice.
	Lease(ctx context.Context, now time.Time, d time.Duration, limit int) ([]Lease, error)
	// Renew extends the lease token of message id until the given time
	// (a lease is never shortened). A lease whose Until has passed but
	// that nobody took over yet is still held and is renewed. It returns
	// an error wrapping ErrLeaseLost when no pending recipient of id holds
	// token any more (another node took the lease over after it expired,
	// the outcome was already recorded, the message is gone, or token is
	// "").
	Renew(ctx context.Context, id, token string, until time.Time) error
	// Update records outcomes for recipients of message id and releases
	// their leases, atomically: all outcomes or none.
	//
	// With a token, every outcome's recipient must be leased under token
	// (whether or not its Until has passed). If one is not (it was taken
	// over, its outcome was already recorded, it is unknown, or the
	// message is gone), nothing is written and the error wraps
	// ErrLeaseLost (and also ErrNotFound when the message is gone).
	//
	// token "" is for administrative updates (the CLI, tests): it applies
	// to recipients that are not leased, or whose lease expired (Until
	// before the store's current time). If a recipient is under a live
	// lease nothing is written and the error wraps ErrLeaseLost; an
	// unknown message or recipient returns ErrNotFound.
	//
	// When every recipient of the message is final, the message and its
	// body are removed.
	Update(ctx context.Context, id, token string, outcomes []Outcome) error
	// NextDue returns the earliest time at which a pending recipient can be
	// leased: its NextAttempt, or just after the end of its lease (so that a
	// scheduler wakes up to take over work whose lease expired); the zero
	// time if nothing is pending.
	NextDue(ctx context.Context) (time.Time, error)
	// Get returns message id with all its recipients.
	Get(ctx context.Context, id string) (*Message, error)
	// List returns up to limit messages in the queue, oldest first, after
	// the queue ID "after" ("" for the start).
	List(ctx context.Context, after string, limit int) ([]*Message, error)
	// Retry makes every pending recipient of message id due now. Leases
	// are kept, so a delivery in progress is not duplicated.
	Retry(ctx context.Context, id string, now time.Time) error
	// Delete removes message id and its body whatever its state.
	Delete(ctx context.Context, id string) error
	// ReleaseLeases clears the leases held by this node, so that what was
	// in flight when it stopped is due again at once (called at start-up,
	// before this node leases anything), and gives back the destination
	// connections it held (Destinations). Other nodes' leases are never
	// touched.
	ReleaseLeases(ctx context.Context) error
	// Stats summarises the pending queue.
	Stats(ctx context.Context) (QueueStats, error)
}

// User is an account allowed to authenticate and submit mail.
type User struct {
	Address      string // login name, a full address (lower-cased)
	PasswordHash string // argon2id or bcrypt hash in PHC/modular form
	// SendAs grants the sender addresses the user may use besides its own
	// address and the aliases that deliver to it: full addresses, or
	// "@domain" (a bare "domain" reads the same) for a whole domain.
	SendAs  []string
	Created time.Time
}

// Alias maps a local address (or "@domain" catch-all) to one or more
// targets, local or external.
type Alias struct {
	Address string   // "user@domain" or "@domain" for a catch-all (lower-cased)
	Targets []string // destination addresses
}

// DomainPolicy is how the authentication checks of mail received for a
// local domain are applied. Empty fields follow the server configuration
// ([checks]).
type DomainPolicy struct {
	// DMARC is "enforce" (refuse p=reject failures, mark p=quarantine),
	// "quarantine" (mark both, refuse nothing), "monitor" (record only) or
	// "" for the server default.
	DMARC string `json:"dmarc,omitempty"`
	// SPFReject is "on" (refuse SPF hard fails at RCPT), "off" or "".
	SPFReject string `json:"spf_reject,omitempty"`
	// MTASTS is the mode of the MTA-STS policy Herald publishes for the
	// domain (RFC 8461): "enforce", "testing", "none", or "" for testing.
	MTASTS string `json:"mta_sts,omitempty"`
}

// Directory holds the local domains, users and aliases. Reads reflect
// changes made by other processes (the CLI) without a restart.
type Directory interface {
	AddDomain(ctx context.Context, domain string) error
	DeleteDomain(ctx context.Context, domain string) error
	ListDomains(ctx context.Context) ([]string, error)
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	// SetDomainPolicy and GetDomainPolicy manage a local domain's inbound
	// policy; an unknown domain returns ErrNotFound.
	SetDomainPolicy(ctx context.Context, domain string, p DomainPolicy) error
	GetDomainPolicy(ctx context.Context, domain string) (DomainPolicy, error)

	AddUser(ctx context.Context, u User) error
	DeleteUser(ctx context.Context, address string) error
	SetPassword(ctx context.Context, address, hash string) error
	SetSendAs(ctx context.Context, address string, sendAs []string) error
	GetUser(ctx context.Context, address string) (User, error)
	ListUsers(ctx context.Context) ([]User, error)

	AddAlias(ctx context.Context, a Alias) error // replaces an existing alias of that address
	DeleteAlias(ctx context.Context, address string) error
	GetAlias(ctx context.Context, address string) (Alias, error)
	ListAliases(ctx context.Context) ([]Alias, error)
}

// DKIM key algorithms.
const (
	DKIMAlgorithmRSA     = "rsa"
	DKIMAlgorithmEd25519 = "ed25519"
)

// DKIMKey is a DKIM signing key of a domain. Domain and Selector name it
// (the public key is published at Selector._domainkey.Domain).
type DKIMKey struct {
	Domain     string // lower-case, no trailing dot
	Selector   string
	Algorithm  string // DKIMAlgorithmRSA or DKIMAlgorithmEd25519
	PrivateKey []byte // PKCS#8 PEM; never shown to users
	Active     bool   // used for signing
	Created    time.Time
}

// DKIMKeys holds the DKIM signing keys. A domain has at most one active key
// per algorithm, so an RSA and an Ed25519 key may both sign (dual signing).
// Domains are compared case-insensitively.
type DKIMKeys interface {
	// AddDKIMKey stores a new, inactive or active key; an existing
	// domain and selector returns ErrExists. Adding an active key
	// deactivates the domain's other key of the same algorithm. A zero
	// Created is set to now.
	AddDKIMKey(ctx context.Context, k DKIMKey) error
	// ListDKIMKeys returns the keys of domain, or of every domain when
	// domain is "", ordered by domain, then selector.
	ListDKIMKeys(ctx context.Context, domain string) ([]DKIMKey, error)
	// GetDKIMKey returns one key or ErrNotFound.
	GetDKIMKey(ctx context.Context, domain, selector string) (DKIMKey, error)
	// ActivateDKIMKey makes a key active and deactivates the domain's other
	// key of the same algorithm, atomically. An unknown key returns
	// ErrNotFound.
	ActivateDKIMKey(ctx context.Context, domain, selector string) error
	// DeactivateDKIMKey stops a key from signing; ErrNotFound if unknown.
	DeactivateDKIMKey(ctx context.Context, domain, selector string) error
	// DeleteDKIMKey removes a key; ErrNotFound if unknown.
	DeleteDKIMKey(ctx context.Context, domain, selector string) error
	// ActiveDKIMKeys returns the active keys of domain (at most one per
	// algorithm), ordered by algorithm; none is not an error.
	ActiveDKIMKeys(ctx context.Context, domain string) ([]DKIMKey, error)
}

// Store is everything a backend provides.
type Store interface {
	Queue
	Directory
	DKIMKeys
	Platform
	Secrets
	DMARCReports
	TLSReports
	RateCounters
	Destinations
	Alerts
	AlertInputs
	ConsoleAccess
	ACMEStore
	Rollups
	Templates
	Unsubscribes
	TrackingSettings
	WebhookAdmin
	Batches
	Close() error
}

// Processor sees a message while it streams into the spool: DKIM signing
// of outbound mail, authentication checks of inbound mail. The spool calls
// Header once with the message's header section, then writes the message
// as stored to the processor, then calls Finish before committing. It is
// declared here, beside Message, because the stages that make processors
// (acceptance, inbound checks) come before the spool that runs them.
type Processor interface {
	// Header may rewrite the header section (it ends with the blank line
	// when the message has one) before anything is stored or written.
	Header(ctx context.Context, msg *Message, header []byte) ([]byte, error)
	// Write receives the stored message; it must not fail (a processor
	// records its own errors and reports them from Finish).
	io.Writer
	// Finish returns header fields to prepend to the stored message, or an
	// error (an *smtp.Error) that rejects the message.
	Finish(ctx context.Context, msg *Message) ([]byte, error)
	// Abort releases the processor's resources when the message is not
	// stored after all; it may be called after Finish.
	Abort()
}

var (
	idCounter atomic.Uint32
	idEnc     = base32.HexEncoding.WithPadding(base32.NoPadding)
)

func init() {
	var b [4]byte
	_, _ = rand.Read(b[:])
	idCounter.Store(binary.BigEndian.Uint32(b[:]))
}

// NewID returns a new queue ID: 16 characters, sortable by creation time
// (nanoseconds), unique within a process by a counter and across processes
// by its random start.
func NewID() string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint16(b[8:], uint16(idCounter.Add(1)))
	return idEnc.EncodeToString(b[:])
}
