package httpapi

import (
	"context"
	"net/http"
	"strconv"
)

// AlertLister returns the state of the alert rules (the data of herald
// alert list and herald alert history), JSON-encodable.
type AlertLister interface {
	Alerts(ctx context.Context, history int) (any, error)
}

// maxAlertHistory bounds the history query parameter.
const maxAlertHistory = 1000

// listAlerts handles GET /v1/alerts: every alert rule with its firing
// alerts and silence, and the latest fire and resolve events (operator).
func (a *api) listAlerts(w http.ResponseWriter, r *http.Request, _ *caller) error {
	if a.alerts == nil {
		return errNotFound("alerts are not enabled on this server")
	}
	history := 50
	if s := r.URL.Query().Get("history"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 || n > maxAlertHistory {
			return errInvalid("history", "must be an integer from 0 to %d", maxAlertHistory)
		}
		history = n
	}
	v, err := a.alerts.Alerts(r.Context(), history)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}
