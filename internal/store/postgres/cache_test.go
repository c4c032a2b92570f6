package postgres

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// behind reaches s's schema behind its back (not through its methods, so
// its caches do not know), as another node would.
func behind(s *Store) storetest.Behind {
	return storetest.Behind{
		Exec: func(t testing.TB, q string, args ...any) {
			t.Helper()
			for i := 1; strings.Contains(q, "?"); i++ {
				q = strings.Replace(q, "?", "$"+strconv.Itoa(i), 1)
			}
			if _, err := s.pool.Exec(context.Background(), q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		Handoff: &s.handoff,
	}
}

// The worker a message is handed to reads its body from memory: see
// storetest.HandoffBody. Chunked bodies are read from the database.
func TestHandoffBodyServedFromMemory(t *testing.T) {
	t.Parallel()
	s := openFresh(t, Options{ChunkSize: 1 << 10, InlineMax: 1 << 10})
	storetest.HandoffBody(t, s, behind(s))
}

// Here the bodies of the messages a lease takes come with the lease's
// query, and are served from memory until the outcome is recorded.
func TestLeasedBodyServedFromMemory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openFresh(t, Options{ChunkSize: 1 << 10, InlineMax: 1 << 10})
	bb := behind(s)
	m := storetest.NewMessage(t0, "a@example.com")
	m.Headers = []byte("DKIM-Signature: x\r\n")
	storetest.Enqueue(t, s, m, []byte("Subject: leased\r\n\r\nbody\r\n"), time.Time{})
	ls, err := s.Lease(ctx, time.Now(), time.Hour, 10)
	if err != nil || len(ls) != 1 || ls[0].Message.ID != m.ID {
		t.Fatalf("Lease = %+v, %v", ls, err)
	}
	bb.Exec(t, `UPDATE messages SET body = ? WHERE id = ?`, []byte("changed behind its back"), m.ID)
	if got := string(storetest.ReadBody(t, s, m.ID)); got != "DKIM-Signature: x\r\nSubject: leased\r\n\r\nbody\r\n" {
		t.Fatalf("OpenBody of a leased message = %q", got)
	}
	if err := s.Update(ctx, m.ID, ls[0].Token, []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: time.Now().Add(time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	if got := string(storetest.ReadBody(t, s, m.ID)); got != "DKIM-Signature: x\r\nchanged behind its back" {
		t.Errorf("OpenBody after the outcome = %q; want the database's", got)
	}
}

// Accounts and active DKIM keys are read once per readcache.TTLDuration:
// see storetest.ReadCaches; another node's changes are changes behind the
// handle's back.
func TestReadCaches(t *testing.T) {
	t.Parallel()
	s := openFresh(t, Options{})
	storetest.ReadCaches(t, s, behind(s))
}
