package smtpout

import (
	"bufio"
	"bytes"
)

// dotWriter writes a message body in the SMTP DATA encoding (RFC 5321
// section 4.5.2): a line that begins with a period gets another one, and
// every line ends in CRLF (a bare LF becomes CRLF). Close ends the body
// with the final ".\r\n". It does what net/textproto's DotWriter does, a
// line at a time instead of a byte at a time: the stored bodies are
// already CRLF text, so most of a body is copied as it is.
type dotWriter struct {
	w *bufio.Writer
	// lineStart: the next byte begins a line. cr: the last byte written
	// was a CR (a LF that follows ends the line as it is). empty: nothing
	// was written yet.
	lineStart, cr, empty bool
}

func newDotWriter(w *bufio.Writer) *dotWriter { return &dotWriter{w: w, lineStart: true, empty: true} }

var crlf = []byte("\r\n")

// Write encodes p; a line may be split over several calls.
func (d *dotWriter) Write(p []byte) (int, error) {
	n := len(p)
	if n > 0 {
		d.empty = false
	}
	for len(p) > 0 {
		if d.lineStart && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return n - len(p), err
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if _, err := d.w.Write(p); err != nil {
				return n - len(p), err
			}
			d.lineStart, d.cr = false, p[len(p)-1] == '\r'
			return n, nil
		}
		cr := d.cr
		if i > 0 {
			cr = p[i-1] == '\r'
			if _, err := d.w.Write(p[:i]); err != nil {
				return n - len(p), err
			}
		}
		eol := crlf
		if cr {
			eol = crlf[1:]
		}
		if _, err := d.w.Write(eol); err != nil {
			return n - len(p), err
		}
		d.lineStart, d.cr = true, false
		p = p[i+1:]
	}
	return n, nil
}

// Close ends an unterminated last line, writes the final ".\r\n" and
// flushes. An empty body is sent as one empty line, as textproto does.
func (d *dotWriter) Close() error {
	if d.empty {
		if _, err := d.w.Write(crlf); err != nil {
			return err
		}
	} else if !d.lineStart {
		if d.cr {
			// A CR ends the body: it becomes the line's end, as
			// textproto's writer makes it.
			if err := d.w.WriteByte('\n'); err != nil {
				return err
			}
		} else if _, err := d.w.Write(crlf); err != nil {
			return err
		}
	}
	if _, err := d.w.WriteString(".\r\n"); err != nil {
		return err
	}
	return d.w.Flush()
}
