package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/heraldmail/herald/internal/store"
)

// spillBufSize is the write buffer used once a body is in a file.
const spillBufSize = 64 << 10

var errBodyDone = errors.New("sqlite store: body already enqueued or aborted")

// body implements store.Body: bytes stay in buf up to the store's InlineMax,
// then everything goes to a temporary file in blobs/tmp (buf then serves as
// the file's write buffer).
type body struct {
	s    *Store
	buf  []byte
	bufp *[]byte  // pool slot for buf, reused to avoid an allocation per Put
	f    *os.File // non-nil once spilled
	size int64
	err  error // sticky write error
	done bool
	open bool // counted in s.openBodies
}

// NewBody starts a body. It is kept in memory up to InlineMax bytes and
// spills to a temporary file beyond that.
func (s *Store) NewBody() (store.Body, error) {
	b := &body{s: s, open: true}
	s.openBodies.Add(1)
	if p, ok := s.bufPool.Get().(*[]byte); ok {
		b.buf, b.bufp = (*p)[:0], p
	}
	return b, nil
}

// Write appends p to the body. A full disk returns an error wrapping
// store.ErrStorageFull.
func (b *body) Write(p []byte) (int, error) {
	if b.done {
		return 0, errBodyDone
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.f == nil {
		if len(b.buf)+len(p) <= b.s.inlineMax {
			b.buf = append(b.buf, p...)
			b.size += int64(len(p))
			return len(p), nil
		}
		if err := b.spill(); err != nil {
			b.fail(err)
			return 0, b.err
		}
	}
	if len(b.buf)+len(p) > cap(b.buf) {
		if err := b.flush(); err != nil {
			b.fail(err)
			return 0, b.err
		}
		if len(p) >= cap(b.buf) {
			n, err := b.f.Write(p)
			b.size += int64(n)
			if err != nil {
				b.fail(err)
				return n, b.err
			}
			return n, nil
		}
	}
	b.buf = append(b.buf, p...)
	b.size += int64(len(p))
	return len(p), nil
}

func (b *body) fail(err error) {
	b.err = mapErr(fmt.Errorf("sqlite store: write body: %w", err))
	b.removeTemp()
}

// spill moves the buffered bytes to a new temporary file.
func (b *body) spill() error {
	f, err := os.CreateTemp(b.s.tmpDir, "body-*")
	if err != nil {
		return err
	}
	b.f = f
	if cap(b.buf) < spillBufSize {
		nb := make([]byte, len(b.buf), spillBufSize)
		copy(nb, b.buf)
		b.buf = nb
	}
	return nil
}

func (b *body) flush() error {
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.f.Write(b.buf)
	b.buf = b.buf[:0]
	return err
}

// Size is the number of bytes written so far.
func (b *body) Size() int64 { return b.size }

// Abort discards the body. It is a no-op after Enqueue.
func (b *body) Abort() {
	if b.done {
		return
	}
	b.done = true
	b.settle()
	b.removeTemp()
	b.release()
}

// settle stops counting the body as open: it is enqueued or aborted.
func (b *body) settle() {
	if b.open {
		b.open = false
		b.s.openBodies.Add(-1)
	}
}

func (b *body) removeTemp() {
	if b.f == nil {
		return
	}
	name := b.f.Name()
	b.f.Close()
	b.f = nil
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		b.s.log.Warn("cannot remove temporary body file", "path", name, "err", err)
	}
}

// release returns the buffer to the pool (and stops counting the body
// as open, if nothing did before).
func (b *body) release() {
	b.settle()
	if b.buf != nil && cap(b.buf) <= 2*max(b.s.inlineMax, spillBufSize) {
		p := b.bufp
		if p == nil {
			p = new([]byte)
		}
		*p = b.buf[:0]
		b.s.bufPool.Put(p)
	}
	b.buf, b.bufp = nil, nil
}

// commitBlob makes a spilled body durable as blobs/<id>: flush, fsync, and
// link into place (failing if the name exists). The blobs directory itself
// is fsynced by the writer before the row is committed. It returns the final
// path.
func (b *body) commitBlob(id string) (string, error) {
	if err := b.flush(); err != nil {
		return "", err
	}
	if err := b.f.Sync(); err != nil {
		return "", err
	}
	tmp := b.f.Name()
	if err := b.f.Close(); err != nil {
		b.f = nil
		os.Remove(tmp)
		return "", err
	}
	b.f = nil
	final := filepath.Join(b.s.blobDir, id)
	err := os.Link(tmp, final)
	os.Remove(tmp)
	if errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("message %s: %w", id, store.ErrExists)
	}
	if err != nil {
		return "", err
	}
	return final, nil
}

// syncDir fsyncs a directory so that entries created in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// collectOrphans removes blob files that no committed message references
// (a crash between the blob's rename and its row's commit: that message was
// never acknowledged) and every temporary file. It runs only when no other
// process has the directory open.
func (s *Store) collectOrphans(ctx context.Context, conn *sql.Conn) error {
	if tmps, err := os.ReadDir(s.tmpDir); err == nil {
		for _, e := range tmps {
			p := filepath.Join(s.tmpDir, e.Name())
			if err := os.RemoveAll(p); err != nil {
				s.log.Warn("cannot remove stale temporary file", "path", p, "err", err)
			} else {
				s.log.Info("removed stale temporary file", "path", p)
			}
		}
	}
	entries, err := os.ReadDir(s.blobDir)
	if err != nil {
		return fmt.Errorf("sqlite store: collect orphans: %w", err)
	}
	stmt, err := conn.PrepareContext(ctx, `SELECT 1 FROM messages WHERE id = ? AND blob = 1`)
	if err != nil {
		return mapErr(fmt.Errorf("sqlite store: collect orphans: %w", err))
	}
	defer stmt.Close()
	for _, e := range entries {
		if e.Name() == "tmp" && e.IsDir() {
			continue
		}
		var one int
		err := stmt.QueryRowContext(ctx, e.Name()).Scan(&one)
		if err == nil {
			continue
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return mapErr(fmt.Errorf("sqlite store: collect orphans: %w", err))
		}
		p := filepath.Join(s.blobDir, e.Name())
		if err := os.RemoveAll(p); err != nil {
			s.log.Warn("cannot remove orphan blob", "path", p, "err", err)
		} else {
			s.log.Info("removed orphan blob", "path", p)
		}
	}
	return nil
}

// inlineReader is the io.ReadCloser of an inline body.
type inlineReader struct{ *bytes.Reader }

func (inlineReader) Close() error { return nil }

var _ io.ReadCloser = inlineReader{}
