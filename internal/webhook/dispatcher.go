package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/workpool"
)

// Delivery states, as stored in store.WebhookDelivery.Status.
const (
	StatusPending   = "pending"
	StatusDelivered = "delivered"
	StatusFailed    = "failed"
)

// Store is the part of store.Platform the Dispatcher uses. *sqlite.Store
// satisfies it.
type Store interface {
	// LeaseWebhookDeliveries returns due pending deliveries, leased for d.
	LeaseWebhookDeliveries(ctx context.Context, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error)
	// RecordWebhookAttempt stores one attempt's outcome and releases the lease.
	RecordWebhookAttempt(ctx context.Context, id int64, status string, next time.Time, errText string, httpStatus int) error
	// ListWebhooks lists an account's webhooks; used to find a delivery's
	// webhook when the store is not a WebhookGetter.
	ListWebhooks(ctx context.Context, account string) ([]store.Webhook, error)
}

// WebhookGetter is implemented by stores that can fetch one webhook by ID
// (store.ErrNotFound if it was deleted). The Dispatcher uses it when
// available, else it searches ListWebhooks of the event's account.
type WebhookGetter interface {
	GetWebhook(ctx context.Context, id string) (store.Webhook, error)
}

// BatchStore is implemented by stores that can lease, hold and record
// batches (store.WebhookAdmin). Without it, a Dispatcher sends every
// event alone, whatever the webhook's batch settings.
type BatchStore interface {
	LeaseWebhookBatch(ctx context.Context, webhookID string, now time.Time, d time.Duration, limit int) ([]store.WebhookDelivery, error)
	HoldWebhookDeliveries(ctx context.Context, ids []int64, until time.Time) error
	RecordWebhookAttempts(ctx context.Context, attempts []store.WebhookAttempt) error
}

// DefaultBackoff is the retry schedule: the delay after the first, second,
// ... failed attempt; the last value repeats.
var DefaultBackoff = []time.Duration{10 * time.Second, 30 * time.Second, time.Minute,
	5 * time.Minute, 15 * time.Minute, time.Hour}

// Options configure a Dispatcher. Zero fields take the documented defaults.
type Options struct {
	// Client sends the requests; default NewClient(Timeout), which may
	// reach any address: give NewPublicClient when tenants create webhooks.
	// Its redirect policy is replaced by NoRedirects.
	Client       *http.Client
	Clock        clock.Clock     // default clock.Real
	Logger       *slog.Logger    // default slog.Default()
	Workers      int             // concurrent requests, default 4
	Timeout      time.Duration   // per request, default 10s
	MaxAge       time.Duration   // give up this long after the event, default 24h
	PollInterval time.Duration   // how often to look for due deliveries, default 1s
	Backoff      []time.Duration // retry schedule, default DefaultBackoff
	// Jitter spreads each retry delay by ±Jitter of itself; default 0.1,
	// negative for none.
	Jitter float64
	// LeaseDuration is how long a delivery is hidden from other
	// dispatchers while in flight; default Timeout + 1m.
	LeaseDuration time.Duration
	// DrainTimeout is how long Run waits for in-flight requests after its
	// context is cancelled before abandoning them; default 5s.
	DrainTimeout time.Duration
	// MaxResponseBytes caps how much of a response body is read; default 64 KiB.
	MaxResponseBytes int64
}

// Dispatcher sends leased webhook deliveries. It is safe for concurrent use;
// several dispatchers (processes) may share one store.
type Dispatcher struct {
	store  Store
	opt    Options
	client *http.Client
	clock  clock.Clock
	log    *slog.Logger
	pool   *workpool.Pool[store.WebhookDelivery]
}

// New returns a Dispatcher reading deliveries from s.
func New(s Store, opt Options) *Dispatcher {
	if opt.Workers <= 0 {
		opt.Workers = 4
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 10 * time.Second
	}
	if opt.MaxAge <= 0 {
		opt.MaxAge = 24 * time.Hour
	}
	if opt.PollInterval <= 0 {
		opt.PollInterval = time.Second
	}
	if len(opt.Backoff) == 0 {
		opt.Backoff = DefaultBackoff
	}
	if opt.Jitter == 0 {
		opt.Jitter = 0.1
	}
	if opt.LeaseDuration <= 0 {
		opt.LeaseDuration = opt.Timeout + time.Minute
	}
	if opt.DrainTimeout <= 0 {
		opt.DrainTimeout = 5 * time.Second
	}
	if opt.MaxResponseBytes <= 0 {
		opt.MaxResponseBytes = 64 << 10
	}
	d := &Dispatcher{store: s, opt: opt, clock: opt.Clock, log: opt.Logger}
	c := opt.Client
	if c == nil {
		c = NewClient(opt.Timeout)
	}
	cc := *c
	cc.CheckRedirect = NoRedirects
	d.client = &cc
	if d.clock == nil {
		d.clock = clock.Real{}
	}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.pool = workpool.New(workpool.Config[store.WebhookDelivery]{
		Workers:      opt.Workers,
		PollInterval: opt.PollInterval,
		DrainTimeout: opt.DrainTimeout,
		Lease: func(ctx context.Context, n int) ([]store.WebhookDelivery, error) {
			return d.store.LeaseWebhookDeliveries(ctx, d.clock.Now(), d.opt.LeaseDuration, n)
		},
		Work:       d.deliver,
		LeaseError: func(err error) { d.log.Error("webhook lease failed", "err", err) },
	})
	return d
}

// Wake makes the dispatcher look for due deliveries now, e.g. after events
// were recorded. It never blocks.
func (d *Dispatcher) Wake() { d.pool.Wake() }

// Run sends deliveries until ctx is cancelled, then waits up to
// DrainTimeout for in-flight requests; requests still running are then
// cancelled and left leased, so another run retries them after the lease.
func (d *Dispatcher) Run(ctx context.Context) { d.pool.Run(ctx) }

// deliver makes one attempt and records its outcome.
func (d *Dispatcher) deliver(ctx context.Context, wd store.WebhookDelivery) {
	log := d.log.With("delivery", wd.ID, "webhook", wd.WebhookID, "event", wd.Event.ID)
	hook, err := d.lookup(ctx, wd)
	if errors.Is(err, store.ErrNotFound) {
		d.record(ctx, log, wd, StatusFailed, time.Time{}, "webhook deleted", 0)
		return
	}
	if err != nil {
		// A store problem: leave the lease to expire and try again then.
		log.Error("webhook lookup failed", "err", err)
		return
	}
	if u, err := url.Parse(hook.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		d.record(ctx, log, wd, StatusFailed, time.Time{}, "invalid webhook URL", 0)
		return
	}
	if bs, ok := d.store.(BatchStore); ok && hook.BatchMax > 1 {
		d.deliverBatch(ctx, log, bs, hook, wd)
		return
	}
	body, err := json.Marshal(NewPayload(wd.Event))
	if err != nil {
		d.record(ctx, log, wd, StatusFailed, time.Time{}, "encoding event: "+err.Error(), 0)
		return
	}
	code, errText, detail := d.post(ctx, hook, body, func(h http.Header) {
		h.Set(HeaderEventID, strconv.FormatInt(wd.Event.ID, 10))
		h.Set(HeaderEventType, wd.Event.Type)
	})
	if errText == "" {
		d.record(ctx, log, wd, StatusDelivered, time.Time{}, "", code)
		return
	}
	if ctx.Err() != nil {
		// Shutdown cut the request short; the lease expires and another
		// run retries it.
		return
	}
	now := d.clock.Now()
	deadline := wd.Event.Time.Add(d.opt.MaxAge)
	if !now.Before(deadline) {
		log.Warn("webhook delivery failed, giving up", "attempts", wd.Attempts+1, "err", errText, "detail", detail)
		d.record(ctx, log, wd, StatusFailed, time.Time{}, errText, code)
		return
	}
	next := now.Add(d.backoff(wd.Attempts))
	if next.After(deadline) {
		next = deadline // one last attempt at the deadline
	}
	log.Info("webhook delivery failed, will retry", "attempts", wd.Attempts+1, "next", next, "err", errText, "detail", detail)
	d.record(ctx, log, wd, StatusPending, next, errText, code)
}

func (d *Dispatcher) record(ctx context.Context, log *slog.Logger, wd store.WebhookDelivery, status string, next time.Time, errText string, code int) {
	err := d.store.RecordWebhookAttempt(ctx, wd.ID, status, next, errText, code)
	switch {
	case errors.Is(err, store.ErrNotFound):
		log.Info("webhook delivery removed while in flight (webhook deleted)")
	case err != nil:
		log.Error("recording webhook attempt failed", "err", err)
	}
}

// lookup finds the delivery's webhook.
func (d *Dispatcher) lookup(ctx context.Context, wd store.WebhookDelivery) (store.Webhook, error) {
	if g, ok := d.store.(WebhookGetter); ok {
		w, err := g.GetWebhook(ctx, wd.WebhookID)
		if err != nil {
			return store.Webhook{}, fmt.Errorf("get webhook %s: %w", wd.WebhookID, err)
		}
		return w, nil
	}
	hooks, err := d.store.ListWebhooks(ctx, wd.Event.Account)
	if err != nil {
		return store.Webhook{}, fmt.Errorf("list webhooks of %q: %w", wd.Event.Account, err)
	}
	for _, w := range hooks {
		if w.ID == wd.WebhookID {
			return w, nil
		}
	}
	return store.Webhook{}, fmt.Errorf("webhook %s: %w", wd.WebhookID, store.ErrNotFound)
}

// backoff returns the delay after the (attempts+1)th failure, jittered.
func (d *Dispatcher) backoff(attempts int) time.Duration {
	b := d.opt.Backoff
	delay := b[min(max(attempts, 0), len(b)-1)]
	if d.opt.Jitter > 0 {
		span := float64(delay) * d.opt.Jitter
		delay += time.Duration((rand.Float64()*2 - 1) * span)
	}
	return delay
}

// post sends one request with body, the headers set by header and the
// signature of every active secret. It returns the HTTP status (0 if
// none) and "" on success, or a fixed error text (see Do) and the
// underlying error for the operator's log.
func (d *Dispatcher) post(ctx context.Context, hook store.Webhook, body []byte, header func(http.Header)) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, hook.URL, bytes.NewReader(body))
	if err != nil {
		return 0, "invalid webhook URL", err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	header(req.Header)
	now := d.clock.Now()
	if secrets := ActiveSecrets(hook, now); len(secrets) > 0 {
		req.Header.Set(HeaderSignature, SignAll(secrets, now, body))
	}
	code, text, detail := do(d.client, req, d.opt.MaxResponseBytes)
	if text != "" && ctx.Err() == context.DeadlineExceeded {
		text = "timeout after " + d.opt.Timeout.String()
	}
	return code, text, detail
}

// ActiveSecrets returns the secrets that sign hook's requests at now: its
// secret and, during a rotation's transition (before PreviousExpires), the
// previous one. None for a webhook without a secret.
func ActiveSecrets(hook store.Webhook, now time.Time) []string {
	var out []string
	if hook.Secret != "" {
		out = append(out, hook.Secret)
	}
	if hook.PreviousSecret != "" && now.Before(hook.PreviousExpires) {
		out = append(out, hook.PreviousSecret)
	}
	return out
}
