package message

import (
	"bufio"
	"errors"
	"fmt"
	"io"

	"github.com/heraldmail/herald/internal/smtp"
)

// ErrConnection is what a reader returns to its consumer when the connection
// failed (timeout, reset, early close) before the end of the data. The
// underlying error is available from the reader's IOErr method.
var ErrConnection = &smtp.Error{Code: 421, Enhanced: smtp.EnhancedCode{4, 4, 2}, Message: "Connection error or timeout while reading data, closing connection"}

// DataReader reads the body of an SMTP DATA command from the connection: it
// removes dot-stuffing, ends at the first CRLF "." CRLF where the first CRLF
// is a real line ending, and checks the content as it streams (see Limits).
//
// A bare LF or bare CR never starts a line, so "\n.\n", "\r.\r", "\n.\r\n"
// and "\r\n.\n" never end the data. When a rule is broken, Read returns the
// *smtp.Error (ErrBareLineFeed, ErrNUL, ErrLineTooLong, ErrMessageTooBig or
// ErrLoopDetected) and yields nothing more; Drain then reads and discards
// the input up to the real end of the data so the session stays in sync.
type DataReader struct {
	r     *bufio.Reader
	chk   checker
	state int

	violation *smtp.Error // first rule broken
	ioErr     error       // connection error
	end       bool        // the end marker was read
	eofSeen   bool        // Read returned io.EOF to the consumer
	prevCR    bool        // the last byte emitted was CR
	buf       []byte      // scratch for Drain
}

const (
	stLineStart = iota // at the start of a line (after CRLF, or at the beginning)
	stMid              // inside a line
	stDot              // read "." at the start of a line
	stDotCR            // read ".\r" at the start of a line
)

// NewDataReader returns a reader of the DATA body that follows on r.
func NewDataReader(r *bufio.Reader, lim Limits) *DataReader {
	return &DataReader{r: r, chk: newChecker(lim)}
}

// Read implements io.Reader. It returns io.EOF at the end of valid data.
func (d *DataReader) Read(p []byte) (int, error) {
	if d.violation != nil {
		return 0, d.violation
	}
	if d.ioErr != nil {
		return 0, ErrConnection
	}
	if d.end {
		d.eofSeen = true
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	n := d.fill(p)
	if n > 0 {
		if v := d.chk.check(p[:n]); v != nil {
			d.violation = v
			return 0, v
		}
	}
	if d.end {
		if v := d.chk.finish(); v != nil {
			d.violation = v
			return 0, v
		}
		if n == 0 {
			d.eofSeen = true
			return 0, io.EOF
		}
	}
	if d.ioErr != nil && n == 0 {
		return 0, ErrConnection
	}
	return n, nil
}

// fill runs the end-of-data state machine over buffered input and copies
// the unstuffed content to p, or discards it when p is nil. It blocks at
// most once for new input.
func (d *DataReader) fill(p []byte) int {
	if _, err := d.r.Peek(1); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		d.ioErr = fmt.Errorf("reading DATA: %w", err)
		return 0
	}
	buf, _ := d.r.Peek(d.r.Buffered())
	n, i := 0, 0
	emit := func(c byte) {
		if p != nil {
			p[n] = c
		}
		n++
		if c == '\n' && d.prevCR {
			d.state = stLineStart
		} else {
			d.state = stMid
		}
		d.prevCR = c == '\r'
	}
loop:
	for i < len(buf) && (p == nil || n < len(p)) {
		c := buf[i]
		switch d.state {
		case stLineStart:
			i++
			if c == '.' {
				d.state = stDot
				continue
			}
			emit(c)
		case stDot:
			i++
			if c == '\r' {
				d.state = stDotCR
				continue
			}
			emit(c) // a stuffed dot: drop it, keep the rest of the line
		case stDotCR:
			if c == '\n' {
				i++
				d.end = true
				break loop
			}
			// "." CR x: give back the CR (a bare CR, which the checker
			// refuses) and read x again in the middle of the line.
			emit('\r')
		default:
			// Copy a run of ordinary bytes in one go.
			end := len(buf)
			if p != nil && end-i > len(p)-n {
				end = i + len(p) - n
			}
			j := i
			for j < end && buf[j] != '\r' && buf[j] != '\n' {
				j++
			}
			if j > i {
				if p != nil {
					copy(p[n:], buf[i:j])
				}
				n += j - i
				i = j
				d.prevCR = false
				continue
			}
			i++
			emit(c)
		}
	}
	d.r.Discard(i)
	return n
}

// Drain reads and discards the rest of the data up to the end marker. It
// returns the first rule broken or connection error, or nil if the whole
// data was valid. After Drain the connection is positioned after the end
// marker (unless the connection failed).
func (d *DataReader) Drain() error {
	for !d.end && d.ioErr == nil {
		if d.violation != nil {
			d.fill(nil)
			continue
		}
		if _, err := d.Read(d.scratch()); err != nil && err != io.EOF {
			if d.violation == nil && d.ioErr == nil {
				return err
			}
		}
	}
	if d.violation == nil && d.ioErr == nil {
		if v := d.chk.finish(); v != nil {
			d.violation = v
		}
	}
	return d.Err()
}

func (d *DataReader) scratch() []byte {
	if d.buf == nil {
		d.buf = make([]byte, 4096)
	}
	return d.buf
}

// Err returns the rule broken (an *smtp.Error), else the connection error
// (wrapped, see IOErr), else nil.
func (d *DataReader) Err() error {
	if d.violation != nil {
		return d.violation
	}
	if d.ioErr != nil {
		return d.ioErr
	}
	return nil
}

// Violation returns the first rule broken by the content, or nil.
func (d *DataReader) Violation() *smtp.Error { return d.violation }

// IOErr returns the connection error that interrupted the data, or nil.
func (d *DataReader) IOErr() error { return d.ioErr }

// Done reports whether the end marker was read.
func (d *DataReader) Done() bool { return d.end }

// Consumed reports whether the consumer read the content to its end (Read
// returned io.EOF).
func (d *DataReader) Consumed() bool { return d.eofSeen }

// Size returns the content bytes read so far.
func (d *DataReader) Size() int64 { return d.chk.n }
