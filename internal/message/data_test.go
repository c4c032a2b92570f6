package message

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// readData runs a DataReader over in and returns the content read, the
// error of the read, the error of Drain and what is left after the data.
func readData(t testing.TB, in string, lim Limits, bufSize int) (content string, readErr, drainErr error, rest string) {
	t.Helper()
	br := bufio.NewReaderSize(strings.NewReader(in), bufSize)
	d := NewDataReader(br, lim)
	b, readErr := io.ReadAll(d)
	drainErr = d.Drain()
	r, _ := io.ReadAll(br)
	return string(b), readErr, drainErr, string(r)
}

func TestDataReaderValid(t *testing.T) {
	t.Parallel()
	in := "Subject: x\r\n\r\nhello\r\n..dot\r\n.x\r\n..\r\n.\r\nNEXT"
	for _, size := range []int{16, 17, 4096} {
		got, rerr, derr, rest := readData(t, in, Limits{}, size)
		if rerr != nil || derr != nil {
			t.Fatalf("size %d: errors %v %v", size, rerr, derr)
		}
		if want := "Subject: x\r\n\r\nhello\r\n.dot\r\nx\r\n.\r\n"; got != want {
			t.Errorf("size %d: content %q, want %q", size, got, want)
		}
		if rest != "NEXT" {
			t.Errorf("size %d: rest %q", size, rest)
		}
	}
}

func TestDataReaderEmpty(t *testing.T) {
	t.Parallel()
	got, rerr, derr, rest := readData(t, ".\r\nQUIT\r\n", Limits{}, 16)
	if got != "" || rerr != nil || derr != nil || rest != "QUIT\r\n" {
		t.Fatalf("got %q %v %v %q", got, rerr, derr, rest)
	}
}

func TestDataReaderSmuggling(t *testing.T) {
	t.Parallel()
	for _, trick := range []string{"\n.\n", "\r.\r", "\n.\r\n", "\r\n.\n", "\r\n.\r", "\r\n.\rX"} {
		smuggled := "MAIL FROM:<evil@example.com>\r\nRCPT TO:<victim@example.org>\r\nDATA\r\nsmuggled\r\n"
		in := "Subject: a\r\n\r\nbody" + trick + smuggled + ".\r\nNEXT"
		for _, size := range []int{16, 4096} {
			_, rerr, derr, rest := readData(t, in, Limits{}, size)
			if !errors.Is(rerr, ErrBareLineFeed) || !errors.Is(derr, ErrBareLineFeed) {
				t.Errorf("%q: errors %v / %v, want bare LF", trick, rerr, derr)
			}
			if rest != "NEXT" {
				t.Errorf("%q: rest %q, want NEXT (data must end at the real CRLF.CRLF)", trick, rest)
			}
		}
	}
}

func TestDataReaderRules(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 999)
	cases := []struct {
		name string
		in   string
		lim  Limits
		want error
	}{
		{"nul", "a\x00b\r\n.\r\n", Limits{}, ErrNUL},
		{"998 ok", strings.Repeat("a", 998) + "\r\n.\r\n", Limits{}, nil},
		{"999 long", long + "\r\n.\r\n", Limits{}, ErrLineTooLong},
		{"size ok", "12345678\r\n.\r\n", Limits{MaxBytes: 10}, nil},
		{"size", "123456789\r\n.\r\n", Limits{MaxBytes: 10}, ErrMessageTooBig},
		{"loop", "Received: a\r\nreceived : b\r\nRECEIVED:c\r\n\r\nx\r\n.\r\n", Limits{MaxReceived: 2}, ErrLoopDetected},
		{"loop body ignored", "Received: a\r\n\r\nReceived: b\r\nReceived: c\r\n.\r\n", Limits{MaxReceived: 1}, nil},
		{"8bit ok", "caf\xc3\xa9 \xff\r\n.\r\n", Limits{}, nil},
	}
	for _, c := range cases {
		_, _, derr, rest := readData(t, c.in+"NEXT", c.lim, 64)
		if !errors.Is(derr, c.want) && !(c.want == nil && derr == nil) {
			t.Errorf("%s: Drain = %v, want %v", c.name, derr, c.want)
		}
		if rest != "NEXT" {
			t.Errorf("%s: rest %q", c.name, rest)
		}
	}
}

func TestDataReaderEOF(t *testing.T) {
	t.Parallel()
	br := bufio.NewReader(strings.NewReader("abc\r\n\r\n.\n"))
	d := NewDataReader(br, Limits{})
	_, err := io.ReadAll(d)
	if !errors.Is(err, ErrConnection) && !errors.Is(err, ErrBareLineFeed) {
		t.Fatalf("ReadAll = %v", err)
	}
	d.Drain()
	if d.IOErr() == nil || !errors.Is(d.IOErr(), io.ErrUnexpectedEOF) {
		t.Fatalf("IOErr = %v", d.IOErr())
	}
}

func readChunks(chunks ...string) (string, error) {
	cp := NewChunkPipe(Limits{})
	res := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(cp.Reader())
		res <- b
	}()
	var err error
	for _, c := range chunks {
		if _, err = cp.Write([]byte(c)); err != nil {
			break
		}
	}
	if err == nil {
		err = cp.Close()
	}
	b := <-res
	return string(b), err
}

func TestChunkPipe(t *testing.T) {
	t.Parallel()
	b, err := readChunks("Subject: x\r", "\n\r\n", "no final newline")
	if err != nil || b != "Subject: x\r\n\r\nno final newline\r\n" {
		t.Fatalf("%q %v", b, err)
	}
	for _, in := range [][]string{{"a\nb\r\n"}, {"a\r", "b\r\n"}, {"a\r"}, {"a\x00\r\n"}} {
		if _, err := readChunks(in...); !errors.Is(err, ErrBareLineFeed) && !errors.Is(err, ErrNUL) {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestHeaderScanner(t *testing.T) {
	t.Parallel()
	msg := "Received: a\r\n b: c\r\nX-Received: d\r\nReceived : e\r\nSubject: f\r\n\r\nReceived: body\r\n"
	s := NewHeaderScanner("Received", "Subject")
	for i := 0; i < len(msg); i++ { // one byte at a time
		s.Write([]byte{msg[i]})
	}
	if s.Count("Received") != 2 || s.Count("subject") != 1 || !s.Done() {
		t.Fatalf("counts %d %d done %v", s.Count("Received"), s.Count("Subject"), s.Done())
	}
	if want := int64(strings.Index(msg, "\r\n\r\n") + 4); s.HeaderLen() != want {
		t.Fatalf("HeaderLen %d, want %d", s.HeaderLen(), want)
	}
}

func TestNewID(t *testing.T) {
	t.Parallel()
	a, b := NewID("mx.example.com"), NewID("mx.example.com")
	if a == b || !strings.HasPrefix(a, "<") || !strings.HasSuffix(a, "@mx.example.com>") {
		t.Fatalf("%q %q", a, b)
	}
}

// stuff dot-stuffs content as an SMTP client would.
func stuff(content []byte) []byte {
	var out bytes.Buffer
	lineStart := true
	for i, c := range content {
		if lineStart && c == '.' {
			out.WriteByte('.')
		}
		out.WriteByte(c)
		lineStart = c == '\n' && i > 0 && content[i-1] == '\r'
	}
	return out.Bytes()
}

// unstuff is a reference decoder for valid data ending with the marker.
func unstuff(consumed []byte) []byte {
	body := consumed[:len(consumed)-3] // without ".\r\n"
	lines := bytes.Split(body, []byte("\r\n"))
	for i, l := range lines {
		lines[i] = bytes.TrimPrefix(l, []byte("."))
	}
	return bytes.Join(lines, []byte("\r\n"))
}

func FuzzDataReader(f *testing.F) {
	for _, s := range []string{
		"a\r\n.\r\n", ".\r\n", "a\n.\nb\r\n.\r\n", "x\r.\ry\r\n.\r\n", "..\r\n.\r\n",
		"Received: x\r\nReceived: y\r\n\r\n.\r\n", "\r\n.\rX\r\n.\r\n", "\r\n.\r\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(in), 16)
		d := NewDataReader(br, Limits{MaxBytes: 1 << 16, MaxReceived: 3})
		out, err := io.ReadAll(d)
		d.Drain()
		rest, _ := io.ReadAll(br)
		consumed := in[:len(in)-len(rest)]
		// The data ends exactly at the first real end marker.
		if d.Done() {
			framed := append([]byte("\r\n"), consumed...)
			if i := bytes.Index(framed, []byte("\r\n.\r\n")); i != len(framed)-5 {
				t.Fatalf("ended at %d, first marker at %d in %q", len(consumed), i, consumed)
			}
		} else if bytes.Contains(append([]byte("\r\n"), in...), []byte("\r\n.\r\n")) {
			t.Fatalf("missed the end marker in %q", in)
		}
		if err != nil {
			return
		}
		if !d.Done() {
			t.Fatalf("accepted without end marker: %q", in)
		}
		for i, c := range out {
			if c == '\n' && (i == 0 || out[i-1] != '\r') || c == '\r' && (i+1 == len(out) || out[i+1] != '\n') || c == 0 {
				t.Fatalf("bare CR/LF or NUL at %d in accepted output %q", i, out)
			}
		}
		// Re-stuffed for the next hop, the output never carries an end marker,
		// and it is exactly what the client sent.
		re := stuff(out)
		if bytes.Contains(append([]byte("\r\n"), re...), []byte("\r\n.\r\n")) {
			t.Fatalf("end marker in re-stuffed output %q", re)
		}
		if want := unstuff(consumed); !bytes.Equal(out, want) {
			t.Fatalf("output %q, reference unstuffing gives %q", out, want)
		}
	})
}

func BenchmarkDataReader(b *testing.B) {
	line := strings.Repeat("x", 76) + "\r\n"
	msg := "Subject: bench\r\n\r\n" + strings.Repeat(line, 1<<20/len(line)) + ".\r\n"
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	sr := strings.NewReader(msg)
	br := bufio.NewReaderSize(sr, 64<<10)
	buf := make([]byte, 32<<10)
	for i := 0; i < b.N; i++ {
		sr.Reset(msg)
		br.Reset(sr)
		d := NewDataReader(br, Limits{MaxBytes: 25 << 20, MaxReceived: 100})
		for {
			_, err := d.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}
