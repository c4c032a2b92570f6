package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func openTest(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// backend opens SQLite stores for the conformance suite with opts; a
// second node is another handle on the same data directory.
func backend(opts Options) storetest.Backend {
	return storetest.Backend{
		Open: func(t *testing.T) store.Store {
			return openTest(t, t.TempDir(), opts)
		},
		OpenNode: func(t *testing.T, first store.Store, node string) store.Store {
			o := opts
			o.Node = node
			return openTest(t, first.(*Store).dir, o)
		},
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, backend(Options{}))
}

// Every body a blob file, so the blob path is covered by the whole suite.
func TestConformanceAllBlobs(t *testing.T) {
	t.Parallel()
	storetest.Run(t, backend(Options{InlineMax: -1}))
}

func TestReopenDurable(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	small := storetest.NewMessage(t0, "a@example.com", "b@example.com")
	big := storetest.NewMessage(t0.Add(time.Second), "c@example.com")
	smallBody, bigBody := storetest.Body(1, 4<<10), storetest.Body(2, 200<<10)
	storetest.Enqueue(t, s, small, smallBody, time.Time{})
	storetest.Enqueue(t, s, big, bigBody, t0.Add(time.Hour))
	if err := s.Update(ctx, small.ID, "", []store.Outcome{{RecipientID: small.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: t0.Add(time.Minute), Reply: "451 later"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDomain(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := s.Get(ctx, small.ID); err == nil {
		t.Error("Get after Close succeeded")
	}
	if err := s.Delete(ctx, small.ID); !errors.Is(err, ErrClosed) {
		t.Errorf("Delete after Close: err = %v, want ErrClosed", err)
	}

	s = openTest(t, dir, Options{})
	defer s.Close()
	if got := storetest.ReadBody(t, s, small.ID); !bytes.Equal(got, smallBody) {
		t.Error("inline body lost across reopen")
	}
	if got := storetest.ReadBody(t, s, big.ID); !bytes.Equal(got, bigBody) {
		t.Error("blob body lost across reopen")
	}
	g, err := s.Get(ctx, small.ID)
	if err != nil {
		t.Fatal(err)
	}
	if g.Recipients[0].Status != store.StatusDeferred || g.Recipients[0].LastReply != "451 later" || g.Recipients[1].Status != store.StatusQueued {
		t.Errorf("recipients after reopen = %+v", g.Recipients)
	}
	// The lease of big survived; small's first recipient is due at +1m.
	ls, err := s.Lease(ctx, t0.Add(2*time.Minute), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Message.ID != small.ID || len(ls[0].Message.Recipients) != 2 {
		t.Errorf("Lease after reopen = %+v", ls)
	}
	if ok, err := s.IsLocalDomain(ctx, "example.com"); !ok || err != nil {
		t.Errorf("domain lost across reopen: %v %v", ok, err)
	}
}

func TestOrphanCollection(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{InlineMax: 16})
	kept := storetest.NewMessage(t0, "a@example.com")
	body := storetest.Body(3, 1000)
	storetest.Enqueue(t, s, kept, body, time.Time{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(dir, "blobs", "ORPHAN1")
	tmp := filepath.Join(dir, "blobs", "tmp", "body-123")

	// While another handle has the directory open, nothing is collected:
	// that process may be between a blob's rename and its commit.
	s1 := openTest(t, dir, Options{})
	for _, p := range []string{orphan, tmp} {
		if err := os.WriteFile(p, []byte("junk"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	s2 := openTest(t, dir, Options{})
	for _, p := range []string{orphan, tmp} {
		if _, err := os.Stat(p); err != nil {
			t.Fatalf("%s removed while the store was open elsewhere: %v", p, err)
		}
	}
	// Both handles work on the same database.
	if err := s2.AddDomain(context.Background(), "x.example"); err != nil {
		t.Fatal(err)
	}
	if ok, err := s1.IsLocalDomain(context.Background(), "x.example"); !ok || err != nil {
		t.Errorf("change from the other handle not visible: %v %v", ok, err)
	}
	s1.Close()
	s2.Close()

	s = openTest(t, dir, Options{})
	defer s.Close()
	for _, p := range []string{orphan, tmp} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s not collected: %v", p, err)
		}
	}
	if got := storetest.ReadBody(t, s, kept.ID); !bytes.Equal(got, body) {
		t.Error("committed blob collected")
	}
}

// Two handles (the server and the CLI) writing concurrently both succeed.
func TestTwoHandlesConcurrentWrites(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a := openTest(t, dir, Options{})
	defer a.Close()
	b := openTest(t, dir, Options{})
	defer b.Close()
	var wg sync.WaitGroup
	var msgs [2][]*store.Message
	for h, s := range []*Store{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				m := storetest.NewMessage(t0, fmt.Sprintf("r%d@example.com", i))
				if _, err := storetest.EnqueueErr(s, m, []byte("x"), time.Time{}); err != nil {
					t.Error(err)
					return
				}
				msgs[h] = append(msgs[h], m)
			}
		}()
	}
	wg.Wait()
	for h, s := range []*Store{b, a} { // read through the other handle
		for _, m := range msgs[h] {
			if _, err := s.Get(context.Background(), m.ID); err != nil {
				t.Errorf("message from handle %d: %v", h, err)
			}
		}
	}
}

// An operation failing after it wrote is rolled back alone; the others of
// its batch commit.
func TestBatchIsolatesFailedOp(t *testing.T) {
	t.Parallel()
	s := openTest(t, t.TempDir(), Options{})
	defer s.Close()
	ctx := context.Background()
	boom := errors.New("boom")
	mk := func(fn func(w *writer) error) *op { return &op{fn: fn, done: make(chan error, 1)} }
	insert := func(d string) func(w *writer) error {
		return func(w *writer) error {
			_, err := w.conn.ExecContext(ctx, `INSERT INTO domains (name) VALUES (?)`, d)
			return err
		}
	}
	ops := []*op{
		mk(insert("a.example")),
		mk(func(w *writer) error {
			if err := insert("bad.example")(w); err != nil {
				return err
			}
			return boom
		}),
		mk(func(w *writer) error { return clean(store.ErrNotFound) }),
		mk(insert("c.example")),
	}
	// Run in the writer goroutine's place: stop nothing, the writer is idle
	// and runBatch is only ever called by one goroutine at a time here.
	s.w.mu.Lock()
	s.w.runBatch(ops)
	s.w.mu.Unlock()
	want := []error{nil, boom, store.ErrNotFound, nil}
	for i, o := range ops {
		if err := <-o.done; !errors.Is(err, want[i]) || (want[i] == nil && err != nil) {
			t.Errorf("op %d: err = %v, want %v", i, err, want[i])
		}
	}
	l, err := s.ListDomains(ctx)
	if err != nil || fmt.Sprint(l) != "[a.example c.example]" {
		t.Errorf("domains = %v, %v; want [a.example c.example]", l, err)
	}
}

func TestEnqueueCancelledContext(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{InlineMax: 10})
	defer s.Close()
	b, _ := s.NewBody()
	b.Write(make([]byte, 100)) // spilled to a temporary file
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := storetest.NewMessage(t0, "a@example.com")
	if _, err := s.Enqueue(ctx, m, b, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Enqueue: err = %v, want context.Canceled", err)
	}
	assertEmptyDir(t, filepath.Join(dir, "blobs", "tmp"))
	if _, err := s.Get(context.Background(), m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("cancelled message stored: %v", err)
	}
}

func assertEmptyDir(t *testing.T, dir string) {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 0 {
		t.Errorf("%s not empty: %v", dir, es)
	}
}

func TestDiskFull(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (need root): %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	ctx := context.Background()
	s := openTest(t, dir, Options{})
	defer func() { s.Close() }()

	type stored struct {
		m    *store.Message
		body []byte
	}
	var ok []stored
	enq := func(size int, seed uint64) error {
		m := storetest.NewMessage(t0, "a@example.com")
		body := storetest.Body(seed, size)
		_, err := storetest.EnqueueErr(s, m, body, time.Time{})
		if err == nil {
			ok = append(ok, stored{m, body})
		}
		return err
	}
	for i := range 3 {
		if err := enq(4<<10, uint64(i)); err != nil {
			t.Fatal(err)
		}
		if err := enq(100<<10, uint64(10+i)); err != nil {
			t.Fatal(err)
		}
	}

	// Fill the file system.
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 64<<10)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			break
		}
	}
	f.Close()

	// A blob body fails while writing or syncing.
	if err := enq(300<<10, 100); !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("blob Enqueue on a full disk: err = %v, want ErrStorageFull", err)
	} else {
		t.Logf("blob: %v", err)
	}
	// Inline bodies fail at commit, possibly after a few that still fit in
	// space the database already had (those really are committed).
	var fullErr error
	for i := range 100 {
		if err := enq(4<<10, uint64(200+i)); err != nil {
			fullErr = err
			break
		}
	}
	if !errors.Is(fullErr, store.ErrStorageFull) {
		t.Fatalf("inline Enqueue on a full disk: err = %v, want ErrStorageFull", fullErr)
	}
	t.Logf("inline: %v", fullErr)
	// Concurrent callers sharing failing batches: each either gets
	// ErrStorageFull or has its message committed.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5 {
				m := storetest.NewMessage(t0, "a@example.com")
				body := storetest.Body(uint64(1000+10*g+i), 4<<10)
				_, err := storetest.EnqueueErr(s, m, body, time.Time{})
				mu.Lock()
				if err == nil {
					ok = append(ok, stored{m, body})
				} else if !errors.Is(err, store.ErrStorageFull) {
					t.Errorf("concurrent Enqueue on a full disk: %v", err)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assertEmptyDir(t, filepath.Join(dir, "blobs", "tmp"))
	for _, st := range ok {
		if got := storetest.ReadBody(t, s, st.m.ID); !bytes.Equal(got, st.body) {
			t.Errorf("message %s not byte-exact on a full disk", st.m.ID)
		}
	}

	// Free space: everything works again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	if err := enq(4<<10, 300); err != nil {
		t.Fatalf("inline Enqueue after freeing space: %v", err)
	}
	if err := enq(100<<10, 301); err != nil {
		t.Fatalf("blob Enqueue after freeing space: %v", err)
	}
	for _, st := range ok {
		if got := storetest.ReadBody(t, s, st.m.ID); !bytes.Equal(got, st.body) {
			t.Errorf("message %s not byte-exact after freeing space", st.m.ID)
		}
	}
	// And all of it is there after a reopen.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	for _, st := range ok {
		if got := storetest.ReadBody(t, s, st.m.ID); !bytes.Equal(got, st.body) {
			t.Errorf("message %s not byte-exact after reopen", st.m.ID)
		}
	}
	st, err := s.Stats(ctx)
	if err != nil || st.Messages != len(ok) {
		t.Errorf("Stats = %+v, %v; want %d messages", st, err, len(ok))
	}
}

// A rejected duplicate leaves no blob file behind, whichever size class the
// original and the duplicate are.
func TestDuplicateLeavesNoBlob(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	defer s.Close()
	m := storetest.NewMessage(t0, "a@example.com")
	storetest.Enqueue(t, s, m, []byte("small"), time.Time{})
	dup := storetest.NewMessage(t0, "b@example.com")
	dup.ID = m.ID
	if _, err := storetest.EnqueueErr(s, dup, storetest.Body(1, 200<<10), time.Time{}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("duplicate: err = %v, want ErrExists", err)
	}
	es, err := os.ReadDir(filepath.Join(dir, "blobs"))
	if err != nil {
		t.Fatal(err)
	}
	if len(es) != 1 || es[0].Name() != "tmp" {
		t.Errorf("blobs/ holds %v, want only tmp", es)
	}
	assertEmptyDir(t, filepath.Join(dir, "blobs", "tmp"))
}

// A database of schema 8 gains the lease owner and token columns; its
// leases (taken by a single node of that version, without a token) belong
// to no node and are released by the next node's ReleaseLeases, whatever
// its name, while a lease of another node is kept.
func TestMigrationLegacyLeases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir, Options{Node: "other"})
	legacy := storetest.NewMessage(t0, "a@example.com")
	storetest.Enqueue(t, s, legacy, []byte("x"), t0.Add(time.Hour))
	other := storetest.NewMessage(t0, "b@example.com")
	otherTok := storetest.Enqueue(t, s, other, []byte("x"), t0.Add(time.Hour))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Back to schema 8: no owner or token columns (nor the tables of 10 and 11);
	// other's lease is kept
	// aside to be restored as a schema-9 lease of node "other".
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`ALTER TABLE recipients DROP COLUMN lease_owner`,
		`ALTER TABLE recipients DROP COLUMN lease_token`,
		`DROP TABLE secrets`, `DROP TABLE dmarc_reports`, `DROP TABLE tlsrpt_counts`, `DROP TABLE tlsrpt_claims`, // schema 10
		`DROP TABLE copied_messages`,                                                       // schema 11
		`DROP TABLE alert_states`, `DROP TABLE alert_history`, `DROP TABLE alert_silences`, // schema 12
		`DROP TABLE operators`, `DROP TABLE console_sessions`, // schema 13 (the console)
		`DROP TABLE rollup_counts`, `DROP TABLE rollup_latency`, `DROP TABLE rollup_dest`, // schema 14 (rollups)
		`DROP INDEX messages_received`, `DROP INDEX messages_account_received`,
		`ALTER TABLE accounts DROP COLUMN track_opens`, `ALTER TABLE accounts DROP COLUMN track_clicks`, // tracking (issue 12)
		`ALTER TABLE webhooks DROP COLUMN batch_max`, `ALTER TABLE webhooks DROP COLUMN batch_wait`, // batched webhooks
		`ALTER TABLE webhooks DROP COLUMN prev_secret`, `ALTER TABLE webhooks DROP COLUMN prev_expires`,
		`ALTER TABLE webhooks DROP COLUMN secret_rotated`, `DROP INDEX webhook_deliveries_pending`,
		`UPDATE schema_version SET version = 8`,
	} {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()

	s = openTest(t, dir, Options{Node: "mx1"})
	defer s.Close()
	db, err = sql.Open("sqlite", filepath.Join(dir, "herald.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.QueryRow(`SELECT version FROM schema_version`).Scan(&v); err != nil || v != SchemaVersion() {
		t.Fatalf("schema version after migration = %d, %v; want %d", v, err, SchemaVersion())
	}
	if _, err := db.Exec(`UPDATE recipients SET lease_owner = 'other', lease_token = ? WHERE message_id = ?`, otherTok, other.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseLeases(ctx); err != nil {
		t.Fatal(err)
	}
	ls, err := s.Lease(ctx, t0.Add(time.Minute), time.Minute, 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(ls) != 1 || ls[0].Message.ID != legacy.ID {
		t.Fatalf("after ReleaseLeases, Lease = %+v; want only the legacy lease's message %s", ls, legacy.ID)
	}
	if err := s.Renew(ctx, other.ID, otherTok, t0.Add(2*time.Hour)); err != nil {
		t.Errorf("node other's lease was released: %v", err)
	}
}
