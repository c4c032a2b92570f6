// Package httpapi is Herald's JSON HTTP API under /v1: sending messages
// (built from JSON or uploaded raw), following them through the event log,
// and managing suppressions, webhooks, domains, accounts and API keys.
//
// The package declares the interfaces it consumes (Deps); the composition
// root passes the store and the Submitter that queues a message exactly like
// SMTP submission does (sender check, suppressions, rate limits, DKIM).
package httpapi

import (
	"context"
	_ "embed"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/store"
)

// Platform is the part of store.Platform the API uses.
type Platform interface {
	AddAccount(ctx context.Context, a store.Account) error
	GetAccount(ctx context.Context, id string) (store.Account, error)
	ListAccounts(ctx context.Context) ([]store.Account, error)
	UpdateAccountLimits(ctx context.Context, id string, l store.AccountLimits) error
	UpdateAccountTracking(ctx context.Context, id string, t store.AccountTracking) error
	DeleteAccount(ctx context.Context, id string, force bool) (store.AccountDeletion, error)

	SetDomainAccount(ctx context.Context, domain, account string) error
	ListAccountDomains(ctx context.Context, account string) ([]string, error)

	AddAPIKey(ctx context.Context, k store.APIKey) error
	GetAPIKey(ctx context.Context, id string) (store.APIKey, error)
	ListAPIKeys(ctx context.Context, account string) ([]store.APIKey, error)
	DeleteAPIKey(ctx context.Context, account, id string) error
	TouchAPIKey(ctx context.Context, id string, t time.Time) error

	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)

	AddSuppression(ctx context.Context, s store.Suppression) error
	DeleteSuppression(ctx context.Context, account, address string) error
	ListSuppressions(ctx context.Context, account string, after string, limit int) ([]store.Suppression, error)

	AddWebhookLimited(ctx context.Context, w store.Webhook, max int) error // store.ErrLimit
	ListWebhooks(ctx context.Context, account string) ([]store.Webhook, error)
	DeleteWebhook(ctx context.Context, account, id string) error
	ListWebhookDeliveries(ctx context.Context, account, webhookID string, limit int) ([]store.WebhookDelivery, error)
	// Batched webhooks and secret rotation (store.WebhookAdmin).
	GetWebhook(ctx context.Context, id string) (store.Webhook, error)
	UpdateWebhook(ctx context.Context, account, id string, c store.WebhookChange) (store.Webhook, error)
	RotateWebhookSecret(ctx context.Context, account, id, secret string, now, previousExpires time.Time) (store.Webhook, error)
	ExpireWebhookPreviousSecret(ctx context.Context, account, id string) (store.Webhook, error)

	PutIdempotency(ctx context.Context, account, key, messageID string, t time.Time) (string, error)

	Groups // unsubscribe groups and group suppressions (unsubscribe.go)
}

// Messages gives the live queue state of a message (per-recipient status).
// It returns an error wrapping store.ErrNotFound once the message has left
// the queue; the API then derives the status from the event log.
type Messages interface {
	Get(ctx context.Context, id string) (*store.Message, error)
}

// Explainer says where a message is and why (explain.Explainer). An
// account other than "" sees only its own messages; others, and unknown
// IDs, return an error wrapping store.ErrNotFound.
type Explainer interface {
	Explain(ctx context.Context, id, account string) (*explain.Explanation, error)
}

// Submission is a message handed to the Submitter: the envelope, the
// complete RFC 5322 message (CRLF line endings) and the caller's tags and
// metadata.
type Submission struct {
	Account      string            // the API key's account
	EnvelopeFrom string            // MAIL FROM (the Submitter may replace it with a VERP address)
	From         string            // address of the From header field
	Recipients   []string          // envelope recipients: to + cc + bcc, deduplicated
	Raw          []byte            // the message, CRLF line endings
	Tags         []string          // copied onto every event
	Metadata     map[string]string // copied onto every event
	// ID is the queue ID chosen by the API before building, "" to let
	// the pipeline choose (one-click unsubscribe and tracking links name
	// it).
	ID string
	// UnsubscribeGroup is the message's unsubscribe group (one-click
	// unsubscribe): recipients suppressed in it, or globally, are
	// skipped. "" checks the global suppressions only.
	UnsubscribeGroup string
	// SendAt schedules the message (scheduled send, issue 12): zero sends
	// at once.
	SendAt time.Time
	// BatchID puts the message in one of the account's batches: the one
	// the request named, or the one created for a request with
	// personalizations; "" for none.
	BatchID string
}

// Submitter queues a message exactly like SMTP submission: it checks that
// the sender's domain belongs to the account, the suppression list and the
// rate limits, signs with DKIM and queues. Its errors: *smtp.Error (5xx
// become 422 or 403, 4xx become 503), *RateLimitError (429) and
// *ForbiddenError (403); anything else is a 500.
type Submitter interface {
	Submit(ctx context.Context, s *Submission) (id string, err error)
}

// RateLimits reports an account's sending limit, for the X-RateLimit-Limit,
// X-RateLimit-Remaining and X-RateLimit-Reset headers of POST /v1/messages.
type RateLimits interface {
	RateStatus(ctx context.Context, account string) (RateStatus, bool)
}

// RateStatus is the state of an account's tightest sending limit, counted
// in recipients.
type RateStatus struct {
	Limit     int           // recipients allowed in the window
	Remaining int           // recipients still allowed now
	Reset     time.Duration // until Remaining grows again
}

// RateLimitError is returned by a Submitter when the account is over one of
// its limits; the API answers 429 with Retry-After.
type RateLimitError struct {
	RetryAfter time.Duration // when the caller may try again
	Message    string        // optional safe text; a default is used if empty
}

// Error implements error.
func (e *RateLimitError) Error() string {
	if e.Message != "" {
		return e.Message
	}
	return fmt.Sprintf("rate limit exceeded, retry after %s", e.RetryAfter.Round(time.Second))
}

// ForbiddenError is returned by a Submitter when the account may not do what
// it asked (e.g. send as a domain it does not own); the API answers 403.
// Message is shown to the caller and must be safe.
type ForbiddenError struct {
	Message string
}

// Error implements error.
func (e *ForbiddenError) Error() string { return e.Message }

// Config holds the API's limits and identity.
type Config struct {
	// Hostname is the right-hand side of generated Message-IDs.
	Hostname string
	// MaxMessageBytes bounds a POST /v1/messages request body (JSON with
	// base64 attachments, or a raw message). Default 35 MiB.
	MaxMessageBytes int64
	// MaxRequestBytes bounds every other request body. Default 1 MiB.
	MaxRequestBytes int64
	// MaxRecipients bounds to+cc+bcc of one message. Default 1000.
	MaxRecipients int
	// MaxBatchRecipients bounds the envelope recipients of all the
	// messages of one request with personalizations. Default 5000.
	MaxBatchRecipients int
	// MaxBatchBytes bounds the estimated size of all the messages of one
	// request with personalizations (each is queued with its own copy of
	// the text, HTML and files). Default 256 MiB.
	MaxBatchBytes int64
	// MaxBatchesPerDay bounds the batches one account may create in a day
	// (POST /v1/batches and requests with personalizations). Default
	// 10000.
	MaxBatchesPerDay int
	// IdempotencyTTL is how long an Idempotency-Key is remembered.
	// Default 24 hours.
	IdempotencyTTL time.Duration
	// UploadTimeout replaces the server's ReadTimeout for the body of an
	// authenticated POST /v1/messages (up to MaxMessageBytes), and pushes
	// the write deadline as far plus the server's WriteTimeout. Default 10
	// minutes: 35 MiB at 60 KB/s. Unauthenticated requests never get it.
	UploadTimeout time.Duration
	// WebhookAllowPrivate accepts webhook URLs naming loopback, private
	// and other special-purpose addresses and internal host names (see
	// webhook.ValidateURL). Off by default: accounts create webhooks.
	WebhookAllowPrivate bool
	// MaxWebhooks caps the webhooks of one account. Default 20.
	MaxWebhooks int
	// MaxTemplates caps the stored templates of one account. Default 200.
	MaxTemplates int
	// MaxTemplateVersions caps the versions of one template. Default 100.
	MaxTemplateVersions int
	// MaxUnsubscribeGroups caps the unsubscribe groups of one account.
	// Default 100.
	MaxUnsubscribeGroups int
}

func (c *Config) defaults() {
	if c.Hostname == "" {
		c.Hostname = "localhost"
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 35 << 20
	}
	if c.MaxRequestBytes <= 0 {
		c.MaxRequestBytes = 1 << 20
	}
	if c.MaxRecipients <= 0 {
		c.MaxRecipients = 1000
	}
	if c.MaxBatchRecipients <= 0 {
		c.MaxBatchRecipients = 5000
	}
	if c.MaxBatchBytes <= 0 {
		c.MaxBatchBytes = 256 << 20
	}
	if c.MaxBatchesPerDay <= 0 {
		c.MaxBatchesPerDay = 10000
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.UploadTimeout <= 0 {
		c.UploadTimeout = 10 * time.Minute
	}
	if c.MaxWebhooks <= 0 {
		c.MaxWebhooks = 20
	}
	if c.MaxTemplates <= 0 {
		c.MaxTemplates = 200
	}
	if c.MaxTemplateVersions <= 0 {
		c.MaxTemplateVersions = 100
	}
	if c.MaxUnsubscribeGroups <= 0 {
		c.MaxUnsubscribeGroups = 100
	}
}

// Deps are the API's collaborators. Platform, Messages and Submitter are
// required; Logger and Clock default to slog.Default and the real clock.
type Deps struct {
	Platform  Platform
	Messages  Messages
	Submitter Submitter
	DNS       DNSChecker  // optional: GET /v1/domains/{domain}/dns
	Alerts    AlertLister // optional: GET /v1/alerts
	Limits    RateLimits  // optional: X-RateLimit-* headers on sends
	Explainer Explainer   // optional: GET /v1/messages/{id}/explain (404 without)
	// Templates keeps stored templates (issue 12). Optional: without it
	// /v1/templates answers 404 and a send naming template_id is refused.
	Templates store.Templates
	// Unsubscribe makes one-click unsubscribe links; without it a message
	// asking for one is refused.
	Unsubscribe UnsubscribeLinks
	Batches     Batches // optional: batch_id and /v1/batches (404 without)
	Tracker     Tracker // optional: open and click tracking (refused without)
	Logger      *slog.Logger
	Clock       clock.Clock
}

//go:embed openapi.json
var openAPIDoc []byte

// OpenAPI returns the OpenAPI 3.1 document describing the API.
func OpenAPI() []byte { return openAPIDoc }

// api is the handler state.
type api struct {
	cfg     Config
	p       Platform
	msgs    Messages
	sub     Submitter
	dns     DNSChecker
	alerts  AlertLister
	rates   RateLimits
	expl    Explainer
	links   UnsubscribeLinks
	groups  Groups
	tracker Tracker
	tpl     store.Templates
	batches Batches
	log     *slog.Logger
	clock   clock.Clock
	mux     *http.ServeMux

	idem   keyLocks    // serialises requests sharing an Idempotency-Key
	parsed parsedCache // parsed template versions (templates.go)
}

// access is what a route requires of the caller's key.
type access int

const (
	public    access = iota // no key (the OpenAPI document)
	needSend                // store.ScopeSend
	needRead                // store.ScopeRead
	needAdmin               // store.ScopeAdmin on the key's account
	operator                // ScopeAdmin of store.DefaultAccount
)

// route is one endpoint; the table is the single source of truth for the
// mux and for the tests comparing it with the OpenAPI document (scope,
// query parameters).
type route struct {
	method, path string
	access       access
	params       []string // the query parameters it takes; others are refused
	handle       func(a *api, w http.ResponseWriter, r *http.Request, c *caller) error
}

var (
	eventParams = []string{"recipient", "type", "tag", "since", "until", "message_id", "cursor", "limit"}
	pageParams  = []string{"cursor", "limit"}
)

var routes = []route{
	{"GET", "/v1/openapi.json", public, nil, (*api).openapi},
	{"POST", "/v1/messages", needSend, []string{"from", "to", "tag", "send_at", "batch_id"}, (*api).sendMessage},
	{"GET", "/v1/messages/{id}", needRead, nil, (*api).getMessage},
	{"GET", "/v1/messages/{id}/explain", needRead, nil, (*api).explainMessage},
	{"GET", "/v1/events", needRead, eventParams, (*api).listEvents},
	{"GET", "/v1/suppressions", needRead, []string{"cursor", "limit", "kind", "group"}, (*api).listSuppressions},
	{"POST", "/v1/suppressions", needAdmin, nil, (*api).addSuppression},
	{"DELETE", "/v1/suppressions/{address}", needAdmin, []string{"group"}, (*api).deleteSuppression},
	{"GET", "/v1/unsubscribe-groups", needRead, nil, (*api).listGroups},
	{"POST", "/v1/unsubscribe-groups", needAdmin, nil, (*api).addGroup},
	{"GET", "/v1/unsubscribe-groups/{id}", needRead, nil, (*api).getGroup},
	{"PATCH", "/v1/unsubscribe-groups/{id}", needAdmin, nil, (*api).patchGroup},
	{"DELETE", "/v1/unsubscribe-groups/{id}", needAdmin, nil, (*api).deleteGroup},
	{"GET", "/v1/webhooks", needRead, nil, (*api).listWebhooks},
	{"POST", "/v1/webhooks", needAdmin, nil, (*api).addWebhook},
	{"DELETE", "/v1/webhooks/{id}", needAdmin, nil, (*api).deleteWebhook},
	{"GET", "/v1/webhooks/{id}", needRead, nil, (*api).getWebhook},
	{"PATCH", "/v1/webhooks/{id}", needAdmin, nil, (*api).patchWebhook},
	{"POST", "/v1/webhooks/{id}/rotate-secret", needAdmin, nil, (*api).rotateWebhookSecret},
	{"DELETE", "/v1/webhooks/{id}/secrets/old", needAdmin, nil, (*api).expireWebhookSecret},
	{"GET", "/v1/webhooks/{id}/deliveries", needRead, []string{"limit"}, (*api).listWebhookDeliveries},
	{"GET", "/v1/domains", needRead, nil, (*api).listDomains},
	{"POST", "/v1/domains", operator, nil, (*api).assignDomain},
	{"GET", "/v1/domains/{domain}/dns", needRead, nil, (*api).dnsCheck},
	{"GET", "/v1/accounts", operator, nil, (*api).listAccounts},
	{"POST", "/v1/accounts", operator, nil, (*api).addAccount},
	{"PATCH", "/v1/accounts/{id}", operator, nil, (*api).patchAccount},
	{"DELETE", "/v1/accounts/{id}", operator, []string{"force"}, (*api).deleteAccount},
	{"GET", "/v1/alerts", operator, []string{"history"}, (*api).listAlerts},
	{"GET", "/v1/keys", needAdmin, []string{"account"}, (*api).listKeys},
	{"POST", "/v1/keys", needAdmin, nil, (*api).addKey},
	{"DELETE", "/v1/keys/{id}", needAdmin, nil, (*api).deleteKey},
	{"GET", "/v1/templates", needRead, nil, (*api).listTemplates},
	{"POST", "/v1/templates", needAdmin, nil, (*api).addTemplate},
	{"GET", "/v1/templates/{id}", needRead, nil, (*api).getTemplate},
	{"DELETE", "/v1/templates/{id}", needAdmin, nil, (*api).deleteTemplate},
	{"POST", "/v1/templates/{id}/versions", needAdmin, nil, (*api).addTemplateVersion},
	{"GET", "/v1/templates/{id}/versions/{version}", needRead, nil, (*api).getTemplateVersion},
	{"POST", "/v1/templates/{id}/versions/{version}/activate", needAdmin, nil, (*api).activateTemplateVersion},
	{"POST", "/v1/templates/{id}/render", needRead, nil, (*api).renderTemplate},
	{"POST", "/v1/batches", needSend, nil, (*api).createBatch},
	{"GET", "/v1/batches/{id}", needRead, nil, (*api).getBatch},
	{"POST", "/v1/batches/{id}/pause", needSend, nil, batchAction(func(b Batches) func(context.Context, string, string, time.Time) (store.Batch, error) {
		return b.PauseBatch
	})},
	{"POST", "/v1/batches/{id}/resume", needSend, nil, batchAction(func(b Batches) func(context.Context, string, string, time.Time) (store.Batch, error) {
		return b.ResumeBatch
	})},
	{"POST", "/v1/batches/{id}/cancel", needSend, nil, batchAction(func(b Batches) func(context.Context, string, string, time.Time) (store.Batch, error) {
		return b.CancelBatch
	})},
}

// New returns the API handler. Mount it at "/v1/" of the HTTP server.
func New(cfg Config, deps Deps) http.Handler {
	cfg.defaults()
	a := &api{cfg: cfg, p: deps.Platform, msgs: deps.Messages, sub: deps.Submitter, dns: deps.DNS, alerts: deps.Alerts, rates: deps.Limits, expl: deps.Explainer, tracker: deps.Tracker, log: deps.Logger, clock: deps.Clock,
		links: deps.Unsubscribe, groups: deps.Platform, tpl: deps.Templates, batches: deps.Batches}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.clock == nil {
		a.clock = clock.Real{}
	}
	a.mux = http.NewServeMux()
	for _, rt := range routes {
		a.mux.Handle(rt.method+" "+rt.path, a.wrap(rt))
	}
	a.mux.HandleFunc("/", a.fallback)
	return a.mux
}

// fallback answers requests no route matched: 405 when the path exists
// with another method, else 404, always as JSON.
func (a *api) fallback(w http.ResponseWriter, r *http.Request) {
	var allowed []string
	for _, m := range []string{"GET", "POST", "PATCH", "DELETE"} {
		r2 := r.Clone(r.Context())
		r2.Method = m
		if _, pat := a.mux.Handler(r2); pat != "/" {
			allowed = append(allowed, m)
		}
	}
	if len(allowed) > 0 {
		w.Header().Set("Allow", strings.Join(allowed, ", "))
		writeError(w, &Error{Status: http.StatusMethodNotAllowed, Code: "method_not_allowed", Message: "method " + r.Method + " is not allowed here"})
		return
	}
	writeError(w, errNotFound("no such endpoint"))
}

// wrap adds authentication, the scope check, panic recovery and error
// rendering to a route.
func (a *api) wrap(rt route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				a.log.Error("http api: panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, errInternal)
			}
		}()
		w.Header().Set("Cache-Control", "no-store")
		var c *caller
		if rt.access != public {
			// The key comes from the headers; nothing of the body has been
			// read yet.
			var err error
			if c, err = a.authenticate(r); err == nil {
				err = c.allow(rt.access)
			}
			if err != nil {
				closeUnreadBody(w, r)
				a.fail(w, r, err)
				return
			}
		}
		if _, err := query(r, rt.params...); err != nil {
			a.fail(w, r, err)
			return
		}
		if err := rt.handle(a, w, r, c); err != nil {
			a.fail(w, r, err)
		}
	})
}

// closeUnreadBody ends the connection of a request refused before its
// body was read (see stopReading): neither the answer nor the connection
// waits for a body the client is not authorised to send.
func closeUnreadBody(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength != 0 {
		stopReading(w)
	}
}

// allowUpload gives an authenticated upload the time its size needs: the
// server's ReadTimeout, short because it bounds every request including
// unauthenticated ones, is replaced by UploadTimeout for reading the body,
// and the write deadline (which net/http counts from the end of the
// request header) moves to UploadTimeout plus the server's WriteTimeout.
func (a *api) allowUpload(w http.ResponseWriter, r *http.Request) {
	if r.ContentLength == 0 {
		return
	}
	now := time.Now() // connection deadlines are wall-clock
	rc := http.NewResponseController(w)
	// Writers without deadlines (httptest.ResponseRecorder) return
	// ErrNotSupported: nothing to extend then.
	_ = rc.SetReadDeadline(now.Add(a.cfg.UploadTimeout))
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok && srv.WriteTimeout > 0 {
		_ = rc.SetWriteDeadline(now.Add(a.cfg.UploadTimeout + srv.WriteTimeout))
	}
}

func (a *api) openapi(w http.ResponseWriter, _ *http.Request, _ *caller) error {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "public, max-age=3600")
	_, err := w.Write(openAPIDoc)
	return err
}

// keyLocks is a set of mutexes by key, created on demand and dropped when
// unused.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu   sync.Mutex
	refs int
}

// lock acquires the mutex of key and returns its release function.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = make(map[string]*keyLock)
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.refs++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.refs--; l.refs == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}
