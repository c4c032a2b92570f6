package app

import (
	"context"
	"net/http"
	"strings"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/tracking"
)

// trackingPrefix is where the tracking links are served (tracking.OpenPath,
// tracking.ClickPath).
const trackingPrefix = "/t/"

// TrackingBaseURL is the public base of the tracking links:
// platform.public_url, like the one-click unsubscribe links.
func TrackingBaseURL(cfg *config.Config) string {
	return cfg.PublicBaseURL()
}

// setupTracking builds open and click tracking: the key every node shares
// (from the store's secrets) and the tracker that rewrites API messages
// and serves the links.
func (a *App) setupTracking(cfg *config.Config) error {
	key, err := tracking.LoadKey(context.Background(), a.store)
	if err != nil {
		return storeError(cfg, err)
	}
	a.tracker, err = tracking.New(tracking.Config{BaseURL: TrackingBaseURL(cfg)}, key,
		tracking.Deps{Events: a.store, Messages: a.store, Accounts: a.store, Clock: a.clock, Logger: a.log})
	return err
}

// withTracking serves the tracking links before h (the public listeners
// of ACME, whose handler is otherwise the well-known documents).
func (a *App) withTracking(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if a.tracker != nil && strings.HasPrefix(r.URL.Path, trackingPrefix) {
			a.tracker.Handler().ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}
