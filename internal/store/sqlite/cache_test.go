package sqlite

import (
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/heraldmail/herald/internal/store/storetest"
)

// behind opens a second connection to the store's database in dir, to
// change it behind s's back (as another process would: its caches do not
// know).
func behind(t *testing.T, s *Store, dir string) storetest.Behind {
	t.Helper()
	db, err := sql.Open("sqlite", filepath.Join(dir, "herald.db")+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return storetest.Behind{
		Exec: func(t testing.TB, q string, args ...any) {
			t.Helper()
			if _, err := db.Exec(q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		},
		Handoff: &s.handoff,
	}
}

// The worker a message is handed to reads its body from memory: see
// storetest.HandoffBody. Bodies in blob files are read from disk.
func TestHandoffBodyServedFromMemory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{InlineMax: 1 << 10})
	defer s.Close()
	storetest.HandoffBody(t, s, behind(t, s, dir))
}

// Accounts and active DKIM keys are read once per readcache.TTLDuration:
// see storetest.ReadCaches; the CLI's changes are changes behind the
// server's back.
func TestReadCaches(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openTest(t, dir, Options{})
	defer s.Close()
	storetest.ReadCaches(t, s, behind(t, s, dir))
}
