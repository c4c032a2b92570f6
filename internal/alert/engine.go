// Package alert evaluates alert rules in the server — bounce, complaint
// and deferral rates, the queue's backlog, delivery latency, blocklist
// listings, broken DNS authentication, the TLS certificate's expiry, free
// disk space, failing webhooks — and notifies by mail (through the
// acceptance path, as Herald's own mail) and by a Slack-compatible
// webhook, once when an alert fires and once when it resolves.
//
// The state of every alert is in the store and changes by compare-and-set
// (store.Alerts): when several nodes evaluate the same rules, the node
// whose transition wins notifies, the others see the new state and do
// nothing. A silenced rule's transitions are recorded but not notified.
package alert

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/store"
)

// Store is the alert state the engine keeps in the store.
type Store interface {
	store.Alerts
}

// Notifier sends one notification of a transition.
type Notifier interface {
	Notify(ctx context.Context, n Notification) error
}

// Notification is one transition to tell people about.
type Notification struct {
	Rule     Rule
	Key      string // the alert: the rule name, "/" and its subject
	Subject  string // "" for a rule about the whole node
	Firing   bool   // true: fired; false: resolved
	Value    float64
	Detail   string
	Since    time.Time // when it fired (for a resolve: when it had fired)
	At       time.Time // the transition
	Hostname string    // the node that noticed
}

// Options configure an Engine.
type Options struct {
	Rules    []Rule
	Store    Store
	Signals  Signals
	Notifier Notifier // nil: transitions are recorded, nobody is told
	Clock    clock.Clock
	Log      *slog.Logger
	Hostname string
	// Node names this node (server.node_id; default Hostname): the subject
	// of the rules about the node itself (disk_free, cert_expiry), so that
	// in a cluster each node's disk and certificate are alerts of their
	// own.
	Node string
	// Interval is how often Run evaluates; default DefaultInterval.
	Interval time.Duration
	// HistoryRetention is how long transitions are kept; default
	// DefaultHistoryRetention.
	HistoryRetention time.Duration
	// Metrics, if set, gets herald_alert_firing and
	// herald_alert_transitions_total.
	Metrics *metrics.Registry
}

// Defaults of Options.
const (
	DefaultInterval         = time.Minute
	DefaultHistoryRetention = 90 * 24 * time.Hour
	pruneEvery              = time.Hour
	// MaxNotifications bounds the notifications of one evaluation (a
	// storm of per-destination alerts); the transitions beyond it are
	// recorded and shown, but not sent.
	MaxNotifications = 30
	// MeasureTimeout bounds one rule's measurement (the DNS doctor's
	// sweep of the local domains is the slowest); a rule that runs out
	// keeps its state.
	MeasureTimeout = time.Minute
)

// Engine evaluates the rules. Evaluate may be called directly (tests, a
// CLI); Run calls it every Interval.
type Engine struct {
	opts        Options
	transitions *metrics.CounterVec
	notified    *metrics.CounterVec

	mu        sync.Mutex // one evaluation at a time
	lastPrune time.Time
	sent      int // notifications of the current evaluation

	fmu    sync.Mutex // guards firing, read by /metrics
	firing map[string]float64
}

// New returns an engine.
func New(opts Options) *Engine {
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Node == "" {
		opts.Node = opts.Hostname
	}
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.HistoryRetention <= 0 {
		opts.HistoryRetention = DefaultHistoryRetention
	}
	e := &Engine{opts: opts, firing: map[string]float64{}}
	for _, r := range opts.Rules {
		if r.Enabled {
			e.firing[r.Name] = 0
		}
	}
	if reg := opts.Metrics; reg != nil {
		reg.NewGaugeMapFunc("herald_alert_firing", "Alerts of each rule firing now (as this node last saw them).", "rule", e.Firing)
		e.transitions = reg.NewCounterVec("herald_alert_transitions_total", "Alert transitions this node recorded (and notified), by rule and new state.", "rule", "state")
		e.notified = reg.NewCounterVec("herald_alert_notifications_total", "Alert notifications, by result (sent, failed, silenced, capped).", "result")
	}
	return e
}

// Firing returns, per rule, how many of its alerts fire, as of the last
// evaluation (every enabled rule is present).
func (e *Engine) Firing() map[string]float64 {
	e.fmu.Lock()
	defer e.fmu.Unlock()
	return maps.Clone(e.firing)
}

// Run evaluates the rules every Interval until ctx ends, the first time
// one Interval after it starts (the node has settled by then: listeners
// open, DNS and store warm).
func (e *Engine) Run(ctx context.Context) {
	for {
		t := clock.NewTimer(e.opts.Clock, e.opts.Interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C():
		}
		if err := e.Evaluate(ctx); err != nil && ctx.Err() == nil {
			e.opts.Log.Warn("alerts: evaluation failed", "err", err)
		}
	}
}

// Evaluate measures every enabled rule once and records (and notifies)
// the transitions. A rule whose signal has no data keeps its state; a
// failing rule does not stop the others.
func (e *Engine) Evaluate(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Clock.Now()
	e.sent = 0
	list, err := e.opts.Store.AlertStates(ctx)
	if err != nil {
		return err
	}
	states := make(map[string]store.AlertState, len(list))
	for _, st := range list {
		states[st.Key] = st
	}
	sl, err := e.opts.Store.AlertSilences(ctx, now)
	if err != nil {
		return err
	}
	silenced := map[string]bool{}
	for _, s := range sl {
		silenced[s.Rule] = true
	}
	var errs []error
	for _, r := range e.opts.Rules {
		if !r.Enabled {
			continue
		}
		mctx, cancel := context.WithTimeout(ctx, MeasureTimeout)
		ms, err := r.measure(mctx, e.opts.Signals, now)
		cancel()
		if errors.Is(err, ErrNoData) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			e.opts.Log.Warn("alerts: measuring a rule failed; it keeps its state", "rule", r.Name, "err", err)
			continue
		}
		perNode := r.perNode()
		seen := map[string]bool{}
		for _, m := range ms {
			if perNode {
				m.Subject = e.opts.Node
			}
			key := r.Name
			if m.Subject != "" {
				key += "/" + m.Subject
			}
			key = store.ClipText(key, store.MaxAlertKey)
			seen[key] = true
			if err := e.apply(ctx, r, states[key], key, m, now, silenced[r.Name]); err != nil {
				errs = append(errs, err)
			}
		}
		// A firing alert the rule no longer measures (a destination without
		// traffic, a listing gone) resolves. Other nodes' alerts about
		// themselves are theirs.
		for key, st := range states {
			if st.Rule != r.Name || !st.Firing || seen[key] || perNode {
				continue
			}
			m := Measure{Subject: strings.TrimPrefix(strings.TrimPrefix(key, r.Name), "/"), Detail: "no longer measured: " + st.Detail}
			if err := e.apply(ctx, r, st, key, m, now, silenced[r.Name]); err != nil {
				errs = append(errs, err)
			}
		}
	}
	e.refreshFiring(ctx)
	if now.Sub(e.lastPrune) >= pruneEvery {
		if _, err := e.opts.Store.PruneAlertHistory(ctx, now.Add(-e.opts.HistoryRetention)); err != nil {
			errs = append(errs, err)
		} else {
			e.lastPrune = now
		}
	}
	return errors.Join(errs...)
}

// apply records a transition of key if m changes its state, and notifies
// it when this node's compare-and-set wins.
func (e *Engine) apply(ctx context.Context, r Rule, st store.AlertState, key string, m Measure, now time.Time, silenced bool) error {
	if st.Firing == m.Firing {
		return nil
	}
	next := store.AlertState{Key: key, Rule: r.Name, Firing: m.Firing, Since: now, Value: m.Value, Detail: m.Detail}
	_, won, err := e.opts.Store.TransitionAlert(ctx, next, st.Version)
	if err != nil {
		return err
	}
	if !won {
		return nil // another node recorded (and notified) it
	}
	state := "resolved"
	if m.Firing {
		state = "firing"
	}
	if e.transitions != nil {
		e.transitions.Inc(r.Name, state)
	}
	e.opts.Log.Warn("alert "+state, "rule", r.Name, "alert", key, "value", m.Value, "detail", m.Detail, "silenced", silenced)
	if e.opts.Notifier == nil {
		return nil
	}
	if silenced {
		e.count("silenced")
		return nil
	}
	if e.sent >= MaxNotifications {
		e.count("capped")
		e.opts.Log.Warn("alert not notified: too many transitions at once; herald alert list shows them all", "rule", r.Name, "alert", key)
		return nil
	}
	e.sent++
	since := now
	if !m.Firing {
		since = st.Since
	}
	n := Notification{Rule: r, Key: key, Subject: m.Subject, Firing: m.Firing, Value: m.Value, Detail: m.Detail,
		Since: since, At: now, Hostname: e.opts.Hostname}
	if err := e.opts.Notifier.Notify(ctx, n); err != nil {
		e.count("failed")
		e.opts.Log.Error("alert notification failed", "rule", r.Name, "alert", key, "err", err)
		return err
	}
	e.count("sent")
	return nil
}

func (e *Engine) count(result string) {
	if e.notified != nil {
		e.notified.Inc(result)
	}
}

// refreshFiring rereads the states for the gauge (they include other
// nodes' transitions).
func (e *Engine) refreshFiring(ctx context.Context) {
	list, err := e.opts.Store.AlertStates(ctx)
	if err != nil {
		return
	}
	f := map[string]float64{}
	for _, r := range e.opts.Rules {
		if r.Enabled {
			f[r.Name] = 0
		}
	}
	for _, st := range list {
		if _, ok := f[st.Rule]; ok && st.Firing {
			f[st.Rule]++
		}
	}
	e.fmu.Lock()
	e.firing = f
	e.fmu.Unlock()
}

// RuleNames returns the names of rules, sorted.
func RuleNames(rules []Rule) []string {
	out := make([]string, 0, len(rules))
	for _, r := range rules {
		out = append(out, r.Name)
	}
	slices.Sort(out)
	return out
}
