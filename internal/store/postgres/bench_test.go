package postgres

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// BenchmarkEnqueue measures durable acceptance as the SQLite store's
// benchmark does: NewBody, write the body, Enqueue one recipient (with its
// accepted event), with 1 to 128 concurrent writers. mode=group is the
// store as built (one writer goroutine commits concurrent enqueues
// together); mode=own gives each enqueue its own transaction on a pool of
// 64 connections, leaving the sharing of WAL flushes to PostgreSQL. CPU is
// that of the test process; the server's is reported as server-cpu-µs/msg
// (from /proc, when the server runs on this machine).
func BenchmarkEnqueue(b *testing.B) {
	for _, size := range []int{4 << 10, 100 << 10} {
		for _, mode := range []string{"group", "own"} {
			for _, writers := range []int{1, 8, 32, 128} {
				if size > 4<<10 && mode == "own" {
					continue
				}
				b.Run(fmt.Sprintf("body=%dKiB/mode=%s/writers=%d", size>>10, mode, writers), func(b *testing.B) {
					benchEnqueue(b, size, writers, mode == "own")
				})
			}
		}
	}
}

func benchEnqueue(b *testing.B, size, writers int, ownTx bool) {
	dsn := newSchema(b) + "&pool_max_conns=64"
	s := openTest(b, dsn, Options{})
	s.ownTx = ownTx
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
	start, cpu, srv := time.Now(), processCPU(), serverCPU()
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
	if c := serverCPU().Sub(srv); c > 0 {
		b.ReportMetric(float64(c.Microseconds())/float64(b.N), "server-cpu-µs/msg")
	}
}

// processCPU returns the CPU time (user and system) used by the process so
// far, or 0 if unknown.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverCPU returns a snapshot of the CPU time of the local PostgreSQL
// server's processes (Linux /proc; empty elsewhere).
func serverCPU() cpuSnapshot {
	snap := cpuSnapshot{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		raw, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ... utime stime are fields 14 and 15.
		s := string(raw)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open || s[open+1:end] != "postgres" {
			continue
		}
		f := strings.Fields(s[end+1:])
		if len(f) < 13 {
			continue
		}
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		st, _ := strconv.ParseInt(f[12], 10, 64)
		snap[pid] = time.Duration(ut+st) * time.Second / 100 // USER_HZ
	}
	return snap
}

// cpuSnapshot maps server processes to their CPU time.
type cpuSnapshot map[int]time.Duration

// Sub returns the CPU the server used since old: the growth of processes
// that still exist, and all of those started since.
func (s cpuSnapshot) Sub(old cpuSnapshot) time.Duration {
	var d time.Duration
	for pid, t := range s {
		d += t - old[pid]
	}
	return d
}
