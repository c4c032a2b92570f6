package metrics

import (
	"strings"
	"sync"
	"testing"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("herald_rejected_total", "Rejections.", "reason")
	c.Inc("relay")
	c.Add(2, "size")
	r.NewGaugeFunc("herald_queue_messages", "Queued messages.", func() float64 { return 7 })
	h := r.NewHistogram("herald_delivery_seconds", "Latency.", []float64{0.1, 1}, "result")
	h.Observe(0.05, "delivered")
	h.Observe(0.5, "delivered")
	h.Observe(5, "delivered")
	var b strings.Builder
	r.Write(&b)
	out := b.String()
	for _, want := range []string{
		`herald_rejected_total{reason="relay"} 1`,
		`herald_rejected_total{reason="size"} 2`,
		"herald_queue_messages 7",
		`herald_delivery_seconds_bucket{result="delivered",le="0.1"} 1`,
		`herald_delivery_seconds_bucket{result="delivered",le="1"} 2`,
		`herald_delivery_seconds_bucket{result="delivered",le="+Inf"} 3`,
		`herald_delivery_seconds_count{result="delivered"} 3`,
		"# TYPE herald_delivery_seconds histogram",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
}

func TestCounterConcurrent(t *testing.T) {
	r := NewRegistry()
	c := r.NewCounterVec("x_total", "x", "k")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 1000 {
				c.Inc("a")
			}
		}()
	}
	wg.Wait()
	if got := c.Value("a"); got != 8000 {
		t.Fatalf("got %d, want 8000", got)
	}
}
