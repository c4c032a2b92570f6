package postgres

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// count returns a count(*) query's result in the store's schema.
func count(t *testing.T, s *Store, q string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := s.pool.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}

// A schema written by a newer Herald is refused with a typed error that
// names both versions, and is left as it was.
func TestOpenRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	dsn := newSchema(t)
	s := openTest(t, dsn, Options{})
	if _, err := s.pool.Exec(context.Background(), `UPDATE schema_version SET version = 99`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(context.Background(), dsn, Options{Logger: slog.New(slog.DiscardHandler)})
	var tooNew *SchemaTooNewError
	if !errors.As(err, &tooNew) || tooNew.Version != 99 || tooNew.Supported != SchemaVersion() {
		t.Fatalf("Open: %v, want SchemaTooNewError 99 > %d", err, SchemaVersion())
	}
	if v := pgtest.Query[int32](t, `SELECT version FROM `+pgx.Identifier{searchPath(t, dsn)}.Sanitize()+`.schema_version`); v != 99 {
		t.Errorf("schema version after the refused Open: %d, want 99 untouched", v)
	}
}

// searchPath returns the schema dsn selects.
func searchPath(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return cfg.RuntimeParams["search_path"]
}

// Nodes starting together on an empty schema create it once: every Open
// succeeds and exactly one says it created the store.
func TestConcurrentOpenMigratesOnce(t *testing.T) {
	t.Parallel()
	dsn := newSchema(t)
	const n = 4
	var wg sync.WaitGroup
	stores := make([]*Store, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			stores[i], errs[i] = Open(context.Background(), dsn, Options{Logger: slog.New(slog.DiscardHandler)})
		})
	}
	wg.Wait()
	created := 0
	for i, s := range stores {
		if errs[i] != nil {
			t.Fatalf("Open %d: %v", i, errs[i])
		}
		defer s.Close()
		if s.Created() {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d handles created the schema, want 1", created)
	}
	if v := count(t, stores[0], `SELECT version::bigint FROM schema_version`); v != int64(SchemaVersion()) {
		t.Errorf("schema version %d, want %d", v, SchemaVersion())
	}
}

// NoCreate refuses a schema without a store and creates nothing in it.
func TestOpenNoCreate(t *testing.T) {
	t.Parallel()
	name, dsn := pgtest.NewSchema(t)
	_, err := Open(context.Background(), dsn, Options{NoCreate: true, Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrNoStore) {
		t.Fatalf("Open NoCreate on an empty schema: %v, want ErrNoStore", err)
	}
	if n := pgtest.Query[int64](t, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, name); n != 0 {
		t.Errorf("NoCreate created %d tables", n)
	}
	s := openTest(t, dsn, Options{})
	s.Close()
	s = openTest(t, dsn, Options{NoCreate: true})
	defer s.Close()
	if s.Created() {
		t.Error("NoCreate on an existing store says it created it")
	}
}

// A database nobody listens for is ErrUnavailable, quickly, with no
// password in the message.
func TestOpenUnavailable(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = Open(context.Background(), "postgres://herald:s3cret@"+addr+"/herald?connect_timeout=5", Options{Logger: slog.New(slog.DiscardHandler)})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Open of a closed port: %v, want ErrUnavailable", err)
	}
	if bytes.Contains([]byte(err.Error()), []byte("s3cret")) {
		t.Errorf("error shows the password: %v", err)
	}
}

// A server or URL with synchronous_commit off still gets durable commits
// from the store: every session turns it back on.
func TestSynchronousCommitForced(t *testing.T) {
	t.Parallel()
	s := openTest(t, newSchema(t)+"&synchronous_commit=off", Options{})
	defer s.Close()
	var pool string
	if err := s.pool.QueryRow(context.Background(), `SHOW synchronous_commit`).Scan(&pool); err != nil {
		t.Fatal(err)
	}
	var writer string
	err := s.w.do(context.Background(), false, func(pb *pgx.Batch) {
		pb.Queue(`SHOW synchronous_commit`)
	}, func(br pgx.BatchResults) error {
		return br.QueryRow().Scan(&writer)
	})
	if err != nil {
		t.Fatal(err)
	}
	if pool != "on" || writer != "on" {
		t.Errorf("synchronous_commit: pool %q, writer %q; want on", pool, writer)
	}
}

// pumpBody writes n deterministic bytes to b in writes of 32 KiB and
// returns their SHA-256; check runs after every write.
func pumpBody(t *testing.T, b store.Body, n int, check func(written int)) []byte {
	t.Helper()
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for written := 0; written < n; {
		k := min(len(buf), n-written)
		for i := range buf[:k] {
			buf[i] = byte((written + i) * 7 / 3)
		}
		h.Write(buf[:k])
		if _, err := b.Write(buf[:k]); err != nil {
			t.Fatalf("Write at %d: %v", written, err)
		}
		written += k
		if check != nil {
			check(written)
		}
	}
	return h.Sum(nil)
}

// heapSampler records the largest heap in use seen by Sample.
type heapSampler struct {
	base, peak uint64
}

func newHeapSampler() *heapSampler {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return &heapSampler{base: ms.HeapAlloc, peak: ms.HeapAlloc}
}

func (h *heapSampler) Sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.peak = max(h.peak, ms.HeapAlloc)
}

// growth is the peak heap above the start, in bytes.
func (h *heapSampler) growth() uint64 { return h.peak - h.base }

// A 25 MB message streams both ways: chunks reach the database while the
// body is written (at most one chunk in memory), the last with the
// enqueue, and they are read back one at a time. The heap never grows by
// anything near the message's size. (Not parallel: the heap is measured.)
func TestLargeBodyStreams(t *testing.T) {
	const size = 25 << 20
	s := openFresh(t, Options{})
	ctx := context.Background()
	heap := newHeapSampler()
	b, err := s.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	bd := b.(*body)
	sum := pumpBody(t, b, size, func(written int) {
		if len(bd.buf) > s.chunkSize || cap(bd.buf) > s.chunkSize {
			t.Fatalf("body buffers %d bytes (cap %d), more than a chunk", len(bd.buf), cap(bd.buf))
		}
		// Every full chunk that more bytes followed is in the database.
		if want := int64((written - 1) / s.chunkSize); written%(1<<20) == 0 && count(t, s, `SELECT count(*) FROM body_chunks WHERE body_id = $1`, bd.id) != want {
			t.Fatalf("after %d bytes, %d chunks stored, want %d", written, count(t, s, `SELECT count(*) FROM body_chunks WHERE body_id = $1`, bd.id), want)
		}
		heap.Sample()
	})
	if count(t, s, `SELECT count(*) FROM pending_bodies WHERE id = $1`, bd.id) != 1 {
		t.Fatal("a body with chunks written is not registered as pending")
	}
	m := storetest.NewMessage(t0, "a@example.com")
	m.Headers = []byte("DKIM-Signature: v=1; a=ed25519-sha256\r\n")
	if _, err := s.Enqueue(ctx, m, b, time.Time{}); err != nil {
		t.Fatal(err)
	}
	heap.Sample()
	if n := count(t, s, `SELECT count(*) FROM body_chunks WHERE body_id = $1`, bd.id); n != size/int64(s.chunkSize) {
		t.Errorf("%d chunks stored, want %d", n, size/s.chunkSize)
	}
	if n := count(t, s, `SELECT count(*) FROM pending_bodies`); n != 0 {
		t.Errorf("%d pending bodies after the enqueue, want 0", n)
	}
	rc, err := s.OpenBody(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	hdr := make([]byte, len(m.Headers))
	if _, err := io.ReadFull(rc, hdr); err != nil || !bytes.Equal(hdr, m.Headers) {
		t.Fatalf("body starts with %q, %v; want the header prefix", hdr, err)
	}
	cr := rc.(*chunkReader)
	buf := make([]byte, 8<<10)
	for {
		n, err := rc.Read(buf)
		h.Write(buf[:n])
		if cap(cr.cur) > s.chunkSize {
			t.Fatalf("reader holds %d bytes, more than a chunk", cap(cr.cur))
		}
		heap.Sample()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	rc.Close()
	if !bytes.Equal(h.Sum(nil), sum) {
		t.Error("body read back differs")
	}
	if g := heap.growth(); g > 10<<20 {
		t.Errorf("heap grew by %d MB while streaming a %d MB body", g>>20, size>>20)
	}
	t.Logf("heap growth streaming %d MB: %.1f MB", size>>20, float64(heap.growth())/(1<<20))
}

// Aborting a body, or a duplicate enqueue, deletes the chunks already
// written; a body abandoned by a node that died is collected after a day,
// one still being written is not.
func TestBodyChunksCleanedUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openFresh(t, Options{InlineMax: 1 << 10, ChunkSize: 4 << 10})
	chunks := func() int64 { return count(t, s, `SELECT count(*) FROM body_chunks`) }

	b, _ := s.NewBody()
	pumpBody(t, b, 20<<10, nil)
	if chunks() == 0 {
		t.Fatal("no chunk written before Enqueue")
	}
	b.Abort()
	if n := chunks(); n != 0 {
		t.Errorf("%d chunks left after Abort", n)
	}

	m := storetest.NewMessage(t0, "a@example.com")
	storetest.Enqueue(t, s, m, storetest.Body(1, 20<<10), time.Time{})
	kept := chunks()
	dup := storetest.NewMessage(t0, "b@example.com")
	dup.ID = m.ID
	if _, err := storetest.EnqueueErr(s, dup, storetest.Body(2, 30<<10), time.Time{}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate Enqueue: %v, want ErrExists", err)
	}
	if n := chunks(); n != kept {
		t.Errorf("%d chunks after a refused duplicate, want the original's %d", n, kept)
	}
	if n := count(t, s, `SELECT count(*) FROM pending_bodies`); n != 0 {
		t.Errorf("%d pending bodies after a refused duplicate", n)
	}

	// Abandoned two days ago, and one being written now.
	old := time.Now().Add(-48 * time.Hour).UnixNano()
	for _, q := range []string{
		`INSERT INTO pending_bodies (id, created) VALUES (1, $1)`,
		`INSERT INTO body_chunks (body_id, seq, data) VALUES (1, 0, 'x'), (1, 1, 'y')`,
	} {
		args := []any{}
		if bytes.Contains([]byte(q), []byte("$1")) {
			args = append(args, old)
		}
		if _, err := s.pool.Exec(ctx, q, args...); err != nil {
			t.Fatal(err)
		}
	}
	live, _ := s.NewBody()
	pumpBody(t, live, 20<<10, nil)
	if _, err := s.PruneEvents(ctx, t0); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM body_chunks WHERE body_id = 1`); n != 0 {
		t.Errorf("abandoned body's %d chunks not collected", n)
	}
	m2 := storetest.NewMessage(t0, "c@example.com")
	if _, err := s.Enqueue(ctx, m2, live, time.Time{}); err != nil {
		t.Fatalf("Enqueue of the body written across the collection: %v", err)
	}
	if got := storetest.ReadBody(t, s, m2.ID); len(got) != 20<<10 {
		t.Errorf("body of %d bytes, want %d", len(got), 20<<10)
	}
	if got := storetest.ReadBody(t, s, m.ID); !bytes.Equal(got, storetest.Body(1, 20<<10)) {
		t.Error("original body changed")
	}
}

// A message deleted while it is read fails the read with ErrNotFound
// instead of handing out a truncated body.
func TestBodyDeletedWhileRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openFresh(t, Options{InlineMax: 1 << 10, ChunkSize: 4 << 10})
	m := storetest.NewMessage(t0, "a@example.com")
	storetest.Enqueue(t, s, m, storetest.Body(1, 40<<10), time.Time{})
	rc, err := s.OpenBody(ctx, m.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := io.ReadFull(rc, make([]byte, 5<<10)); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("reading a deleted body: %v, want ErrNotFound", err)
	}
}

// terminate ends the server process of the sessions matching cond (a
// condition on pg_stat_activity).
func terminate(t *testing.T, cond string, args ...any) int64 {
	t.Helper()
	return pgtest.Query[int64](t, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE `+cond, args...)
}

// The writer survives a lost connection (a database restart, a failover):
// a batch that never reached COMMIT runs again on a new connection, so the
// enqueue succeeds and is stored once.
func TestWriterReconnects(t *testing.T) {
	t.Parallel()
	s := openFresh(t, Options{})
	m1 := storetest.NewMessage(t0, "a@example.com")
	storetest.Enqueue(t, s, m1, []byte("x"), time.Time{})
	if n := terminate(t, `pid = $1`, int64(s.w.conn.PgConn().PID())); n != 1 {
		t.Fatalf("terminated %d sessions", n)
	}
	m2 := storetest.NewMessage(t0, "b@example.com")
	storetest.Enqueue(t, s, m2, []byte("y"), time.Time{})
	for _, id := range []string{m1.ID, m2.ID} {
		if _, err := s.Get(context.Background(), id); err != nil {
			t.Errorf("Get %s: %v", id, err)
		}
	}
}

// waitSignals waits until the listener of s has signalled n wake-ups.
func waitSignals(t *testing.T, s *Store, n int64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for s.wake.signals.Load() < n {
		select {
		case <-s.Wake():
		case <-deadline:
			t.Fatalf("%d wake-ups signalled, want %d", s.wake.signals.Load(), n)
		}
	}
}

// Wake tells a handle about due work another handle committed (an
// unleased enqueue, a retry, released leases) and not about its own or
// about leased enqueues; after its connection is cut it reconnects and
// signals, since notifications may have been lost.
func TestWakeAcrossHandles(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := newSchema(t)
	a := openTest(t, dsn, Options{Node: "a"})
	defer a.Close()
	b := openTest(t, dsn, Options{Node: "b"})
	defer b.Close()
	for _, s := range []*Store{a, b} {
		s.Wake()
		select {
		case <-s.wake.ready:
		case <-time.After(10 * time.Second):
			t.Fatal("listener not ready")
		}
	}
	// A leased enqueue, then an unleased one, on a: b hears one.
	storetest.Enqueue(t, a, storetest.NewMessage(t0, "l@example.com"), []byte("x"), time.Now().Add(time.Hour))
	m := storetest.NewMessage(t0, "u@example.com")
	storetest.Enqueue(t, a, m, []byte("x"), time.Time{})
	waitSignals(t, b, 1)
	// b's own enqueue reaches a, after a's own notification, which a
	// ignored: a has signalled exactly once.
	storetest.Enqueue(t, b, storetest.NewMessage(t0, "v@example.com"), []byte("x"), time.Time{})
	waitSignals(t, a, 1)
	if n := a.wake.signals.Load(); n != 1 {
		t.Errorf("a signalled %d wake-ups, want 1 (its own enqueue is not one)", n)
	}
	if n := b.wake.signals.Load(); n != 1 {
		t.Errorf("b signalled %d wake-ups, want 1 (the leased enqueue is not one)", n)
	}
	// Retry and ReleaseLeases wake the other node.
	if err := a.Retry(ctx, m.ID, time.Now()); err != nil {
		t.Fatal(err)
	}
	waitSignals(t, b, 2)
	if err := a.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	waitSignals(t, b, 3)
	// Cut b's listening connection: it comes back and signals.
	if n := terminate(t, `application_name = 'herald b listen' AND query = $1`, `LISTEN `+pgx.Identifier{b.channel}.Sanitize()); n != 1 {
		t.Fatalf("terminated %d listeners, want b's", n)
	}
	waitSignals(t, b, 4)
	// And it hears the next enqueue on the new connection.
	storetest.Enqueue(t, a, storetest.NewMessage(t0, "w@example.com"), []byte("x"), time.Time{})
	waitSignals(t, b, 5)
}

// Two nodes recording outcomes of recipients of one message at the same
// time (each holds some of them) both succeed and the message is removed
// once all are final: updates of one message are serialised by its row
// lock, so neither misses the other's outcome.
func TestNodesFinishOneMessage(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := newSchema(t)
	a := openTest(t, dsn, Options{Node: "a"})
	defer a.Close()
	b := openTest(t, dsn, Options{Node: "b"})
	defer b.Close()
	for round := range 20 {
		m := storetest.NewMessage(t0, "r1@example.com", "r2@example.com")
		storetest.Enqueue(t, a, m, []byte("x"), time.Time{})
		la, err := a.Lease(ctx, t0, time.Minute, 1)
		if err != nil || len(la) != 1 {
			t.Fatalf("round %d: a Lease = %v, %v", round, la, err)
		}
		// a hands r2 back; b takes it.
		r1, r2 := m.Recipients[0].ID, m.Recipients[1].ID
		if err := a.Update(ctx, m.ID, la[0].Token, []store.Outcome{{RecipientID: r2, Status: store.StatusQueued, NextAttempt: t0}}); err != nil {
			t.Fatal(err)
		}
		lb, err := b.Lease(ctx, t0, time.Minute, 1)
		if err != nil || len(lb) != 1 {
			t.Fatalf("round %d: b Lease = %v, %v", round, lb, err)
		}
		var wg sync.WaitGroup
		for _, u := range []struct {
			s   *Store
			tok string
			rid int64
		}{{a, la[0].Token, r1}, {b, lb[0].Token, r2}} {
			wg.Go(func() {
				if err := u.s.Update(ctx, m.ID, u.tok, []store.Outcome{{RecipientID: u.rid, Status: store.StatusDelivered}}); err != nil {
					t.Errorf("Update on node %s: %v", u.s.node, err)
				}
			})
		}
		wg.Wait()
		if _, err := a.Get(ctx, m.ID); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("round %d: message with both recipients delivered still queued: %v", round, err)
		}
	}
}

// The rings of schema 2 have the sizes of ratelimit's windows, a back-off
// written before any session leaves a whole minute ring, and the rows of
// keys idle for a day go with PruneEvents, unless backed off.
func TestSharedRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openFresh(t, Options{})
	if n := count(t, s, `SELECT cardinality(array_fill(0::bigint, ARRAY[13]))`); int(n) != windows[0].Slots {
		t.Fatalf("the schema's minute ring has 13 slots, ratelimit's %d", windows[0].Slots)
	}
	old := time.Now().Add(-30 * time.Hour)
	if _, _, err := s.TakeRate(ctx, "account:idle", ratelimit.Limits{PerDay: 10}, 1, old); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.TakeRate(ctx, "account:busy", ratelimit.Limits{PerDay: 10}, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.SetDestinationState(ctx, "backed.test", 0, store.DestinationState{Factor: 0.5, Strikes: 1}); !ok || err != nil {
		t.Fatal(ok, err)
	}
	if n := count(t, s, `SELECT cardinality(rate_e) FROM destinations WHERE key = 'backed.test'`); n != 13 {
		t.Fatalf("rate ring of a destination made by a back-off: %d slots", n)
	}
	g, err := s.AcquireDestination(ctx, "backed.test", store.DestinationLimits{MaxConnections: 2, MessagesPerMinute: 4}, time.Now(), time.Now().Add(time.Minute))
	if err != nil || !g.OK {
		t.Fatalf("acquire after a back-off: %+v %v", g, err)
	}
	if _, err := s.AcquireDestination(ctx, "idle.test", store.DestinationLimits{MaxConnections: 2}, old, old.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	pgtestExec(t, s, `UPDATE destinations SET touched = $1`, nanos(old))
	if _, err := s.PruneEvents(ctx, time.Now().Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n := count(t, s, `SELECT count(*) FROM rate_windows`); n != 1 {
		t.Errorf("%d rate rows after pruning, want the busy one", n)
	}
	if n := count(t, s, `SELECT count(*) FROM destinations WHERE key = 'backed.test'`); n != 1 {
		t.Errorf("a backed-off destination holding a connection was pruned")
	}
	if n := count(t, s, `SELECT count(*) FROM destinations WHERE key = 'idle.test'`); n != 0 {
		t.Errorf("an idle destination was kept")
	}
}

func pgtestExec(t *testing.T, s *Store, q string, args ...any) {
	t.Helper()
	if _, err := s.pool.Exec(context.Background(), q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
