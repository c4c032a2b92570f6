package postgres

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/heraldmail/herald/internal/store/storetest"
)

// BenchmarkAddEvents measures AddEvents (each event also counted in the
// rollups): batches of 100 events from one caller, and single events
// from 8 concurrent callers. ns/op is per call; events/s the throughput.
func BenchmarkAddEvents(b *testing.B) {
	for _, c := range []struct{ batch, callers int }{{100, 1}, {1, 8}} {
		b.Run(fmt.Sprintf("batch=%d/callers=%d", c.batch, c.callers), func(b *testing.B) {
			s := openTest(b, newSchema(b), Options{})
			defer s.Close()
			ctx := context.Background()
			var seq atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			if c.callers == 1 {
				for i := range b.N {
					if err := s.AddEvents(ctx, storetest.BenchEvents(c.batch, i)); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*c.batch)/b.Elapsed().Seconds(), "events/s")
				return
			}
			b.SetParallelism(max(1, c.callers/runtime.GOMAXPROCS(0)))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.AddEvents(ctx, storetest.BenchEvents(c.batch, int(seq.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N*c.batch)/b.Elapsed().Seconds(), "events/s")
		})
	}
}
