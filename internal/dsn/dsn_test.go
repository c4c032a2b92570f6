package dsn

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"

	"github.com/heraldmail/herald/internal/smtp"
)

var (
	arrival = time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC)
	attempt = time.Date(2026, 11, 26, 10, 5, 0, 0, time.UTC)
	until   = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
)

const origMsg = "Message-ID: <orig-123@client.example>\r\n" +
	"From: Sender <sender@example.com>\r\n" +
	"To: rcpt@remote.test\r\n" +
	"Subject: hello\r\n" +
	"\r\n" +
	"Body line one.\r\n" +
	"Body line two.\r\n"

func failedReport() *Report {
	return &Report{
		ReportingMTA: "mx.example.com",
		Sender:       "sender@example.com",
		EnvID:        "env-42",
		Arrival:      arrival,
		Action:       Failed,
		Recipients: []RecipientStatus{
			{
				Address: "rcpt@remote.test", ORCPT: "rfc822;Rcpt+tag@remote.test",
				Status: smtp.EnhancedCode{5, 1, 1}, RemoteMTA: "mx.remote.test",
				Diagnostic: "550 5.1.1 <rcpt@remote.test>: Recipient address rejected", LastAttempt: attempt,
			},
			{
				Address: "other@remote.test", Status: smtp.EnhancedCode{5, 2, 2}, RemoteMTA: "mx.remote.test",
				Diagnostic: "552-5.2.2 Mailbox full\r\n552 5.2.2 try later", LastAttempt: attempt,
			},
		},
		Original: strings.NewReader(origMsg),
		Date:     attempt,
	}
}

type part struct {
	header message.Header
	body   []byte
}

// structure reads a built DSN with go-message and returns its top-level
// header and parts (bodies decoded).
func structure(t *testing.T, b []byte) (message.Header, []part) {
	t.Helper()
	if bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\n")) {
		t.Fatal("message has a bare LF")
	}
	if bytes.Contains(bytes.ReplaceAll(b, []byte("\r\n"), nil), []byte("\r")) {
		t.Fatal("message has a bare CR")
	}
	for i, line := range strings.Split(string(b), "\r\n") {
		if len(line) > 998 {
			t.Fatalf("line %d is %d bytes long", i, len(line))
		}
	}
	e, err := message.Read(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("go-message cannot read the DSN: %v", err)
	}
	mr := e.MultipartReader()
	if mr == nil {
		t.Fatal("DSN is not multipart")
	}
	var parts []part
	for {
		p, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("next part: %v", err)
		}
		body, err := io.ReadAll(p.Body)
		if err != nil {
			t.Fatalf("reading part: %v", err)
		}
		parts = append(parts, part{p.Header, body})
	}
	return e.Header, parts
}

func TestBuildStructure(t *testing.T) {
	t.Parallel()
	b, err := Build(failedReport())
	if err != nil {
		t.Fatal(err)
	}
	h, parts := structure(t, b)
	mt, params, err := h.ContentType()
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %q %v %v", mt, params, err)
	}
	mh := gomail.Header{Header: h}
	from, err := mh.AddressList("From")
	if err != nil || len(from) != 1 || from[0].Address != "MAILER-DAEMON@mx.example.com" || from[0].Name != "Mail Delivery System" {
		t.Fatalf("From = %v, %v", from, err)
	}
	to, err := mh.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "sender@example.com" {
		t.Fatalf("To = %v, %v", to, err)
	}
	if s, _ := mh.Subject(); s != "Undelivered Mail Returned to Sender" {
		t.Fatalf("Subject = %q", s)
	}
	if d, err := mh.Date(); err != nil || !d.Equal(attempt) {
		t.Fatalf("Date = %v, %v", d, err)
	}
	if id, err := mh.MessageID(); err != nil || !strings.HasSuffix(id, "@mx.example.com") {
		t.Fatalf("Message-ID = %q, %v", id, err)
	}
	if h.Get("Auto-Submitted") != "auto-replied" {
		t.Fatalf("Auto-Submitted = %q", h.Get("Auto-Submitted"))
	}
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	wantTypes := []string{"text/plain", "message/delivery-status", "message/rfc822"}
	for i, p := range parts {
		if mt, _, _ := p.header.ContentType(); mt != wantTypes[i] {
			t.Errorf("part %d type %q, want %q", i, mt, wantTypes[i])
		}
	}
	text := string(parts[0].body)
	for _, want := range []string{
		"mx.example.com",
		"<rcpt@remote.test>: host mx.remote.test said: 550 5.1.1 <rcpt@remote.test>: Recipient address rejected",
		"<other@remote.test>: host mx.remote.test said: 552-5.2.2 Mailbox full 552 5.2.2 try later",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("text part lacks %q:\n%s", want, text)
		}
	}
	status := string(parts[1].body)
	for _, want := range []string{
		"Reporting-MTA: dns; mx.example.com\r\n",
		"Original-Envelope-Id: env-42\r\n",
		"Arrival-Date: Thu, 26 Nov 2026 10:00:00 +0000\r\n",
		"\r\n\r\nOriginal-Recipient: rfc822; Rcpt+tag@remote.test\r\nFinal-Recipient: rfc822; rcpt@remote.test\r\nAction: failed\r\nStatus: 5.1.1\r\n",
		"Remote-MTA: dns; mx.remote.test\r\n",
		"Diagnostic-Code: smtp; 550 5.1.1 <rcpt@remote.test>: Recipient address rejected\r\n",
		"Last-Attempt-Date: Thu, 26 Nov 2026 10:05:00 +0000\r\n",
		"Final-Recipient: rfc822; other@remote.test\r\nAction: failed\r\nStatus: 5.2.2\r\n",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("status part lacks %q:\n%s", want, status)
		}
	}
	if strings.Contains(status, "Will-Retry-Until") {
		t.Error("failed DSN has Will-Retry-Until")
	}
	if got := string(parts[2].body); got != origMsg {
		t.Errorf("returned original differs:\n%q\nwant\n%q", got, origMsg)
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	b, err := Build(failedReport())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if p.ReportingMTA != "mx.example.com" || p.EnvID != "env-42" || !p.Arrival.Equal(arrival) || p.MessageID != "orig-123@client.example" {
		t.Fatalf("per-message fields: %+v", p)
	}
	want := []ParsedRecipient{
		{FinalRecipient: "rcpt@remote.test", OriginalRecipient: "Rcpt+tag@remote.test", Action: Failed,
			Status: smtp.EnhancedCode{5, 1, 1}, RemoteMTA: "mx.remote.test",
			Diagnostic: "550 5.1.1 <rcpt@remote.test>: Recipient address rejected", LastAttempt: attempt},
		{FinalRecipient: "other@remote.test", Action: Failed, Status: smtp.EnhancedCode{5, 2, 2},
			RemoteMTA: "mx.remote.test", Diagnostic: "552-5.2.2 Mailbox full 552 5.2.2 try later", LastAttempt: attempt},
	}
	if len(p.Recipients) != len(want) {
		t.Fatalf("%d recipients, want %d", len(p.Recipients), len(want))
	}
	for i := range want {
		g := p.Recipients[i]
		if !g.LastAttempt.Equal(want[i].LastAttempt) {
			t.Errorf("rcpt %d LastAttempt %v", i, g.LastAttempt)
		}
		g.LastAttempt = want[i].LastAttempt
		if g != want[i] {
			t.Errorf("rcpt %d = %+v\nwant %+v", i, g, want[i])
		}
	}
}

func TestDelayedAndSuccess(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.Action = Delayed
	r.Recipients = r.Recipients[:1]
	r.Recipients[0].Status = smtp.EnhancedCode{}
	r.Recipients[0].Diagnostic = "connect to mx.remote.test: connection refused"
	r.Recipients[0].WillRetryUntil = until
	b, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	h, parts := structure(t, b)
	if s := h.Get("Subject"); s != "Delivery Status Notification (Delay)" {
		t.Fatalf("Subject %q", s)
	}
	st := string(parts[1].body)
	for _, want := range []string{"Action: delayed\r\n", "Status: 4.0.0\r\n", "Will-Retry-Until: Tue, 01 Dec 2026 10:00:00 +0000\r\n",
		"Diagnostic-Code: x-herald; connect to mx.remote.test: connection refused\r\n"} {
		if !strings.Contains(st, want) {
			t.Errorf("delay status lacks %q:\n%s", want, st)
		}
	}

	r = failedReport()
	r.Action = Delivered
	r.Recipients = []RecipientStatus{{Address: "rcpt@remote.test", RemoteMTA: "mx.remote.test", Diagnostic: "250 2.0.0 Ok: queued"}}
	b, err = Build(r)
	if err != nil {
		t.Fatal(err)
	}
	h, parts = structure(t, b)
	if s := h.Get("Subject"); s != "Delivery Status Notification (Success)" {
		t.Fatalf("Subject %q", s)
	}
	if st := string(parts[1].body); !strings.Contains(st, "Action: delivered\r\nStatus: 2.0.0\r\n") {
		t.Fatalf("success status:\n%s", st)
	}
}

func TestRetHeadersAndSizeCap(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.Ret = "hdrs"
	b, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	_, parts := structure(t, b)
	if mt, _, _ := parts[2].header.ContentType(); mt != "text/rfc822-headers" {
		t.Fatalf("RET=HDRS part type %q", mt)
	}
	wantHdrs := origMsg[:strings.Index(origMsg, "\r\n\r\n")+2]
	if got := string(parts[2].body); got != wantHdrs {
		t.Fatalf("RET=HDRS returned %q, want %q", got, wantHdrs)
	}
	if p, err := Parse(bytes.NewReader(b)); err != nil || p.MessageID != "orig-123@client.example" {
		t.Fatalf("Parse(HDRS DSN) = %+v, %v", p, err)
	}

	// A message over MaxReturnedSize is returned as headers even with RET=FULL.
	big := origMsg + strings.Repeat(strings.Repeat("x", 78)+"\r\n", MaxReturnedSize/80+10)
	r = failedReport()
	r.Ret = "FULL"
	r.Original = strings.NewReader(big)
	b, err = Build(r)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 64<<10 {
		t.Fatalf("DSN of a big message is %d bytes", len(b))
	}
	_, parts = structure(t, b)
	if mt, _, _ := parts[2].header.ContentType(); mt != "text/rfc822-headers" || string(parts[2].body) != wantHdrs {
		t.Fatalf("big message returned as %q (%d bytes)", mt, len(parts[2].body))
	}
	if !strings.Contains(string(parts[0].body), "only its headers are returned") {
		t.Fatalf("text does not explain the truncation:\n%s", parts[0].body)
	}

	// Exactly at the cap it is returned whole.
	var eb strings.Builder
	eb.WriteString(origMsg)
	for eb.Len() < MaxReturnedSize {
		n := min(78, MaxReturnedSize-eb.Len()-2)
		eb.WriteString(strings.Repeat("y", n) + "\r\n")
	}
	exact := eb.String()
	if len(exact) != MaxReturnedSize {
		t.Fatalf("test message is %d bytes", len(exact))
	}
	r.Original = strings.NewReader(exact)
	if b, err = Build(r); err != nil {
		t.Fatal(err)
	}
	if _, parts = structure(t, b); string(parts[2].body) != exact {
		t.Fatal("message of exactly MaxReturnedSize not returned whole")
	}

	// No original: two parts.
	r.Original = nil
	if b, err = Build(r); err != nil {
		t.Fatal(err)
	}
	if _, parts = structure(t, b); len(parts) != 2 {
		t.Fatalf("no original: %d parts", len(parts))
	}
}

func TestNonASCII(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.Sender = "jörg@bücher.example"
	r.Recipients = []RecipientStatus{{
		Address: "用户@例子.测试", Status: smtp.EnhancedCode{5, 1, 1}, RemoteMTA: "mx.remote.test",
		Diagnostic: "550 5.1.1 Benutzer unbekannt: größe\x00\x07", LastAttempt: attempt,
	}}
	orig := "Subject: Grüße\r\nMessage-ID: <ü@client.example>\r\n\r\nHallo Welt ✓\r\n"
	r.Original = strings.NewReader(orig)
	b, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	h, parts := structure(t, b)
	if _, params, _ := h.ContentType(); params["report-type"] != "global-delivery-status" {
		t.Fatalf("report-type %q, want global-delivery-status", params["report-type"])
	}
	types := []string{"text/plain", "message/global-delivery-status", "message/global"}
	for i, p := range parts {
		if mt, _, _ := p.header.ContentType(); mt != types[i] {
			t.Errorf("part %d type %q want %q", i, mt, types[i])
		}
	}
	if te := parts[0].header.Get("Content-Transfer-Encoding"); te != "quoted-printable" {
		t.Errorf("text part CTE %q", te)
	}
	if !strings.Contains(string(parts[0].body), "<用户@例子.测试>: host mx.remote.test said: 550 5.1.1 Benutzer unbekannt: größe") {
		t.Errorf("text part (decoded) wrong:\n%s", parts[0].body)
	}
	if !strings.Contains(string(parts[1].body), "Final-Recipient: utf-8; 用户@例子.测试\r\n") {
		t.Errorf("status part:\n%s", parts[1].body)
	}
	if string(parts[2].body) != orig {
		t.Errorf("original not returned byte-exact")
	}
	if !strings.Contains(string(b), "To: <jörg@bücher.example>\r\n") {
		t.Error("UTF-8 sender not in To")
	}
	p, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Recipients) != 1 || p.Recipients[0].FinalRecipient != "用户@例子.测试" ||
		p.Recipients[0].Diagnostic != "550 5.1.1 Benutzer unbekannt: größe" || p.MessageID != "ü@client.example" {
		t.Fatalf("parsed %+v", p)
	}
}

func TestBuildRefuses(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.Sender = ""
	if _, err := Build(r); !errors.Is(err, ErrNullSender) {
		t.Fatalf("null sender: err = %v, want ErrNullSender", err)
	}
	for name, mod := range map[string]func(*Report){
		"header injection in sender": func(r *Report) { r.Sender = "a@b\r\nBcc: x@y" },
		"bad MTA":                    func(r *Report) { r.ReportingMTA = "mx\r\nX: y" },
		"no recipients":              func(r *Report) { r.Recipients = nil },
		"no action":                  func(r *Report) { r.Action = ActionUnknown },
		"reader error":               func(r *Report) { r.Original = io.MultiReader(strings.NewReader("x"), errReader{}) },
	} {
		r := failedReport()
		mod(r)
		if _, err := Build(r); err == nil {
			t.Errorf("%s: Build succeeded", name)
		}
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("disk error") }

func TestShouldNotify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		notify string
		action Action
		want   bool
	}{
		{"", Failed, true}, {"", Delayed, true}, {"", Delivered, false}, {"", Relayed, false},
		{"NEVER", Failed, false}, {"never", Delayed, false},
		{"SUCCESS", Delivered, true}, {"SUCCESS", Relayed, true}, {"SUCCESS", Expanded, true}, {"SUCCESS", Failed, false},
		{"FAILURE", Failed, true}, {"FAILURE", Delayed, false},
		{"DELAY", Delayed, true}, {"DELAY", Failed, false},
		{"success,failure", Failed, true}, {"SUCCESS, DELAY", Delayed, true}, {"SUCCESS,DELAY", Failed, false},
	}
	for _, tc := range tests {
		if got := ShouldNotify(tc.notify, tc.action); got != tc.want {
			t.Errorf("ShouldNotify(%q, %v) = %v, want %v", tc.notify, tc.action, got, tc.want)
		}
	}
}

// A DSN written by another MTA (Postfix style, LF line endings, folded
// fields, comments) parses.
const foreignDSN = `From: MAILER-DAEMON@mail.remote.test (Mail Delivery System)
To: sender@example.com
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
	boundary="B1"

--B1
Content-Type: text/plain; charset=us-ascii

Sorry.

--B1
Content-Type: message/delivery-status

Reporting-MTA: dns; mail.remote.test
X-Postfix-Queue-ID: 4F1
Original-Envelope-Id: abc
Arrival-Date: Wed, 25 Nov 2026 09:00:00 +0100 (CET)

Final-Recipient: rfc822; nobody@remote.test
Original-Recipient: rfc822;Nobody@remote.test
Action: failed (bad mailbox)
Status: 5.1.1 (unknown user)
Remote-MTA: dns; [192.0.2.1]
Diagnostic-Code: smtp; 550 5.1.1 <nobody@remote.test>:
    Recipient address rejected: User unknown

Final-Recipient: rfc822; later@remote.test
Action: delayed
Status: 4.4.1

--B1
Content-Type: text/rfc822-headers

Message-Id: <xyz@example.com>
Subject: test

--B1--
`

func TestParseForeign(t *testing.T) {
	t.Parallel()
	p, err := Parse(strings.NewReader(foreignDSN))
	if err != nil {
		t.Fatal(err)
	}
	if p.ReportingMTA != "mail.remote.test" || p.EnvID != "abc" || p.MessageID != "xyz@example.com" ||
		!p.Arrival.Equal(time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)) {
		t.Fatalf("per-message: %+v", p)
	}
	if len(p.Recipients) != 2 {
		t.Fatalf("%d recipients", len(p.Recipients))
	}
	r0 := p.Recipients[0]
	if r0.FinalRecipient != "nobody@remote.test" || r0.OriginalRecipient != "Nobody@remote.test" || r0.Action != Failed ||
		r0.Status != (smtp.EnhancedCode{5, 1, 1}) || r0.RemoteMTA != "[192.0.2.1]" ||
		r0.Diagnostic != "550 5.1.1 <nobody@remote.test>: Recipient address rejected: User unknown" {
		t.Fatalf("rcpt 0: %+v", r0)
	}
	if r1 := p.Recipients[1]; r1.Action != Delayed || r1.Status != (smtp.EnhancedCode{4, 4, 1}) {
		t.Fatalf("rcpt 1: %+v", r1)
	}
}

func TestParseNotDSN(t *testing.T) {
	t.Parallel()
	for _, m := range []string{
		"Subject: plain\r\n\r\nhello\r\n",
		"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\nContent-Type: text/plain\r\n\r\nhi\r\n--x--\r\n",
		"Content-Type: multipart/report; report-type=delivery-status; boundary=x\r\n\r\n--x\r\nContent-Type: message/delivery-status\r\n\r\n\r\n--x--\r\n",
	} {
		if _, err := Parse(strings.NewReader(m)); !errors.Is(err, ErrNotDSN) {
			t.Errorf("Parse(%q) err = %v, want ErrNotDSN", m, err)
		}
	}
	if _, err := Parse(strings.NewReader("\x00garbage without header end")); err == nil {
		t.Error("garbage parsed")
	}
}

func TestParseStatus(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]smtp.EnhancedCode{
		"5.1.1": {5, 1, 1}, " 4.7.26 (x)": {4, 7, 26}, "2.0.0": {2, 0, 0},
		"3.1.1": {}, "5.1": {}, "5.1.1.1": {}, "a.b.c": {}, "5.1000.1": {}, "": {}, "5.-1.1": {},
	} {
		if got := parseStatus(s); got != want {
			t.Errorf("parseStatus(%q) = %v, want %v", s, got, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	b, err := Build(failedReport())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(foreignDSN))
	r := failedReport()
	r.Recipients[0].Address = "ü@例子.测试"
	r.Ret = "HDRS"
	if b, err = Build(r); err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("Content-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@b\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(p.Recipients) > maxParsedRcpts {
			t.Fatalf("%d recipients kept", len(p.Recipients))
		}
		for _, rc := range p.Recipients {
			if len(rc.Diagnostic) > 2*maxParsedFieldSz || len(rc.FinalRecipient) > 2*maxParsedFieldSz {
				t.Fatalf("oversized field kept")
			}
		}
	})
}

// Reading the status with bufio must not be needed by callers: Parse accepts
// any io.Reader, including one returning a byte at a time.
func TestParseSlowReader(t *testing.T) {
	t.Parallel()
	b, err := Build(failedReport())
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(bufio.NewReaderSize(&oneByteReader{b}, 16))
	if err != nil || len(p.Recipients) != 2 {
		t.Fatalf("Parse(slow) = %+v, %v", p, err)
	}
}

type oneByteReader struct{ b []byte }

func (r *oneByteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[0]
	r.b = r.b[1:]
	return 1, nil
}

// firstNonASCII returns the index of the first byte of b above 0x7F, or -1.
func firstNonASCII(b []byte) int {
	for i, c := range b {
		if c >= 0x80 {
			return i
		}
	}
	return -1
}

// The review's finding: one non-ASCII byte in a remote reply made the DSN
// need SMTPUTF8; the sender's MX lacked it and the bounce was dropped. A
// DSN for a message that did not use SMTPUTF8 is pure ASCII whatever the
// remote said, and still parses.
func TestRemoteReplyWithUTF8AndRawBytesStays7Bit(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.Recipients[0].Diagnostic = "550 5.1.1 Empfänger unbekannt \xff\xfe größe ✓"
	r.Recipients[0].RemoteMTA = "mx.remote.test[192.0.2.1]"
	r.Recipients[1].Diagnostic = "452 4.2.2 Postfach voll\x00\r\nBcc: injected@evil.test \xc3"
	for _, action := range []Action{Failed, Delayed} {
		r.Action = action
		r.Original = strings.NewReader(origMsg)
		b, err := Build(r)
		if err != nil {
			t.Fatal(err)
		}
		if i := firstNonASCII(b); i >= 0 {
			t.Fatalf("%v: byte %#x at %d in a DSN for a non-SMTPUTF8 message:\n%s", action, b[i], i, b)
		}
		if r.Global() {
			t.Fatal("Global() for a non-SMTPUTF8 report")
		}
		h, parts := structure(t, b)
		if _, params, _ := h.ContentType(); params["report-type"] != "delivery-status" {
			t.Errorf("report-type %q", params["report-type"])
		}
		if mt, _, _ := parts[1].header.ContentType(); mt != "message/delivery-status" {
			t.Errorf("status part %q", mt)
		}
		status := string(parts[1].body)
		for _, want := range []string{
			"Diagnostic-Code: smtp; 550 5.1.1 Empf?nger unbekannt ?? gr??e ?\r\n",
			"Diagnostic-Code: smtp; 452 4.2.2 Postfach voll Bcc: injected@evil.test ?\r\n",
			"Remote-MTA: dns; mx.remote.test[192.0.2.1]\r\n",
		} {
			if !strings.Contains(status, want) {
				t.Errorf("status part lacks %q:\n%s", want, status)
			}
		}
		if strings.Contains(string(b), "\r\nBcc:") {
			t.Error("a reply's CR LF started a new field")
		}
		// The human-readable part keeps the text, as valid UTF-8 in QP.
		if te := parts[0].header.Get("Content-Transfer-Encoding"); te != "quoted-printable" {
			t.Errorf("text part CTE %q", te)
		}
		text := string(parts[0].body)
		if !utf8.ValidString(text) || !strings.Contains(text, "Empfänger unbekannt \ufffd\ufffd größe ✓") {
			t.Errorf("text part (decoded):\n%q", text)
		}
		p, err := Parse(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Recipients) != 2 || p.Recipients[0].Action != action ||
			p.Recipients[0].Diagnostic != "550 5.1.1 Empf?nger unbekannt ?? gr??e ?" ||
			p.Recipients[0].FinalRecipient != "rcpt@remote.test" || p.Recipients[0].Status != (smtp.EnhancedCode{5, 1, 1}) {
			t.Fatalf("parsed %+v", p.Recipients)
		}
	}
}

// An internationalised address in a report that may not use UTF-8 is
// given in the 7-bit utf-8-addr-xtext form of RFC 6533, which Parse
// decodes.
func TestInternationalAddressWithoutSMTPUTF8(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.Recipients = []RecipientStatus{{
		Address: "用户+x@例子.测试", ORCPT: "utf-8;Jörg=1@bücher.example", Status: smtp.EnhancedCode{5, 1, 1},
		Diagnostic: "550 5.1.1 unknown", LastAttempt: attempt,
	}}
	b, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	if i := firstNonASCII(b); i >= 0 {
		t.Fatalf("byte %#x at %d:\n%s", b[i], i, b)
	}
	_, parts := structure(t, b)
	status := string(parts[1].body)
	for _, want := range []string{
		`Final-Recipient: utf-8; \x{7528}\x{6237}\x{2B}x@\x{4F8B}\x{5B50}.\x{6D4B}\x{8BD5}` + "\r\n",
		`Original-Recipient: utf-8; J\x{F6}rg\x{3D}1@b\x{FC}cher.example` + "\r\n",
	} {
		if !strings.Contains(status, want) {
			t.Errorf("status part lacks %q:\n%s", want, status)
		}
	}
	p, err := Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if rc := p.Recipients[0]; rc.FinalRecipient != "用户+x@例子.测试" || rc.OriginalRecipient != "Jörg=1@bücher.example" {
		t.Errorf("parsed final %q original %q", rc.FinalRecipient, rc.OriginalRecipient)
	}
}

// For an SMTPUTF8 original the report is global and keeps UTF-8, but raw
// invalid bytes still become U+FFFD: the fields stay valid UTF-8.
func TestSMTPUTF8OriginalKeepsUTF8(t *testing.T) {
	t.Parallel()
	r := failedReport()
	r.SMTPUTF8 = true
	r.Recipients = []RecipientStatus{{
		Address: "用户@例子.测试", Status: smtp.EnhancedCode{5, 1, 1}, RemoteMTA: "mx.remote.test",
		Diagnostic: "550 5.1.1 Benutzer unbekannt \xff", LastAttempt: attempt,
	}}
	b, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Global() {
		t.Fatal("not Global() for an SMTPUTF8 original")
	}
	_, parts := structure(t, b)
	if mt, _, _ := parts[1].header.ContentType(); mt != "message/global-delivery-status" {
		t.Errorf("status part %q", mt)
	}
	status := string(parts[1].body)
	if !utf8.ValidString(status) || !strings.Contains(status, "Final-Recipient: utf-8; 用户@例子.测试\r\n") ||
		!strings.Contains(status, "Diagnostic-Code: smtp; 550 5.1.1 Benutzer unbekannt \ufffd\r\n") {
		t.Errorf("status part:\n%s", status)
	}
	p, err := Parse(bytes.NewReader(b))
	if err != nil || p.Recipients[0].FinalRecipient != "用户@例子.测试" {
		t.Fatalf("parsed %+v %v", p, err)
	}
}

// A non-SMTPUTF8 original with an 8-bit body (8BITMIME) is returned as it
// is; the report itself stays 7-bit.
func TestEightBitOriginalWithoutSMTPUTF8(t *testing.T) {
	t.Parallel()
	r := failedReport()
	orig := "From: a@example.com\r\nSubject: hi\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße\r\n"
	r.Original = strings.NewReader(orig)
	b, err := Build(r)
	if err != nil {
		t.Fatal(err)
	}
	h, parts := structure(t, b)
	if _, params, _ := h.ContentType(); params["report-type"] != "delivery-status" {
		t.Errorf("report-type %q", params["report-type"])
	}
	if mt, _, _ := parts[2].header.ContentType(); mt != "message/rfc822" || parts[2].header.Get("Content-Transfer-Encoding") != "8bit" {
		t.Errorf("original part %q CTE %q", mt, parts[2].header.Get("Content-Transfer-Encoding"))
	}
	if string(parts[2].body) != orig {
		t.Error("original not returned byte-exact")
	}
	if i := firstNonASCII(b[:bytes.Index(b, []byte("From: a@example.com"))]); i >= 0 {
		t.Errorf("non-ASCII byte at %d before the returned original", i)
	}
}
