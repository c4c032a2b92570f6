package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// deliverBatch sends head, a leased delivery of a batched webhook
// (BatchMax > 1), together with the webhook's other deliveries that are
// ready, in one request, and records the outcome for each of them.
//
// Claims: every delivery in the request was leased by this dispatcher
// (head by the pool's lease, the others by LeaseWebhookBatch, under the
// same condition, so another dispatcher on any node cannot hold them at
// the same time). A batch that is not full and whose oldest event is
// younger than BatchWait is not sent: its deliveries are held (their
// leases released, no attempt counted) until the oldest event's time
// plus BatchWait, and whichever dispatcher leases one of them then sends
// them all, with any events that arrived meanwhile. The wait never
// occupies a worker.
func (d *Dispatcher) deliverBatch(ctx context.Context, log *slog.Logger, bs BatchStore, hook store.Webhook, head store.WebhookDelivery) {
	now := d.clock.Now()
	batch := []store.WebhookDelivery{head}
	more, err := bs.LeaseWebhookBatch(ctx, hook.ID, now, d.opt.LeaseDuration, hook.BatchMax-1)
	if err != nil {
		// Send what we hold; the rest waits for the next lease.
		log.Error("webhook batch lease failed", "err", err)
	}
	for _, m := range more {
		if m.ID != head.ID {
			batch = append(batch, m)
		}
	}
	slices.SortFunc(batch, func(a, b store.WebhookDelivery) int { return cmp.Compare(a.Event.ID, b.Event.ID) })

	if until, ok := holdUntil(batch, hook.BatchWait); ok && len(batch) < hook.BatchMax && now.Before(until) {
		ids := make([]int64, len(batch))
		for i, wd := range batch {
			ids[i] = wd.ID
		}
		err := bs.HoldWebhookDeliveries(ctx, ids, until)
		if err == nil {
			log.Debug("webhook batch held to fill", "events", len(batch), "until", until)
			return
		}
		log.Error("holding a webhook batch failed; sending it now", "err", err)
	}

	body, sent, err := batchBody(batch, MaxBatchBody)
	if sent < len(batch) {
		// Over the size bound: the rest is due again at once, for the
		// next request, without an attempt counted.
		rest := make([]int64, 0, len(batch)-sent)
		for _, wd := range batch[sent:] {
			rest = append(rest, wd.ID)
		}
		if herr := bs.HoldWebhookDeliveries(ctx, rest, now); herr != nil {
			log.Error("releasing the rest of an oversized webhook batch", "err", herr) // their leases expire instead
		}
		batch = batch[:sent]
	}
	if err != nil {
		d.recordBatch(ctx, log, bs, batch, func(store.WebhookDelivery) store.WebhookAttempt {
			return store.WebhookAttempt{Status: StatusFailed, Error: "encoding events: " + err.Error()}
		})
		return
	}
	code, errText, detail := d.post(ctx, hook, body, func(h http.Header) {
		h.Set(HeaderEventCount, strconv.Itoa(len(batch)))
	})
	if errText == "" {
		d.recordBatch(ctx, log, bs, batch, func(store.WebhookDelivery) store.WebhookAttempt {
			return store.WebhookAttempt{Status: StatusDelivered, HTTPStatus: code}
		})
		return
	}
	if ctx.Err() != nil {
		// Shutdown cut the request short; the leases expire and another
		// run retries the batch.
		return
	}
	// One retry time for the whole batch, from its least-tried delivery,
	// so that the batch is due again together; each delivery gives up at
	// its own event's MaxAge.
	now = d.clock.Now()
	minAttempts := slices.MinFunc(batch, func(a, b store.WebhookDelivery) int { return cmp.Compare(a.Attempts, b.Attempts) }).Attempts
	next := now.Add(d.backoff(minAttempts))
	gaveUp := 0
	d.recordBatch(ctx, log, bs, batch, func(wd store.WebhookDelivery) store.WebhookAttempt {
		deadline := wd.Event.Time.Add(d.opt.MaxAge)
		if !now.Before(deadline) {
			gaveUp++
			return store.WebhookAttempt{Status: StatusFailed, Error: errText, HTTPStatus: code}
		}
		return store.WebhookAttempt{Status: StatusPending, Next: minTime(next, deadline), Error: errText, HTTPStatus: code}
	})
	log.Info("webhook batch failed", "events", len(batch), "gave_up", gaveUp, "next", next, "err", errText, "detail", detail)
}

// minTime returns the earlier of a and b.
func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// holdUntil returns until when a batch may wait to fill: the time of its
// oldest event plus wait, if wait > 0 and every delivery in it is a first
// attempt (a retry is never delayed further).
func holdUntil(batch []store.WebhookDelivery, wait time.Duration) (time.Time, bool) {
	if wait <= 0 {
		return time.Time{}, false
	}
	var oldest time.Time
	for _, wd := range batch {
		if wd.Attempts > 0 {
			return time.Time{}, false
		}
		if oldest.IsZero() || wd.Event.Time.Before(oldest) {
			oldest = wd.Event.Time
		}
	}
	return oldest.Add(wait), true
}

// recordBatch records one outcome per delivery of batch, made by outcome.
func (d *Dispatcher) recordBatch(ctx context.Context, log *slog.Logger, bs BatchStore, batch []store.WebhookDelivery, outcome func(store.WebhookDelivery) store.WebhookAttempt) {
	atts := make([]store.WebhookAttempt, len(batch))
	for i, wd := range batch {
		atts[i] = outcome(wd)
		atts[i].ID = wd.ID
	}
	if err := bs.RecordWebhookAttempts(ctx, atts); err != nil {
		log.Error("recording webhook batch attempt failed", "events", len(batch), "err", err)
	}
}

// MaxBatchBody bounds the body of a batched webhook request: 1,000 events
// with large metadata would otherwise make a POST of tens of megabytes. A
// batch whose events would pass it is cut; the rest goes in the next
// request. One event alone is always sent, whatever its size.
const MaxBatchBody = 1 << 20

// batchBody encodes the first events of batch as a BatchPayload body of at
// most max bytes (at least one event), returning how many it holds.
func batchBody(batch []store.WebhookDelivery, max int) ([]byte, int, error) {
	var buf bytes.Buffer
	buf.WriteString(`{"events":[`)
	n := 0
	for _, wd := range batch {
		ev, err := json.Marshal(NewPayload(wd.Event))
		if err != nil {
			return nil, 0, err
		}
		if n > 0 && buf.Len()+1+len(ev)+2 > max {
			break
		}
		if n > 0 {
			buf.WriteByte(',')
		}
		buf.Write(ev)
		n++
	}
	buf.WriteString("]}")
	return buf.Bytes(), n, nil
}
