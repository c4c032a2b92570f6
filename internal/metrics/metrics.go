// Package metrics is a small Prometheus text-format registry: counters and
// histograms with labels, and gauges read at scrape time. It exists so that
// Herald's hot paths pay one atomic add per event and the binary does not
// pull in a large client library for a few dozen series.
package metrics

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Registry holds metric families and writes them in the text exposition
// format (version 0.0.4).
type Registry struct {
	mu       sync.Mutex
	families []family
}

type family interface {
	name() string
	write(w io.Writer)
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry { return &Registry{} }

func (r *Registry) add(f family) {
	r.mu.Lock()
	r.families = append(r.families, f)
	r.mu.Unlock()
}

// Write writes every family, sorted by name.
func (r *Registry) Write(w io.Writer) {
	r.mu.Lock()
	fs := append([]family(nil), r.families...)
	r.mu.Unlock()
	sort.Slice(fs, func(i, j int) bool { return fs[i].name() < fs[j].name() })
	for _, f := range fs {
		f.write(w)
	}
}

// Handler serves the registry over HTTP.
func (r *Registry) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		r.Write(w)
	})
}

// CounterVec is a counter family with fixed label names.
type CounterVec struct {
	n, help string
	labels  []string
	series  sync.Map // joined label values -> *atomic.Uint64
}

// NewCounterVec registers a counter family.
func (r *Registry) NewCounterVec(name, help string, labels ...string) *CounterVec {
	c := &CounterVec{n: name, help: help, labels: labels}
	r.add(c)
	return c
}

// Add adds v to the series with the given label values (in label order).
func (c *CounterVec) Add(v uint64, values ...string) {
	key := strings.Join(values, "\x00")
	s, ok := c.series.Load(key)
	if !ok {
		s, _ = c.series.LoadOrStore(key, new(atomic.Uint64))
	}
	s.(*atomic.Uint64).Add(v)
}

// Inc adds one.
func (c *CounterVec) Inc(values ...string) { c.Add(1, values...) }

// Value returns the current value of one series (for tests).
func (c *CounterVec) Value(values ...string) uint64 {
	s, ok := c.series.Load(strings.Join(values, "\x00"))
	if !ok {
		return 0
	}
	return s.(*atomic.Uint64).Load()
}

func (c *CounterVec) name() string { return c.n }

func (c *CounterVec) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", c.n, c.help, c.n)
	for _, kv := range sortedSeries(&c.series) {
		fmt.Fprintf(w, "%s%s %d\n", c.n, labelString(c.labels, kv.key, ""), kv.val.(*atomic.Uint64).Load())
	}
}

// GaugeFunc is a gauge whose value is computed at scrape time.
type GaugeFunc struct {
	n, help string
	f       func() float64
}

// NewGaugeFunc registers a gauge read from f at each scrape.
func (r *Registry) NewGaugeFunc(name, help string, f func() float64) *GaugeFunc {
	g := &GaugeFunc{n: name, help: help, f: f}
	r.add(g)
	return g
}

func (g *GaugeFunc) name() string { return g.n }

func (g *GaugeFunc) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %s\n", g.n, g.help, g.n, g.n, formatFloat(g.f()))
}

// Histogram is a histogram family with one label set per series.
type Histogram struct {
	n, help string
	labels  []string
	bounds  []float64
	series  sync.Map // key -> *histSeries
}

type histSeries struct {
	mu     sync.Mutex
	counts []uint64 // per bucket, not cumulative; last is +Inf
	sum    float64
	count  uint64
}

// NewHistogram registers a histogram with the given upper bounds.
func (r *Registry) NewHistogram(name, help string, bounds []float64, labels ...string) *Histogram {
	h := &Histogram{n: name, help: help, bounds: bounds, labels: labels}
	r.add(h)
	return h
}

// Observe records v in the series with the given label values.
func (h *Histogram) Observe(v float64, values ...string) {
	key := strings.Join(values, "\x00")
	s, ok := h.series.Load(key)
	if !ok {
		s, _ = h.series.LoadOrStore(key, &histSeries{counts: make([]uint64, len(h.bounds)+1)})
	}
	hs := s.(*histSeries)
	i := sort.SearchFloat64s(h.bounds, v)
	hs.mu.Lock()
	hs.counts[i]++
	hs.sum += v
	hs.count++
	hs.mu.Unlock()
}

func (h *Histogram) name() string { return h.n }

func (h *Histogram) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", h.n, h.help, h.n)
	for _, kv := range sortedSeries(&h.series) {
		hs := kv.val.(*histSeries)
		hs.mu.Lock()
		var cum uint64
		for i, b := range h.bounds {
			cum += hs.counts[i]
			fmt.Fprintf(w, "%s_bucket%s %d\n", h.n, labelString(h.labels, kv.key, formatFloat(b)), cum)
		}
		cum += hs.counts[len(h.bounds)]
		fmt.Fprintf(w, "%s_bucket%s %d\n", h.n, labelString(h.labels, kv.key, "+Inf"), cum)
		fmt.Fprintf(w, "%s_sum%s %s\n", h.n, labelString(h.labels, kv.key, ""), formatFloat(hs.sum))
		fmt.Fprintf(w, "%s_count%s %d\n", h.n, labelString(h.labels, kv.key, ""), hs.count)
		hs.mu.Unlock()
	}
}

type kv struct {
	key string
	val any
}

func sortedSeries(m *sync.Map) []kv {
	var out []kv
	m.Range(func(k, v any) bool {
		out = append(out, kv{k.(string), v})
		return true
	})
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// labelString renders {a="x",b="y"} (plus le="..." when le is set).
func labelString(names []string, key, le string) string {
	if len(names) == 0 && le == "" {
		return ""
	}
	var b strings.Builder
	b.WriteByte('{')
	if len(names) > 0 {
		for i, v := range strings.Split(key, "\x00") {
			if i >= len(names) {
				break
			}
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%s=%q", names[i], v)
		}
	}
	if le != "" {
		if len(names) > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "le=%q", le)
	}
	b.WriteByte('}')
	return b.String()
}

func formatFloat(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+Inf"
	case math.IsInf(f, -1):
		return "-Inf"
	case math.IsNaN(f):
		return "NaN"
	}
	return fmt.Sprintf("%g", f)
}

// MapFunc is a family with one label whose series are read at scrape time
// from a map (e.g. counters kept by another component).
type MapFunc struct {
	n, help, typ, label string
	f                   func() map[string]float64
}

// NewCounterMapFunc registers a counter family read from f at each scrape.
func (r *Registry) NewCounterMapFunc(name, help, label string, f func() map[string]float64) *MapFunc {
	m := &MapFunc{n: name, help: help, typ: "counter", label: label, f: f}
	r.add(m)
	return m
}

// NewGaugeMapFunc registers a gauge family read from f at each scrape.
func (r *Registry) NewGaugeMapFunc(name, help, label string, f func() map[string]float64) *MapFunc {
	m := &MapFunc{n: name, help: help, typ: "gauge", label: label, f: f}
	r.add(m)
	return m
}

func (m *MapFunc) name() string { return m.n }

func (m *MapFunc) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.n, m.help, m.n, m.typ)
	vals := m.f()
	keys := make([]string, 0, len(vals))
	for k := range vals {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "%s{%s=%q} %s\n", m.n, m.label, k, formatFloat(vals[k]))
	}
}
