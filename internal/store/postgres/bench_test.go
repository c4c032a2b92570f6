package postgres

import (
	"context"
	"fmt"
	"io"
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
	"github.com/heraldmail/herald/internal/testutil/pgtest"
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

// BenchmarkCycle measures the store's share of one relayed message as a
// node makes it, from acceptance to delivery: the acceptance reads (the
// account, the DKIM keys of the sender's domain, the recipient's
// suppression), Enqueue leased for the direct hand-off, OpenBody and the
// delivered outcome (which deletes the message), with 20 and 100 messages
// in flight and a 4 KiB text body. server-cpu-µs/msg counts the backends
// of this handle only (pg_stat_activity by application_name).
func BenchmarkCycle(b *testing.B) {
	for _, inflight := range []int{20, 100} {
		b.Run(fmt.Sprintf("inflight=%d", inflight), func(b *testing.B) { benchCycle(b, inflight) })
	}
}

func benchCycle(b *testing.B, inflight int) {
	ctx := context.Background()
	node := "cycle-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	s := openTest(b, newSchema(b)+"&pool_max_conns=16", Options{Node: node})
	defer s.Close()
	if err := s.AddDKIMKey(ctx, store.DKIMKey{Domain: "example.org", Selector: "s1", Algorithm: "ed25519",
		PrivateKey: []byte("key"), Active: true}); err != nil {
		b.Fatal(err)
	}
	line := []byte("The quick brown fox jumps over the lazy dog, again and again, 0123456789.\r\n")
	var data []byte
	for len(data) < 4<<10 {
		data = append(data, line...)
	}
	cycle := func(id string) error {
		if _, err := s.GetAccount(ctx, store.DefaultAccount); err != nil {
			return err
		}
		if _, err := s.ActiveDKIMKeys(ctx, "example.org"); err != nil {
			return err
		}
		if _, err := s.IsSuppressed(ctx, store.DefaultAccount, "rcpt@example.com"); err != nil {
			return err
		}
		m := &store.Message{ID: id, Sender: "sender@example.org", Received: time.Now(), Source: "smtp",
			Recipients: []store.Recipient{{Address: "rcpt@example.com"}}}
		body, err := s.NewBody()
		if err != nil {
			return err
		}
		if _, err := body.Write(data); err != nil {
			body.Abort()
			return err
		}
		token, err := s.Enqueue(ctx, m, body, time.Now().Add(time.Minute))
		if err != nil {
			return err
		}
		r, err := s.OpenBody(ctx, id)
		if err != nil {
			return err
		}
		if n, err := io.Copy(io.Discard, r); err != nil || n != int64(len(data)) {
			return fmt.Errorf("body: %d bytes, %v", n, err)
		}
		r.Close()
		return s.Update(ctx, id, token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered,
			Reply: "250 2.0.0 ok", RemoteMTA: "mx.example.com"}})
	}
	backends := func() cpuSnapshot {
		pids := pgtest.Query[string](b, `SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity WHERE application_name LIKE $1`,
			"herald "+node+"%")
		snap, all := cpuSnapshot{}, serverCPU()
		for _, p := range strings.Split(pids, ",") {
			if pid, err := strconv.Atoi(p); err == nil {
				snap[pid] = all[pid]
			}
		}
		return snap
	}
	var seq atomic.Int64
	b.SetParallelism(max(1, inflight/runtime.GOMAXPROCS(0)))
	b.ReportAllocs()
	b.ResetTimer()
	start, cpu, srv := time.Now(), processCPU(), backends()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := cycle("C" + strconv.FormatInt(seq.Add(1), 10)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if c := processCPU() - cpu; c > 0 {
		b.ReportMetric(float64(c.Microseconds())/float64(b.N), "cpu-µs/msg")
	}
	if c := backends().Sub(srv); c > 0 {
		b.ReportMetric(float64(c.Microseconds())/float64(b.N), "server-cpu-µs/msg")
	}
}
