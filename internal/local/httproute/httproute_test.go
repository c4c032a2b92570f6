package httproute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/webhook"
)

const testMessage = "DKIM-Signature: v=1; a=rsa-sha256; d=example.org; s=sel;\r\n" +
	"\tb=abc\r\n" +
	"From: =?ISO-8859-1?Q?Andr=E9_M=FCller?= <andre@example.org>\r\n" +
	"To: Bob <bob@herald.test>, carol@herald.test\r\n" +
	"Cc: \"Dave, Jr.\" <dave@herald.test>\r\n" +
	"Subject: =?UTF-8?B?R3LDvMOfZSBhdXMgS8O2bG4g4piV?=\r\n" +
	"Date: Sat, 01 Mar 2025 13:04:05 +0100\r\n" +
	"Message-ID: <abc@example.org>\r\n" +
	"X-Long: first part\r\n" +
	" continued here\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--outer\r\n" +
	"Content-Type: multipart/alternative; boundary=\"inner\"\r\n" +
	"\r\n" +
	"--inner\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: quoted-printable\r\n" +
	"\r\n" +
	"H=C3=A9llo B=C3=B6b,\r\n" +
	"see attached.\r\n" +
	"--inner\r\n" +
	"Content-Type: text/html; charset=iso-8859-1\r\n" +
	"\r\n" +
	"<p>H\xe9llo</p>\r\n" +
	"--inner--\r\n" +
	"--outer\r\n" +
	"Content-Type: application/pdf\r\n" +
	"Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"JVBERi0xLjQKJcOkw7zDtsOfCg==\r\n" +
	"--outer\r\n" +
	"Content-Type: image/png; name=\"dot.png\"\r\n" +
	"Content-Disposition: inline\r\n" +
	"Content-ID: <img1@example.org>\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"iVBORw0KGgo=\r\n" +
	"--outer--\r\n"

var testMsg = &store.Message{ID: "0QUEUEID", Sender: "andre@example.org"}

// receiver is a loopback endpoint recording requests and answering with
// the status given in its URL path ("/404"), 200 for "/".
type receiver struct {
	*httptest.Server
	reqs chan *http.Request
	body chan []byte
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	rv := &receiver{reqs: make(chan *http.Request, 100), body: make(chan []byte, 100)}
	rv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rv.reqs <- r
		rv.body <- b
		if r.URL.Path == "/hang" {
			<-r.Context().Done()
			return
		}
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, "http://192.0.2.1/x", http.StatusTemporaryRedirect)
			return
		}
		code := 200
		if c, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/")); err == nil {
			code = c
		}
		w.WriteHeader(code)
		io.WriteString(w, "answer body")
	}))
	t.Cleanup(rv.Close)
	return rv
}

func TestPostParsesMessage(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t)
	clk := clock.NewFake(time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC))
	p := New(Options{Clock: clk, Timeout: 5 * time.Second})
	if err := p.Post(context.Background(), rv.URL+"/", "route-secret", testMsg, "bob@herald.test", strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	r, body := <-rv.reqs, <-rv.body
	if err := webhook.Verify("route-secret", r.Header.Get(webhook.HeaderSignature), body, clk.Now(), time.Minute); err != nil {
		t.Fatalf("signature: %v", err)
	}
	if r.Header.Get(HeaderMessageID) != "0QUEUEID" || r.Header.Get("User-Agent") != UserAgent || r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("headers = %v", r.Header)
	}
	var got Payload
	if err := json.Unmarshal(body, &got); err != nil {
		t.Fatal(err)
	}
	check := func(name string, got, want any) {
		t.Helper()
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		if !bytes.Equal(g, w) {
			t.Errorf("%s = %s, want %s", name, g, w)
		}
	}
	check("message_id", got.MessageID, "0QUEUEID")
	check("envelope", got.Envelope, Envelope{From: "andre@example.org", To: "bob@herald.test"})
	check("from", got.From, []Address{{"André Müller", "andre@example.org"}})
	check("to", got.To, []Address{{"Bob", "bob@herald.test"}, {"", "carol@herald.test"}})
	check("cc", got.Cc, []Address{{"Dave, Jr.", "dave@herald.test"}})
	check("subject", got.Subject, "Grüße aus Köln ☕")
	check("date", got.Date, "2025-03-01T13:04:05+01:00")
	check("text", got.Text, "Héllo Böb,\r\nsee attached.")
	check("html", got.HTML, "<p>Héllo</p>")
	if len(got.Headers) != 10 {
		t.Fatalf("%d headers, want 10: %+v", len(got.Headers), got.Headers)
	}
	check("headers[0].name", got.Headers[0].Name, "DKIM-Signature")
	check("headers[1]", got.Headers[1], Header{"From", "André Müller <andre@example.org>"})
	check("headers[4]", got.Headers[4], Header{"Subject", "Grüße aus Köln ☕"})
	check("headers[6].name", got.Headers[6].Name, "Message-ID")
	check("headers[7]", got.Headers[7], Header{"X-Long", "first part continued here"})
	check("attachments", got.Attachments, []Attachment{
		{Filename: "résumé.pdf", ContentType: "application/pdf", Size: len("%PDF-1.4\n%äüöß\n"), Content: []byte("%PDF-1.4\n%äüöß\n")},
		{Filename: "dot.png", ContentType: "image/png", ContentID: "img1@example.org", Size: 8, Content: []byte("\x89PNG\r\n\x1a\n")},
	})
	if string(got.Raw) != testMessage {
		t.Errorf("raw differs from the message")
	}
}

func TestPlainMessage(t *testing.T) {
	t.Parallel()
	raw := "From: a@example.org\r\nSubject: hi\r\n\r\nJust text.\r\n"
	p := Parse(testMsg, "bob@herald.test", []byte(raw), 10)
	if p.Text != "Just text.\r\n" || p.HTML != "" || len(p.Attachments) != 0 || p.Subject != "hi" || p.Date != "" {
		t.Fatalf("payload = %+v", p)
	}
	b, _ := json.Marshal(Parse(testMsg, "bob@herald.test", []byte("not a message"), 10))
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	for _, k := range []string{"headers", "from", "to", "cc", "attachments"} {
		if _, ok := m[k].([]any); !ok {
			t.Errorf("%s = %v in %s, want an array", k, m[k], b)
		}
	}
}

func TestMaxParts(t *testing.T) {
	t.Parallel()
	p := Parse(testMsg, "bob@herald.test", []byte(testMessage), 3)
	if p.Text == "" || p.HTML == "" || len(p.Attachments) != 1 {
		t.Fatalf("with 3 parts: text %q html %q %d attachments", p.Text, p.HTML, len(p.Attachments))
	}
}

func TestClassification(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t)
	p := New(Options{Timeout: 300 * time.Millisecond})
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL
	dead.Close()
	for _, tc := range []struct {
		url      string
		code     int // 0: success
		enhanced smtp.EnhancedCode
	}{
		{rv.URL + "/200", 0, smtp.EnhancedCode{}},
		{rv.URL + "/202", 0, smtp.EnhancedCode{}},
		{rv.URL + "/204", 0, smtp.EnhancedCode{}},
		{rv.URL + "/500", 451, smtp.EnhancedCode{4, 4, 0}},
		{rv.URL + "/503", 451, smtp.EnhancedCode{4, 4, 0}},
		{rv.URL + "/408", 451, smtp.EnhancedCode{4, 4, 0}},
		{rv.URL + "/429", 451, smtp.EnhancedCode{4, 4, 0}},
		{rv.URL + "/redirect", 451, smtp.EnhancedCode{4, 4, 0}},
		{rv.URL + "/404", 550, smtp.EnhancedCode{5, 0, 0}},
		{rv.URL + "/400", 550, smtp.EnhancedCode{5, 0, 0}},
		{rv.URL + "/403", 550, smtp.EnhancedCode{5, 0, 0}},
		{rv.URL + "/413", 552, smtp.EnhancedCode{5, 3, 4}},
		{rv.URL + "/hang", 451, smtp.EnhancedCode{4, 4, 1}},
		{deadURL, 451, smtp.EnhancedCode{4, 4, 1}},
		{"ftp://example.org/", 550, smtp.EnhancedCode{5, 3, 5}},
	} {
		err := p.Post(context.Background(), tc.url, "s", testMsg, "bob@herald.test", strings.NewReader(testMessage))
		if tc.code == 0 {
			if err != nil {
				t.Errorf("%s: %v, want success", tc.url, err)
			}
			continue
		}
		se, ok := smtp.AsError(err)
		if !ok || se.Code != tc.code || se.Enhanced != tc.enhanced {
			t.Errorf("%s: error %v, want %d %v", tc.url, err, tc.code, tc.enhanced)
			continue
		}
		if se.Temporary() != (tc.code < 500) {
			t.Errorf("%s: Temporary() = %v", tc.url, se.Temporary())
		}
		if strings.Contains(se.Message, "127.0.0.1") {
			t.Errorf("%s: SMTP text leaks the endpoint: %q", tc.url, se.Message)
		}
	}
	if got := len(rv.reqs); got != 13 {
		t.Errorf("receiver saw %d requests, want 13", got)
	}
}

func TestTooBigAndUnsigned(t *testing.T) {
	t.Parallel()
	rv := newReceiver(t)
	p := New(Options{MaxSize: int64(len(testMessage) - 1)})
	err := p.Post(context.Background(), rv.URL, "s", testMsg, "bob@herald.test", strings.NewReader(testMessage))
	if se, ok := smtp.AsError(err); !ok || se.Code != 552 || se.Enhanced != (smtp.EnhancedCode{5, 3, 4}) {
		t.Fatalf("over the limit: %v, want 552 5.3.4", err)
	}
	if len(rv.reqs) != 0 {
		t.Fatal("an oversized message was posted")
	}
	// Exactly at the limit, without a secret: posted unsigned.
	p = New(Options{MaxSize: int64(len(testMessage))})
	if err := Post(context.Background(), nil, rv.URL, "", testMsg, "bob@herald.test", strings.NewReader(testMessage)); err != nil {
		t.Fatal(err)
	}
	if r := <-rv.reqs; r.Header.Get(webhook.HeaderSignature) != "" {
		t.Fatalf("unsigned route sent %q", r.Header.Get(webhook.HeaderSignature))
	}
	if err := p.Post(context.Background(), rv.URL, "", testMsg, "bob@herald.test", strings.NewReader(testMessage)); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
}

func TestReadError(t *testing.T) {
	t.Parallel()
	err := New(Options{}).Post(context.Background(), "http://127.0.0.1:1/", "", testMsg, "b@x", io.MultiReader(strings.NewReader("x"), errReader{}))
	if se, ok := smtp.AsError(err); !ok || !se.Temporary() {
		t.Fatalf("read error: %v, want temporary", err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }
