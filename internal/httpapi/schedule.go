package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Scheduled send (issue 12): send_at and batch_id on POST /v1/messages.

// MaxScheduleAhead bounds how far ahead send_at may be (SendGrid's limit).
const MaxScheduleAhead = 72 * time.Hour

// parseSendAt reads send_at: an RFC 3339 time, or an integer Unix time in
// seconds (as SendGrid takes it). Absent or null is the zero time.
func parseSendAt(raw json.RawMessage) (time.Time, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, errInvalid("send_at", "must be an RFC 3339 time or a Unix time in seconds")
		}
		return parseSendAtText(s)
	}
	return parseSendAtText(string(raw))
}

// parseSendAtText reads send_at from text (JSON or a query parameter).
func parseSendAtText(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n <= 0 || n > 1<<40 {
			return time.Time{}, errInvalid("send_at", "not a valid Unix time")
		}
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, errInvalid("send_at", "must be an RFC 3339 time (2026-01-02T15:04:05Z) or a Unix time in seconds")
	}
	return t.UTC(), nil
}

// schedule validates a send's send_at and batch_id and sets them on sub: a
// time at most MaxScheduleAhead ahead (one not after now sends at once),
// and a batch of the caller's account that is not cancelled.
func (a *api) schedule(ctx context.Context, sub *Submission, sendAt time.Time, batchID string) error {
	now := a.clock.Now()
	switch {
	case sendAt.IsZero() || !sendAt.After(now):
		sub.SendAt = time.Time{}
	case sendAt.Sub(now) > MaxScheduleAhead:
		return errInvalid("send_at", "at most %d hours ahead", int(MaxScheduleAhead/time.Hour))
	default:
		sub.SendAt = sendAt
	}
	if batchID == "" {
		return nil
	}
	if !store.ValidBatchID(batchID) {
		return errInvalid("batch_id", "not a batch ID")
	}
	if a.batches == nil {
		return errInvalid("batch_id", "batches are not available on this server")
	}
	b, err := a.batches.GetBatch(ctx, sub.Account, batchID)
	if errors.Is(err, store.ErrNotFound) {
		return errInvalid("batch_id", "no such batch (create one with POST /v1/batches)")
	}
	if err != nil {
		return err
	}
	if b.State == store.BatchCancelled {
		return errInvalid("batch_id", "the batch is cancelled")
	}
	sub.BatchID = batchID
	return nil
}

// scheduleQuery applies the send_at and batch_id query parameters of a raw
// upload.
func (a *api) scheduleQuery(ctx context.Context, sub *Submission, q url.Values) error {
	var t time.Time
	if v := q.Get("send_at"); v != "" {
		var err error
		if t, err = parseSendAtText(v); err != nil {
			return err
		}
	}
	return a.schedule(ctx, sub, t, q.Get("batch_id"))
}

// scheduleJSON applies a JSON request's send_at and batch_id.
func (a *api) scheduleJSON(ctx context.Context, sub *Submission, req *MessageRequest) error {
	t, err := parseSendAt(req.SendAt)
	if err != nil {
		return err
	}
	return a.schedule(ctx, sub, t, req.BatchID)
}

// schedulePersonalizations checks the send_at of each personalization that
// has one (SendGrid's personalizations[].send_at), which then replaces the
// request's for that message.
func (a *api) schedulePersonalizations(req *MessageRequest, ec *fieldErrors) {
	for i := range req.Personalizations {
		p := &req.Personalizations[i]
		if len(p.SendAt) == 0 {
			continue
		}
		field := fmt.Sprintf("personalizations[%d].send_at", i)
		t, err := parseSendAt(p.SendAt)
		if err == nil {
			var sub Submission
			err = a.schedule(context.Background(), &sub, t, "") // no batch: only the time is checked
			t = sub.SendAt
		}
		if err != nil {
			var ae *Error
			if errors.As(err, &ae) {
				ec.add(field, "%s", ae.Message)
				continue
			}
			ec.add(field, "not a valid time")
			continue
		}
		p.sendAt = &t
	}
}
