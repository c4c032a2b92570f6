package sqlite

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// A restored queue is due at once, but for scheduled messages not yet
// attempted, which keep their send time.
func TestReleaseAllLeasesKeepsSchedule(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	sendAt := t0.Add(2 * time.Hour)
	sched := storetest.NewMessage(t0, "a@example.com")
	sched.SendAt = sendAt
	storetest.Enqueue(t, s, sched, []byte("x"), time.Time{})
	deferred := storetest.NewMessage(t0, "b@example.com")
	storetest.Enqueue(t, s, deferred, []byte("x"), time.Time{})
	if err := s.Update(ctx, deferred.ID, "", []store.Outcome{{RecipientID: deferred.Recipients[0].ID, Status: store.StatusDeferred,
		NextAttempt: t0.Add(time.Hour), Reply: "451 later"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReleaseAllLeases(ctx, dir, t0); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir, Options{})
	defer s.Close()
	for _, c := range []struct {
		id   string
		want time.Time
	}{{sched.ID, sendAt}, {deferred.ID, t0}} {
		m, err := s.Get(ctx, c.id)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Recipients[0].NextAttempt; !got.Equal(c.want) {
			t.Errorf("%s due at %s after the restore, want %s", c.id, got, c.want)
		}
	}
}
