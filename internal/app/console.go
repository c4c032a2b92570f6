package app

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/console"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
)

// consoleDNS runs the DNS doctor for the console's domain pages.
type consoleDNS struct {
	res  resolve.Resolver
	keys store.DKIMKeys
	cfg  *config.Config
}

func (d *consoleDNS) CheckDomain(ctx context.Context, domain string) (dnscheck.Report, error) {
	return DNSReport(ctx, d.cfg, d.res, d.keys, domain, nil), nil
}

var errBadKey = errors.New("invalid API key")

// verifyAPIKey checks an API token the way the HTTP API does.
func verifyAPIKey(p store.Platform) console.APIKeyVerifier {
	return func(ctx context.Context, token string) (store.APIKey, error) {
		id, secret, err := httpapi.ParseToken(token)
		if err != nil {
			return store.APIKey{}, errBadKey
		}
		k, err := p.GetAPIKey(ctx, id)
		if err != nil {
			return store.APIKey{}, errBadKey
		}
		sum := sha256.Sum256(secret)
		if subtle.ConstantTimeCompare(sum[:], k.SecretHash) != 1 {
			return store.APIKey{}, errBadKey
		}
		return k, nil
	}
}

// ConsoleSources are the console's data sources that other packages
// provide (statistics from rollups, alerts, blocklist checks); nil ones
// fall back to the console's interim source or a "not connected" page.
type ConsoleSources struct {
	Overview     console.OverviewSource
	Destinations console.DestinationSource
	Alerts       console.AlertSource
	Blocklists   console.BlocklistSource
}

// newConsole builds the web console served at "/" on the HTTP listener.
func (a *App) newConsole(cfg *config.Config, res resolve.Resolver, src ConsoleSources) (*console.Console, error) {
	return console.New(console.Config{Hostname: cfg.Server.Hostname, IdleTimeout: cfg.Console.IdleTimeout,
		MaxAge: cfg.Console.MaxAge}, console.Deps{
		Store: a.store, Bouncer: a.sched, DNS: &consoleDNS{res: res, keys: a.store, cfg: cfg},
		APIKeys: verifyAPIKey(a.store), Overview: src.Overview, Destinations: src.Destinations,
		Alerts: src.Alerts, Blocklists: src.Blocklists, Clock: a.clock, Logger: a.log,
		Explain: func(ctx context.Context, id, account string) ([]string, error) {
			e, err := a.explainer.Explain(ctx, id, account)
			if err != nil {
				return nil, err
			}
			return e.Summary, nil
		},
	})
}
