package logfile

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// After a logrotate-style rename, Reopen sends later lines to a fresh file
// at the path and loses none written concurrently.
func TestReopenAfterRename(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.log")
	l, err := Open(path, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := l.Write([]byte("before\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// Writes between the rename and the reopen still land in the old file.
	l.Write([]byte("between\n"))

	var wg sync.WaitGroup
	const writers, lines = 4, 200
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < lines; i++ {
				if _, err := l.Write([]byte("line\n")); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	l.Write([]byte("after\n"))

	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(old), "before\nbetween\n") {
		t.Errorf("rotated file = %q", old)
	}
	if !strings.HasSuffix(string(cur), "after\n") || strings.Contains(string(cur), "before") {
		t.Errorf("new file = %q", cur)
	}
	total := strings.Count(string(old), "line\n") + strings.Count(string(cur), "line\n")
	if total != writers*lines {
		t.Errorf("%d lines across both files, want %d", total, writers*lines)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new file mode: %v %v", fi.Mode(), err)
	}
}

// A failed reopen (the directory is gone) keeps logging to the old file.
func TestReopenFailureKeepsOldFile(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "logs")
	os.Mkdir(sub, 0o755)
	path := filepath.Join(sub, "herald.log")
	l, err := Open(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	moved := filepath.Join(dir, "moved")
	if err := os.Rename(sub, moved); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("reopen in a missing directory succeeded")
	}
	if _, err := l.Write([]byte("still here\n")); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(moved, "herald.log"))
	if string(b) != "still here\n" {
		t.Errorf("old file = %q", b)
	}
}
