package alert

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/config"
)

// Kinds of rule (config.AlertKinds names them with their threshold form).
const (
	KindBounceRate     = "bounce_rate"
	KindComplaintRate  = "complaint_rate"
	KindDeferralRate   = "deferral_rate"
	KindQueueBacklog   = "queue_backlog"
	KindQueueOldest    = "queue_oldest"
	KindLatencyP99     = "latency_p99"
	KindBlocklisted    = "blocklisted"
	KindDNSAuth        = "dns_auth"
	KindCertExpiry     = "cert_expiry"
	KindDiskFree       = "disk_free"
	KindWebhookFailing = "webhook_failing"
)

// Rule is one alert rule. Threshold is a fraction for rates and
// disk_free, a count for queue_backlog, and seconds for durations
// (queue_oldest, latency_p99, cert_expiry, webhook_failing).
type Rule struct {
	Name        string
	Kind        string
	Enabled     bool
	Threshold   float64
	Window      time.Duration // rates and latency_p99
	MinVolume   int64         // rates and latency_p99: below it the rule does not fire
	Destination string        // deferral_rate: only this destination; "" every one
}

// MaxDestinations bounds the destinations a deferral_rate rule judges per
// evaluation (the busiest ones).
const MaxDestinations = 100

// DefaultRules are the built-in rules, one per kind, with their defaults.
func DefaultRules() []Rule {
	return []Rule{
		// The big mailbox providers' guidance: bounces above a few percent hurt.
		{Name: KindBounceRate, Kind: KindBounceRate, Enabled: true, Threshold: 0.05, Window: time.Hour, MinVolume: 100},
		// Gmail's and Yahoo's sender requirements: stay under 0.3 % complaints.
		{Name: KindComplaintRate, Kind: KindComplaintRate, Enabled: true, Threshold: 0.003, Window: 24 * time.Hour, MinVolume: 1000},
		{Name: KindDeferralRate, Kind: KindDeferralRate, Enabled: true, Threshold: 0.3, Window: 30 * time.Minute, MinVolume: 20},
		{Name: KindQueueBacklog, Kind: KindQueueBacklog, Enabled: true, Threshold: 10000},
		{Name: KindQueueOldest, Kind: KindQueueOldest, Enabled: true, Threshold: time.Hour.Seconds()},
		{Name: KindLatencyP99, Kind: KindLatencyP99, Enabled: true, Threshold: (10 * time.Minute).Seconds(), Window: time.Hour, MinVolume: 100},
		{Name: KindBlocklisted, Kind: KindBlocklisted, Enabled: true},
		{Name: KindDNSAuth, Kind: KindDNSAuth, Enabled: true},
		{Name: KindCertExpiry, Kind: KindCertExpiry, Enabled: true, Threshold: (14 * 24 * time.Hour).Seconds()},
		{Name: KindDiskFree, Kind: KindDiskFree, Enabled: true, Threshold: 0.10},
		{Name: KindWebhookFailing, Kind: KindWebhookFailing, Enabled: true, Threshold: (10 * time.Minute).Seconds()},
	}
}

// Rules returns the built-in rules changed, and the rules added, by the
// configuration's [alerts.rules.NAME] tables, ordered by name.
func Rules(cfg map[string]config.AlertRule) []Rule {
	byName := map[string]Rule{}
	for _, r := range DefaultRules() {
		byName[r.Name] = r
	}
	for name, c := range cfg {
		r, ok := byName[name]
		if !ok || (c.Set["kind"] && c.Kind != r.Kind) {
			// A new rule of a kind starts from that kind's defaults.
			for _, d := range DefaultRules() {
				if d.Kind == c.Kind {
					r = d
				}
			}
			r.Name, r.Kind = name, c.Kind
		}
		if c.Set["enabled"] {
			r.Enabled = c.Enabled
		}
		if c.Set["threshold"] {
			r.Threshold = c.Threshold
		}
		if c.Set["window"] {
			r.Window = c.Window
		}
		if c.Set["min_volume"] {
			r.MinVolume = c.MinVolume
		}
		if c.Set["destination"] {
			r.Destination = c.Destination
		}
		byName[name] = r
	}
	out := make([]Rule, 0, len(byName))
	for _, name := range slices.Sorted(maps.Keys(byName)) {
		out = append(out, byName[name])
	}
	return out
}

// perNode reports whether the rule is about the evaluating node itself
// (its disk, its certificate) rather than state every node shares.
func (r Rule) perNode() bool { return r.Kind == KindDiskFree || r.Kind == KindCertExpiry }

// Describe says what the rule watches, for people: "bounce rate above 5 %
// over 1h (at least 100 sent)".
func (r Rule) Describe() string {
	vol := func(what string) string {
		if r.MinVolume > 0 {
			return fmt.Sprintf(" (at least %d %s)", r.MinVolume, what)
		}
		return ""
	}
	switch r.Kind {
	case KindBounceRate:
		return fmt.Sprintf("bounce rate above %s over %s%s", pct(r.Threshold), human(r.Window), vol("sent"))
	case KindComplaintRate:
		return fmt.Sprintf("complaint rate above %s over %s%s", pct(r.Threshold), human(r.Window), vol("delivered"))
	case KindDeferralRate:
		dest := "any destination"
		if r.Destination != "" {
			dest = r.Destination
		}
		return fmt.Sprintf("deferral rate of %s above %s over %s%s", dest, pct(r.Threshold), human(r.Window), vol("attempts"))
	case KindQueueBacklog:
		return fmt.Sprintf("more than %d messages queued", int64(r.Threshold))
	case KindQueueOldest:
		return fmt.Sprintf("a queued message older than %s", seconds(r.Threshold))
	case KindLatencyP99:
		return fmt.Sprintf("99th percentile delivery latency above %s over %s%s", seconds(r.Threshold), human(r.Window), vol("deliveries"))
	case KindBlocklisted:
		return "a sending IP address or domain listed on a blocklist"
	case KindDNSAuth:
		return "SPF, DKIM, DMARC or MTA-STS records missing or not matching"
	case KindCertExpiry:
		return fmt.Sprintf("TLS certificate expiring within %s", seconds(r.Threshold))
	case KindDiskFree:
		return fmt.Sprintf("less than %s of the data directory's disk free", pct(r.Threshold))
	case KindWebhookFailing:
		return fmt.Sprintf("a webhook failing for more than %s", seconds(r.Threshold))
	}
	return r.Kind
}

func pct(f float64) string {
	s := fmt.Sprintf("%.2f", f*100)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s + " %"
}

func seconds(s float64) string {
	return human(time.Duration(s * float64(time.Second)))
}

// human writes d compactly, to the second: "14d", "1d2h", "1h30m", "45s".
func human(d time.Duration) string {
	d = d.Round(time.Second)
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	for _, u := range []struct {
		d    time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.d; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.d
		}
	}
	return b.String()
}

// Measure is one measurement of a rule: whether it is beyond its
// threshold now, for one subject ("" for the whole node; a destination,
// a listed address, a domain, a webhook).
type Measure struct {
	Subject string
	Firing  bool
	Value   float64
	Detail  string
}

// ErrNoData is returned by a Signals method that cannot measure (yet):
// the rule keeps its state.
var ErrNoData = errors.New("alert: no data")

// measure evaluates r against sig at now.
func (r Rule) measure(ctx context.Context, sig Signals, now time.Time) ([]Measure, error) {
	switch r.Kind {
	case KindBounceRate, KindComplaintRate:
		c, err := sig.Counts(ctx, r.Window)
		if err != nil {
			return nil, err
		}
		return []Measure{r.rate(c)}, nil
	case KindDeferralRate:
		per, err := sig.DestinationCounts(ctx, r.Window, MaxDestinations)
		if err != nil {
			return nil, err
		}
		var out []Measure
		for _, d := range slices.Sorted(maps.Keys(per)) {
			if r.Destination != "" && d != r.Destination {
				continue
			}
			m := r.rate(per[d])
			m.Subject = d
			out = append(out, m)
		}
		return out, nil
	case KindQueueBacklog, KindQueueOldest:
		q, err := sig.Queue(ctx)
		if err != nil {
			return nil, err
		}
		if r.Kind == KindQueueBacklog {
			return []Measure{{Firing: float64(q.Messages) > r.Threshold, Value: float64(q.Messages),
				Detail: fmt.Sprintf("%d messages (%d recipients) queued; threshold %d", q.Messages, q.Recipients, int64(r.Threshold))}}, nil
		}
		age := 0.0
		if !q.Oldest.IsZero() {
			age = now.Sub(q.Oldest).Seconds()
		}
		return []Measure{{Firing: age > r.Threshold, Value: age,
			Detail: fmt.Sprintf("oldest queued message is %s old; threshold %s", seconds(age), seconds(r.Threshold))}}, nil
	case KindLatencyP99:
		p99, n, err := sig.LatencyP99(ctx, r.Window)
		if err != nil {
			return nil, err
		}
		v := p99.Seconds()
		if n < r.MinVolume {
			return []Measure{{Value: v, Detail: fmt.Sprintf("%d deliveries in %s, fewer than %d: not judged", n, human(r.Window), r.MinVolume)}}, nil
		}
		return []Measure{{Firing: v > r.Threshold, Value: v,
			Detail: fmt.Sprintf("99th percentile delivery latency %s over %d deliveries in %s; threshold %s", seconds(v), n, human(r.Window), seconds(r.Threshold))}}, nil
	case KindBlocklisted:
		ls, err := sig.Blocklistings(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]Measure, 0, len(ls))
		for _, l := range ls {
			d := fmt.Sprintf("%s is listed on %s", l.Subject, l.List)
			if l.Detail != "" {
				d += ": " + l.Detail
			}
			out = append(out, Measure{Subject: l.Subject + "@" + l.List, Firing: true, Value: 1, Detail: d})
		}
		return out, nil
	case KindDNSAuth:
		ps, err := sig.DNSAuthProblems(ctx)
		if err != nil {
			return nil, err
		}
		byDomain := map[string][]string{}
		for _, p := range ps {
			byDomain[p.Domain] = append(byDomain[p.Domain], p.Check+": "+p.Message)
		}
		out := make([]Measure, 0, len(byDomain))
		for _, d := range slices.Sorted(maps.Keys(byDomain)) {
			out = append(out, Measure{Subject: d, Firing: true, Value: float64(len(byDomain[d])), Detail: strings.Join(byDomain[d], "; ")})
		}
		return out, nil
	case KindCertExpiry:
		notAfter, err := sig.CertificateExpiry(ctx)
		if err != nil {
			return nil, err
		}
		left := notAfter.Sub(now).Seconds()
		return []Measure{{Firing: left < r.Threshold, Value: left,
			Detail: fmt.Sprintf("the TLS certificate expires %s (in %s); threshold %s", notAfter.UTC().Format(time.RFC3339), seconds(max(left, 0)), seconds(r.Threshold))}}, nil
	case KindDiskFree:
		free, total, err := sig.DiskFree(ctx)
		if err != nil {
			return nil, err
		}
		if total <= 0 {
			return nil, ErrNoData
		}
		f := float64(free) / float64(total)
		return []Measure{{Firing: f < r.Threshold, Value: f,
			Detail: fmt.Sprintf("%s free (%d MiB of %d MiB); threshold %s", pct(f), free>>20, total>>20, pct(r.Threshold))}}, nil
	case KindWebhookFailing:
		fs, err := sig.FailingWebhooks(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]Measure, 0, len(fs))
		for _, f := range fs {
			age := 0.0
			if !f.FailingSince.IsZero() {
				age = now.Sub(f.FailingSince).Seconds()
			}
			out = append(out, Measure{Subject: f.WebhookID, Firing: age > r.Threshold, Value: age,
				Detail: fmt.Sprintf("webhook %s of account %s: %d deliveries failing for %s (last error: %s)", f.WebhookID, f.Account, f.Pending, seconds(age), f.LastError)})
		}
		return out, nil
	}
	return nil, fmt.Errorf("alert: rule %s: unknown kind %q", r.Name, r.Kind)
}

// rate judges a bounce, complaint or deferral rate.
func (r Rule) rate(c Counts) Measure {
	var num, den int64
	var what, of string
	switch r.Kind {
	case KindBounceRate:
		num, den, what, of = c.Bounced, c.Delivered+c.Bounced, "bounced", "sent"
	case KindComplaintRate:
		num, den, what, of = c.Complained, c.Delivered, "complaints", "delivered"
	default:
		num, den, what, of = c.Deferred, c.Deferred+c.Delivered+c.Bounced, "deferred", "attempts"
	}
	v := 0.0
	if den > 0 {
		v = float64(num) / float64(den)
	}
	if math.IsNaN(v) {
		v = 0
	}
	if den < r.MinVolume {
		return Measure{Value: v, Detail: fmt.Sprintf("%d %s of %d %s in %s, fewer than %d: not judged", num, what, den, of, human(r.Window), r.MinVolume)}
	}
	return Measure{Firing: v > r.Threshold, Value: v,
		Detail: fmt.Sprintf("%d %s of %d %s in %s (%s); threshold %s", num, what, den, of, human(r.Window), pct(v), pct(r.Threshold))}
}
