package message

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strings"
	"testing"
)

func TestFields(t *testing.T) {
	t.Parallel()
	h := "From: Alice\r\n <alice@example.com>\r\nfrom : second@example.com\r\nX-Empty:\r\nno colon line\r\nSubject:  hi\r\n\tthere \r\n\r\nFrom: body@example.com\r\n"
	got := Fields([]byte(h))
	want := []Field{{"From", "Alice <alice@example.com>"}, {"from", "second@example.com"}, {"X-Empty", ""}, {"Subject", "hi\tthere"}}
	if len(got) != len(want) {
		t.Fatalf("Fields = %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("field %d = %q, want %q", i, got[i], want[i])
		}
	}
	if v := FieldValues(got, "FROM"); len(v) != 2 {
		t.Errorf("FieldValues(FROM) = %q, want both From fields (the body's is not one)", v)
	}
	// Bare LF ends lines too; a header without a final line ending counts.
	if f := Fields([]byte("Sender: a@b\nFrom: c@d")); len(f) != 2 || f[1].Value != "c@d" {
		t.Errorf("bare-LF header: %q", f)
	}
}

// FuzzFields checks that Fields never misses a field a standard reader
// sees: a policy check on its result (every From: address) must not be
// bypassed by odd syntax that a recipient's parser accepts.
func FuzzFields(f *testing.F) {
	for _, s := range []string{
		"From: a@b\r\n\r\n", "From : a@b\r\nFrom: c@d\r\n\r\n", "X: y\r\n z\r\nFrom:\r\n\tq@r\r\n\r\n",
		"from: a\nFROM: b\n\n", " From: a@b\r\nFrom: c\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fields := Fields(b)
		for _, fl := range fields {
			if strings.ContainsAny(fl.Name, "\r\n:") || strings.HasSuffix(fl.Name, " ") {
				t.Fatalf("field name %q", fl.Name)
			}
		}
		h, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(b))).ReadMIMEHeader()
		if err != nil && len(h) == 0 {
			return
		}
		for name, vals := range h {
			if n := len(FieldValues(fields, strings.TrimRight(name, " \t"))); n < len(vals) {
				t.Fatalf("textproto sees %d %s fields, Fields %d, in %q", len(vals), name, n, b)
			}
		}
	})
}
