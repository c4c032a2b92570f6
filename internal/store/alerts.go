package store

import (
	"context"
	"time"
	"unicode/utf8"
)

// AlertState is the shared state of one alert: a rule, or one destination
// of a per-destination rule ("deferral_rate/example.com").
type AlertState struct {
	Key     string // the rule name, then "/" and the subject for per-subject rules
	Rule    string // the rule name
	Firing  bool
	Version int64     // increases with every transition; 0 for an alert never stored
	Since   time.Time // when the last transition happened
	Value   float64   // the measured value that caused it
	Detail  string    // what was measured, for people
}

// AlertEvent is one transition in the alert history.
type AlertEvent struct {
	ID     int64
	Key    string
	Rule   string
	Firing bool // true: it fired; false: it resolved
	Time   time.Time
	Value  float64
	Detail string
	Node   string // the node whose transition won
}

// AlertSilence suppresses the notifications of a rule until a time.
type AlertSilence struct {
	Rule    string
	Until   time.Time
	Reason  string
	Created time.Time
}

// Alert history and detail limits: the store truncates longer texts.
const (
	MaxAlertDetail = 1024
	MaxAlertKey    = 300
)

// Alerts keeps the state of alert rules for every node. A transition is a
// compare-and-set on the alert's version, so that when several nodes
// evaluate the same rule, exactly one of them records (and notifies) each
// fire and each resolve.
type Alerts interface {
	// AlertStates returns every stored alert state, ordered by key.
	AlertStates(ctx context.Context) ([]AlertState, error)
	// TransitionAlert sets st.Key's state to st.Firing (with st.Since,
	// Value, Detail) if its stored version is still from (0: never
	// stored), and appends the transition to the history, atomically. It
	// returns the new state and true; or, when another node changed the
	// alert first, the zero state and false, changing nothing.
	TransitionAlert(ctx context.Context, st AlertState, from int64) (AlertState, bool, error)
	// AlertHistory returns up to limit transitions, newest first, of rule
	// ("" for all).
	AlertHistory(ctx context.Context, rule string, limit int) ([]AlertEvent, error)
	// PruneAlertHistory deletes transitions older than before, and the
	// states of resolved alerts unchanged since then; returns how many
	// transitions it deleted.
	PruneAlertHistory(ctx context.Context, before time.Time) (int, error)
	// SilenceAlert stores (replaces) a silence of s.Rule; a zero Until
	// removes it.
	SilenceAlert(ctx context.Context, s AlertSilence) error
	// AlertSilences returns the silences that last past now, by rule.
	AlertSilences(ctx context.Context, now time.Time) ([]AlertSilence, error)
}

// WebhookFailure describes a webhook whose deliveries keep failing.
type WebhookFailure struct {
	WebhookID    string
	Account      string
	Pending      int       // deliveries pending after at least one failed attempt
	FailingSince time.Time // the first failed attempt of those deliveries
	LastError    string
}

// AlertInputs are the inputs of the alert rules that only the store can
// compute.
type AlertInputs interface {
	// FailingWebhooks returns the webhooks with pending deliveries whose
	// attempts failed, at most limit, the longest failing first.
	FailingWebhooks(ctx context.Context, limit int) ([]WebhookFailure, error)
}

// ClipText returns s cut to at most n bytes, on a UTF-8 boundary.
func ClipText(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
