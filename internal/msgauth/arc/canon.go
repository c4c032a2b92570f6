package arc

import (
	"bufio"
	"bytes"
	"hash"
	"io"
)

// field is one header field as read from the message: its name as written,
// the lower-cased name, and the raw bytes of the whole field ("Name: value",
// folding kept, every line ending normalised to CRLF, final CRLF included).
type field struct {
	name  string
	lname string
	raw   []byte
}

// value returns the raw bytes after the colon (final CRLF included).
func (f *field) value() []byte {
	return f.raw[len(f.name)+1:]
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// appendRelaxedHeader appends the relaxed canonical form (RFC 6376 §3.4.2)
// of a field called name whose value (everything after the colon) is v:
// lower-case name, unfolded value with runs of WSP reduced to one space and
// no leading or trailing WSP, then CRLF.
func appendRelaxedHeader(dst []byte, name string, v []byte) []byte {
	for i := 0; i < len(name); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	// Trailing WSP of the name (obsolete syntax) is not part of it.
	for len(dst) > 0 && isWSP(dst[len(dst)-1]) {
		dst = dst[:len(dst)-1]
	}
	dst = append(dst, ':')
	wsp, started := false, false
	for _, c := range v {
		switch {
		case c == '\r' || c == '\n':
			// Unfolding: line breaks vanish, the WSP after them stays.
		case isWSP(c):
			wsp = true
		default:
			if wsp && started {
				dst = append(dst, ' ')
			}
			wsp, started = false, true
			dst = append(dst, c)
		}
	}
	return append(dst, '\r', '\n')
}

// canonHeader appends field f in the given header canonicalization.
func canonHeader(dst []byte, f *field, relaxed bool) []byte {
	if relaxed {
		return appendRelaxedHeader(dst, f.name, f.value())
	}
	return append(dst, f.raw...)
}

// canonSigHeader appends the signature field f itself with the value of its
// b= tag removed, canonicalized, without the final CRLF (RFC 6376 §3.7).
func canonSigHeader(dst []byte, f *field, relaxed bool) []byte {
	raw := bytes.TrimSuffix(f.raw, []byte("\r\n"))
	stripped := field{name: f.name, lname: f.lname, raw: stripBValue(raw, len(f.name)+1)}
	if relaxed {
		dst = appendRelaxedHeader(dst, stripped.name, stripped.value())
		return dst[:len(dst)-2]
	}
	return append(dst, stripped.raw...)
}

// stripBValue returns a copy of raw with the value of the tag "b" emptied.
// Tags start at offset start. The value's base64 characters and the folding
// whitespace between them are removed; whitespace after the last base64
// character is kept (as dkimpy and OpenDKIM do).
func stripBValue(raw []byte, start int) []byte {
	out := make([]byte, 0, len(raw))
	out = append(out, raw[:start]...)
	seg := start
	for seg <= len(raw) {
		end := bytes.IndexByte(raw[seg:], ';')
		if end < 0 {
			end = len(raw)
		} else {
			end += seg
		}
		part := raw[seg:end]
		eq := bytes.IndexByte(part, '=')
		if eq >= 0 && string(bytes.Trim(part[:eq], " \t\r\n")) == "b" {
			val := part[eq+1:]
			last := len(val)
			for last > 0 && (isWSP(val[last-1]) || val[last-1] == '\r' || val[last-1] == '\n') {
				last--
			}
			out = append(out, part[:eq+1]...)
			out = append(out, val[last:]...)
		} else {
			out = append(out, part...)
		}
		if end < len(raw) {
			out = append(out, ';')
		}
		seg = end + 1
	}
	return out
}

// bodyCanon canonicalizes a body stream (RFC 6376 §3.4.3 simple, §3.4.4
// relaxed) into a hash, in one pass and constant memory. Bare LF and CRLF
// both end a line; a lone CR is ordinary content.
type bodyCanon struct {
	relaxed     bool
	out         *bufio.Writer
	lim         *limitWriter
	h           hash.Hash
	pendingCRLF int  // empty lines held back (dropped if at the end)
	pendingWSP  bool // relaxed: WSP seen, emitted only before content
	lineContent bool // current line has emitted content
	cr          bool // previous byte was CR, not yet emitted
	emitted     bool // anything at all emitted
}

// limitWriter passes at most n bytes (n < 0: unlimited) to w and counts
// everything offered to it.
type limitWriter struct {
	w     io.Writer
	n     int64
	total int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	l.total += int64(len(p))
	q := p
	if l.n >= 0 {
		written := l.total - int64(len(p))
		if written >= l.n {
			return len(p), nil
		}
		if rem := l.n - written; int64(len(q)) > rem {
			q = q[:rem]
		}
	}
	if _, err := l.w.Write(q); err != nil {
		return 0, err
	}
	return len(p), nil
}

func newBodyCanon(relaxed bool, h hash.Hash, limit int64) *bodyCanon {
	lim := &limitWriter{w: h, n: limit}
	return &bodyCanon{relaxed: relaxed, out: bufio.NewWriterSize(lim, 4096), lim: lim, h: h}
}

func (b *bodyCanon) content(c byte) {
	b.startContent()
	b.out.WriteByte(c)
}

// contentRun emits a run of ordinary bytes (no CR, LF or, when relaxed,
// WSP).
func (b *bodyCanon) contentRun(p []byte) {
	b.startContent()
	b.out.Write(p)
}

// plain reports whether c is emitted as it is, with no state change.
func (b *bodyCanon) plain(c byte) bool {
	return c != '\r' && c != '\n' && !(b.relaxed && isWSP(c))
}

func (b *bodyCanon) startContent() {
	if !b.lineContent {
		for ; b.pendingCRLF > 0; b.pendingCRLF-- {
			b.out.WriteString("\r\n")
		}
		b.lineContent, b.emitted = true, true
	}
	if b.pendingWSP {
		b.out.WriteByte(' ')
		b.pendingWSP = false
	}
}

func (b *bodyCanon) endLine() {
	b.pendingWSP = false
	if b.lineContent {
		b.out.WriteString("\r\n")
		b.lineContent = false
		return
	}
	b.pendingCRLF++
}

// Write feeds body bytes; it never fails (hashes do not).
func (b *bodyCanon) Write(p []byte) (int, error) {
	for i := 0; i < len(p); i++ {
		c := p[i]
		if !b.cr && b.plain(c) {
			j := i + 1
			for j < len(p) && b.plain(p[j]) {
				j++
			}
			b.contentRun(p[i:j])
			i = j - 1
			continue
		}
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.endLine()
				continue
			}
			b.content('\r')
		}
		switch {
		case c == '\r':
			b.cr = true
		case c == '\n':
			b.endLine()
		case b.relaxed && isWSP(c):
			b.pendingWSP = true
		default:
			b.content(c)
		}
	}
	return len(p), nil
}

// Sum finishes the body and returns the hash and the canonical length.
func (b *bodyCanon) Sum() ([]byte, int64) {
	if b.cr {
		b.cr = false
		b.content('\r')
	}
	if b.lineContent {
		b.out.WriteString("\r\n")
		b.lineContent = false
	}
	if !b.relaxed && !b.emitted {
		b.out.WriteString("\r\n")
		b.emitted = true
	}
	b.out.Flush()
	return b.h.Sum(nil), b.lim.total
}
