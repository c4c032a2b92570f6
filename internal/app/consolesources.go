package app

import (
	"context"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/console"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/stats"
)

// consoleAlerts shows the alert engine's state (the same view as GET
// /v1/alerts) on the console.
type consoleAlerts struct{ view alertView }

func (c consoleAlerts) Firing(ctx context.Context) ([]console.Alert, error) {
	v, err := alert.Overview(ctx, c.view.st, c.view.rules, c.view.clock.Now(), 0)
	if err != nil {
		return nil, err
	}
	var out []console.Alert
	for _, r := range v.Rules {
		for _, f := range r.Firing {
			out = append(out, console.Alert{Rule: r.Name, Subject: f.Subject, Severity: "warning", Summary: f.Detail,
				Since: f.Since, Silenced: r.SilencedUntil != nil})
		}
	}
	return out, nil
}

func (c consoleAlerts) History(ctx context.Context, limit int) ([]console.Alert, error) {
	v, err := alert.Overview(ctx, c.view.st, c.view.rules, c.view.clock.Now(), limit)
	if err != nil {
		return nil, err
	}
	out := make([]console.Alert, 0, len(v.History))
	for _, e := range v.History {
		a := console.Alert{Rule: e.Rule, Subject: strings.TrimPrefix(strings.TrimPrefix(e.Alert, e.Rule), "/"),
			Severity: "warning", Summary: e.Detail, Since: e.Time}
		if e.State == "resolved" {
			a.Since, a.Resolved = time.Time{}, e.Time
		}
		out = append(out, a)
	}
	return out, nil
}

// consoleBlocklists shows this node's own listings found by the DNS list
// monitor.
type consoleBlocklists struct{ monitor *dnsbl.Monitor }

func (c consoleBlocklists) Listings(context.Context) ([]console.Listing, error) {
	var out []console.Listing
	for _, l := range c.monitor.Status() {
		out = append(out, console.Listing{Target: l.Target, List: l.List, Listed: true, Codes: l.Codes,
			Reason: l.Reason, Checked: l.Checked})
	}
	return out, nil
}

// consoleSources are the providers the console reads besides the store.
func (a *App) consoleSources() ConsoleSources {
	var src ConsoleSources
	cs := consoleStats{stats: stats.New(a.store), recent: &console.StoreStats{Store: a.store}}
	src.Overview, src.Destinations = cs, cs
	if v, ok := a.alertLister().(alertView); ok {
		src.Alerts = consoleAlerts{view: v}
	}
	if a.monitor != nil && a.monitor.Enabled() {
		src.Blocklists = consoleBlocklists{monitor: a.monitor}
	}
	return src
}
