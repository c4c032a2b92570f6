package alert

import (
	"context"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// View is the state of the alerts for the console and the HTTP API (GET
// /v1/alerts): every rule with its firing alerts and silence, and the
// latest transitions.
type View struct {
	Rules   []RuleView  `json:"rules"`
	History []EventView `json:"history"`
}

// RuleView is one rule and its state.
type RuleView struct {
	Name          string        `json:"name"`
	Kind          string        `json:"kind"`
	Enabled       bool          `json:"enabled"`
	Description   string        `json:"description"`
	Threshold     float64       `json:"threshold"`
	WindowSeconds int64         `json:"window_seconds"`
	MinVolume     int64         `json:"min_volume"`
	Destination   string        `json:"destination,omitempty"`
	SilencedUntil *time.Time    `json:"silenced_until,omitempty"`
	SilenceReason string        `json:"silence_reason,omitempty"`
	Firing        []FiringAlert `json:"firing"`
}

// FiringAlert is one alert firing now.
type FiringAlert struct {
	Alert   string    `json:"alert"`
	Subject string    `json:"subject,omitempty"`
	Since   time.Time `json:"since"`
	Value   float64   `json:"value"`
	Detail  string    `json:"detail"`
}

// EventView is one transition.
type EventView struct {
	Time   time.Time `json:"time"`
	Alert  string    `json:"alert"`
	Rule   string    `json:"rule"`
	State  string    `json:"state"` // "firing" or "resolved"
	Value  float64   `json:"value"`
	Detail string    `json:"detail"`
	Node   string    `json:"node"`
}

// MaxHistory bounds the transitions a View holds.
const MaxHistory = 1000

// Overview returns the View of rules from the state in st at now, with up
// to history transitions (newest first).
func Overview(ctx context.Context, st store.Alerts, rules []Rule, now time.Time, history int) (View, error) {
	states, err := st.AlertStates(ctx)
	if err != nil {
		return View{}, err
	}
	sl, err := st.AlertSilences(ctx, now)
	if err != nil {
		return View{}, err
	}
	silences := map[string]store.AlertSilence{}
	for _, s := range sl {
		silences[s.Rule] = s
	}
	v := View{Rules: make([]RuleView, 0, len(rules)), History: []EventView{}}
	for _, r := range rules {
		rv := RuleView{Name: r.Name, Kind: r.Kind, Enabled: r.Enabled, Description: r.Describe(), Threshold: r.Threshold,
			WindowSeconds: int64(r.Window.Seconds()), MinVolume: r.MinVolume, Destination: r.Destination, Firing: []FiringAlert{}}
		if s, ok := silences[r.Name]; ok {
			until := s.Until.UTC()
			rv.SilencedUntil, rv.SilenceReason = &until, s.Reason
		}
		for _, s := range states {
			if s.Rule == r.Name && s.Firing {
				rv.Firing = append(rv.Firing, FiringAlert{Alert: s.Key, Subject: strings.TrimPrefix(strings.TrimPrefix(s.Key, r.Name), "/"),
					Since: s.Since.UTC(), Value: s.Value, Detail: s.Detail})
			}
		}
		v.Rules = append(v.Rules, rv)
	}
	if history > 0 {
		h, err := st.AlertHistory(ctx, "", min(history, MaxHistory))
		if err != nil {
			return View{}, err
		}
		for _, e := range h {
			state := "resolved"
			if e.Firing {
				state = "firing"
			}
			v.History = append(v.History, EventView{Time: e.Time.UTC(), Alert: e.Key, Rule: e.Rule, State: state, Value: e.Value, Detail: e.Detail, Node: e.Node})
		}
	}
	return v, nil
}
