package storetest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// This file drives the queue-depth benchmark of both backends (issue 13:
// enqueue, lease and delete must not slow down as the queue grows). Each
// backend fills its queue with SQL of its own (the queue described at
// PrefillID), then calls RunQueueDepth.

// QueueDepthsEnv names the environment variable listing the queue depths
// to measure, comma-separated ("1000,100000,1000000").
const QueueDepthsEnv = "HERALD_QUEUE_DEPTHS"

// DefaultQueueDepths are the depths measured when QueueDepthsEnv is unset:
// small enough for a casual run.
const DefaultQueueDepths = "1000,100000"

// PrefillBody is the size of a prefilled (and of a fresh) message's body,
// stored inline.
const PrefillBody = 512

// PrefillID returns the queue ID of prefilled message i: "q" and nine
// digits, which store.NewID never produces (it writes upper-case base32).
//
// Both backends prefill the same queue. Message i (1-based) has 1 + i%3
// recipients (two on average), a PrefillBody-byte inline body and an
// accepted event per recipient, and was received up to five days ago. By
// i%20 its recipients are:
//
//   - 0: queued, due a minute ago, but leased by another node
//     ("other-node") until two hours after the fill: a live lease the
//     lease query must pass over;
//   - 1: queued, a scheduled message (send_at one to 25 hours ahead);
//   - otherwise: deferred after 1 to 5 attempts, next attempt one to
//     five hours ahead (retries waiting: most of a large queue).
//
// So no prefilled recipient is leasable while the benchmark runs: what it
// leases are the fresh messages it enqueued, picked by the lease query
// out of a queue of the given depth.
func PrefillID(i int) string { return fmt.Sprintf("q%09d", i) }

// PrefillRecipients returns how many recipients a prefill of n messages
// has.
func PrefillRecipients(n int) int {
	r := 0
	for i := 1; i <= n; i++ {
		r += 1 + i%3
	}
	return r
}

// QueueDepths returns the depths of QueueDepthsEnv, or of def when it is
// unset.
func QueueDepths(tb testing.TB, def string) []int {
	tb.Helper()
	v := os.Getenv(QueueDepthsEnv)
	if v == "" {
		v = def
	}
	var depths []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			tb.Fatalf("%s: bad depth %q", QueueDepthsEnv, f)
		}
		depths = append(depths, n)
	}
	return depths
}

// Queue-depth benchmark parameters: each round enqueues depthRound fresh
// messages with depthWriters concurrent callers (so that group commit
// works as on a busy server), leases them in calls of depthLeaseBatch
// (the scheduler's default worker count) and records their delivered
// outcomes with depthWriters concurrent callers, which deletes them.
const (
	depthRound      = 1000
	depthWriters    = 32
	depthLeaseBatch = 100
)

// RunQueueDepth measures b.N fresh messages through q, in rounds: Enqueue
// (not leased, 1 to 3 recipients, a PrefillBody-byte body), Lease of the
// due messages, and Update with every recipient delivered (which deletes
// the message). Phases do not overlap, so each is timed alone; the queue's
// depth is the same after each round as before. It reports
// enqueue-µs/msg, lease-µs/msg, done-µs/msg (outcome and delete),
// msgs/s over the three and the messages per Lease call. With CPU time
// (cpu returns the CPU used so far by the process, and by the database
// server's processes serving it if any; 0 if unknown), it reports the CPU
// of each phase per message too (enqueue-cpu-µs/msg, lease-cpu-µs/msg,
// done-cpu-µs/msg) and their sum, cpu-µs/msg: unlike wall time, barely
// affected by other load on a shared machine. A leased message
// that is not one of the fresh ones fails the benchmark.
func RunQueueDepth(b *testing.B, q store.Queue, cpu func() time.Duration) {
	ctx := context.Background()
	data := make([]byte, PrefillBody)
	for i := range data {
		data[i] = "abcdefghijklmnopqrstuvwxyz \r\n"[i%29]
	}
	var enq, lease, done time.Duration          // wall time of each phase
	var enqCPU, leaseCPU, doneCPU time.Duration // CPU time of each phase
	var leaseCalls int
	var lastID string
	b.ResetTimer()
	for left := b.N; left > 0; {
		n := min(left, depthRound)
		left -= n
		msgs := make([]*store.Message, n)
		fresh := make(map[string]*store.Message, n)
		for i := range msgs {
			m := &store.Message{ID: store.NewID(), Sender: "sender@example.org", Source: "smtp"}
			for k := 0; k < 1+i%3; k++ {
				m.Recipients = append(m.Recipients, store.Recipient{Address: fmt.Sprintf("rcpt%d-%d@example.com", k, i)})
			}
			msgs[i] = m
			fresh[m.ID] = m
		}

		t, c := time.Now(), cpu()
		parallel(b, n, func(i int) error {
			m := msgs[i]
			m.Received = time.Now()
			body, err := q.NewBody()
			if err != nil {
				return err
			}
			if _, err := body.Write(data); err != nil {
				body.Abort()
				return err
			}
			_, err = q.Enqueue(ctx, m, body, time.Time{})
			return err
		})
		enq, enqCPU = enq+time.Since(t), enqCPU+cpu()-c

		t, c = time.Now(), cpu()
		var leases []store.Lease
		for empty := 0; len(leases) < n; {
			ls, err := q.Lease(ctx, time.Now(), time.Minute, depthLeaseBatch)
			if err != nil {
				b.Fatal(err)
			}
			leaseCalls++
			for _, l := range ls {
				m := fresh[l.Message.ID]
				if m == nil {
					b.Fatalf("leased %s, not a fresh message: the prefill has due recipients", l.Message.ID)
				}
				if len(l.Message.Recipients) != len(m.Recipients) {
					b.Fatalf("lease of %s has %d recipients, want %d", m.ID, len(l.Message.Recipients), len(m.Recipients))
				}
			}
			leases = append(leases, ls...)
			if len(ls) == 0 {
				if empty++; empty > 3 {
					b.Fatalf("leased %d of %d fresh messages", len(leases), n)
				}
				time.Sleep(time.Millisecond)
			}
		}
		lease, leaseCPU = lease+time.Since(t), leaseCPU+cpu()-c

		t, c = time.Now(), cpu()
		parallel(b, len(leases), func(i int) error {
			l := leases[i]
			outcomes := make([]store.Outcome, len(l.Message.Recipients))
			for j, r := range l.Message.Recipients {
				outcomes[j] = store.Outcome{RecipientID: r.ID, Status: store.StatusDelivered,
					Reply: "250 2.0.0 OK queued as 12345", RemoteMTA: "mx.example.com", TLS: "TLSv1.3"}
			}
			return q.Update(ctx, l.Message.ID, l.Token, outcomes)
		})
		done, doneCPU = done+time.Since(t), doneCPU+cpu()-c
		lastID = msgs[n-1].ID
	}
	total := enq + lease + done
	b.StopTimer()
	if _, err := q.Get(ctx, lastID); err == nil {
		b.Fatalf("message %s still queued after its recipients were delivered", lastID)
	}
	per := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(b.N) }
	b.ReportMetric(per(enq), "enqueue-µs/msg")
	b.ReportMetric(per(lease), "lease-µs/msg")
	b.ReportMetric(per(done), "done-µs/msg")
	b.ReportMetric(float64(b.N)/total.Seconds(), "msgs/s")
	b.ReportMetric(float64(b.N)/float64(leaseCalls), "msgs/lease")
	if c := enqCPU + leaseCPU + doneCPU; c > 0 {
		b.ReportMetric(per(enqCPU), "enqueue-cpu-µs/msg")
		b.ReportMetric(per(leaseCPU), "lease-cpu-µs/msg")
		b.ReportMetric(per(doneCPU), "done-cpu-µs/msg")
		b.ReportMetric(per(c), "cpu-µs/msg")
	}
}

// parallel runs fn(0..n-1) on depthWriters goroutines and fails b on the
// first error.
func parallel(b *testing.B, n int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range min(depthWriters, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					once.Do(func() { first = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	if first != nil {
		b.Fatal(first)
	}
}

// CheckPrefill checks a queue prefilled for the queue-depth benchmark (its
// row counts read by the backend): depth messages, their recipients and
// accepted events; nothing due; the next due time about an hour ahead
// (the first retry or the end of another node's lease); a prefilled
// message that reads back, body included.
func CheckPrefill(t *testing.T, q store.Queue, depth int, msgs, rcpts, events int64) {
	t.Helper()
	want := int64(PrefillRecipients(depth))
	if msgs != int64(depth) || rcpts != want || events != want {
		t.Errorf("filled %d messages, %d recipients, %d events; want %d messages, %d recipients and events",
			msgs, rcpts, events, depth, want)
	}
	ctx := context.Background()
	if ls, err := q.Lease(ctx, time.Now(), time.Minute, 10); err != nil || len(ls) != 0 {
		t.Errorf("Lease on the prefill: %d leases, %v; want none", len(ls), err)
	}
	if next, err := q.NextDue(ctx); err != nil || time.Until(next) < 50*time.Minute {
		t.Errorf("NextDue = %v, %v; want about an hour ahead", next, err)
	}
	m, err := q.Get(ctx, PrefillID(2))
	if err != nil || len(m.Recipients) != 3 || m.Recipients[0].Status != "deferred" || m.Size != PrefillBody {
		t.Errorf("Get(%s) = %+v, %v", PrefillID(2), m, err)
	}
	body, err := q.OpenBody(ctx, PrefillID(2))
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
}
