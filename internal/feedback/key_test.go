package feedback_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/heraldmail/herald/internal/feedback"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/verp"
)

func openSQLite(t *testing.T, dir string) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(dir, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func writeKey(t *testing.T, path string, b byte) []byte {
	t.Helper()
	key := bytes.Repeat([]byte{b}, verp.KeySize)
	if err := os.WriteFile(path, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}

// The key is made once and kept in the store: every later load, with or
// without a key file, returns it.
func TestLoadKeyMadeOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	st := openSQLite(t, dir)
	legacy := filepath.Join(dir, "verp.key")
	a, err := feedback.LoadKey(ctx, st, legacy, nil)
	if err != nil || verp.CheckKey(a) != nil {
		t.Fatalf("first load: %x %v", a, err)
	}
	if _, err := os.Stat(legacy); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("LoadKey wrote a key file: %v", err)
	}
	if got, _ := st.Secret(ctx, feedback.KeySecret, nil); !bytes.Equal(got, a) {
		t.Fatalf("store holds %x, want %x", got, a)
	}
	writeKey(t, legacy, 9) // a stray file does not replace the cluster's key
	if b, err := feedback.LoadKey(ctx, st, legacy, nil); err != nil || !bytes.Equal(a, b) {
		t.Fatalf("second load: %x %v, want %x", b, err, a)
	}
}

// Migration: a node whose data directory has the key file of an earlier
// Herald imports it when the store has none, so VERP addresses it already
// sent still decode; a damaged file stops the start-up and changes
// nothing.
func TestLoadKeyImportsLegacyFile(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	st := openSQLite(t, dir)
	legacy := filepath.Join(dir, "verp.key")
	if err := os.WriteFile(legacy, []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := feedback.LoadKey(ctx, st, legacy, nil)
	var kf *feedback.KeyFileError
	if !errors.As(err, &kf) || kf.Path != legacy {
		t.Fatalf("damaged file: %v, want a KeyFileError", err)
	}
	if _, err := st.Secret(ctx, feedback.KeySecret, nil); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed load stored a key: %v", err)
	}
	old := writeKey(t, legacy, 7)
	sent := verp.Encode(old, "MSG1", 0, "example.test")
	key, err := feedback.LoadKey(ctx, st, legacy, nil)
	if err != nil || !bytes.Equal(key, old) {
		t.Fatalf("import: %x %v, want the file's key", key, err)
	}
	if id, _, ok := verp.Decode(key, sent); !ok || id != "MSG1" {
		t.Fatalf("an address sent before the import does not decode: %q %v", id, ok)
	}
}

// Three nodes on one PostgreSQL database: the node with the key file of
// the single-node installation imports it, the new nodes (no file) get the
// same key, and an address made by one node decodes on the others.
func TestLoadKeySharedByNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dsn := pgtest.NewSchema(t)
	open := func(node string) *postgres.Store {
		st, err := postgres.Open(ctx, dsn, postgres.Options{Node: node, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	legacy := filepath.Join(t.TempDir(), "verp.key")
	old := writeKey(t, legacy, 3)
	a, err := feedback.LoadKey(ctx, open("mx1"), legacy, nil)
	if err != nil || !bytes.Equal(a, old) {
		t.Fatalf("mx1: %x %v", a, err)
	}
	for _, node := range []string{"mx2", "mx3"} {
		k, err := feedback.LoadKey(ctx, open(node), filepath.Join(t.TempDir(), "verp.key"), nil)
		if err != nil || !bytes.Equal(k, old) {
			t.Fatalf("%s: %x %v, want mx1's key", node, k, err)
		}
	}
	addr := feedback.New(nil, a, nil, nil).Sender("MSG2", "app@example.test")
	if !feedback.New(nil, old, nil, nil).Valid(addr) {
		t.Fatalf("%s made on mx1 is not valid on mx2", addr)
	}
}
