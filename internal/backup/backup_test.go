package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/store/storetest"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func open(t testing.TB, dir string, opts sqlite.Options) *sqlite.Store {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	s, err := sqlite.Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func quiet() Options {
	return Options{Version: "test", Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return t0 }}
}

func put(t testing.TB, path string, data string, perm os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), perm); err != nil {
		t.Fatal(err)
	}
}

// bodies reads the body of every message of the store in dir.
func bodies(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	s := open(t, dir, sqlite.Options{})
	defer s.Close()
	ctx := context.Background()
	msgs, err := s.List(ctx, "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]byte)
	for _, m := range msgs {
		r, err := s.OpenBody(ctx, m.ID)
		if err != nil {
			t.Fatalf("body of restored message %s: %v", m.ID, err)
		}
		b, err := io.ReadAll(r)
		r.Close()
		if err != nil {
			t.Fatalf("body of restored message %s: %v", m.ID, err)
		}
		out[m.ID] = b
	}
	return out
}

// A backup taken with the store open (as under a running server) brings
// back every message with its body, the directory, the Maildir and the TLS
// files; the restored queue is all due, whoever leased it.
func TestBackupRestoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	data, dest, target := t.TempDir(), filepath.Join(t.TempDir(), "bk"), t.TempDir()
	s := open(t, data, sqlite.Options{Node: "n1"})
	defer s.Close()
	want := make(map[string][]byte)
	for i := range 6 {
		m := storetest.NewMessage(t0.Add(time.Duration(i)*time.Second), "rcpt@example.net")
		size := 1 << 10
		if i%2 == 1 {
			size = 100 << 10 // a blob file
		}
		body := storetest.Body(uint64(i), size)
		lease := time.Time{}
		if i == 1 {
			lease = t0.Add(24 * time.Hour) // in flight on n1
		}
		storetest.Enqueue(t, s, m, body, lease)
		want[m.ID] = body
		if i == 2 {
			if err := s.Update(ctx, m.ID, "", []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred,
				NextAttempt: t0.Add(48 * time.Hour), Reply: "451 later"}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := s.AddDomain(ctx, "example.com"); err != nil {
		t.Fatal(err)
	}
	put(t, filepath.Join(data, "mail", "example.com", "u", "new", "1.a.host"), "delivered\r\n", 0o600)
	put(t, filepath.Join(data, "mail", "example.com", "u", "tmp", "2.b.host"), "half written", 0o600)
	if err := os.MkdirAll(filepath.Join(data, "mail", "example.com", "u", "cur"), 0o700); err != nil {
		t.Fatal(err)
	}
	put(t, filepath.Join(data, "tls", "key.pem"), "KEY", 0o600)
	put(t, filepath.Join(data, "reserve.space"), "reserve", 0o600)
	put(t, filepath.Join(data, "verp.key"), "legacy key", 0o600)
	put(t, filepath.Join(data, "tls", "cert.pem"), "CERT", 0o644)

	m, err := Backup(ctx, data, dest, quiet())
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if m.Messages != 6 || m.Pending != 6 || m.Blobs != 3 || len(m.Finished) != 0 || m.Schema != sqlite.SchemaVersion() {
		t.Errorf("manifest: %d messages, %d pending, %d blobs, finished %v, schema %d; want 6, 6, 3, none, %d",
			m.Messages, m.Pending, m.Blobs, m.Finished, m.Schema, sqlite.SchemaVersion())
	}
	if _, err := os.Stat(filepath.Join(dest, "mail", "example.com", "u", "tmp", "2.b.host")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a Maildir tmp file was backed up (%v)", err)
	}
	for _, skip := range []string{"herald.pid", "herald.lock", "herald.db-wal", "herald.db-shm", "reserve.space"} {
		if _, err := os.Stat(filepath.Join(dest, skip)); err == nil {
			t.Errorf("%s was backed up", skip)
		}
	}
	if fi, err := os.Stat(filepath.Join(dest, "herald.db")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup's herald.db: %v %v, want mode 0600 (keys, password hashes)", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(dest, "tls", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("backup's tls/key.pem: %v %v, want mode 0600", fi, err)
	}
	// The server goes on after the backup: not in the restored data.
	later := storetest.NewMessage(t0.Add(time.Hour), "late@example.net")
	storetest.Enqueue(t, s, later, []byte("late\r\n"), time.Time{})

	res, err := Restore(ctx, dest, target, RestoreOptions{Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if res.Released != 1 {
		t.Errorf("released %d leases, want 1", res.Released)
	}
	got := bodies(t, target)
	if len(got) != len(want) {
		t.Errorf("restored %d messages, want %d", len(got), len(want))
	}
	for id, b := range want {
		if !bytes.Equal(got[id], b) {
			t.Errorf("message %s: restored body of %d bytes differs from the %d enqueued", id, len(got[id]), len(b))
		}
	}
	// Every recipient is due at once on a node of another name.
	rs := open(t, target, sqlite.Options{Node: "fresh"})
	leases, err := rs.Lease(ctx, t0, time.Minute, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 6 {
		t.Errorf("leased %d restored messages at once, want 6", len(leases))
	}
	if ok, err := rs.IsLocalDomain(ctx, "example.com"); err != nil || !ok {
		t.Errorf("restored domain example.com: %v %v", ok, err)
	}
	rs.Close()
	if b, err := os.ReadFile(filepath.Join(target, "mail", "example.com", "u", "new", "1.a.host")); err != nil || string(b) != "delivered\r\n" {
		t.Errorf("restored Maildir message: %q %v", b, err)
	}
	for _, d := range []string{"cur", "tmp"} {
		if fi, err := os.Stat(filepath.Join(target, "mail", "example.com", "u", d)); err != nil || !fi.IsDir() {
			t.Errorf("restored Maildir lacks %s/: %v", d, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(target, "verp.key")); err != nil || string(b) != "legacy key" {
		t.Errorf("restored verp.key: %q %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(target, "tls", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("restored tls/key.pem: %v %v, want mode 0600", fi, err)
	}
	if fi, err := os.Stat(filepath.Join(target, "tls", "cert.pem")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("restored tls/cert.pem: %v %v, want mode 0640 (no bits for others)", fi, err)
	}
}

// A message that finishes between the snapshot and the copy of its body
// file is left out of the backup, which keeps every other one.
func TestBackupDropsMessageFinishedAfterSnapshot(t *testing.T) {
	ctx := context.Background()
	data, dest, target := t.TempDir(), filepath.Join(t.TempDir(), "bk"), t.TempDir()
	s := open(t, data, sqlite.Options{InlineMax: -1})
	defer s.Close()
	var ids []string
	for i := range 3 {
		m := storetest.NewMessage(t0, "rcpt@example.net")
		storetest.Enqueue(t, s, m, storetest.Body(uint64(i), 2048), time.Time{})
		ids = append(ids, m.ID)
	}
	opts := quiet()
	opts.afterSnapshot = func() {
		if err := s.Delete(ctx, ids[1]); err != nil {
			t.Error(err)
		}
	}
	m, err := Backup(ctx, data, dest, opts)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if len(m.Finished) != 1 || m.Finished[0] != ids[1] || m.Messages != 2 || m.Blobs != 2 {
		t.Errorf("manifest: finished %v, %d messages, %d blobs; want [%s], 2, 2", m.Finished, m.Messages, m.Blobs, ids[1])
	}
	if _, err := Restore(ctx, dest, target, RestoreOptions{}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	got := bodies(t, target)
	if _, ok := got[ids[1]]; ok || len(got) != 2 {
		t.Errorf("restored %d messages (finished one there: %v), want the 2 others", len(got), ok)
	}
}

// A queued message whose body file is missing is a damaged store: the
// backup fails rather than keep a message without its body.
func TestBackupRefusesQueuedMessageWithoutBody(t *testing.T) {
	data, dest := t.TempDir(), filepath.Join(t.TempDir(), "bk")
	s := open(t, data, sqlite.Options{InlineMax: -1})
	defer s.Close()
	m := storetest.NewMessage(t0, "rcpt@example.net")
	storetest.Enqueue(t, s, m, []byte("body\r\n"), time.Time{})
	if err := os.Remove(filepath.Join(data, "blobs", m.ID)); err != nil {
		t.Fatal(err)
	}
	_, err := Backup(context.Background(), data, dest, quiet())
	if err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("Backup of a store missing a body file: %v, want a damaged-store error", err)
	}
	if _, err := os.Stat(filepath.Join(dest, ManifestName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed backup has a manifest (%v)", err)
	}
}

func TestBackupRefusesDestination(t *testing.T) {
	data := t.TempDir()
	s := open(t, data, sqlite.Options{})
	s.Close()
	full := t.TempDir()
	put(t, filepath.Join(full, "x"), "x", 0o600)
	if _, err := Backup(context.Background(), data, full, quiet()); !errors.Is(err, ErrNotEmpty) {
		t.Errorf("Backup into a non-empty directory: %v, want ErrNotEmpty", err)
	}
	if _, err := Backup(context.Background(), data, filepath.Join(data, "bk"), quiet()); err == nil || !strings.Contains(err.Error(), "inside the data directory") {
		t.Errorf("Backup into the data directory: %v", err)
	}
	if _, err := Backup(context.Background(), t.TempDir(), filepath.Join(t.TempDir(), "bk"), quiet()); err == nil || !strings.Contains(err.Error(), "no store") {
		t.Errorf("Backup of a directory without a store: %v", err)
	}
}

// backupOf makes a small backup and returns its directory.
func backupOf(t *testing.T) string {
	t.Helper()
	data, dest := t.TempDir(), filepath.Join(t.TempDir(), "bk")
	s := open(t, data, sqlite.Options{InlineMax: -1})
	storetest.Enqueue(t, s, storetest.NewMessage(t0, "rcpt@example.net"), []byte("body\r\n"), time.Time{})
	s.Close()
	if _, err := Backup(context.Background(), data, dest, quiet()); err != nil {
		t.Fatal(err)
	}
	return dest
}

func editManifest(t *testing.T, dir string, f func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, ManifestName)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRestoreRefuses(t *testing.T) {
	ctx := context.Background()
	src := backupOf(t)

	t.Run("server running", func(t *testing.T) {
		target := t.TempDir()
		lock, err := pidlock.Acquire(filepath.Join(target, "herald.pid"))
		if err != nil {
			t.Fatal(err)
		}
		defer lock.Release()
		var held *pidlock.HeldError
		if _, err := Restore(ctx, src, target, RestoreOptions{}); !errors.As(err, &held) {
			t.Errorf("Restore into a held data directory: %v, want a HeldError", err)
		}
		if _, err := os.Stat(filepath.Join(target, "herald.db")); err == nil {
			t.Error("Restore wrote a held data directory")
		}
	})
	t.Run("not empty", func(t *testing.T) {
		target := t.TempDir()
		put(t, filepath.Join(target, "herald.db"), "old", 0o600)
		put(t, filepath.Join(target, "mail", "old"), "old", 0o600)
		if _, err := Restore(ctx, src, target, RestoreOptions{}); !errors.Is(err, ErrNotEmpty) {
			t.Fatalf("Restore into a non-empty data directory: %v, want ErrNotEmpty", err)
		}
		if b, _ := os.ReadFile(filepath.Join(target, "herald.db")); string(b) != "old" {
			t.Error("a refused restore changed the data directory")
		}
		res, err := Restore(ctx, src, target, RestoreOptions{Force: true})
		if err != nil {
			t.Fatalf("Restore --force: %v", err)
		}
		if res.Removed != 2 {
			t.Errorf("--force removed %d entries, want 2", res.Removed)
		}
		if _, err := os.Stat(filepath.Join(target, "mail", "old")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("--force kept an old file (%v)", err)
		}
		if got := bodies(t, target); len(got) != 1 {
			t.Errorf("restored %d messages, want 1", len(got))
		}
	})
	t.Run("backup inside the data directory", func(t *testing.T) {
		target := t.TempDir()
		inside := filepath.Join(target, "bk")
		if err := os.CopyFS(inside, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		if _, err := Restore(ctx, inside, target, RestoreOptions{Force: true}); err == nil || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("Restore --force of a backup inside the data directory: %v, want a refusal", err)
		}
		if _, err := os.Stat(filepath.Join(inside, ManifestName)); err != nil {
			t.Errorf("the backup is gone: %v", err)
		}
	})
	damaged := func(name string, f func(t *testing.T, dir string), want string) {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "copy")
			if err := os.CopyFS(dir, os.DirFS(src)); err != nil {
				t.Fatal(err)
			}
			f(t, dir)
			target := t.TempDir()
			_, err := Restore(ctx, dir, target, RestoreOptions{})
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("Restore: %v, want an error saying %q", err, want)
			}
			if entries, _ := os.ReadDir(target); len(entries) != 0 {
				t.Errorf("a refused restore wrote %d entries into the data directory", len(entries))
			}
		})
	}
	damaged("changed body", func(t *testing.T, dir string) {
		blobs, _ := os.ReadDir(filepath.Join(dir, "blobs"))
		if len(blobs) != 1 {
			t.Fatalf("%d blobs in the backup, want 1", len(blobs))
		}
		put(t, filepath.Join(dir, "blobs", blobs[0].Name()), "bodY\r\n", 0o600)
	}, "does not match the manifest")
	damaged("missing file", func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, "herald.db"))
	}, "damaged")
	damaged("no manifest", func(t *testing.T, dir string) {
		os.Remove(filepath.Join(dir, ManifestName))
	}, "no manifest.json")
	damaged("newer schema", func(t *testing.T, dir string) {
		editManifest(t, dir, func(m map[string]any) { m["schema_version"] = sqlite.SchemaVersion() + 1 })
	}, "newer than this herald")
	damaged("newer format", func(t *testing.T, dir string) {
		editManifest(t, dir, func(m map[string]any) { m["format"] = FormatVersion + 1 })
	}, "not one this herald reads")
	damaged("path outside", func(t *testing.T, dir string) {
		editManifest(t, dir, func(m map[string]any) {
			files := m["files"].([]any)
			files[0].(map[string]any)["path"] = "../escape"
		})
	}, "damaged")
}

// A backup taken while messages are enqueued and finished holds every
// message acknowledged before it started and not finished, each with its
// body, and no message without one.
func TestBackupUnderLoad(t *testing.T) {
	ctx := context.Background()
	data, dest, target := t.TempDir(), filepath.Join(t.TempDir(), "bk"), t.TempDir()
	s := open(t, data, sqlite.Options{InlineMax: 4 << 10})
	defer s.Close()
	want := make(map[string][]byte)
	var before []string // acknowledged before the backup starts
	for i := range 50 {
		m := storetest.NewMessage(t0, "rcpt@example.net")
		b := storetest.Body(uint64(i), 1<<10+(i%2)*(8<<10))
		storetest.Enqueue(t, s, m, b, time.Time{})
		want[m.ID] = b
		before = append(before, m.ID)
	}
	var mu sync.Mutex
	stop := make(chan struct{})
	done := make(chan struct{})
	started := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 400; i++ {
			if i == 20 {
				close(started) // the backup starts with the load under way
			}
			select {
			case <-stop:
				return
			default:
			}
			m := storetest.NewMessage(t0, "rcpt@example.net")
			b := storetest.Body(uint64(i), 1<<10+(i%2)*(8<<10))
			if _, err := storetest.EnqueueErr(s, m, b, time.Time{}); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			want[m.ID] = b
			mu.Unlock()
			if i%2 == 0 { // finish it
				if err := s.Delete(ctx, m.ID); err != nil {
					t.Error(err)
					return
				}
			}
		}
	}()
	select {
	case <-started:
	case <-done:
		t.Fatal("the load ended early")
	}
	m, err := Backup(ctx, data, dest, quiet())
	close(stop)
	<-done
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if _, err := Restore(ctx, dest, target, RestoreOptions{}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	got := bodies(t, target)
	if len(got) != m.Messages {
		t.Errorf("restored %d messages, manifest says %d", len(got), m.Messages)
	}
	mu.Lock()
	defer mu.Unlock()
	for id, b := range got {
		if !bytes.Equal(b, want[id]) {
			t.Errorf("message %s: restored body differs", id)
		}
	}
	for _, id := range before {
		if _, ok := got[id]; !ok {
			t.Errorf("message %s, acknowledged before the backup, is not in it", id)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("restored message %s was never enqueued", id)
		}
	}
	t.Logf("backup: %d messages, %d blobs, %d finished during it, %d files", m.Messages, m.Blobs, len(m.Finished), len(m.Files))
}

// BenchmarkBackup measures a backup of 2,000 queued messages, a quarter of
// them 100 KiB blob files, the rest 2 KiB inline.
func BenchmarkBackup(b *testing.B) {
	data := b.TempDir()
	s := open(b, data, sqlite.Options{})
	for i := range 2000 {
		size := 2 << 10
		if i%4 == 0 {
			size = 100 << 10
		}
		storetest.Enqueue(b, s, storetest.NewMessage(t0, "rcpt@example.net"), storetest.Body(uint64(i), size), time.Time{})
	}
	defer s.Close()
	b.ResetTimer()
	var m *Manifest
	for i := 0; i < b.N; i++ {
		var err error
		if m, err = Backup(context.Background(), data, filepath.Join(b.TempDir(), "bk"), quiet()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(m.Bytes)/(1<<20), "MiB")
	b.ReportMetric(float64(m.Messages), "messages")
}

// BenchmarkRestore measures a restore (verify, copy, release the leases)
// of the backup of BenchmarkBackup.
func BenchmarkRestore(b *testing.B) {
	data := b.TempDir()
	s := open(b, data, sqlite.Options{})
	for i := range 2000 {
		size := 2 << 10
		if i%4 == 0 {
			size = 100 << 10
		}
		storetest.Enqueue(b, s, storetest.NewMessage(t0, "rcpt@example.net"), storetest.Body(uint64(i), size), time.Time{})
	}
	s.Close()
	src := filepath.Join(b.TempDir(), "bk")
	if _, err := Backup(context.Background(), data, src, quiet()); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Restore(context.Background(), src, b.TempDir(), RestoreOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}
