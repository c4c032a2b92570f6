package smtpout

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/heraldmail/herald/internal/smtp"
)

// pipe returns a client Conn whose peer writes script and records what the
// client sent.
func pipe(t *testing.T, script string) (*Conn, <-chan string) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	got := make(chan string, 1)
	go func() {
		var sb strings.Builder
		go io.WriteString(b, script) //nolint:errcheck
		buf := make([]byte, 4096)
		for {
			n, err := b.Read(buf)
			sb.Write(buf[:n])
			if err != nil {
				got <- sb.String()
				return
			}
		}
	}()
	return NewConn(a, 500*time.Millisecond, 500*time.Millisecond), got
}

func TestReplies(t *testing.T) {
	t.Parallel()
	c, _ := pipe(t, "220 mx ESMTP\r\n250-mx hello\r\n250-SIZE 1000\r\n250-dsn\r\n250 8BITMIME\r\n"+
		"550-5.1.1 no such\r\n550 5.1.1 user\r\n451 try later\r\n")
	ctx := context.Background()
	if _, err := c.Greet(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Hello(ctx, "me.test"); err != nil {
		t.Fatal(err)
	}
	if v, ok := c.Ext("SIZE"); !ok || v != "1000" {
		t.Fatalf("SIZE = %q, %v", v, ok)
	}
	if _, ok := c.Ext("DSN"); !ok {
		t.Fatal("lower-case extension not recognised")
	}
	err := c.Rcpt(ctx, "x@y")
	e, ok := smtp.AsError(err)
	if !ok || e.Code != 550 || e.Enhanced != (smtp.EnhancedCode{5, 1, 1}) || e.Message != "no such user" {
		t.Fatalf("err = %#v", err)
	}
	err = c.Rcpt(ctx, "z@y")
	if e, ok = smtp.AsError(err); !ok || e.Code != 451 || e.Enhanced != (smtp.EnhancedCode{4, 0, 0}) || e.Message != "try later" {
		t.Fatalf("err = %#v", err)
	}
}

// A remote controls its reply text, which Herald stores as the last reply
// and puts into logs, DSNs, the API and the CLI's output: it comes out
// bounded, without control characters (no CR to inject a line, no ESC for
// a terminal) and as valid UTF-8.
func TestReplyTextSanitised(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("550-5.7.1 "+strings.Repeat("x", 1900)+"\r\n", 99) + "550 5.7.1 end\r\n"
	c, _ := pipe(t, "220 mx ESMTP\r\n"+
		"550 5.1.1 no such\ruser\x00 \x1b[2J\x1b]0;owned\x07 \xc2\x9b31m gr\xc3\xb6\xdfe \xff\r\n"+long)
	ctx := context.Background()
	if _, err := c.Greet(ctx); err != nil {
		t.Fatal(err)
	}
	e, ok := smtp.AsError(c.Rcpt(ctx, "x@y"))
	if !ok || e.Code != 550 {
		t.Fatalf("err = %v", e)
	}
	if want := "no such user   [2J ]0;owned   31m grö?e ?"; e.Message != want {
		t.Errorf("text %q, want %q", e.Message, want)
	}
	e, ok = smtp.AsError(c.Rcpt(ctx, "z@y"))
	if !ok || e.Code != 550 {
		t.Fatalf("err = %v", e)
	}
	if len(e.Message) > MaxTextLen+3 || !strings.HasSuffix(e.Message, "...") {
		t.Errorf("100-line reply gives %d bytes of text, want at most %d", len(e.Message), MaxTextLen+3)
	}
	if m := e.Message; strings.ContainsFunc(m, func(r rune) bool { return r < 0x20 || r == 0x7f }) || !utf8.ValidString(m) {
		t.Errorf("unsafe text %q", m)
	}
}

func TestBadReplies(t *testing.T) {
	t.Parallel()
	for name, script := range map[string]string{
		"garbage":      "hello there\r\n",
		"bad code":     "2x0 ok\r\n",
		"mixed codes":  "250-a\r\n251 b\r\n",
		"long line":    "220 " + strings.Repeat("x", 5000) + "\r\n",
		"many lines":   strings.Repeat("220-x\r\n", 200) + "220 x\r\n",
		"bad sep":      "220_x\r\n",
		"class 1 code": "150 x\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c, _ := pipe(t, script)
			_, err := c.Greet(context.Background())
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("err = %v, want ErrProtocol", err)
			}
		})
	}
}

func TestTimeoutAndCancel(t *testing.T) {
	t.Parallel()
	c, _ := pipe(t, "") // never greets
	start := time.Now()
	if _, err := c.Greet(context.Background()); err == nil || time.Since(start) > 2*time.Second {
		t.Fatalf("err = %v after %v", err, time.Since(start))
	}
	c2, _ := pipe(t, "")
	c2.CommandTimeout = time.Minute
	c2.tc.rt = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c2.Greet(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want context deadline", err)
	}
}

func TestDataDotStuffing(t *testing.T) {
	t.Parallel()
	c, got := pipe(t, "354 go\r\n250 2.0.0 queued as X\r\n")
	rep, err := c.Data(context.Background(), strings.NewReader("a\r\n.b\r\n..c\r\nno-final-crlf"))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Code != 250 || rep.Enhanced != (smtp.EnhancedCode{2, 0, 0}) || rep.Text() != "queued as X" {
		t.Fatalf("reply %+v", rep)
	}
	c.Close()
	want := "DATA\r\na\r\n..b\r\n...c\r\nno-final-crlf\r\n.\r\n"
	if s := <-got; s != want {
		t.Fatalf("sent %q, want %q", s, want)
	}
}

func TestEncodeXtext(t *testing.T) {
	t.Parallel()
	if got := EncodeXtext("a+b=c d\x01é"); got != "a+2Bb+3Dc+20d+01+C3+A9" {
		t.Fatalf("EncodeXtext = %q", got)
	}
}

// Pipeline reads one reply per command whatever its code, and stops at a
// 421 (the server closes after it) with the 421 as the error.
func TestPipeline(t *testing.T) {
	t.Parallel()
	c, sent := pipe(t, "220 mx\r\n250 2.1.0 ok\r\n550 5.1.1 no such user\r\n421 4.3.2 closing\r\n")
	ctx := context.Background()
	if _, err := c.Greet(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Pipeline(ctx, []string{"MAIL FROM:<a@b>", "RCPT TO:<x@y>\r\nDATA"}); err == nil {
		t.Fatal("CR LF in a pipelined command accepted")
	}
	reps, err := c.Pipeline(ctx, []string{"MAIL FROM:<a@b>", "RCPT TO:<x@y>", "RCPT TO:<z@y>", "RCPT TO:<w@y>", "DATA"})
	if e, ok := smtp.AsError(err); !ok || e.Code != 421 {
		t.Fatalf("err = %v, want the 421", err)
	}
	if len(reps) != 3 || reps[0].Code != 250 || reps[1].Code != 550 || reps[1].Text() != "no such user" || reps[2].Code != 421 {
		t.Fatalf("replies %+v", reps)
	}
	c.Close()
	if got, want := <-sent, "MAIL FROM:<a@b>\r\nRCPT TO:<x@y>\r\nRCPT TO:<z@y>\r\nRCPT TO:<w@y>\r\nDATA\r\n"; got != want {
		t.Fatalf("sent %q, want %q", got, want)
	}
}
