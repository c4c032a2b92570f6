package metrics

import (
	"fmt"
	"io"
	"math"
	"strings"
	"sync"
	"sync/atomic"
)

// GaugeVec is a gauge family with fixed label names whose series are set
// and removed explicitly (e.g. one series per blocklist listing).
type GaugeVec struct {
	n, help string
	labels  []string
	series  sync.Map // joined label values -> *atomic.Uint64 (float64 bits)
}

// NewGaugeVec registers a gauge family.
func (r *Registry) NewGaugeVec(name, help string, labels ...string) *GaugeVec {
	g := &GaugeVec{n: name, help: help, labels: labels}
	r.add(g)
	return g
}

// Set sets the series with the given label values (in label order) to v.
func (g *GaugeVec) Set(v float64, values ...string) {
	key := strings.Join(values, "\x00")
	s, ok := g.series.Load(key)
	if !ok {
		s, _ = g.series.LoadOrStore(key, new(atomic.Uint64))
	}
	s.(*atomic.Uint64).Store(math.Float64bits(v))
}

// Delete removes the series with the given label values.
func (g *GaugeVec) Delete(values ...string) {
	g.series.Delete(strings.Join(values, "\x00"))
}

// Value returns the current value of one series and whether it exists.
func (g *GaugeVec) Value(values ...string) (float64, bool) {
	s, ok := g.series.Load(strings.Join(values, "\x00"))
	if !ok {
		return 0, false
	}
	return math.Float64frombits(s.(*atomic.Uint64).Load()), true
}

func (g *GaugeVec) name() string { return g.n }

func (g *GaugeVec) write(w io.Writer) {
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", g.n, g.help, g.n)
	for _, kv := range sortedSeries(&g.series) {
		v := math.Float64frombits(kv.val.(*atomic.Uint64).Load())
		fmt.Fprintf(w, "%s%s %s\n", g.n, labelString(g.labels, kv.key, ""), formatFloat(v))
	}
}
