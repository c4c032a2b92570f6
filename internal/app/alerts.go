package app

import (
	"context"
	"fmt"
	"strings"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/webhook"
)

// newAlerts builds the alert engine of [alerts] (nil when disabled): the
// node's signals, mail to alerts.email or the postmaster through the
// acceptance path, and the Slack-compatible webhook.
func newAlerts(cfg *config.Config, a *App, res resolve.Resolver) (*alert.Engine, error) {
	ac := cfg.Alerts
	a.metrics.watchNode(cfg.Server.DataDir, a.tls.Certificate)
	if !ac.Enabled {
		return nil, nil
	}
	to := ac.Email
	if len(to) == 0 {
		to = []string{postmaster(cfg)}
	}
	// The webhook first: a chat message is the quicker read, and the mail
	// is queued once the receiver has it.
	var notifiers alert.Notifiers
	if ac.WebhookURL != "" {
		if _, err := webhook.ValidateURL(ac.WebhookURL, ac.WebhookAllowPrivate); err != nil {
			return nil, exitcode.With(exitcode.Config, fmt.Errorf("alerts.webhook_url: %w (set alerts.webhook_allow_private for an in-house receiver)", err))
		}
		client := webhook.NewPublicClient(cfg.Platform.WebhookTimeout)
		if ac.WebhookAllowPrivate {
			client = webhook.NewClient(cfg.Platform.WebhookTimeout)
		}
		notifiers = append(notifiers, &alert.Webhook{URL: ac.WebhookURL, Client: client, Clock: a.clock})
	}
	notifiers = append(notifiers, &alert.Mailer{Submit: a.pipeline, From: postmaster(cfg), To: to, Hostname: cfg.Server.Hostname})
	return alert.New(alert.Options{
		Rules: alert.Rules(ac.Rules),
		Store: a.store,
		Signals: &alert.NodeSignals{Store: a.store, DataDir: cfg.Server.DataDir, Certificate: a.tls.Certificate, Clock: a.clock,
			DNSReport: func(ctx context.Context, domain string) dnscheck.Report {
				return DNSReport(ctx, cfg, res, a.store, domain, nil)
			},
			Blocklists: a.ownListings()},
		Notifier:         notifiers,
		Clock:            a.clock,
		Log:              a.log,
		Hostname:         cfg.Server.Hostname,
		Node:             cfg.Server.NodeID,
		Interval:         ac.Interval,
		HistoryRetention: ac.HistoryRetention,
		Metrics:          a.metrics.reg,
	}), nil
}

// alertView serves the alerts' state on the HTTP API (GET /v1/alerts,
// for the console).
type alertView struct {
	st    store.Alerts
	rules []alert.Rule
	clock clock.Clock
}

func (v alertView) Alerts(ctx context.Context, history int) (any, error) {
	return alert.Overview(ctx, v.st, v.rules, v.clock.Now(), history)
}

// alertLister is the HTTP API's view of the alerts; nil when they are off.
func (a *App) alertLister() httpapi.AlertLister {
	if a.alerts == nil {
		return nil
	}
	return alertView{st: a.store, rules: alert.Rules(a.cfg.Alerts.Rules), clock: a.clock}
}

// ownListings gives the alert engine this node's listings on DNS lists, or
// nil (no data) when no reputation list is configured.
func (a *App) ownListings() func(context.Context) ([]alert.Listing, error) {
	if a.monitor == nil || !a.monitor.Enabled() {
		return nil
	}
	return func(context.Context) ([]alert.Listing, error) {
		if a.monitor.LastCheck().IsZero() {
			return nil, fmt.Errorf("no blocklist round finished yet: %w", alert.ErrNoData)
		}
		var out []alert.Listing
		for _, l := range a.monitor.Status() {
			detail := l.Reason
			if detail == "" {
				detail = strings.Join(l.Codes, ", ")
			}
			out = append(out, alert.Listing{Subject: l.Target, List: l.List, Detail: detail})
		}
		return out, nil
	}
}
