package message

import "bytes"

// maxFieldName bounds how much of a line the HeaderScanner keeps while
// looking for a field name; longer names are never among the ones counted.
const maxFieldName = 76

// HeaderScanner follows a message as it streams by and counts selected header
// fields in its header section (everything before the first empty line). It
// keeps no more than one field name in memory, so it can watch a message of
// any size. Feed it the message content (CRLF line endings, no dot-stuffing)
// with Write. The zero value counts nothing; use NewHeaderScanner.
type HeaderScanner struct {
	names  [][]byte // lower-case field names to count
	counts []int

	done      bool  // the header section has ended
	headerLen int64 // bytes of the header section, empty line included
	offset    int64 // bytes seen so far

	lineLen  int // bytes of the current line seen so far
	name     [maxFieldName]byte
	nameLen  int
	nameDone bool // a colon or an overflow ended the name part of this line
}

// NewHeaderScanner returns a scanner that counts the fields with the given
// names (case-insensitive, e.g. "Received").
func NewHeaderScanner(names ...string) *HeaderScanner {
	s := &HeaderScanner{counts: make([]int, len(names))}
	for _, n := range names {
		s.names = append(s.names, bytes.ToLower([]byte(n)))
	}
	return s
}

// Write feeds message bytes to the scanner. It never fails.
func (s *HeaderScanner) Write(p []byte) (int, error) {
	if s.done {
		s.offset += int64(len(p))
		return len(p), nil
	}
	for i, c := range p {
		s.offset++
		if c == '\n' {
			// An empty line ("\r\n", or a bare "\n") ends the header section.
			if s.lineLen == 0 || (s.lineLen == 1 && s.nameLen == 1 && s.name[0] == '\r') {
				s.done = true
				s.headerLen = s.offset
				s.offset += int64(len(p) - i - 1)
				return len(p), nil
			}
			s.lineLen, s.nameLen, s.nameDone = 0, 0, false
			continue
		}
		s.lineLen++
		if s.nameDone {
			continue
		}
		if c == ':' {
			s.nameDone = true
			s.match()
			continue
		}
		if s.nameLen == len(s.name) {
			s.nameDone = true
			continue
		}
		s.name[s.nameLen] = c
		s.nameLen++
	}
	return len(p), nil
}

// match counts the field whose name was just completed by a colon.
func (s *HeaderScanner) match() {
	name := bytes.TrimRight(s.name[:s.nameLen], " \t")
	if len(name) == 0 || name[0] == ' ' || name[0] == '\t' {
		return // a continuation line, not a new field
	}
	for i, n := range s.names {
		if len(n) == len(name) && bytes.EqualFold(n, name) {
			s.counts[i]++
		}
	}
}

// Count returns how many fields named name were seen in the header section
// so far. name must be one given to NewHeaderScanner.
func (s *HeaderScanner) Count(name string) int {
	for i, n := range s.names {
		if bytes.EqualFold(n, []byte(name)) {
			return s.counts[i]
		}
	}
	return 0
}

// Done reports whether the empty line ending the header section was seen.
func (s *HeaderScanner) Done() bool { return s.done }

// HeaderLen returns the length of the header section including the empty
// line that ends it, or -1 while that line has not been seen.
func (s *HeaderScanner) HeaderLen() int64 {
	if !s.done {
		return -1
	}
	return s.headerLen
}
