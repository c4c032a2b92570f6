package app

import (
	"context"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/store"
)

// appMetrics are the Prometheus series Herald exports on /metrics.
type appMetrics struct {
	reg          *metrics.Registry
	sessions     *metrics.CounterVec
	accepted     *metrics.CounterVec
	rejected     *metrics.CounterVec
	authFailures *metrics.CounterVec
	attempts     *metrics.CounterVec
	bounces      *metrics.CounterVec
	latency      *metrics.Histogram
}

func newMetrics(q store.Queue) *appMetrics {
	r := metrics.NewRegistry()
	m := &appMetrics{
		reg:          r,
		sessions:     r.NewCounterVec("herald_smtp_sessions_total", "SMTP sessions started, by listener.", "listener"),
		accepted:     r.NewCounterVec("herald_messages_accepted_total", "Messages accepted (250 after DATA), by listener.", "listener"),
		rejected:     r.NewCounterVec("herald_rejections_total", "SMTP commands rejected, by reason.", "reason"),
		authFailures: r.NewCounterVec("herald_auth_failures_total", "Failed AUTH attempts."),
		attempts:     r.NewCounterVec("herald_delivery_attempts_total", "Delivery attempts per recipient, by result.", "result"),
		bounces:      r.NewCounterVec("herald_dsn_total", "Delivery status notifications queued, by action.", "action"),
		latency: r.NewHistogram("herald_delivery_latency_seconds",
			"Time from acceptance to final delivery of a recipient.",
			[]float64{0.01, 0.05, 0.1, 0.5, 1, 5, 30, 60, 300, 3600, 86400}, "result"),
	}
	// Queue gauges are read from the store at scrape time, cached briefly
	// so a scrape costs one query.
	var (
		mu     sync.Mutex
		cached store.QueueStats
		at     time.Time
	)
	stats := func() store.QueueStats {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(at) > time.Second {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if s, err := q.Stats(ctx); err == nil {
				cached, at = s, time.Now()
			}
		}
		return cached
	}
	r.NewGaugeFunc("herald_queue_messages", "Messages with recipients still pending.", func() float64 { return float64(stats().Messages) })
	r.NewGaugeFunc("herald_queue_recipients", "Recipients still pending.", func() float64 { return float64(stats().Recipients) })
	r.NewGaugeFunc("herald_queue_oldest_age_seconds", "Age of the oldest pending message.", func() float64 {
		s := stats()
		if s.Oldest.IsZero() {
			return 0
		}
		return time.Since(s.Oldest).Seconds()
	})
	return m
}

// AttemptDone implements queue.Observer.
func (m *appMetrics) AttemptDone(msg *store.Message, a queue.Attempt, _ time.Duration) {
	m.attempts.Inc(a.Result.String())
	if a.Result != queue.Temporary {
		m.latency.Observe(time.Since(msg.Received).Seconds(), a.Result.String())
	}
}
