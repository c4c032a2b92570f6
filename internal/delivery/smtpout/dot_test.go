package smtpout

import (
	"bufio"
	"bytes"
	"net/textproto"
	"strings"
	"testing"
)

// encodeDot runs p through dotWriter in writes of at most chunk bytes.
func encodeDot(t testing.TB, p []byte, chunk int) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriterSize(&out, 64)
	d := newDotWriter(bw)
	for len(p) > 0 {
		n := min(chunk, len(p))
		if m, err := d.Write(p[:n]); err != nil || m != n {
			t.Fatalf("Write = %d, %v", m, err)
		}
		p = p[n:]
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// encodeTextproto is the reference: net/textproto's DotWriter.
func encodeTextproto(p []byte) []byte {
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	d := textproto.NewWriter(bw).DotWriter()
	d.Write(p)
	d.Close()
	bw.Flush()
	return out.Bytes()
}

func TestDotWriter(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"", "\r\n.\r\n"},
		{"a\r\nb\r\n", "a\r\nb\r\n.\r\n"},
		{"a\r\nb", "a\r\nb\r\n.\r\n"},
		{"a\nb\n", "a\r\nb\r\n.\r\n"},
		{".\r\n", "..\r\n.\r\n"},
		{"x\r\n.\r\n..y\r\n", "x\r\n..\r\n...y\r\n.\r\n"},
		{"x\n.", "x\r\n..\r\n.\r\n"},
		{"a\r", "a\r\n.\r\n"},
	} {
		for chunk := 1; chunk <= len(tc.in)+1; chunk++ {
			if got := string(encodeDot(t, []byte(tc.in), chunk)); got != tc.want {
				t.Errorf("%q in writes of %d: got %q, want %q", tc.in, chunk, got, tc.want)
			}
		}
	}
}

// Any body, split anyhow: the encoding decodes back to the body (lines
// ending in CRLF), ends the data only at its end, and has no bare LF; for
// a body whose CRs all begin a CRLF it is byte for byte textproto's.
func FuzzDotWriter(f *testing.F) {
	for _, s := range []string{"", "a\r\n.\r\nb", ".\n..\n", "x\r", "\r\n.\r\n", "a\nb\r\n.", "\r\r\n"} {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, body []byte, chunk uint8) {
		out := encodeDot(t, body, int(chunk)+1)
		if !bytes.HasSuffix(out, []byte(".\r\n")) || (len(out) > 3 && !bytes.HasSuffix(out, []byte("\r\n.\r\n"))) {
			t.Fatalf("%q: encoding %q does not end with the final dot line", body, out)
		}
		if i := bytes.Index(out, []byte("\r\n.\r\n")); i >= 0 && i != len(out)-5 {
			t.Fatalf("%q: encoding %q ends the data early at %d", body, out, i)
		}
		if strings.HasPrefix(string(out), ".\r\n") {
			t.Fatalf("%q: encoding %q ends the data at once", body, out)
		}
		for i := range out {
			if out[i] == '\n' && (i == 0 || out[i-1] != '\r') {
				t.Fatalf("%q: bare LF at %d of %q", body, i, out)
			}
		}
		if bytes.Contains(bytes.ReplaceAll(body, []byte("\r\n"), nil), []byte("\r")) {
			return // bare CRs: textproto's handling differs and is not a reference
		}
		if want := encodeTextproto(body); !bytes.Equal(out, want) {
			t.Fatalf("%q: got %q, textproto gives %q", body, out, want)
		}
		dec, err := textproto.NewReader(bufio.NewReader(bytes.NewReader(out))).ReadDotBytes()
		if err != nil {
			t.Fatal(err)
		}
		norm := bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n"))
		if len(norm) == 0 || norm[len(norm)-1] != '\n' {
			norm = append(norm, '\n')
		}
		if !bytes.Equal(dec, norm) {
			t.Fatalf("%q: decodes to %q, want %q", body, dec, norm)
		}
	})
}
