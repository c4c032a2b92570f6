package app

import (
	"context"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/store/storetest"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// BenchmarkCopySQLiteToPostgres copies a SQLite store with 2000 queued
// messages of 4 KiB (two recipients each, so 4000 accepted events) and
// four of 25 MB into a new PostgreSQL schema, and reports messages and
// bytes per second and the peak heap in use while copying (a 25 MB body
// must never be whole in memory).
func BenchmarkCopySQLiteToPostgres(b *testing.B) {
	const small, big = 2000, 4
	src, err := sqlite.Open(b.TempDir(), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	now := time.Now()
	var bytes int64
	for i := range small {
		m := storetest.NewMessage(now, "a@remote.test", "b@remote.test")
		storetest.Enqueue(b, src, m, storetest.Body(uint64(i), 4<<10), time.Time{})
		bytes += 4 << 10
	}
	for i := range big {
		m := storetest.NewMessage(now, "c@remote.test")
		storetest.Enqueue(b, src, m, storetest.Body(uint64(1000+i), 25<<20), time.Time{})
		bytes += 25 << 20
	}
	b.ResetTimer()
	for range b.N {
		_, dsn := pgtest.NewSchema(b)
		dst, err := postgres.Open(context.Background(), dsn, postgres.Options{})
		if err != nil {
			b.Fatal(err)
		}
		runtime.GC()
		var base runtime.MemStats
		runtime.ReadMemStats(&base)
		var peak atomic.Uint64
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			t := time.NewTicker(5 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-stop:
					return
				case <-t.C:
					var ms runtime.MemStats
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
				}
			}
		}()
		start := time.Now()
		counts, err := store.Copy(context.Background(), src, dst, store.CopyOptions{})
		el := time.Since(start)
		close(stop)
		<-done
		if err != nil {
			b.Fatal(err)
		}
		if c := counts[len(counts)-1]; c.Copied != small+big {
			b.Fatalf("copied %+v", c)
		}
		b.ReportMetric(float64(small+big)/el.Seconds(), "msgs/s")
		b.ReportMetric(float64(bytes)/el.Seconds()/1e6, "MB/s")
		b.ReportMetric(float64(peak.Load()-min(peak.Load(), base.HeapInuse))/1e6, "peak-heap-MB")
		dst.Close()
	}
}
