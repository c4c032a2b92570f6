package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/diskguard"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtpserver"
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

// watchServers exports the SMTP listeners' own counters: sessions open,
// protocol-level rejections (size, syntax, bare LF, limits...) and
// recovered panics (which should stay at zero).
func (m *appMetrics) watchServers(servers []*smtpserver.Server) {
	sum := func(f func(smtpserver.Stats) float64) float64 {
		var t float64
		for _, s := range servers {
			t += f(s.Stats())
		}
		return t
	}
	m.reg.NewGaugeFunc("herald_smtp_sessions_active", "SMTP sessions open now.", func() float64 {
		return sum(func(s smtpserver.Stats) float64 { return float64(s.SessionsActive) })
	})
	m.reg.NewGaugeFunc("herald_smtp_panics_total", "Recovered panics in SMTP sessions (should be 0).", func() float64 {
		return sum(func(s smtpserver.Stats) float64 { return float64(s.Panics) })
	})
	m.reg.NewCounterMapFunc("herald_smtp_protocol_rejections_total", "Replies refusing a client's command or data at the protocol level, by reason.", "reason",
		func() map[string]float64 {
			out := map[string]float64{}
			for _, s := range servers {
				for k, v := range s.Stats().Rejections {
					out[k] += float64(v)
				}
			}
			return out
		})
}

// AttemptDone implements queue.Observer.
func (m *appMetrics) AttemptDone(msg *store.Message, a queue.Attempt, _ time.Duration) {
	m.attempts.Inc(a.Result.String())
	if a.Result != queue.Temporary {
		m.latency.Observe(time.Since(msg.Received).Seconds(), a.Result.String())
	}
}

// observers fans queue notifications out.
type observers []queue.Observer

func (o observers) AttemptDone(msg *store.Message, a queue.Attempt, d time.Duration) {
	for _, ob := range o {
		ob.AttemptDone(msg, a, d)
	}
}

// watchNode exports the data directory's disk space and the TLS
// certificate's expiry (the inputs of the disk_free and cert_expiry alert
// rules, for Prometheus rules of their own).
func (m *appMetrics) watchNode(dataDir string, cert func() *tls.Certificate) {
	m.reg.NewGaugeFunc("herald_disk_free_bytes", "Bytes available on the data directory's filesystem.", func() float64 {
		free, _, err := diskguard.Space(dataDir)
		if err != nil {
			return 0
		}
		return float64(free)
	})
	m.reg.NewGaugeFunc("herald_disk_size_bytes", "Size of the data directory's filesystem.", func() float64 {
		_, total, err := diskguard.Space(dataDir)
		if err != nil {
			return 0
		}
		return float64(total)
	})
	m.reg.NewGaugeFunc("herald_tls_certificate_expiry_timestamp_seconds", "When the TLS certificate in use expires (Unix time).", func() float64 {
		c := cert()
		if c == nil || len(c.Certificate) == 0 {
			return 0
		}
		leaf := c.Leaf
		if leaf == nil {
			var err error
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return 0
			}
		}
		return float64(leaf.NotAfter.Unix())
	})
}
