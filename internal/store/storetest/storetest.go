// Package storetest is the conformance suite every store.Store backend must
// pass. A backend's tests call Run, the one entry point: it runs every part
// of the suite (queue, directory, DKIM keys, platform, the state every
// node shares, copying into another store, and the multi-node cases), so
// a backend cannot pass while skipping a part.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Backend is how the suite opens stores of the backend under test.
type Backend struct {
	// Open returns a new, empty store on a database of its own, as a
	// single node (any node name the backend likes). The suite closes it.
	Open func(t *testing.T) store.Store
	// OpenNode returns another handle on first's database that acts as the
	// node named node (sqlite.Options.Node, postgres.Options.Node). The
	// suite closes it, before first. (A backend may keep the state that
	// lives as long as its nodes, rate windows and destinations, in
	// memory shared by the handles of one process: the SQLite store, one
	// server per data directory, does.)
	OpenNode func(t *testing.T, first store.Store, node string) store.Store
}

// test is one conformance case on one store.
type test struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// nodeTest is one multi-node case: open returns a new handle on s's
// database acting as the named node.
type nodeTest struct {
	name string
	fn   func(t *testing.T, s store.Store, open func(node string) store.Store)
}

// Run runs the whole conformance suite against b: every part, each case on
// a new empty store, in parallel subtests named Part/Case.
func Run(t *testing.T, b Backend) {
	if b.Open == nil || b.OpenNode == nil {
		t.Fatal("storetest: Backend needs Open and OpenNode")
	}
	parts := []struct {
		name  string
		tests []test
	}{
		{"Queue", queueTests},
		{"Directory", directoryTests},
		{"DKIM", dkimTests},
		{"Platform", platformTests},
		{"Shared", sharedTests},
		{"Alerts", alertTests},
		{"Console", consoleTests},
		{"ACME", acmeTests},
		{"Rollups", rollupTests},
		{"Templates", templateTests},
		{"Unsubscribes", unsubscribeTests},
		{"Tracking", trackingTests},
		{"Webhooks", webhookTests},
		{"Batches", batchTests},
	}
	for _, part := range parts {
		t.Run(part.name, func(t *testing.T) {
			t.Parallel()
			for _, tc := range part.tests {
				t.Run(tc.name, func(t *testing.T) {
					t.Parallel()
					tc.fn(t, openClosed(t, b.Open))
				})
			}
		})
	}
	t.Run("Copy", func(t *testing.T) {
		t.Parallel()
		for _, tc := range copyTests {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				tc.fn(t, openClosed(t, b.Open), openClosed(t, b.Open))
			})
		}
	})
	t.Run("Nodes", func(t *testing.T) {
		t.Parallel()
		for _, tc := range slices.Concat(nodeTests, sharedNodeTests, alertNodeTests, consoleNodeTests, acmeNodeTests, rollupNodeTests, leaseReadNodeTests) {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				first := openClosed(t, b.Open)
				tc.fn(t, first, func(node string) store.Store {
					return openClosed(t, func(t *testing.T) store.Store { return b.OpenNode(t, first, node) })
				})
			})
		}
	})
}

// openClosed opens a store and closes it when the test ends (stores
// opened later are closed first).
func openClosed(t *testing.T, open func(t *testing.T) store.Store) store.Store {
	t.Helper()
	s := open(t)
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// queueTests is the part of the suite for store.Queue on one node.
var queueTests = []test{
	{"Lifecycle", testLifecycle},
	{"BodyRoundTrip", testBodyRoundTrip},
	{"HeaderPrefix", testHeaderPrefix},
	{"AbortBody", testAbortBody},
	{"EnqueueLeased", testEnqueueLeased},
	{"EnqueueDuplicateID", testEnqueueDuplicateID},
	{"ConcurrentEnqueue", testConcurrentEnqueue},
	{"LeaseExclusive", testLeaseExclusive},
	{"ConcurrentLease", testConcurrentLease},
	{"LeaseLimit", testLeaseLimit},
	{"LeaseExpires", testLeaseExpires},
	{"LeaseTokens", testLeaseTokens},
	{"UpdateToken", testUpdateToken},
	{"UpdateAdmin", testUpdateAdmin},
	{"Renew", testRenew},
	{"PartialFinal", testPartialFinal},
	{"UpdateUnknown", testUpdateUnknown},
	{"ReleaseLeases", testReleaseLeases},
	{"Retry", testRetry},
	{"Delete", testDelete},
	{"Stats", testStats},
	{"NextDue", testNextDue},
	{"ListPagination", testListPagination},
}

// directoryTests is the part of the suite for store.Directory.
var directoryTests = []test{
	{"Domains", testDomains},
	{"DomainPolicy", testDomainPolicy},
	{"Users", testUsers},
	{"Aliases", testAliases},
}

// base is the suite's reference time, whole microseconds so that every
// backend's precision holds it exactly.
var base = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

var idSeq struct {
	sync.Mutex
	n int
}

// NewID returns a fresh time-ordered queue ID for tests.
func NewID() string {
	idSeq.Lock()
	defer idSeq.Unlock()
	idSeq.n++
	return fmt.Sprintf("T%010d%04d", idSeq.n, rand.IntN(10000))
}

// Body returns n deterministic pseudo-random bytes seeded by seed.
func Body(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// NewMessage returns a message with a fresh ID received at received and the
// given recipient addresses.
func NewMessage(received time.Time, rcpts ...string) *store.Message {
	m := &store.Message{
		ID:       NewID(),
		Sender:   "sender@example.org",
		Received: received,
		Ret:      "HDRS",
		EnvID:    "env-1",
		ClientIP: "192.0.2.1",
		HELO:     "client.example.org",
		AuthUser: "user@example.org",
		Source:   "submission",
		SMTPUTF8: true,
	}
	for _, r := range rcpts {
		m.Recipients = append(m.Recipients, store.Recipient{Address: r, Notify: "FAILURE", ORCPT: "rfc822;" + r})
	}
	return m
}

// Enqueue writes data in chunks to a new body and enqueues m with it. It
// returns the lease token (when leaseUntil is not zero).
func Enqueue(t testing.TB, s store.Queue, m *store.Message, data []byte, leaseUntil time.Time) string {
	t.Helper()
	token, err := EnqueueErr(s, m, data, leaseUntil)
	if err != nil {
		t.Fatalf("Enqueue %s: %v", m.ID, err)
	}
	return token
}

// EnqueueErr is Enqueue returning the error.
func EnqueueErr(s store.Queue, m *store.Message, data []byte, leaseUntil time.Time) (string, error) {
	b, err := s.NewBody()
	if err != nil {
		return "", err
	}
	for rest := data; len(rest) > 0; {
		n := min(len(rest), 7919)
		if _, err := b.Write(rest[:n]); err != nil {
			b.Abort()
			return "", err
		}
		rest = rest[n:]
	}
	if b.Size() != int64(len(data)) {
		b.Abort()
		return "", fmt.Errorf("body Size = %d, want %d", b.Size(), len(data))
	}
	return s.Enqueue(context.Background(), m, b, leaseUntil)
}

// ReadBody returns the stored body of id.
func ReadBody(t testing.TB, s store.Store, id string) []byte {
	t.Helper()
	rc, err := s.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatalf("OpenBody %s: %v", id, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read body %s: %v", id, err)
	}
	return b
}

func mustGet(t *testing.T, s store.Store, id string) *store.Message {
	t.Helper()
	m, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatalf("Get %s: %v", id, err)
	}
	return m
}

// mustLease leases and checks what every lease must be: recipients, the
// Until asked for, and a token of its own.
func mustLease(t *testing.T, s store.Store, now time.Time, d time.Duration, limit int) []store.Lease {
	t.Helper()
	l, err := s.Lease(context.Background(), now, d, limit)
	if err != nil {
		t.Fatalf("Lease: %v", err)
	}
	tokens := make(map[string]bool)
	for _, x := range l {
		if x.Token == "" || tokens[x.Token] {
			t.Fatalf("lease of %s has token %q (empty or shared with another lease)", x.Message.ID, x.Token)
		}
		tokens[x.Token] = true
		if !x.Until.Equal(now.Add(d)) || len(x.Message.Recipients) == 0 {
			t.Fatalf("lease of %s: Until %v (want %v), %d recipients", x.Message.ID, x.Until, now.Add(d), len(x.Message.Recipients))
		}
	}
	return l
}

func leasedIDs(ls []store.Lease) map[string][]int64 {
	out := make(map[string][]int64)
	for _, l := range ls {
		for _, r := range l.Message.Recipients {
			out[l.Message.ID] = append(out[l.Message.ID], r.ID)
		}
	}
	return out
}

func expectNotFound(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("%s: err = %v, want ErrNotFound", what, err)
	}
}

func testLifecycle(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com", "b@example.net")
	data := []byte("Subject: hi\r\n\r\nhello\r\n")
	Enqueue(t, s, m, data, time.Time{})
	if m.Recipients[0].ID == 0 || m.Recipients[0].ID == m.Recipients[1].ID {
		t.Fatalf("recipient IDs not filled: %+v", m.Recipients)
	}
	if m.Size != int64(len(data)) {
		t.Errorf("Size = %d, want %d", m.Size, len(data))
	}

	got := mustGet(t, s, m.ID)
	if got.Sender != m.Sender || !got.Received.Equal(base) || got.Ret != "HDRS" || got.EnvID != "env-1" ||
		got.ClientIP != "192.0.2.1" || got.HELO != "client.example.org" || got.AuthUser != "user@example.org" ||
		got.Source != "submission" || !got.SMTPUTF8 || got.Size != int64(len(data)) {
		t.Errorf("Get envelope = %+v", got)
	}
	if len(got.Recipients) != 2 {
		t.Fatalf("Get recipients = %+v", got.Recipients)
	}
	for i, r := range got.Recipients {
		if r.ID != m.Recipients[i].ID || r.Address != m.Recipients[i].Address || r.Status != store.StatusQueued ||
			r.Notify != "FAILURE" || r.ORCPT != "rfc822;"+r.Address || !r.NextAttempt.Equal(base) || r.Attempts != 0 {
			t.Errorf("recipient %d = %+v", i, r)
		}
	}

	// Not due before Received.
	if l := mustLease(t, s, base.Add(-time.Second), time.Minute, 10); len(l) != 0 {
		t.Fatalf("Lease before due returned %d", len(l))
	}
	now := base.Add(time.Second)
	ls := mustLease(t, s, now, time.Minute, 10)
	if len(ls) != 1 || ls[0].Message.ID != m.ID || len(ls[0].Message.Recipients) != 2 {
		t.Fatalf("Lease = %+v", ls)
	}
	if !ls[0].Until.Equal(now.Add(time.Minute)) {
		t.Errorf("Until = %v", ls[0].Until)
	}
	if ls[0].Message.Sender != m.Sender || ls[0].Message.EnvID != "env-1" {
		t.Errorf("leased message envelope = %+v", ls[0].Message)
	}
	if l := mustLease(t, s, now, time.Minute, 10); len(l) != 0 {
		t.Fatalf("second Lease returned leased recipients: %+v", l)
	}

	// Defer both.
	retryAt := now.Add(10 * time.Minute)
	outs := []store.Outcome{
		{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred, NextAttempt: retryAt, Reply: "451 4.7.1 later", RemoteMTA: "mx.example.com"},
		{RecipientID: m.Recipients[1].ID, Status: store.StatusDeferred, NextAttempt: retryAt, Reply: "421 busy", DelayWarned: true},
	}
	if err := s.Update(ctx, m.ID, ls[0].Token, outs); err != nil {
		t.Fatalf("Update defer: %v", err)
	}
	got = mustGet(t, s, m.ID)
	r0 := got.Recipients[0]
	if r0.Status != store.StatusDeferred || r0.Attempts != 1 || !r0.NextAttempt.Equal(retryAt) ||
		r0.LastReply != "451 4.7.1 later" || r0.RemoteMTA != "mx.example.com" || r0.DelayWarned || r0.UpdatedAt.IsZero() {
		t.Errorf("deferred recipient = %+v", r0)
	}
	if !got.Recipients[1].DelayWarned {
		t.Errorf("DelayWarned not recorded: %+v", got.Recipients[1])
	}
	// The lease was released, but the recipients are not due yet.
	if l := mustLease(t, s, now.Add(2*time.Minute), time.Minute, 10); len(l) != 0 {
		t.Fatalf("Lease before retry time returned %+v", l)
	}
	ls = mustLease(t, s, retryAt, time.Minute, 10)
	if len(ls) != 1 || len(ls[0].Message.Recipients) != 2 {
		t.Fatalf("Lease at retry time = %+v", ls)
	}
	if !ls[0].Message.Recipients[1].DelayWarned {
		t.Errorf("leased recipient lost DelayWarned: %+v", ls[0].Message.Recipients[1])
	}

	outs = []store.Outcome{
		{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered, Reply: "250 ok"},
		{RecipientID: m.Recipients[1].ID, Status: store.StatusFailed, Reply: "550 no"},
	}
	if err := s.Update(ctx, m.ID, ls[0].Token, outs); err != nil {
		t.Fatalf("Update final: %v", err)
	}
	_, err := s.Get(ctx, m.ID)
	expectNotFound(t, "Get after final", err)
	_, err = s.OpenBody(ctx, m.ID)
	expectNotFound(t, "OpenBody after final", err)
	if l := mustLease(t, s, retryAt.Add(time.Hour), time.Minute, 10); len(l) != 0 {
		t.Errorf("Lease after final = %+v", l)
	}
}

func testBodyRoundTrip(t *testing.T, s store.Store) {
	for i, n := range []int{0, 1, 4 << 10, 64<<10 - 1, 64 << 10, 64<<10 + 1, 100 << 10, 3 << 20} {
		data := Body(uint64(i), n)
		m := NewMessage(base, "x@example.com")
		Enqueue(t, s, m, data, time.Time{})
		if got := ReadBody(t, s, m.ID); !bytes.Equal(got, data) {
			t.Errorf("body of %d bytes: got %d bytes, not byte-exact", n, len(got))
		}
		if g := mustGet(t, s, m.ID); g.Size != int64(n) {
			t.Errorf("Size = %d, want %d", g.Size, n)
		}
	}
	_, err := s.OpenBody(context.Background(), "no-such-id")
	expectNotFound(t, "OpenBody unknown", err)
}

// testHeaderPrefix: Message.Headers come back in front of the body, for
// inline and blob bodies, and count in Size.
func testHeaderPrefix(t *testing.T, s store.Store) {
	hdr := []byte("Authentication-Results: mx.example; spf=pass\r\nDKIM-Signature: v=1; a=ed25519-sha256\r\n")
	for i, n := range []int{0, 4 << 10, 100 << 10} {
		data := Body(uint64(100+i), n)
		m := NewMessage(base, "x@example.com")
		m.Headers = hdr
		Enqueue(t, s, m, data, time.Time{})
		want := append(append([]byte{}, hdr...), data...)
		if got := ReadBody(t, s, m.ID); !bytes.Equal(got, want) {
			t.Errorf("body of %d bytes with header prefix: got %d bytes, not byte-exact", n, len(got))
		}
		g := mustGet(t, s, m.ID)
		if g.Size != int64(len(want)) {
			t.Errorf("Size = %d, want %d", g.Size, len(want))
		}
		if !bytes.Equal(g.Headers, hdr) {
			t.Errorf("Get returned Headers %q, want %q", g.Headers, hdr)
		}
	}
	ls := mustLease(t, s, base.Add(time.Hour), time.Minute, 10)
	for _, l := range ls {
		if !bytes.Equal(l.Message.Headers, hdr) {
			t.Errorf("Lease returned Headers %q, want %q", l.Message.Headers, hdr)
		}
	}
}

func testDomainPolicy(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.AddDomain(ctx, "pol.example"); err != nil {
		t.Fatal(err)
	}
	if p, err := s.GetDomainPolicy(ctx, "POL.example"); err != nil || p != (store.DomainPolicy{}) {
		t.Fatalf("default policy %+v %v", p, err)
	}
	want := store.DomainPolicy{DMARC: "monitor", SPFReject: "on"}
	if err := s.SetDomainPolicy(ctx, "pol.example", want); err != nil {
		t.Fatal(err)
	}
	if p, err := s.GetDomainPolicy(ctx, "pol.example"); err != nil || p != want {
		t.Fatalf("policy %+v %v, want %+v", p, err, want)
	}
	expectNotFound(t, "SetDomainPolicy unknown", s.SetDomainPolicy(ctx, "nope.example", want))
	_, err := s.GetDomainPolicy(ctx, "nope.example")
	expectNotFound(t, "GetDomainPolicy unknown", err)
}

func testAbortBody(t *testing.T, s store.Store) {
	for _, n := range []int{10, 1 << 20} {
		b, err := s.NewBody()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Write(Body(1, n)); err != nil {
			t.Fatal(err)
		}
		b.Abort()
		b.Abort() // idempotent
	}
	// Abort after Enqueue is a no-op: the body stays.
	b, err := s.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	data := Body(2, 200<<10)
	b.Write(data)
	m := NewMessage(base, "x@example.com")
	if _, err := s.Enqueue(context.Background(), m, b, time.Time{}); err != nil {
		t.Fatal(err)
	}
	b.Abort()
	if got := ReadBody(t, s, m.ID); !bytes.Equal(got, data) {
		t.Errorf("body changed by Abort after Enqueue")
	}
}

func testEnqueueLeased(t *testing.T, s store.Store) {
	m := NewMessage(base, "a@example.com")
	tok := Enqueue(t, s, m, []byte("x"), base.Add(time.Minute))
	if tok == "" {
		t.Fatal("Enqueue with a lease returned no token")
	}
	if l := mustLease(t, s, base.Add(30*time.Second), time.Minute, 10); len(l) != 0 {
		t.Fatalf("Lease took recipients created leased: %+v", l)
	}
	if l := mustLease(t, s, base.Add(2*time.Minute), time.Minute, 10); len(l) != 1 || l[0].Token == tok {
		t.Fatalf("Lease after lease expiry = %+v (want a new token)", l)
	}
}

func testEnqueueDuplicateID(t *testing.T, s store.Store) {
	for _, n := range []int{10, 200 << 10} {
		m := NewMessage(base, "a@example.com")
		data := Body(uint64(n), n)
		Enqueue(t, s, m, data, time.Time{})
		m2 := NewMessage(base, "b@example.com")
		m2.ID = m.ID
		// The duplicate's body is of the other size class (inline vs blob).
		_, err := EnqueueErr(s, m2, Body(99, 200<<10+10-n), time.Time{})
		if !errors.Is(err, store.ErrExists) {
			t.Errorf("duplicate ID (%d bytes): err = %v, want ErrExists", n, err)
		}
		if got := ReadBody(t, s, m.ID); !bytes.Equal(got, data) {
			t.Errorf("duplicate enqueue (%d bytes) changed the original body", n)
		}
		if g := mustGet(t, s, m.ID); len(g.Recipients) != 1 || g.Recipients[0].Address != "a@example.com" {
			t.Errorf("duplicate enqueue changed recipients: %+v", g.Recipients)
		}
	}
}

func testConcurrentEnqueue(t *testing.T, s store.Store) {
	const n = 32
	msgs := make([]*store.Message, n)
	bodies := make([][]byte, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		size := 1000 + i*97
		if i%8 == 0 {
			size = 100<<10 + i // blob
		}
		bodies[i] = Body(uint64(1000+i), size)
		msgs[i] = NewMessage(base, fmt.Sprintf("r%d@example.com", i), fmt.Sprintf("s%d@example.com", i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := EnqueueErr(s, msgs[i], bodies[i], time.Time{})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Enqueue: %v", err)
		}
	}
	ids := make(map[int64]bool)
	for i, m := range msgs {
		if got := ReadBody(t, s, m.ID); !bytes.Equal(got, bodies[i]) {
			t.Errorf("message %d body not byte-exact", i)
		}
		g := mustGet(t, s, m.ID)
		if len(g.Recipients) != 2 || g.Recipients[0].Address != fmt.Sprintf("r%d@example.com", i) {
			t.Errorf("message %d recipients = %+v", i, g.Recipients)
		}
		for _, r := range m.Recipients {
			if ids[r.ID] {
				t.Errorf("recipient ID %d assigned twice", r.ID)
			}
			ids[r.ID] = true
		}
	}
	st, err := s.Stats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != n || st.Recipients != 2*n {
		t.Errorf("Stats = %+v, want %d messages, %d recipients", st, n, 2*n)
	}
}

func testLeaseExclusive(t *testing.T, s store.Store) {
	a := NewMessage(base, "a1@example.com", "a2@example.com")
	Enqueue(t, s, a, []byte("a"), time.Time{})
	now := base.Add(time.Second)
	ls := mustLease(t, s, now, time.Minute, 10)
	if len(ls) != 1 {
		t.Fatalf("Lease = %+v", ls)
	}
	tokA := ls[0].Token
	// A new recipient-bearing message becomes due; only it is returned.
	b := NewMessage(base, "b@example.com")
	Enqueue(t, s, b, []byte("b"), time.Time{})
	ls = mustLease(t, s, now.Add(30*time.Second), time.Minute, 10)
	if len(ls) != 1 || ls[0].Message.ID != b.ID {
		t.Fatalf("Lease returned leased rows: %+v", leasedIDs(ls))
	}
	// Deferring one recipient of a releases only that one's lease.
	err := s.Update(context.Background(), a.ID, tokA, []store.Outcome{
		{RecipientID: a.Recipients[0].ID, Status: store.StatusDeferred, NextAttempt: now},
	})
	if err != nil {
		t.Fatal(err)
	}
	ls = mustLease(t, s, now.Add(40*time.Second), time.Minute, 10)
	got := leasedIDs(ls)
	if len(got) != 1 || len(got[a.ID]) != 1 || got[a.ID][0] != a.Recipients[0].ID {
		t.Fatalf("Lease after partial update = %v", got)
	}
}

func testConcurrentLease(t *testing.T, s store.Store) {
	const n = 40
	for range n {
		Enqueue(t, s, NewMessage(base, "a@example.com", "b@example.com"), []byte("x"), time.Time{})
	}
	now := base.Add(time.Second)
	var mu sync.Mutex
	seen := make(map[int64]int)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				ls, err := s.Lease(context.Background(), now, time.Minute, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if len(ls) == 0 {
					return
				}
				mu.Lock()
				for _, l := range ls {
					for _, r := range l.Message.Recipients {
						seen[r.ID]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(seen) != 2*n {
		t.Errorf("leased %d distinct recipients, want %d", len(seen), 2*n)
	}
	for id, c := range seen {
		if c != 1 {
			t.Errorf("recipient %d leased %d times", id, c)
		}
	}
}

func testLeaseLimit(t *testing.T, s store.Store) {
	var ids []string
	for i := range 5 {
		m := NewMessage(base.Add(time.Duration(i)*time.Second), "a@example.com", "b@example.com")
		Enqueue(t, s, m, []byte("x"), time.Time{})
		ids = append(ids, m.ID)
	}
	now := base.Add(time.Minute)
	ls := mustLease(t, s, now, time.Minute, 2)
	if len(ls) != 2 {
		t.Fatalf("Lease limit 2 returned %d", len(ls))
	}
	// Earliest due first, and all due recipients of a message together.
	for i, l := range ls {
		if l.Message.ID != ids[i] || len(l.Message.Recipients) != 2 {
			t.Errorf("lease %d = %s with %d recipients, want %s with 2", i, l.Message.ID, len(l.Message.Recipients), ids[i])
		}
	}
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 3 {
		t.Errorf("second Lease returned %d, want 3", len(ls))
	}
	if ls := mustLease(t, s, now, time.Minute, 0); len(ls) != 0 {
		t.Errorf("Lease limit 0 returned %d", len(ls))
	}
}

func testLeaseExpires(t *testing.T, s store.Store) {
	m := NewMessage(base, "a@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	now := base.Add(time.Second)
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 1 {
		t.Fatal("first lease failed")
	}
	if ls := mustLease(t, s, now.Add(time.Minute), time.Minute, 10); len(ls) != 0 {
		t.Fatal("lease taken over at its Until (must be strictly after)")
	}
	if ls := mustLease(t, s, now.Add(time.Minute+time.Millisecond), time.Minute, 10); len(ls) != 1 {
		t.Fatal("expired lease not taken over")
	}
}

func testPartialFinal(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com", "b@example.com")
	Enqueue(t, s, m, Body(5, 100<<10), time.Time{})
	ls := mustLease(t, s, base, time.Minute, 10)
	if len(ls) != 1 {
		t.Fatalf("Lease = %+v", ls)
	}
	err := s.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered, Reply: "250 ok"}})
	if err != nil {
		t.Fatal(err)
	}
	g := mustGet(t, s, m.ID)
	if g.Recipients[0].Status != store.StatusDelivered || g.Recipients[1].Status != store.StatusQueued {
		t.Errorf("after partial update: %+v", g.Recipients)
	}
	ReadBody(t, s, m.ID)
	err = s.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[1].ID, Status: store.StatusExpired, Reply: "too old"}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.Get(ctx, m.ID)
	expectNotFound(t, "Get after all final", err)
	_, err = s.OpenBody(ctx, m.ID)
	expectNotFound(t, "OpenBody after all final", err)
}

func testUpdateUnknown(t *testing.T, s store.Store) {
	ctx := context.Background()
	err := s.Update(ctx, "nope", "", []store.Outcome{{RecipientID: 1, Status: store.StatusDelivered}})
	expectNotFound(t, "Update unknown message", err)
	m := NewMessage(base, "a@example.com", "b@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	// An unknown recipient fails the whole update: nothing is applied.
	err = s.Update(ctx, m.ID, "", []store.Outcome{
		{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered},
		{RecipientID: m.Recipients[1].ID + 1000, Status: store.StatusDelivered},
	})
	expectNotFound(t, "Update unknown recipient", err)
	if g := mustGet(t, s, m.ID); g.Recipients[0].Status != store.StatusQueued {
		t.Errorf("failed Update was partly applied: %+v", g.Recipients[0])
	}
}

func testReleaseLeases(t *testing.T, s store.Store) {
	for range 3 {
		Enqueue(t, s, NewMessage(base, "a@example.com"), []byte("x"), base.Add(time.Hour))
	}
	now := base.Add(time.Second)
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 0 {
		t.Fatalf("leased rows returned: %d", len(ls))
	}
	if err := s.ReleaseLeases(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 3 {
		t.Fatalf("after ReleaseLeases, Lease returned %d, want 3", len(ls))
	}
}

func testRetry(t *testing.T, s store.Store) {
	ctx := context.Background()
	m := NewMessage(base, "a@example.com")
	Enqueue(t, s, m, []byte("x"), time.Time{})
	ls := mustLease(t, s, base, time.Minute, 10)
	if len(ls) != 1 {
		t.Fatalf("Lease = %+v", ls)
	}
	err := s.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred, NextAttempt: base.Add(time.Hour)}})
	if err != nil {
		t.Fatal(err)
	}
	now := base.Add(2 * time.Minute)
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 0 {
		t.Fatal("deferred recipient leased before its time")
	}
	if err := s.Retry(ctx, m.ID, now); err != nil {
		t.Fatal(err)
	}
	if g := mustGet(t, s, m.ID); !g.Recipients[0].NextAttempt.Equal(now) || g.Recipients[0].Status != store.StatusDeferred {
		t.Errorf("after Retry: %+v", g.Recipients[0])
	}
	if ls := mustLease(t, s, now, time.Minute, 10); len(ls) != 1 {
		t.Fatal("Retry did not make the message due")
	}
	expectNotFound(t, "Retry unknown", s.Retry(ctx, "nope", now))
}

func testDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, n := range []int{10, 300 << 10} {
		m := NewMessage(base, "a@example.com", "b@example.com")
		Enqueue(t, s, m, Body(7, n), time.Time{})
		if err := s.Delete(ctx, m.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		_, err := s.Get(ctx, m.ID)
		expectNotFound(t, "Get after Delete", err)
		_, err = s.OpenBody(ctx, m.ID)
		expectNotFound(t, "OpenBody after Delete", err)
		if ls := mustLease(t, s, base.Add(time.Hour), time.Minute, 10); len(ls) != 0 {
			t.Errorf("deleted message leased")
		}
		expectNotFound(t, "Delete twice", s.Delete(ctx, m.ID))
	}
}

func testStats(t *testing.T, s store.Store) {
	ctx := context.Background()
	st, err := s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st != (store.QueueStats{}) {
		t.Errorf("empty Stats = %+v", st)
	}
	m1 := NewMessage(base.Add(time.Minute), "a@example.com", "b@example.com")
	m2 := NewMessage(base, "c@example.com")
	Enqueue(t, s, m1, []byte("x"), time.Time{})
	Enqueue(t, s, m2, []byte("y"), time.Time{})
	if err := s.Update(ctx, m1.ID, "", []store.Outcome{{RecipientID: m1.Recipients[0].ID, Status: store.StatusDelivered}}); err != nil {
		t.Fatal(err)
	}
	st, err = s.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Messages != 2 || st.Recipients != 2 || !st.Oldest.Equal(base) {
		t.Errorf("Stats = %+v, want 2 messages, 2 recipients, oldest %v", st, base)
	}
}

func testNextDue(t *testing.T, s store.Store) {
	ctx := context.Background()
	due, err := s.NextDue(ctx)
	if err != nil || !due.IsZero() {
		t.Fatalf("NextDue empty = %v, %v", due, err)
	}
	m1 := NewMessage(base.Add(time.Hour), "a@example.com")
	m2 := NewMessage(base.Add(time.Minute), "b@example.com")
	Enqueue(t, s, m1, []byte("x"), time.Time{})
	Enqueue(t, s, m2, []byte("x"), time.Time{})
	due, err = s.NextDue(ctx)
	if err != nil || !due.Equal(base.Add(time.Minute)) {
		t.Fatalf("NextDue = %v, %v; want %v", due, err, base.Add(time.Minute))
	}
	// Leasing m2 moves its due time to the end of its lease.
	ls := mustLease(t, s, base.Add(2*time.Minute), 5*time.Minute, 1)
	if len(ls) != 1 || ls[0].Message.ID != m2.ID {
		t.Fatalf("Lease = %+v", ls)
	}
	due, err = s.NextDue(ctx)
	if err != nil || due.After(base.Add(7*time.Minute+time.Millisecond)) || due.Before(base.Add(7*time.Minute)) {
		t.Fatalf("NextDue with m2 leased = %v, %v; want about %v (lease end)", due, err, base.Add(7*time.Minute))
	}
	if err := s.Update(ctx, m2.ID, ls[0].Token, []store.Outcome{{RecipientID: m2.Recipients[0].ID, Status: store.StatusDelivered}}); err != nil {
		t.Fatal(err)
	}
	due, err = s.NextDue(ctx)
	if err != nil || !due.Equal(base.Add(time.Hour)) {
		t.Fatalf("NextDue = %v, %v; want %v", due, err, base.Add(time.Hour))
	}
}

func testListPagination(t *testing.T, s store.Store) {
	ctx := context.Background()
	var ids []string
	for i := range 7 {
		m := NewMessage(base.Add(time.Duration(i)*time.Second), "a@example.com", "b@example.com")
		Enqueue(t, s, m, []byte("x"), time.Time{})
		ids = append(ids, m.ID)
	}
	var got []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("List does not terminate")
		}
		page, err := s.List(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 3 {
			t.Fatalf("List returned %d > limit", len(page))
		}
		for _, m := range page {
			if len(m.Recipients) != 2 {
				t.Errorf("List message %s has %d recipients", m.ID, len(m.Recipients))
			}
			got = append(got, m.ID)
		}
		after = page[len(page)-1].ID
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("List = %v, want %v", got, ids)
	}
}

func testDomains(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.AddDomain(ctx, "Example.COM"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddDomain(ctx, "example.com"); !errors.Is(err, store.ErrExists) {
		t.Errorf("AddDomain again: err = %v, want ErrExists", err)
	}
	if err := s.AddDomain(ctx, "b.example"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"example.com", "EXAMPLE.com", "b.example"} {
		if ok, err := s.IsLocalDomain(ctx, d); err != nil || !ok {
			t.Errorf("IsLocalDomain(%q) = %v, %v", d, ok, err)
		}
	}
	if ok, err := s.IsLocalDomain(ctx, "other.example"); err != nil || ok {
		t.Errorf("IsLocalDomain(other) = %v, %v", ok, err)
	}
	l, err := s.ListDomains(ctx)
	if err != nil || fmt.Sprint(l) != "[b.example example.com]" {
		t.Errorf("ListDomains = %v, %v", l, err)
	}
	if err := s.DeleteDomain(ctx, "EXAMPLE.com"); err != nil {
		t.Fatal(err)
	}
	expectNotFound(t, "DeleteDomain twice", s.DeleteDomain(ctx, "example.com"))
	if ok, _ := s.IsLocalDomain(ctx, "example.com"); ok {
		t.Error("deleted domain still local")
	}
}

func testUsers(t *testing.T, s store.Store) {
	ctx := context.Background()
	created := base
	u := store.User{Address: "Alice@Example.com", PasswordHash: "$argon2id$v=19$x", SendAs: []string{"example.com", "bob@example.org"}, Created: created}
	if err := s.AddUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser(ctx, store.User{Address: "alice@example.com", PasswordHash: "y"}); !errors.Is(err, store.ErrExists) {
		t.Errorf("AddUser again: err = %v, want ErrExists", err)
	}
	if err := s.AddUser(ctx, store.User{Address: "bob@example.com", PasswordHash: "b"}); err != nil {
		t.Fatal(err)
	}
	g, err := s.GetUser(ctx, "ALICE@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if g.Address != "alice@example.com" || g.PasswordHash != u.PasswordHash || fmt.Sprint(g.SendAs) != fmt.Sprint(u.SendAs) || !g.Created.Equal(created) {
		t.Errorf("GetUser = %+v", g)
	}
	if err := s.SetPassword(ctx, "alice@EXAMPLE.com", "new"); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.GetUser(ctx, "alice@example.com"); g.PasswordHash != "new" {
		t.Errorf("SetPassword not applied: %+v", g)
	}
	expectNotFound(t, "SetPassword unknown", s.SetPassword(ctx, "nobody@example.com", "x"))
	if err := s.SetSendAs(ctx, "Alice@example.com", []string{"@news.example.com", "ceo@example.com"}); err != nil {
		t.Fatal(err)
	}
	if g, _ := s.GetUser(ctx, "alice@example.com"); fmt.Sprint(g.SendAs) != "[@news.example.com ceo@example.com]" || g.PasswordHash != "new" {
		t.Errorf("SetSendAs not applied (or touched the password): %+v", g)
	}
	if err := s.SetSendAs(ctx, "alice@example.com", u.SendAs); err != nil {
		t.Fatal(err)
	}
	expectNotFound(t, "SetSendAs unknown", s.SetSendAs(ctx, "nobody@example.com", nil))
	l, err := s.ListUsers(ctx)
	if err != nil || len(l) != 2 || l[0].Address != "alice@example.com" || l[1].Address != "bob@example.com" || len(l[1].SendAs) != 0 {
		t.Errorf("ListUsers = %+v, %v", l, err)
	}
	if err := s.DeleteUser(ctx, "Alice@example.com"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetUser(ctx, "alice@example.com")
	expectNotFound(t, "GetUser deleted", err)
	expectNotFound(t, "DeleteUser twice", s.DeleteUser(ctx, "alice@example.com"))
}

func testAliases(t *testing.T, s store.Store) {
	ctx := context.Background()
	if err := s.AddAlias(ctx, store.Alias{Address: "Postmaster@Example.com", Targets: []string{"alice@example.com"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.AddAlias(ctx, store.Alias{Address: "@example.com", Targets: []string{"catch@example.net"}}); err != nil {
		t.Fatal(err)
	}
	// Replaces.
	if err := s.AddAlias(ctx, store.Alias{Address: "postmaster@example.com", Targets: []string{"a@x.example", "b@y.example"}}); err != nil {
		t.Fatal(err)
	}
	a, err := s.GetAlias(ctx, "POSTMASTER@example.com")
	if err != nil || a.Address != "postmaster@example.com" || fmt.Sprint(a.Targets) != "[a@x.example b@y.example]" {
		t.Errorf("GetAlias = %+v, %v", a, err)
	}
	l, err := s.ListAliases(ctx)
	if err != nil || len(l) != 2 || l[0].Address != "@example.com" || l[1].Address != "postmaster@example.com" {
		t.Errorf("ListAliases = %+v, %v", l, err)
	}
	if err := s.DeleteAlias(ctx, "postmaster@example.com"); err != nil {
		t.Fatal(err)
	}
	_, err = s.GetAlias(ctx, "postmaster@example.com")
	expectNotFound(t, "GetAlias deleted", err)
	expectNotFound(t, "DeleteAlias twice", s.DeleteAlias(ctx, "postmaster@example.com"))
}
