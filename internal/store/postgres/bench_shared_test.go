package postgres

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// BenchmarkShared measures the per-message cost of the state every node
// shares, as the hot paths use it: a rate charge (TakeRate, one statement
// per limited key at the end of DATA), the check at MAIL FROM (RateSlots),
// and a destination's connection for one delivery (AcquireDestination and
// ReleaseDestination). keys=hot has every caller on one key (one account,
// one destination: the advisory lock serialises them), keys=spread gives
// each caller its own. server-cpu-µs/op is the CPU of this benchmark's
// own server processes (found by their application_name in
// pg_stat_activity, read from /proc: the server must run on this
// machine), so that other clients of a shared server do not count.
func BenchmarkShared(b *testing.B) {
	for _, op := range []string{"take-rate", "rate-slots", "destination", "select-1", "update-1"} {
		for _, keys := range []string{"hot", "spread"} {
			for _, callers := range []int{1, 32} {
				if callers == 1 && keys == "spread" {
					continue
				}
				b.Run(fmt.Sprintf("op=%s/keys=%s/callers=%d", op, keys, callers), func(b *testing.B) {
					benchShared(b, op, keys == "hot", callers)
				})
			}
		}
	}
}

func benchShared(b *testing.B, op string, hot bool, callers int) {
	node := "bench-" + randomToken()[:12]
	s := openTest(b, newSchema(b)+"&pool_max_conns=32", Options{Node: node})
	defer s.Close()
	ctx := context.Background()
	lim := ratelimit.Limits{PerMinute: 1 << 30, PerHour: 1 << 30, PerDay: 1 << 30}
	dl := store.DestinationLimits{MaxConnections: 1 << 20, MessagesPerMinute: 1 << 30}
	var seq atomic.Int64
	run := func(key string) error {
		now := time.Now()
		switch op {
		case "take-rate":
			ok, _, err := s.TakeRate(ctx, key, lim, 1, now)
			if err == nil && !ok {
				err = fmt.Errorf("refused")
			}
			return err
		case "rate-slots":
			_, err := s.RateSlots(ctx, key, now)
			return err
		case "select-1":
			_, err := s.pool.Exec(ctx, `SELECT 1`)
			return err
		case "update-1":
			b := asyncBatch()
			b.Queue(`UPDATE rate_windows SET touched = $2 WHERE key = $1`, key, nanos(now))
			return s.runAsync(ctx, b, func(br pgx.BatchResults) error {
				_, err := br.Exec()
				return err
			})
		default:
			g, err := s.AcquireDestination(ctx, key, dl, now, now.Add(time.Minute))
			if err != nil {
				return err
			}
			if !g.OK {
				return fmt.Errorf("refused: %+v", g)
			}
			return s.ReleaseDestination(ctx, key, g.Token)
		}
	}
	// Give the keys some history (a day's slots) first.
	for i := range 64 {
		if _, _, err := s.TakeRate(ctx, fmt.Sprintf("k%d", i%32), lim, 1, time.Now().Add(-time.Duration(i)*20*time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	// Open the pool's connections, so that their processes exist.
	warm := make(chan struct{})
	for range 32 {
		go func() {
			_, _ = s.RateSlots(ctx, "warm", time.Now())
			warm <- struct{}{}
		}()
	}
	for range 32 {
		<-warm
	}
	own := func() cpuSnapshot {
		pids := map[int]bool{}
		rows, err := s.pool.Query(ctx, `SELECT pid FROM pg_stat_activity WHERE application_name LIKE $1`, appName(node, "")+"%")
		if err == nil {
			for rows.Next() {
				var pid int32
				if rows.Scan(&pid) == nil {
					pids[int(pid)] = true
				}
			}
			rows.Close()
		}
		snap := serverCPU()
		for pid := range snap {
			if !pids[pid] {
				delete(snap, pid)
			}
		}
		return snap
	}
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu, srv := time.Now(), processCPU(), own()
	b.SetParallelism(max(1, callers/runtime.GOMAXPROCS(0)))
	b.RunParallel(func(pb *testing.PB) {
		key := "k0"
		if !hot {
			key = fmt.Sprintf("k%d", seq.Add(1)%32)
		}
		for pb.Next() {
			if err := run(key); err != nil {
				b.Error(err)
				return
			}
		}
	})
	el := time.Since(start)
	b.ReportMetric(float64(b.N)/el.Seconds(), "ops/s")
	if c := processCPU() - cpu; c > 0 {
		b.ReportMetric(float64(c.Microseconds())/float64(b.N), "cpu-µs/op")
	}
	if c := own().Sub(srv); c > 0 {
		b.ReportMetric(float64(c.Microseconds())/float64(b.N), "server-cpu-µs/op")
	}
}
