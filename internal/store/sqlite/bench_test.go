package sqlite

import (
	"context"
	"fmt"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// BenchmarkEnqueue measures durable acceptance: NewBody, write the body,
// Enqueue one recipient, with 1 to 128 concurrent writers. The data
// directory is under the test's temporary directory, so run it on the disk
// the server will use.
func BenchmarkEnqueue(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		for _, writers := range []int{1, 8, 32, 128} {
			b.Run(fmt.Sprintf("body=%dKiB/writers=%d", size>>10, writers), func(b *testing.B) {
				benchEnqueue(b, size, writers)
			})
		}
	}
}

func benchEnqueue(b *testing.B, size, writers int) {
	s := openTest(b, b.TempDir(), Options{})
	defer s.Close()
	data := storetest.Body(1, size)
	var seq atomic.Int64
	enqueue := func(rcpt []store.Recipient) error {
		m := &store.Message{
			ID:         "B" + strconv.FormatInt(seq.Add(1), 10),
			Sender:     "sender@example.org",
			Received:   time.Now(),
			Source:     "smtp",
			Recipients: rcpt,
		}
		m.Recipients[0].ID = 0
		body, err := s.NewBody()
		if err != nil {
			return err
		}
		if _, err := body.Write(data); err != nil {
			body.Abort()
			return err
		}
		_, err = s.Enqueue(context.Background(), m, body, time.Time{})
		return err
	}
	b.SetBytes(int64(size))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu := time.Now(), processCPU()
	if writers == 1 {
		rcpt := []store.Recipient{{Address: "rcpt@example.com"}}
		for i := 0; i < b.N; i++ {
			if err := enqueue(rcpt); err != nil {
				b.Fatal(err)
			}
		}
	} else {
		b.SetParallelism(max(1, writers/runtime.GOMAXPROCS(0)))
		b.RunParallel(func(pb *testing.PB) {
			rcpt := []store.Recipient{{Address: "rcpt@example.com"}}
			for pb.Next() {
				if err := enqueue(rcpt); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if c := processCPU() - cpu; c > 0 {
		b.ReportMetric(float64(c.Microseconds())/float64(b.N), "cpu-µs/msg")
	}
}

// BenchmarkShared measures the in-memory rate charge and destination
// connection (acquire and release) of the embedded store, the per-message
// cost the SQLite store adds where PostgreSQL runs one statement.
func BenchmarkShared(b *testing.B) {
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	lim := ratelimit.Limits{PerMinute: 1 << 30, PerHour: 1 << 30, PerDay: 1 << 30}
	b.Run("op=take-rate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if ok, _, err := s.TakeRate(ctx, "account:a", lim, 1, time.Now()); err != nil || !ok {
				b.Fatal(ok, err)
			}
		}
	})
	b.Run("op=destination", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			now := time.Now()
			g, err := s.AcquireDestination(ctx, "gmail.com", store.DestinationLimits{MaxConnections: 1 << 20, MessagesPerMinute: 1 << 30}, now, now.Add(time.Minute))
			if err != nil || !g.OK {
				b.Fatal(g, err)
			}
			if err := s.ReleaseDestination(ctx, "gmail.com", g.Token); err != nil {
				b.Fatal(err)
			}
		}
	})
}
