package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AlertsConfig is the [alerts] section: rules evaluated by the server,
// notifying by mail and by a Slack-compatible webhook.
type AlertsConfig struct {
	Enabled  bool          `toml:"enabled"`
	Interval time.Duration `toml:"interval"` // how often the rules are evaluated
	// Email lists the recipients of notifications; empty means
	// server.postmaster (or postmaster@server.hostname).
	Email []string `toml:"email"`
	// WebhookURL receives a Slack-compatible JSON POST per notification;
	// "" sends none.
	WebhookURL string `toml:"webhook_url"`
	// WebhookAllowPrivate lets WebhookURL reach private and loopback
	// addresses (an in-house receiver); off, only public addresses.
	WebhookAllowPrivate bool `toml:"webhook_allow_private"`
	// HistoryRetention is how long fire and resolve events are kept.
	HistoryRetention time.Duration `toml:"history_retention"`
	// Rules change the built-in rules (by their name) or add rules of a
	// kind ([alerts.rules.NAME], kind = "...").
	Rules map[string]AlertRule `toml:"rules"`
}

// AlertRule is one [alerts.rules.NAME] table. Only the keys given
// (Set) change a built-in rule.
type AlertRule struct {
	Kind        string        // one of AlertKinds; defaults to the rule's name
	Enabled     bool          // a rule may be turned off
	Threshold   float64       // a fraction (rates, disk_free), a count, or seconds (durations)
	Window      time.Duration // the window of rates and of latency_p99
	MinVolume   int64         // events in the window below which a rate is not judged
	Destination string        // deferral_rate: only this destination (recipient domain)
	Set         map[string]bool
}

// AlertThreshold is what a kind's threshold measures.
type AlertThreshold int

// Threshold forms.
const (
	ThresholdNone     AlertThreshold = iota // the condition has no threshold (blocklisted, dns_auth)
	ThresholdFraction                       // 0.05 or "5%"
	ThresholdCount                          // an integer
	ThresholdDuration                       // "1h"
)

// AlertKinds are the kinds of alert rule and the form of their threshold.
var AlertKinds = map[string]AlertThreshold{
	"bounce_rate":     ThresholdFraction,
	"complaint_rate":  ThresholdFraction,
	"deferral_rate":   ThresholdFraction,
	"queue_backlog":   ThresholdCount,
	"queue_oldest":    ThresholdDuration,
	"latency_p99":     ThresholdDuration,
	"blocklisted":     ThresholdNone,
	"dns_auth":        ThresholdNone,
	"cert_expiry":     ThresholdDuration,
	"disk_free":       ThresholdFraction,
	"webhook_failing": ThresholdDuration,
}

// ruleName is the form of a rule name: it is a label value in /metrics and
// a CLI argument.
var ruleName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)

// MaxAlertRules bounds the rules of the configuration.
const MaxAlertRules = 100

// keyError is a problem with one key inside a table entry, so that the
// error carries that key's line.
type keyError struct {
	entry, key string
	err        error
}

func (e *keyError) Error() string { return e.err.Error() }

func alertRulesField(name string, p *map[string]AlertRule) field {
	return field{name: name, kind: kTable,
		set: func(v any) error {
			m, ok := v.(map[string]any)
			if !ok {
				return wrongType("a table of rules ([alerts.rules.NAME])", v)
			}
			if len(m) > MaxAlertRules {
				return fmt.Errorf("%d rules, at most %d", len(m), MaxAlertRules)
			}
			out := make(map[string]AlertRule, len(m))
			for _, k := range slices.Sorted(maps.Keys(m)) {
				if !ruleName.MatchString(k) {
					return fmt.Errorf("rule name %q: use 1 to 64 of a-z, 0-9, '_' and '-'", k)
				}
				t, ok := m[k].(map[string]any)
				if !ok {
					return fmt.Errorf("rule %q: %v", k, wrongType("a table", m[k]))
				}
				r, err := parseAlertRule(k, t)
				if err != nil {
					return err
				}
				out[k] = r
			}
			*p = out
			return nil
		},
		get: func() any {
			out := make(map[string]any, len(*p))
			for k, r := range *p {
				out[k] = r.toml()
			}
			return out
		},
	}
}

// parseAlertRule reads one rule table.
func parseAlertRule(name string, t map[string]any) (AlertRule, error) {
	r := AlertRule{Enabled: true, Set: map[string]bool{}}
	bad := func(key string, format string, args ...any) error {
		return &keyError{entry: name, key: key, err: fmt.Errorf("rule %q: %s: %s", name, key, fmt.Sprintf(format, args...))}
	}
	r.Kind = name
	if v, ok := t["kind"]; ok {
		s, ok := v.(string)
		if !ok {
			return r, bad("kind", "%v", wrongType("a string", v))
		}
		r.Kind = s
	}
	form, known := AlertKinds[r.Kind]
	if !known {
		kinds := slices.Sorted(maps.Keys(AlertKinds))
		if _, ok := t["kind"]; ok {
			return r, bad("kind", "%q is not a kind of rule (one of %s)", r.Kind, strings.Join(kinds, ", "))
		}
		return r, fmt.Errorf("rule %q is not a built-in rule: give its kind (one of %s)", name, strings.Join(kinds, ", "))
	}
	// Keys in a stable order so that the first error is always the same.
	for _, key := range slices.Sorted(maps.Keys(t)) {
		v := t[key]
		r.Set[key] = true
		switch key {
		case "kind":
		case "enabled":
			b, ok := v.(bool)
			if !ok {
				return r, bad(key, "%v", wrongType("true or false", v))
			}
			r.Enabled = b
		case "threshold":
			if form == ThresholdNone {
				return r, bad(key, "a %s rule has no threshold", r.Kind)
			}
			f, err := parseThreshold(form, v)
			if err != nil {
				return r, bad(key, "%v", err)
			}
			r.Threshold = f
		case "window":
			if r.Kind != "bounce_rate" && r.Kind != "complaint_rate" && r.Kind != "deferral_rate" && r.Kind != "latency_p99" {
				return r, bad(key, "a %s rule has no window", r.Kind)
			}
			d, err := parsePositiveDuration(v)
			if err != nil {
				return r, bad(key, "%v", err)
			}
			if d < time.Minute || d > 7*24*time.Hour {
				return r, bad(key, "%s is outside [1m, 168h]", d)
			}
			r.Window = d
		case "min_volume":
			if r.Kind != "bounce_rate" && r.Kind != "complaint_rate" && r.Kind != "deferral_rate" && r.Kind != "latency_p99" {
				return r, bad(key, "a %s rule has no minimum volume", r.Kind)
			}
			n, ok := v.(int64)
			if !ok || n < 0 || n > math.MaxInt32 {
				return r, bad(key, "expected an integer in [0, %d], got %s", math.MaxInt32, describe(v))
			}
			r.MinVolume = n
		case "destination":
			if r.Kind != "deferral_rate" {
				return r, bad(key, "only a deferral_rate rule has a destination")
			}
			s, ok := v.(string)
			if !ok {
				return r, bad(key, "%v", wrongType("a domain", v))
			}
			s = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(s), "."))
			if err := checkHostname(s); err != nil {
				return r, bad(key, "%q is not a domain", s)
			}
			r.Destination = s
		default:
			return r, bad(key, "unknown key (kind, enabled, threshold, window, min_volume, destination)")
		}
	}
	return r, nil
}

// parseThreshold reads a threshold of the given form.
func parseThreshold(form AlertThreshold, v any) (float64, error) {
	switch form {
	case ThresholdFraction:
		var f float64
		switch v := v.(type) {
		case float64:
			f = v
		case int64:
			f = float64(v)
		case string:
			s := strings.TrimSpace(v)
			pct, ok := strings.CutSuffix(s, "%")
			if !ok {
				return 0, fmt.Errorf("%q is not a fraction (0.05) or a percentage (\"5%%\")", v)
			}
			p, err := strconv.ParseFloat(strings.TrimSpace(pct), 64)
			if err != nil {
				return 0, fmt.Errorf("%q is not a percentage", v)
			}
			f = p / 100
		default:
			return 0, wrongType(`a fraction (0.05) or a percentage ("5%")`, v)
		}
		if math.IsNaN(f) || f < 0 || f > 1 {
			return 0, fmt.Errorf("%v is not a fraction between 0 and 1 (write 0.05 or \"5%%\" for 5 %%)", v)
		}
		return f, nil
	case ThresholdCount:
		n, ok := v.(int64)
		if !ok || n < 1 || n > math.MaxInt32 {
			return 0, fmt.Errorf("expected a positive integer, got %s", describe(v))
		}
		return float64(n), nil
	case ThresholdDuration:
		d, err := parsePositiveDuration(v)
		if err != nil {
			return 0, err
		}
		return d.Seconds(), nil
	}
	return 0, errors.New("this kind of rule has no threshold")
}

func parsePositiveDuration(v any) (time.Duration, error) {
	s, ok := v.(string)
	if !ok {
		return 0, wrongType(`a duration string such as "10m"`, v)
	}
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration", s)
	}
	return d, nil
}

// toml is the rule's table as the configuration file writes it.
func (r AlertRule) toml() map[string]any {
	out := map[string]any{}
	if r.Set["kind"] {
		out["kind"] = r.Kind
	}
	if r.Set["enabled"] {
		out["enabled"] = r.Enabled
	}
	if r.Set["threshold"] {
		switch AlertKinds[r.Kind] {
		case ThresholdCount:
			out["threshold"] = int64(r.Threshold)
		case ThresholdDuration:
			out["threshold"] = time.Duration(r.Threshold * float64(time.Second)).String()
		default:
			out["threshold"] = r.Threshold
		}
	}
	if r.Set["window"] {
		out["window"] = r.Window.String()
	}
	if r.Set["min_volume"] {
		out["min_volume"] = r.MinVolume
	}
	if r.Set["destination"] {
		out["destination"] = r.Destination
	}
	return out
}

// checkWebhookURL accepts "" or an absolute http(s) URL.
func checkWebhookURL(s string) error {
	if s == "" {
		return nil
	}
	if len(s) > 2048 {
		return errors.New("is longer than 2048 bytes")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return fmt.Errorf("%q is not an http or https URL (without user information)", s)
	}
	return nil
}
