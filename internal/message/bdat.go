package message

import (
	"io"

	"github.com/heraldmail/herald/internal/smtp"
)

// ChunkPipe assembles message content sent with BDAT (RFC 3030). The
// session writes each chunk's bytes with Write, which checks them (same
// rules as DataReader: bare CR or LF, NUL, line length, size, loop) before
// passing them on, so a violation is known before the chunk is answered.
// The consumer reads the content from Reader, which ends with CRLF (added
// if the client's content did not end with one).
type ChunkPipe struct {
	pr        *io.PipeReader
	pw        *io.PipeWriter
	chk       checker
	violation *smtp.Error
	last      byte
	consumed  bool
}

// NewChunkPipe returns an empty pipe for one message.
func NewChunkPipe(lim Limits) *ChunkPipe {
	pr, pw := io.Pipe()
	return &ChunkPipe{pr: pr, pw: pw, chk: newChecker(lim)}
}

// Write checks p and hands it to the reader, blocking until it is read.
// It returns the *smtp.Error of a broken rule (the reader then gets the
// same error), or the error the reader closed the pipe with.
func (c *ChunkPipe) Write(p []byte) (int, error) {
	if c.violation != nil {
		return 0, c.violation
	}
	if len(p) == 0 {
		return 0, nil
	}
	if v := c.chk.check(p); v != nil {
		c.violation = v
		c.pw.CloseWithError(v)
		return 0, v
	}
	c.last = p[len(p)-1]
	return c.pw.Write(p)
}

// Close ends the content after the last chunk. It returns the violation,
// if the content ends with a bare CR.
func (c *ChunkPipe) Close() error {
	if c.violation != nil {
		return c.violation
	}
	if v := c.chk.finish(); v != nil {
		c.violation = v
		c.pw.CloseWithError(v)
		return v
	}
	if c.chk.n > 0 && c.last != '\n' {
		if _, err := c.pw.Write([]byte("\r\n")); err != nil {
			return err
		}
	}
	return c.pw.Close()
}

// Abort ends the content with err (the transfer was cut short).
func (c *ChunkPipe) Abort(err error) { c.pw.CloseWithError(err) }

// CloseReader makes further writes fail with err; call it when the
// consumer is done, so that a writer never blocks on a pipe nobody reads.
func (c *ChunkPipe) CloseReader(err error) { c.pr.CloseWithError(err) }

// Reader returns the reading side.
func (c *ChunkPipe) Reader() io.Reader { return chunkPipeReader{c} }

type chunkPipeReader struct{ c *ChunkPipe }

func (r chunkPipeReader) Read(p []byte) (int, error) {
	n, err := r.c.pr.Read(p)
	if err == io.EOF {
		r.c.consumed = true
	}
	return n, err
}

// Violation returns the first rule broken by the content, or nil.
func (c *ChunkPipe) Violation() *smtp.Error { return c.violation }

// Consumed reports whether the consumer read the content to its end. Call
// it only after the consumer returned.
func (c *ChunkPipe) Consumed() bool { return c.consumed }

// Size returns the content bytes written so far.
func (c *ChunkPipe) Size() int64 { return c.chk.n }
