package app

import (
	"context"
	"net/http"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/unsubscribe"
)

// setupUnsubscribe builds one-click unsubscribe (issue 12): the links the
// API puts into mail, under platform.public_url, and the public handler
// of those links, which mountUnsubscribe routes on the HTTP listener and
// the ACME HTTPS listener uses too (web.go).
func (a *App) setupUnsubscribe(cfg *config.Config) (*unsubscribe.Links, error) {
	key, err := unsubscribe.LoadKey(context.Background(), a.store)
	if err != nil {
		return nil, storeError(cfg, err)
	}
	a.web.unsub = unsubscribe.New(unsubscribe.Config{}, key, a.store, a.clock, a.log)
	return &unsubscribe.Links{Key: key, BaseURL: cfg.PublicBaseURL()}, nil
}

// mountUnsubscribe routes the unsubscribe links on the HTTP listener.
func (a *App) mountUnsubscribe(mux *http.ServeMux) {
	mux.Handle(unsubscribe.Path, a.web.unsub)
}
