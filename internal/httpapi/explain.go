package httpapi

import (
	"errors"
	"net/http"

	"github.com/heraldmail/herald/internal/store"
)

// explainMessage handles GET /v1/messages/{id}/explain: where the message
// is and why, in sentences and per recipient. A tenant sees its own
// messages; an operator key sees every account's.
func (a *api) explainMessage(w http.ResponseWriter, r *http.Request, c *caller) error {
	if a.expl == nil {
		return errNotFound("explanations are not available on this server")
	}
	account := c.account()
	if c.isOperator() {
		account = ""
	}
	x, err := a.expl.Explain(r.Context(), r.PathValue("id"), account)
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("no such message")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, x)
	return nil
}
