package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// A delivery outcome recorded while a body is being written waits for that
// message's acceptance and shares its commit (one fsync for both); with
// no body being written it commits at once, alone.
func TestOutcomeSharesAcceptanceCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := openTest(t, t.TempDir(), Options{lazyWait: time.Minute})
	defer s.Close()
	lease := time.Now().Add(time.Hour)
	enqueue := func() (*store.Message, string) {
		m := storetest.NewMessage(t0, "a@example.com")
		return m, storetest.Enqueue(t, s, m, []byte("Subject: x\r\n\r\nbody\r\n"), lease)
	}
	delivered := func(m *store.Message) []store.Outcome {
		return []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered}}
	}

	// Nothing being accepted: at once (a minute's wait would time the
	// test out), in a commit of its own.
	m1, tok1 := enqueue()
	before := s.w.commits.Load()
	if err := s.Update(ctx, m1.ID, tok1, delivered(m1)); err != nil {
		t.Fatal(err)
	}
	if n := s.w.commits.Load() - before; n != 1 {
		t.Fatalf("%d commits for one outcome, want 1", n)
	}
	if s.w.held.Load() != 0 {
		t.Fatal("an outcome was held with no body being written")
	}

	// A body being written: the outcome waits for its Enqueue.
	m2, tok2 := enqueue()
	b, err := s.NewBody()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Write([]byte("Subject: y\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	before = s.w.commits.Load()
	done := make(chan error, 1)
	go func() { done <- s.Update(ctx, m2.ID, tok2, delivered(m2)) }()
	for s.w.held.Load() == 0 {
		select {
		case err := <-done:
			t.Fatalf("outcome committed (%v) while a body was being written", err)
		case <-time.After(time.Millisecond):
		}
	}
	m3 := storetest.NewMessage(t0, "b@example.com")
	if _, err := s.Enqueue(ctx, m3, b, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := s.w.commits.Load() - before; n != 1 {
		t.Errorf("%d commits for an outcome and an acceptance, want 1 shared", n)
	}
	if _, err := s.Get(ctx, m2.ID); err == nil {
		t.Error("delivered message still queued")
	}
	if n := s.openBodies.Load(); n != 0 {
		t.Errorf("%d bodies still counted open", n)
	}

	// An aborted body stops counting too.
	b, _ = s.NewBody()
	b.Abort()
	b.Abort()
	if n := s.openBodies.Load(); n != 0 {
		t.Errorf("%d bodies counted open after Abort", n)
	}
}
