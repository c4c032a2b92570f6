package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Batches (issue 12): POST /v1/batches creates a batch ID; a send names it
// in batch_id; the batch's scheduled and queued messages can then be
// paused, resumed and cancelled together (SendGrid's mail/batch and
// user/scheduled_sends).

// Batches is the part of store.Batches the API uses.
type Batches interface {
	CreateBatchLimited(ctx context.Context, account, id string, now time.Time, max int) (store.Batch, error) // store.ErrLimit
	GetBatch(ctx context.Context, account, id string) (store.Batch, error)
	PauseBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error)
	ResumeBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error)
	CancelBatch(ctx context.Context, account, id string, now time.Time) (store.Batch, error)
}

// batchView is a batch as the API shows it.
type batchView struct {
	ID         string    `json:"id"`
	State      string    `json:"state"`
	Created    time.Time `json:"created"`
	Updated    time.Time `json:"updated"`
	Messages   int       `json:"messages"`
	Recipients int       `json:"recipients"`
	Cancelled  int       `json:"cancelled"`
	// Pending counts the batch's recipients still in the queue.
	Pending batchPending `json:"pending"`
}

type batchPending struct {
	Queued   int `json:"queued"`
	Deferred int `json:"deferred"`
	Held     int `json:"held"` // held by a pause (counted in queued or deferred too)
}

func viewBatch(b store.Batch) batchView {
	return batchView{ID: b.ID, State: b.State, Created: b.Created.UTC(), Updated: b.Updated.UTC(),
		Messages: b.Messages, Recipients: b.Recipients, Cancelled: b.Cancelled,
		Pending: batchPending{Queued: b.Pending[store.StatusQueued], Deferred: b.Pending[store.StatusDeferred], Held: b.Held}}
}

// batchError maps the store's batch errors.
func batchError(err error) error {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound("no such batch")
	case errors.Is(err, store.ErrBatchState):
		return &Error{Status: http.StatusConflict, Code: "batch_cancelled", Message: "the batch is cancelled"}
	}
	return err
}

func (a *api) createBatch(w http.ResponseWriter, r *http.Request, c *caller) error {
	if a.batches == nil {
		return errNotFound("batches are not available on this server")
	}
	b, err := a.newBatch(r.Context(), c.account(), store.NewID())
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/batches/"+b.ID)
	writeJSON(w, http.StatusCreated, viewBatch(b))
	return nil
}

func (a *api) getBatch(w http.ResponseWriter, r *http.Request, c *caller) error {
	if a.batches == nil {
		return errNotFound("batches are not available on this server")
	}
	id := r.PathValue("id")
	if !store.ValidBatchID(id) {
		return errNotFound("no such batch")
	}
	b, err := a.batches.GetBatch(r.Context(), c.account(), id)
	if err != nil {
		return batchError(err)
	}
	writeJSON(w, http.StatusOK, viewBatch(b))
	return nil
}

// batchAction answers POST /v1/batches/{id}/pause, /resume and /cancel.
func batchAction(act func(b Batches) func(ctx context.Context, account, id string, now time.Time) (store.Batch, error)) func(a *api, w http.ResponseWriter, r *http.Request, c *caller) error {
	return func(a *api, w http.ResponseWriter, r *http.Request, c *caller) error {
		if a.batches == nil {
			return errNotFound("batches are not available on this server")
		}
		id := r.PathValue("id")
		if !store.ValidBatchID(id) {
			return errNotFound("no such batch")
		}
		b, err := act(a.batches)(r.Context(), c.account(), id, a.clock.Now())
		if err != nil {
			return batchError(err)
		}
		writeJSON(w, http.StatusOK, viewBatch(b))
		return nil
	}
}

// newBatch creates batch id of account, at most MaxBatchesPerDay a day
// (409 limit_reached beyond): every batch is a row kept until it is pruned,
// and any send key may create them.
func (a *api) newBatch(ctx context.Context, account, id string) (store.Batch, error) {
	b, err := a.batches.CreateBatchLimited(ctx, account, id, a.clock.Now(), a.cfg.MaxBatchesPerDay)
	if errors.Is(err, store.ErrLimit) {
		return store.Batch{}, &Error{Status: http.StatusConflict, Code: "limit_reached",
			Message: fmt.Sprintf("this account created its maximum of %d batches in the last day; send in an existing batch or later", a.cfg.MaxBatchesPerDay)}
	}
	return b, err
}
