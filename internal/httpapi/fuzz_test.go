package httpapi

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// FuzzBuildMessage feeds random fields to the JSON message builder: it
// never panics, and whatever it accepts is a CRLF message go-message
// parses back with its parts.
func FuzzBuildMessage(f *testing.F) {
	f.Add("Zoë <z@example.com>", "b@example.org", "c@example.org", "Grüße", "text\nmore", "<p>h</p>", "a.pdf", "aGVsbG8=", "X-Tag", "v", "tag")
	f.Add("a@example.com", "\"Q, R\" <q@example.org>", "", "", "", "<b>x</b>", "", "", "", "", "")
	f.Add("a@example.com", "b@example.org", "", "=?utf-8?q?x?=", "\r\r\n.\r\n", "", "f\u00e9.txt", "AA", "List-Id", "<l.example>", "")
	f.Fuzz(func(t *testing.T, from, to, cc, subject, text, html, fname, content, hname, hval, tag string) {
		req := &MessageRequest{From: from, Subject: subject, Text: text, HTML: html}
		if to != "" {
			req.To = []string{to}
		}
		if cc != "" {
			req.Cc = []string{cc}
		}
		if fname != "" || content != "" {
			req.Attachments = []Attachment{{Filename: fname, Content: content}}
		}
		if hname != "" {
			req.Headers = map[string]string{hname: hval}
		}
		if tag != "" {
			req.Tags = []string{tag}
		}
		b, err := buildMessage(req, "mx.example.net", time.Unix(1700000000, 0), 10)
		if err != nil {
			var ae *Error
			if !errors.As(err, &ae) || ae.Status != 400 || ae.Field == "" {
				t.Fatalf("builder failure is not a validation error naming a field: %v", err)
			}
			return
		}
		for i, c := range b.raw {
			if c == '\n' && (i == 0 || b.raw[i-1] != '\r') {
				t.Fatalf("bare LF at %d: %q", i, b.raw)
			}
			if c == '\r' && (i+1 == len(b.raw) || b.raw[i+1] != '\n') {
				t.Fatalf("bare CR at %d: %q", i, b.raw)
			}
		}
		p := parseMessage(t, b.raw)
		if got, err := p.header.Subject(); err != nil || got != subject {
			t.Fatalf("subject %q round-tripped as %q (%v)", subject, got, err)
		}
		if len(b.recipients) == 0 || len(p.parts) == 0 {
			t.Fatalf("recipients %v, %d parts", b.recipients, len(p.parts))
		}
		if text != "" {
			want := strings.ReplaceAll(normalizeNewlines(text), "\n", "\r\n")
			if string(p.parts[0].body) != want {
				t.Fatalf("text %q round-tripped as %q", want, p.parts[0].body)
			}
		}
	})
}

// errorCodesInSource lists the error codes the package's code can return.
func errorCodesInSource(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`Code: +"([a-z_]+)"`)
	seen := map[string]bool{}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range re.FindAllSubmatch(src, -1) {
			if c := string(m[1]); !seen[c] {
				seen[c] = true
				out = append(out, c)
			}
		}
	}
	if len(out) < 10 {
		t.Fatalf("found only %d error codes in the source", len(out))
	}
	return out
}
