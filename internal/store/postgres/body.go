package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// chunkTimeout bounds the write of one body chunk.
const chunkTimeout = time.Minute

// abandonedBodyAge is how old a pending body (chunks written, message never
// enqueued) must be before any node collects it. No message takes that
// long to arrive, so a body still being written is never collected.
const abandonedBodyAge = 24 * time.Hour

var errBodyDone = errors.New("postgres store: body already enqueued or aborted")

// body implements store.Body. Bytes stay in buf up to the store's
// InlineMax; beyond, the body is stored in chunks: each full chunk is
// written to body_chunks as soon as it is complete (registered in
// pending_bodies, committed asynchronously), and the last, partial one is
// written by Enqueue in the message's transaction. At most one chunk is in
// memory.
type body struct {
	s       *Store
	buf     []byte
	bufp    *[]byte // pool slot of buf
	chunked bool    // past InlineMax: stored in chunks
	id      int64   // body_id, once chunked
	seq     int32   // chunks written so far
	size    int64
	err     error // sticky write error
	done    bool
}

// NewBody starts a body.
func (s *Store) NewBody() (store.Body, error) {
	return &body{s: s}, nil
}

// newBodyID returns a random positive body ID (63 bits: collisions are
// not a practical concern, and the primary key would refuse one).
func newBodyID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := int64(binary.BigEndian.Uint64(b[:]) >> 1)
	if id == 0 {
		id = 1
	}
	return id
}

// Write appends p to the body. A full chunk is written to the database
// when more bytes follow it (the last chunk is left for Enqueue, so a body
// of one chunk costs no write here); a full disk returns an error wrapping
// store.ErrStorageFull.
func (b *body) Write(p []byte) (int, error) {
	if b.done {
		return 0, errBodyDone
	}
	if b.err != nil {
		return 0, b.err
	}
	n := len(p)
	for len(p) > 0 {
		if !b.chunked {
			if len(b.buf)+len(p) <= b.s.inlineMax {
				b.buf = append(b.buf, p...)
				b.size += int64(len(p))
				return n, nil
			}
			b.chunked = true
			b.id = newBodyID()
			b.takeChunkBuf()
		}
		if len(b.buf) == b.s.chunkSize {
			if err := b.flush(); err != nil {
				b.fail(err)
				return n - len(p), b.err
			}
		}
		k := min(len(p), b.s.chunkSize-len(b.buf))
		b.buf = append(b.buf, p[:k]...)
		b.size += int64(k)
		p = p[k:]
	}
	return n, nil
}

// takeChunkBuf moves the bytes buffered so far (at most InlineMax) into a
// chunk buffer from the pool.
func (b *body) takeChunkBuf() {
	p, ok := b.s.bodyPool.Get().(*[]byte)
	if !ok || cap(*p) < b.s.chunkSize {
		nb := make([]byte, 0, b.s.chunkSize)
		p = &nb
	}
	b.buf, b.bufp = append((*p)[:0], b.buf...), p
}

// flush writes the full buffer as the next chunk, in a transaction of its
// own committed asynchronously: the enqueue's synchronous commit flushes
// the WAL past it. The first chunk registers the body in pending_bodies.
func (b *body) flush() error {
	ctx, cancel := context.WithTimeout(context.Background(), chunkTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, b.s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		if b.seq == 0 {
			if _, err := tx.Exec(ctx, `INSERT INTO pending_bodies (id, created) VALUES ($1, $2)`, b.id, time.Now().UnixNano()); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO body_chunks (body_id, seq, data) VALUES ($1, $2, $3)`, b.id, b.seq, b.buf)
		return err
	})
	if err != nil {
		return err
	}
	b.seq++
	b.buf = b.buf[:0]
	return nil
}

func (b *body) fail(err error) {
	b.err = mapErr(fmt.Errorf("postgres store: write body: %w", err))
	b.discard()
}

// Size is the number of bytes written so far.
func (b *body) Size() int64 { return b.size }

// Abort discards the body. It is a no-op after Enqueue.
func (b *body) Abort() {
	if b.done {
		return
	}
	b.done = true
	b.discard()
	b.release()
}

// discard deletes the chunks already written (best effort: what is left is
// collected after abandonedBodyAge).
func (b *body) discard() {
	if b.seq == 0 {
		return
	}
	b.s.deleteBody(b.id)
	b.seq = 0
}

// release returns a chunk buffer to the pool.
func (b *body) release() {
	if b.bufp != nil {
		*b.bufp = b.buf[:0]
		b.s.bodyPool.Put(b.bufp)
	}
	b.buf, b.bufp = nil, nil
}

// deleteBody deletes the chunks and the pending row of body id.
func (s *Store) deleteBody(id int64) {
	ctx, cancel := context.WithTimeout(context.Background(), chunkTimeout)
	defer cancel()
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SET LOCAL synchronous_commit = off`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM body_chunks WHERE body_id = $1`, id); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `DELETE FROM pending_bodies WHERE id = $1`, id)
		return err
	})
	if err != nil {
		s.log.Warn("cannot delete an abandoned body; it is collected later", "body", id, "err", err)
	}
}

// collectBodies deletes the chunks of bodies that were started more than
// abandonedBodyAge ago and never enqueued (their node died mid-message).
func (s *Store) collectBodies(ctx context.Context) error {
	cutoff := time.Now().Add(-abandonedBodyAge).UnixNano()
	rows, err := s.pool.Query(ctx, `SELECT id FROM pending_bodies WHERE created < $1 LIMIT 1000`, cutoff)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return err
	}
	for _, id := range ids {
		s.deleteBody(id)
	}
	if len(ids) > 0 {
		s.log.Info("collected abandoned bodies", "count", len(ids))
	}
	return nil
}

// OpenBody returns the stored body of message id, with the stored header
// fields in front. A chunked body is read a chunk at a time. The body of a
// message this handle enqueued leased comes from memory while its lease
// lasts (see readcache.Handoff).
func (s *Store) OpenBody(ctx context.Context, id string) (io.ReadCloser, error) {
	if data, ok := s.handoff.Get(id); ok {
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	var headers, data []byte
	var bodyID *int64
	var chunks int32
	err := s.pool.QueryRow(ctx, `SELECT headers, body, body_id,
			CASE WHEN body_id IS NULL THEN 0 ELSE (SELECT count(*) FROM body_chunks c WHERE c.body_id = m.body_id) END
		FROM messages m WHERE id = $1`, id).Scan(&headers, &data, &bodyID, &chunks)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("postgres store: body of %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("postgres store: body of %s: %w", id, err)
	}
	if bodyID == nil {
		if len(headers) > 0 {
			data = append(headers, data...)
		}
		return io.NopCloser(bytes.NewReader(data)), nil
	}
	return &chunkReader{s: s, msg: id, id: *bodyID, n: chunks, cur: headers}, nil
}

// chunkReader reads a chunked body: the header prefix, then each chunk,
// fetched when the previous one is used up.
type chunkReader struct {
	s      *Store
	msg    string
	id     int64
	n, seq int32 // chunks, next chunk
	cur    []byte
	err    error
}

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.seq == r.n {
			r.err = io.EOF
			return 0, io.EOF
		}
		ctx, cancel := context.WithTimeout(context.Background(), chunkTimeout)
		err := r.s.pool.QueryRow(ctx, `SELECT data FROM body_chunks WHERE body_id = $1 AND seq = $2`, r.id, r.seq).Scan(&r.cur)
		cancel()
		if errors.Is(err, pgx.ErrNoRows) {
			// The message was deleted while it was read.
			err = store.ErrNotFound
		}
		if err != nil {
			r.err = fmt.Errorf("postgres store: body of %s, chunk %d: %w", r.msg, r.seq, err)
			return 0, r.err
		}
		r.seq++
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close ends the read.
func (r *chunkReader) Close() error {
	r.cur, r.err = nil, errors.New("postgres store: body closed")
	return nil
}
