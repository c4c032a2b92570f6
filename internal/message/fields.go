package message

import (
	"bytes"
	"strings"
)

// Field is one header field of a message's header section.
type Field struct {
	// Name is the field name as written, without white space before the
	// colon (obsolete syntax, RFC 5322 §4.5, allows "From :").
	Name string
	// Value is the unfolded value after the colon: CRLF (or LF) followed by
	// white space is removed, leading white space trimmed.
	Value string
}

// Is reports whether the field is named name, case-insensitively.
func (f Field) Is(name string) bool { return strings.EqualFold(f.Name, name) }

// Fields splits a header section (the message up to and optionally
// including the blank line that ends it) into its fields. It is as lenient
// as the most lenient reader a recipient might use, so that a policy check
// on its result cannot be bypassed by odd syntax: white space before the
// colon still names the field, a bare LF or a bare CR ends a line like
// CRLF, and a line without a colon is skipped. Continuation lines before
// the first field are ignored.
func Fields(header []byte) []Field {
	if bytes.IndexByte(header, '\r') >= 0 {
		header = bytes.ReplaceAll(bytes.ReplaceAll(header, []byte("\r\n"), []byte("\n")), []byte("\r"), []byte("\n"))
	}
	var out []Field
	var cur *Field
	var val []byte
	flush := func() {
		if cur != nil {
			cur.Value = strings.TrimSpace(string(val))
			out = append(out, *cur)
			cur, val = nil, val[:0]
		}
	}
	for len(header) > 0 {
		line := header
		if i := bytes.IndexByte(header, '\n'); i >= 0 {
			line, header = header[:i], header[i+1:]
		} else {
			header = nil
		}
		if len(line) == 0 {
			break // the blank line ending the header section
		}
		if line[0] == ' ' || line[0] == '\t' {
			if cur != nil {
				val = append(val, line...)
			}
			continue
		}
		flush()
		name, value, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			continue
		}
		cur = &Field{Name: string(bytes.TrimRight(name, " \t"))}
		val = append(val[:0], value...)
	}
	flush()
	return out
}

// FieldValues returns the values of every field named name.
func FieldValues(fields []Field, name string) []string {
	var out []string
	for _, f := range fields {
		if f.Is(name) {
			out = append(out, f.Value)
		}
	}
	return out
}
