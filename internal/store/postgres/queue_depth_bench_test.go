package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// The cost of the queue's hot path as the queue grows (issue 13), as in
// the SQLite store's queue_depth_bench_test.go: BenchmarkQueueDepth
// prefills a queue of each depth of HERALD_QUEUE_DEPTHS (default 1000 and
// 100,000 messages) and measures enqueue, lease and outcome-with-delete of
// fresh messages through it; TestQueueDepthPlans checks, at each depth,
// that no statement of that path reads the recipients, messages or events
// table sequentially. Run with
//
//	HERALD_QUEUE_DEPTHS=1000,100000,1000000 go test -run '^$' -bench BenchmarkQueueDepth -benchtime 5000x -v ./internal/store/postgres

// fillSQL prefills the queue as storetest.PrefillID describes: $1
// messages at time $2 (Unix ns) with body $3, from generate_series, in
// queue ID order.
var fillSQL = []string{
	`INSERT INTO messages (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8,
		account, tags, metadata, headers, body_id, body, batch_id, send_at)
	SELECT 'q' || lpad(i::text, 9, '0'), 'sender' || (i % 1000) || '@example.org', $2 - (60 + i % 432000)::bigint * 1000000000,
		length($3::bytea), '', '', '192.0.2.' || (1 + i % 250), 'client.example.org', '', 'smtp', false, 'default', '', '', '\x'::bytea,
		NULL, $3::bytea, '', CASE WHEN i % 20 = 1 THEN $2 + (3600 + i % 86400)::bigint * 1000000000 ELSE 0 END
	FROM generate_series(1, $1::int) i`,
	`INSERT INTO recipients (message_id, address, notify, orcpt, status, attempts, next_attempt,
		lease_until, lease_owner, lease_token, last_reply, remote_mta, delay_warned, updated_at)
	SELECT 'q' || lpad(i::text, 9, '0'), 'rcpt' || k || '-' || i || '@' || CASE i % 4 WHEN 0 THEN 'gmail.com' WHEN 1 THEN 'yahoo.com'
			WHEN 2 THEN 'outlook.com' ELSE 'example' || (i % 5000) || '.net' END, '', '',
		CASE WHEN i % 20 < 2 THEN 'queued' ELSE 'deferred' END,
		CASE WHEN i % 20 < 2 THEN 0 ELSE 1 + i % 5 END,
		CASE i % 20 WHEN 0 THEN $2 - 60000000000
			WHEN 1 THEN $2 + (3600 + i % 86400)::bigint * 1000000000
			ELSE $2 + (3600 + (i::bigint * 7919) % 14400) * 1000000000 END,
		CASE WHEN i % 20 = 0 THEN $2 + 7200000000000 ELSE 0 END,
		CASE WHEN i % 20 = 0 THEN 'other-node' ELSE '' END,
		CASE WHEN i % 20 = 0 THEN 'token' || lpad(i::text, 21, '0') ELSE '' END,
		CASE WHEN i % 20 < 2 THEN '' ELSE '451 4.7.1 Try again later' END,
		CASE WHEN i % 20 < 2 THEN '' ELSE 'mx.example.net' END,
		false, $2
	FROM generate_series(1, $1::int) i, generate_series(1, 1 + i % 3) k
	WHERE length($3::bytea) >= 0`,
	`INSERT INTO events (time, type, account, message_id, recipient, sender)
	SELECT m.received, 'accepted', m.account, r.message_id, r.address, m.sender
	FROM recipients r JOIN messages m ON m.id = r.message_id
	WHERE $1::int > 0 AND $2::bigint > 0 AND length($3::bytea) >= 0 ORDER BY r.id`,
}

// fillQueue prefills the empty store s with n messages, then VACUUM
// ANALYZEs the queue's tables (autovacuum would, on a server), and returns
// how long it took.
func fillQueue(tb testing.TB, s *Store, n int, now int64) time.Duration {
	tb.Helper()
	ctx := context.Background()
	start := time.Now()
	body := []byte(strings.Repeat("x", storetest.PrefillBody))
	for _, q := range fillSQL {
		if _, err := s.pool.Exec(ctx, q, n, now, body); err != nil {
			tb.Fatalf("fill: %v\n%s", err, q)
		}
	}
	if _, err := s.pool.Exec(ctx, `VACUUM (ANALYZE) messages, recipients, events`); err != nil {
		tb.Fatal(err)
	}
	return time.Since(start)
}

// depthPlans enqueues 100 fresh messages in s (as the benchmark does),
// EXPLAINs (ANALYZE, BUFFERS) the statements every message goes through,
// each in a transaction rolled back, fails tb when one reads the
// recipients, messages or events table sequentially, then delivers the
// fresh messages (which deletes them), and returns the plans as text.
func depthPlans(tb testing.TB, s *Store, depth int) string {
	tb.Helper()
	ctx := context.Background()
	var fresh []*store.Message
	for i := range 100 {
		m := &store.Message{ID: store.NewID(), Sender: "sender@example.org", Received: time.Now(), Source: "smtp"}
		for k := 0; k < 1+i%3; k++ {
			m.Recipients = append(m.Recipients, store.Recipient{Address: fmt.Sprintf("p%d-%d@example.com", k, i)})
		}
		b, err := s.NewBody()
		if err != nil {
			tb.Fatal(err)
		}
		b.Write(make([]byte, storetest.PrefillBody))
		if _, err := s.Enqueue(ctx, m, b, time.Time{}); err != nil {
			tb.Fatal(err)
		}
		fresh = append(fresh, m)
	}
	now := time.Now().UnixNano()
	later := now + int64(time.Minute)
	ids := []string{fresh[0].ID, fresh[1].ID}
	rid := fresh[1].Recipients[0].ID
	plans := []struct {
		name  string
		q     string
		args  []any
		index string
	}{
		{"enqueue", enqueueSQL, []any{"Qplan", "s@example.org", now, int64(512), "", "", "192.0.2.1", "client.example", "",
			"smtp", false, "default", "", "", []byte{}, nil, make([]byte, 512), []string{"a@example.com"}, []string{""}, []string{""},
			int64(0), "", "", now, int32(0), nil, false, "", int64(0)}, "Insert on recipients"},
		{"lease: candidates", leaseCandidatesSQL, []any{now, 400, 100, []string{}}, "recipients_ready"},
		{"lease: recipients", leaseSQL, []any{ids, []string{"t1", "t2"}, later, "node-a", now}, "recipients_message"},
		{"lease: messages", leaseMessagesSQL, []any{ids}, "messages_pkey"},
		{"renew", renewSQL, []any{fresh[0].ID, "x", later}, "recipients_message"},
		{"outcome: lock", lockMessageSQL, []any{fresh[1].ID}, "messages_pkey"},
		{"outcome", updateSQL, []any{fresh[1].ID, []int64{rid}, []string{"delivered"}, []int32{1}, []int64{0}, []string{"250 ok"},
			[]string{"mx.example.com"}, []bool{false}, []string{""}, []string{"2.0.0"}, []string{""}, []string{"delivered"}, now, ""},
			"recipients_pkey"},
		{"delete when done", deleteDoneSQL, []any{fresh[2].ID}, "recipients_message"},
		{"next due", nextDueSQL, nil, "recipients_ready"},
	}
	// The deletion is explained after the outcome that makes every
	// recipient of its message final, as Update runs them.
	done := fresh[2]
	var rids []int64
	var sts, strs []string
	var incs []int32
	var nexts []int64
	var dws []bool
	for _, r := range done.Recipients {
		rids, sts, incs, nexts, strs, dws = append(rids, r.ID), append(sts, "delivered"), append(incs, 1), append(nexts, 0),
			append(strs, ""), append(dws, false)
	}
	doneOutcome := []any{done.ID, rids, sts, incs, nexts, strs, strs, dws, strs, strs, strs, sts, now, ""}
	var out strings.Builder
	fmt.Fprintf(&out, "query plans at depth %d:", depth)
	for _, p := range plans {
		var plan string
		if p.q == deleteDoneSQL {
			plan = explainAfter(tb, s, updateSQL, doneOutcome, p.q, p.args...)
		} else {
			plan = explain(tb, s, p.q, p.args...)
		}
		fmt.Fprintf(&out, "\n%s:\n%s", p.name, plan)
		if !strings.Contains(plan, p.index) {
			tb.Errorf("%s: plan does not use %s:\n%s", p.name, p.index, plan)
		}
		for _, table := range []string{"recipients", "messages", "events"} {
			if strings.Contains(plan, "Seq Scan on "+table+" ") || strings.Contains(plan, "Seq Scan on "+table+"\n") ||
				strings.HasSuffix(plan, "Seq Scan on "+table) {
				tb.Errorf("%s: sequential scan of %s:\n%s", p.name, table, plan)
			}
		}
	}
	ls, err := s.Lease(ctx, time.Now(), time.Minute, 200)
	if err != nil {
		tb.Fatal(err)
	}
	for _, l := range ls {
		var outcomes []store.Outcome
		for _, r := range l.Message.Recipients {
			outcomes = append(outcomes, store.Outcome{RecipientID: r.ID, Status: store.StatusDelivered})
		}
		if err := s.Update(ctx, l.Message.ID, l.Token, outcomes); err != nil {
			tb.Fatal(err)
		}
	}
	if len(ls) != len(fresh) {
		tb.Fatalf("leased %d messages after the plans, want the %d fresh ones", len(ls), len(fresh))
	}
	return out.String()
}

// explainAfter returns EXPLAIN (ANALYZE, BUFFERS) of q run with args after
// the statement before, in one transaction that is rolled back.
func explainAfter(tb testing.TB, s *Store, before string, beforeArgs []any, q string, args ...any) string {
	tb.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, before, beforeArgs...); err != nil {
		tb.Fatalf("%v\n%s", err, before)
	}
	rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) `+q, args...)
	if err != nil {
		tb.Fatalf("EXPLAIN: %v\n%s", err, q)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		tb.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// ownCPU returns a function giving the CPU time of this process and of
// the server processes of node's connections (found by their
// application_name; the server must run on this machine), so that the
// other clients of a shared server do not count.
func ownCPU(tb testing.TB, node string) func() time.Duration {
	return func() time.Duration {
		pids := pgtest.Query[string](tb, `SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity
			WHERE application_name LIKE $1`, appName(node, "")+"%")
		all := serverCPU()
		d := processCPU()
		for _, p := range strings.Split(pids, ",") {
			if pid, err := strconv.Atoi(p); err == nil {
				d += all[pid]
			}
		}
		return d
	}
}

// BenchmarkQueueDepth measures, for each depth of HERALD_QUEUE_DEPTHS,
// fresh messages through a queue prefilled with that many messages (see
// storetest.PrefillID and storetest.RunQueueDepth): enqueue-µs/msg,
// lease-µs/msg, done-µs/msg (delivered outcome and delete), msgs/s, the
// CPU of each phase (this process and its server backends), and fill-s,
// the time the prefill took (VACUUM ANALYZE included). Use -benchtime
// Nx: each run goes through N fresh messages, and the depth stays the
// same. The query plans of each depth are logged (-v shows them all).
func BenchmarkQueueDepth(b *testing.B) {
	for _, depth := range storetest.QueueDepths(b, storetest.DefaultQueueDepths) {
		node := "depth-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		_, dsn := pgtest.NewSchema(b)
		s := openTest(b, dsn, Options{Node: node})
		fill := fillQueue(b, s, depth, time.Now().UnixNano())
		plans := depthPlans(b, s, depth)
		logged := false
		b.Run(fmt.Sprintf("depth=%d", depth), func(b *testing.B) {
			if !logged {
				b.Logf("filled in %v; %s", fill.Round(time.Millisecond), plans)
				logged = true
			}
			storetest.RunQueueDepth(b, s, ownCPU(b, node))
			b.ReportMetric(fill.Seconds(), "fill-s")
		})
		s.Close()
	}
}

// TestQueueDepthPlans checks the plans of the hot statements on prefilled
// queues: of 1000 messages, or of each depth of HERALD_QUEUE_DEPTHS when
// it is set (opt-in: a million messages take a while to fill). Run with
// -v to see them.
func TestQueueDepthPlans(t *testing.T) {
	t.Parallel()
	for _, depth := range storetest.QueueDepths(t, "1000") {
		t.Run(fmt.Sprintf("depth=%d", depth), func(t *testing.T) {
			s := openFresh(t, Options{})
			fill := fillQueue(t, s, depth, time.Now().UnixNano())
			t.Logf("filled in %v", fill.Round(time.Millisecond))
			msgs, rcpts, events := count(t, s, `SELECT count(*) FROM messages`),
				count(t, s, `SELECT count(*) FROM recipients`), count(t, s, `SELECT count(*) FROM events`)
			t.Log(depthPlans(t, s, depth)) // it enqueues and delivers messages of its own
			storetest.CheckPrefill(t, s, depth, msgs, rcpts, events)
		})
	}
}
