package local

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// fakeDir is an in-memory Directory. Keys are lower-case, as the store keeps them.
func readNew(t *testing.T, dir string) [][]byte {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, "new", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestMaildirDeliver(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := NewMaildir(filepath.Join(root, "mail"))
	msg := []byte("Subject: hi\r\n\r\nbinary \x00\xff ok\r\n.\r\n")
	if err := m.Deliver(context.Background(), "Alice@Example.COM", Envelope{ReturnPath: "sender@remote.test"}, bytes.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	mbox := filepath.Join(root, "mail", "example.com", "alice")
	for _, sub := range []string{"tmp", "new", "cur"} {
		if fi, err := os.Stat(filepath.Join(mbox, sub)); err != nil || !fi.IsDir() {
			t.Fatalf("%s missing: %v", sub, err)
		}
	}
	got := readNew(t, mbox)
	want := append([]byte("Return-Path: <sender@remote.test>\r\nDelivered-To: alice@example.com\r\n"), msg...)
	if len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("new/ holds %q, want exactly %q", got, want)
	}
	if ents, _ := os.ReadDir(filepath.Join(mbox, "tmp")); len(ents) != 0 {
		t.Fatalf("tmp/ not empty: %v", ents)
	}
	fi, err := os.Stat(filepath.Join(mbox, "new"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Fatalf("new/ mode %v, want 0700", fi.Mode().Perm())
	}

	// A second message: a distinct file.
	if err := m.Deliver(context.Background(), "alice@example.com", Envelope{ReturnPath: "sender@remote.test"}, strings.NewReader("two\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := readNew(t, mbox); len(got) != 2 {
		t.Fatalf("%d files after two deliveries", len(got))
	}
}

func TestMaildirDeliveredToAndConcurrent(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := NewMaildir(root)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- m.Deliver(context.Background(), "bob@example.com", Envelope{ReturnPath: "sender@remote.test"}, strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\nbody\r\n", i)))
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got := readNew(t, filepath.Join(root, "example.com", "bob"))
	if len(got) != n {
		t.Fatalf("%d messages in new/, want %d", len(got), n)
	}
	seen := map[string]bool{}
	for _, b := range got {
		if !bytes.HasPrefix(b, []byte("Return-Path: <sender@remote.test>\r\nDelivered-To: bob@example.com\r\nSubject: ")) {
			t.Fatalf("message %q lacks Delivered-To header", b)
		}
		seen[string(b)] = true
	}
	if len(seen) != n {
		t.Fatalf("only %d distinct messages", len(seen))
	}
}

func TestMailboxPathSafety(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := NewMaildir(root)
	good := map[string]string{
		"a/b@example.com":     "a%2Fb",
		"../etc@example.com":  "%2E.%2Fetc",
		`"x\y"@example.com`:   `"x%5Cy"`,
		".hidden@example.com": "%2Ehidden",
		"a%2Fb@example.com":   "a%252fb",
		"Jörg@Bücher.example": "jörg",
		"..@example.com":      "%2E.",
	}
	for addr, leaf := range good {
		p, err := m.MailboxPath(addr)
		if err != nil {
			t.Errorf("MailboxPath(%q): %v", addr, err)
			continue
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || strings.HasPrefix(rel, "..") || strings.Count(rel, string(filepath.Separator)) != 1 {
			t.Errorf("MailboxPath(%q) = %q escapes or nests (rel %q)", addr, p, rel)
		}
		if filepath.Base(p) != leaf {
			t.Errorf("MailboxPath(%q) leaf = %q, want %q", addr, filepath.Base(p), leaf)
		}
	}
	for _, addr := range []string{"", "noat", "@example.com", "user@", "user@../x", "user@a/b", "user@[127.0.0.1]",
		"a\x00b@example.com@", "a\x00b@example.com", "a\r\nBcc: x@example.com", "user@exa\x00mple.com", "\xff@example.com", strings.Repeat("a", 65) + "@example.com"} {
		_, err := m.MailboxPath(addr)
		se, ok := smtp.AsError(err)
		if !ok || se.Code != 550 {
			t.Errorf("MailboxPath(%q) err = %v, want a 550 *smtp.Error", addr, err)
		}
	}
	// Invalid mailbox in Deliver is permanent and writes nothing.
	err := m.Deliver(context.Background(), "user@../x", Envelope{ReturnPath: "sender@remote.test"}, strings.NewReader("x"))
	if se, ok := smtp.AsError(err); !ok || !se.Permanent() {
		t.Fatalf("Deliver(bad) err = %v, want permanent", err)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 0 {
		t.Fatalf("bad delivery created %v", ents)
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

func TestMaildirErrors(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := NewMaildir(root)
	mbox := filepath.Join(root, "example.com", "alice")

	// A body error that is an *smtp.Error keeps its class (permanent here).
	bare := smtp.ErrBareLineFeed
	err := m.Deliver(context.Background(), "alice@example.com", Envelope{ReturnPath: "sender@remote.test"}, io.MultiReader(strings.NewReader("partial"), failingReader{&bare}))
	if se, ok := smtp.AsError(err); !ok || se.Code != 550 {
		t.Fatalf("body smtp error: %v", err)
	}
	// A plain read error is a temporary local error.
	err = m.Deliver(context.Background(), "alice@example.com", Envelope{ReturnPath: "sender@remote.test"}, failingReader{errors.New("conn reset")})
	if se, ok := smtp.AsError(err); !ok || !se.Temporary() {
		t.Fatalf("read error: %v, want temporary", err)
	}
	// Cancellation is temporary too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err = m.Deliver(ctx, "alice@example.com", Envelope{ReturnPath: "sender@remote.test"}, strings.NewReader("x"))
	if se, ok := smtp.AsError(err); !ok || !se.Temporary() || !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: %v", err)
	}
	// Nothing was left behind in tmp/ or new/.
	for _, sub := range []string{"tmp", "new"} {
		if ents, _ := os.ReadDir(filepath.Join(mbox, sub)); len(ents) != 0 {
			t.Fatalf("%s/ holds %d files after failed deliveries", sub, len(ents))
		}
	}
}

func TestMaildirDiskFull(t *testing.T) {
	t.Parallel()
	// /dev/full fails every write with a real ENOSPC; check that Deliver's
	// classification of such an error makes it temporary and storage-full.
	f, err := os.OpenFile("/dev/full", os.O_WRONLY, 0)
	if err != nil {
		t.Skip("no /dev/full")
	}
	defer f.Close()
	_, werr := f.Write([]byte("x"))
	if werr == nil {
		t.Skip("/dev/full accepted a write")
	}
	err = ioErr("writing message", werr)
	if !errors.Is(err, store.ErrStorageFull) {
		t.Fatalf("ENOSPC error %v does not wrap store.ErrStorageFull", err)
	}
	se, ok := smtp.AsError(err)
	if !ok || !se.Temporary() || se.Enhanced != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("ENOSPC error %v: want temporary 4.3.1", err)
	}
}

func FuzzMailboxPath(f *testing.F) {
	for _, s := range []string{"alice@example.com", "../x@example.com", "a/b@c.d", "x@..", "\x00@a.b", "ü@bücher.example"} {
		f.Add(s)
	}
	root := f.TempDir()
	m := NewMaildir(root)
	f.Fuzz(func(t *testing.T, addr string) {
		p, err := m.MailboxPath(addr)
		if err != nil {
			if _, ok := smtp.AsError(err); !ok {
				t.Fatalf("error %v carries no *smtp.Error", err)
			}
			return
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(rel, string(filepath.Separator))
		if len(parts) != 2 || parts[0] == ".." || parts[1] == ".." || parts[0] == "." || parts[1] == "." ||
			parts[0] == "" || parts[1] == "" || strings.HasPrefix(parts[1], ".") || strings.ContainsRune(rel, 0) {
			t.Fatalf("MailboxPath(%q) = %q (rel %q) is unsafe", addr, p, rel)
		}
		if filepath.Clean(p) != p {
			t.Fatalf("MailboxPath(%q) = %q not clean", addr, p)
		}
	})
}

func BenchmarkMaildirDeliver4K(b *testing.B) {
	m := NewMaildir(b.TempDir())
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"), 64)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Deliver(context.Background(), "bench@example.com", Envelope{ReturnPath: "sender@remote.test"}, bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}

// A message that already went through a mailbox (Delivered-To names it) is
// refused permanently as a loop and nothing is stored; another mailbox
// still takes it, and the null sender is written as "<>".
func TestMaildirRefusesForwardingLoop(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	m := NewMaildir(root)
	looped := "Delivered-To: other@example.com\r\nDelivered-To:  <Carol@Example.com>\r\nSubject: x\r\n\r\nbody\r\n"
	err := m.Deliver(context.Background(), "carol@example.com", Envelope{ReturnPath: "a@b.test"}, strings.NewReader(looped))
	e, ok := smtp.AsError(err)
	if !ok || e.Code != 554 || e.Enhanced != (smtp.EnhancedCode{5, 4, 6}) {
		t.Fatalf("looping message: %v, want 554 5.4.6", err)
	}
	if _, err := os.Stat(filepath.Join(root, "example.com", "carol")); !os.IsNotExist(err) {
		t.Fatalf("a looping message created the mailbox: %v", err)
	}
	if err := m.Deliver(context.Background(), "dave@example.com", Envelope{}, strings.NewReader(looped)); err != nil {
		t.Fatal(err)
	}
	got := readNew(t, filepath.Join(root, "example.com", "dave"))
	if len(got) != 1 || !bytes.HasPrefix(got[0], []byte("Return-Path: <>\r\nDelivered-To: dave@example.com\r\nDelivered-To: other@")) {
		t.Fatalf("stored %q", got)
	}
	// The Delivered-To check reads only the header: one in the body is text.
	body := "Subject: x\r\n\r\nDelivered-To: erin@example.com\r\n"
	if err := m.Deliver(context.Background(), "erin@example.com", Envelope{}, strings.NewReader(body)); err != nil {
		t.Fatalf("a Delivered-To line in the body counted as a loop: %v", err)
	}
}
