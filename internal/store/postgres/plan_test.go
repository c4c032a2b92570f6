package postgres

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// seedQueue fills s with n messages (three recipients each, a tenth
// delivered, a third deferred up to two hours ahead, a tenth leased by
// other nodes), two events per message, a webhook with pending deliveries,
// and chunked bodies, then ANALYZEs, so that the planner sees a queue
// the size of a busy node's.
func seedQueue(t *testing.T, s *Store, n int, now int64) {
	t.Helper()
	ctx := context.Background()
	for _, q := range []string{
		`INSERT INTO messages (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, body_id, body)
			SELECT 'P' || lpad(i::text, 10, '0'), 's@example.org', $1 - (i::bigint * 1000000000), 4096, '', '', '', '', '', 'smtp',
				false, CASE WHEN i % 50 = 0 THEN i END, CASE WHEN i % 50 <> 0 THEN '\x00'::bytea END
			FROM generate_series(1, $2::int) i`,
		`INSERT INTO recipients (message_id, address, notify, orcpt, status, attempts, next_attempt, lease_until, lease_owner,
				lease_token, updated_at)
			SELECT 'P' || lpad(i::text, 10, '0'), 'r' || k || '-' || i || '@example.com', '', '',
				CASE WHEN i % 10 = 0 THEN 'delivered' WHEN i % 3 = 0 THEN 'deferred' ELSE 'queued' END, i % 3,
				CASE WHEN i % 3 = 0 THEN $1 + (i % 7200)::bigint * 1000000000 ELSE $1 - i::bigint * 1000000000 END,
				CASE WHEN i % 10 = 1 THEN $1 + 60000000000 ELSE 0 END,
				CASE WHEN i % 10 = 1 THEN 'other' ELSE '' END,
				CASE WHEN i % 10 = 1 THEN md5(i::text) ELSE '' END, $1
			FROM generate_series(1, $2::int) i, generate_series(1, 3) k`,
		`INSERT INTO events (time, type, account, message_id, recipient, sender)
			SELECT $1, t, 'default', 'P' || lpad(i::text, 10, '0'), 'r1-' || i || '@example.com', 's@example.org'
			FROM generate_series(1, $2::int) i, unnest(ARRAY['accepted', 'delivered']) t`,
		`INSERT INTO webhooks (id, account, url, secret, event_types, created)
			SELECT 'h1', 'acme', 'https://hooks.example/', 's', '', $1 WHERE $2::int > 0`,
		`INSERT INTO webhook_deliveries (webhook_id, event_id, status, next_attempt)
			SELECT 'h1', id, CASE WHEN id % 20 = 0 THEN 'pending' ELSE 'delivered' END, time FROM events WHERE $2::int > 0 AND $1::bigint > 0`,
		`INSERT INTO body_chunks (body_id, seq, data)
			SELECT i, k, '\x00'::bytea FROM generate_series(50, $2::int, 50) i, generate_series(0, 9) k WHERE $1::bigint > 0`,
	} {
		if _, err := s.pool.Exec(ctx, q, now, n); err != nil {
			t.Fatalf("seed: %v\n%s", err, q)
		}
	}
	if _, err := s.pool.Exec(ctx, `ANALYZE`); err != nil {
		t.Fatal(err)
	}
}

// explain returns EXPLAIN (ANALYZE, BUFFERS) of q run with args, inside a
// transaction that is rolled back.
func explain(t testing.TB, s *Store, q string, args ...any) string {
	t.Helper()
	ctx := context.Background()
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	rows, err := tx.Query(ctx, `EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) `+q, args...)
	if err != nil {
		t.Fatalf("EXPLAIN: %v\n%s", err, q)
	}
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(lines, "\n")
}

// The hot statements are driven by indexes on a queue of realistic size:
// no sequential scan of recipients, messages, events, webhook deliveries
// or body chunks. HERALD_PLAN_MESSAGES sets the queue's size (default
// 20,000 messages, 60,000 recipients); run with -v to see the plans.
func TestHotQueryPlans(t *testing.T) {
	t.Parallel()
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("HERALD_PLAN_MESSAGES")); err == nil && v > 0 {
		n = v
	}
	s := openFresh(t, Options{})
	now := time.Now().UnixNano()
	seedQueue(t, s, n, now)
	due := []string{"P0000000002", "P0000000004"}
	rid := count(t, s, `SELECT min(id) FROM recipients WHERE message_id = 'P0000000002'`)
	tokens := []string{"t1", "t2"}
	later := now + int64(time.Minute)
	plans := []struct {
		name  string
		q     string
		args  []any
		index string
	}{
		{"enqueue", enqueueSQL, []any{"Q1", "s@example.org", now, int64(4096), "", "", "192.0.2.1", "client.example", "",
			"smtp", false, "default", "", "", []byte{}, nil, make([]byte, 4096), []string{"a@example.com"}, []string{""}, []string{""},
			int64(0), "", "", now, int32(0), nil, false, "", int64(0)}, "Insert on recipients"},
		{"lease candidates", leaseCandidatesSQL, []any{now, 400, 100, []string{}}, "recipients_ready"},
		{"lease", leaseSQL, []any{due, tokens, later, "node-a", now}, "recipients_message"},
		{"update: lock", lockMessageSQL, []any{"P0000000002"}, "messages_pkey"},
		{"update", updateSQL, []any{"P0000000002", []int64{rid}, []string{"delivered"}, []int32{1}, []int64{0}, []string{"250 ok"},
			[]string{"mx.example.com"}, []bool{false}, []string{""}, []string{"2.0.0"}, []string{""}, []string{"delivered"}, now, ""},
			"recipients_pkey"},
		{"update: delete when done", deleteDoneSQL, []any{"P0000000010"}, "recipients_message"},
		{"next due", `SELECT min(` + readySQL + `) FROM recipients r WHERE ` + pendingSQL, nil, "recipients_ready"},
		{"renew", `UPDATE recipients r SET lease_until = GREATEST(r.lease_until, $3)
			WHERE r.message_id = $1 AND r.lease_token = $2 AND ` + pendingSQL, []any{"P0000000001", "x", later}, "recipients_message"},
		{"body chunk", `SELECT data FROM body_chunks WHERE body_id = $1 AND seq = $2`, []any{int64(50), int32(3)}, "body_chunks_pkey"},
		{"webhook lease", `SELECT d.id FROM webhook_deliveries d
			WHERE d.status = 'pending' AND GREATEST(d.next_attempt, d.lease_until + 1) <= $1
			ORDER BY GREATEST(d.next_attempt, d.lease_until + 1) LIMIT $2 FOR UPDATE SKIP LOCKED`, []any{now, 50},
			"webhook_deliveries_ready"},
	}
	for _, p := range plans {
		plan := explain(t, s, p.q, p.args...)
		t.Logf("%s:\n%s", p.name, plan)
		if !strings.Contains(plan, p.index) {
			t.Errorf("%s: plan does not use %s:\n%s", p.name, p.index, plan)
		}
		for _, table := range []string{"recipients", "messages", "events", "webhook_deliveries", "body_chunks"} {
			if strings.Contains(plan, "Seq Scan on "+table+" ") || strings.HasSuffix(plan, "Seq Scan on "+table) {
				t.Errorf("%s: sequential scan of %s:\n%s", p.name, table, plan)
			}
		}
	}
}
