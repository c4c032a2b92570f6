package httpapi

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/webhook"
)

// Secret rotation: how long the previous secret keeps signing by default.
const defaultSecretOverlap = 24 * time.Hour

// webhookExtra are the batch and rotation properties of a webhook's view
// (issue 12). The secrets themselves are never shown here.
type webhookExtra struct {
	Batch                 webhookBatchView `json:"batch"`
	SecretRotatedAt       *time.Time       `json:"secret_rotated_at,omitempty"`
	PreviousSecretExpires *time.Time       `json:"previous_secret_expires,omitempty"`
}

// webhookBatchView is a webhook's batch settings.
type webhookBatchView struct {
	MaxEvents      int `json:"max_events"`
	MaxWaitSeconds int `json:"max_wait_seconds"`
}

func toWebhookExtra(wh store.Webhook) webhookExtra {
	x := webhookExtra{Batch: webhookBatchView{MaxEvents: max(wh.BatchMax, 1), MaxWaitSeconds: int(wh.BatchWait / time.Second)},
		SecretRotatedAt: ts(wh.SecretRotated)}
	if wh.PreviousSecret != "" {
		x.PreviousSecretExpires = ts(wh.PreviousExpires)
	}
	return x
}

// batchRequest is the batch object of a webhook's creation or change.
type batchRequest struct {
	MaxEvents      *int `json:"max_events,omitempty"`
	MaxWaitSeconds *int `json:"max_wait_seconds,omitempty"`
}

// check validates the given settings and returns them as a change.
func (b *batchRequest) check() (*int, *time.Duration, error) {
	var n *int
	var wait *time.Duration
	if b.MaxEvents != nil {
		if *b.MaxEvents < 1 || *b.MaxEvents > store.MaxWebhookBatch {
			return nil, nil, errInvalid("batch.max_events", "max_events must be 1 to %d", store.MaxWebhookBatch)
		}
		n = b.MaxEvents
	}
	if b.MaxWaitSeconds != nil {
		maxWait := int(store.MaxWebhookBatchWait / time.Second)
		if *b.MaxWaitSeconds < 0 || *b.MaxWaitSeconds > maxWait {
			return nil, nil, errInvalid("batch.max_wait_seconds", "max_wait_seconds must be 0 to %d", maxWait)
		}
		d := time.Duration(*b.MaxWaitSeconds) * time.Second
		wait = &d
	}
	return n, wait, nil
}

// settings returns the batch size and wait of a new webhook: b's, with
// the defaults (one event per request, no wait) for what it leaves out.
func (b *batchRequest) settings() (int, time.Duration, error) {
	if b == nil {
		return 1, 0, nil
	}
	n, wait, err := b.check()
	if err != nil {
		return 0, 0, err
	}
	size, w := 1, time.Duration(0)
	if n != nil {
		size = *n
	}
	if wait != nil {
		w = *wait
	}
	return size, w, nil
}

// accountWebhook returns webhook id if it belongs to the caller's account;
// another account's webhook is as unknown as a missing one (404).
func (a *api) accountWebhook(r *http.Request, c *caller, id string) (store.Webhook, error) {
	wh, err := a.p.GetWebhook(r.Context(), id)
	if errors.Is(err, store.ErrNotFound) || (err == nil && wh.Account != c.account()) {
		return store.Webhook{}, errNotFound("no such webhook")
	}
	return wh, err
}

// webhookErr maps the store's not-found to the API's 404.
func webhookErr(err error) error {
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("no such webhook")
	}
	return err
}

func (a *api) getWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	wh, err := a.accountWebhook(r, c, r.PathValue("id"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toWebhookView(wh))
	return nil
}

// webhookPatch is the body of PATCH /v1/webhooks/{id}: what it names
// changes, the rest stays.
type webhookPatch struct {
	URL        *string       `json:"url,omitempty"`
	EventTypes *[]string     `json:"event_types,omitempty"`
	Batch      *batchRequest `json:"batch,omitempty"`
}

func (a *api) patchWebhook(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req webhookPatch
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if req.URL == nil && req.EventTypes == nil && (req.Batch == nil || (req.Batch.MaxEvents == nil && req.Batch.MaxWaitSeconds == nil)) {
		return errInvalid("", "nothing to change: give url, event_types or batch")
	}
	var ch store.WebhookChange
	if req.URL != nil {
		u, err := webhook.ValidateURL(*req.URL, a.cfg.WebhookAllowPrivate)
		if err != nil {
			return errInvalid("url", "%s", err.Error())
		}
		s := u.String()
		ch.URL = &s
	}
	if req.EventTypes != nil {
		for i, t := range *req.EventTypes {
			if !slices.Contains(EventTypes, t) {
				return errInvalid(fmt.Sprintf("event_types[%d]", i), "unknown event type %q", t)
			}
		}
		ch.EventTypes = req.EventTypes
	}
	if req.Batch != nil {
		var err error
		if ch.BatchMax, ch.BatchWait, err = req.Batch.check(); err != nil {
			return err
		}
	}
	wh, err := a.p.UpdateWebhook(r.Context(), c.account(), r.PathValue("id"), ch)
	if err != nil {
		return webhookErr(err)
	}
	writeJSON(w, http.StatusOK, toWebhookView(wh))
	return nil
}

// rotateRequest is the optional body of POST /v1/webhooks/{id}/rotate-secret.
type rotateRequest struct {
	// ExpiresIn is how long, in seconds, the previous secret keeps
	// signing: 0 ends it at once; default a day, at most a week.
	ExpiresIn *int `json:"expires_in,omitempty"`
}

func (a *api) rotateWebhookSecret(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req rotateRequest
	if r.ContentLength != 0 {
		if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
			return err
		}
	}
	overlap := defaultSecretOverlap
	if req.ExpiresIn != nil {
		maxSec := int(store.MaxWebhookSecretOverlap / time.Second)
		if *req.ExpiresIn < 0 || *req.ExpiresIn > maxSec {
			return errInvalid("expires_in", "expires_in must be 0 to %d seconds", maxSec)
		}
		overlap = time.Duration(*req.ExpiresIn) * time.Second
	}
	id := r.PathValue("id")
	now := a.clock.Now()
	secret := newWebhookSecret()
	var until time.Time
	if overlap > 0 {
		until = now.Add(overlap)
	}
	wh, err := a.p.RotateWebhookSecret(r.Context(), c.account(), id, secret, now, until)
	if err != nil {
		return webhookErr(err)
	}
	v := toWebhookView(wh)
	v.Secret = secret
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *api) expireWebhookSecret(w http.ResponseWriter, r *http.Request, c *caller) error {
	if _, err := a.p.ExpireWebhookPreviousSecret(r.Context(), c.account(), r.PathValue("id")); err != nil {
		return webhookErr(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// newWebhookSecret returns a new random signing secret.
func newWebhookSecret() string {
	var sb [32]byte
	_, _ = rand.Read(sb[:])
	return "whsec_" + base64.RawURLEncoding.EncodeToString(sb[:])
}
