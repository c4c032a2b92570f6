package dsn

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// The reports below are examples written in the style of the Yahoo, Outlook
// (JMRP) and AOL feedback loops; they are illustrative, not captured reports.

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

var yahooARF = crlf(`From: feedback@arf.mail.yahoo.com
To: fbl@example.com
Subject: FW: Your newsletter
Date: Thu, 26 Nov 2026 10:00:00 +0000
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="B1"

--B1
Content-Type: text/plain; charset="us-ascii"

This is an email abuse report for an email message received from IP 192.0.2.10 on Thu, 26 Nov 2026 09:58:00 +0000.

--B1
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: Yahoo!-Mail-Feedback/2.0
Version: 1
Original-Mail-From: <bounces+abcdefgh@example.com>
Original-Rcpt-To: <someone@yahoo.com>
Arrival-Date: Thu, 26 Nov 2026 09:58:00 +0000
Reporting-MTA: dns; mta1234.mail.bf1.yahoo.com
Source-IP: 192.0.2.10
Reported-Domain: example.com
Authentication-Results: mta1234.mail.bf1.yahoo.com;
  dkim=pass header.i=@example.com; spf=pass smtp.mailfrom=example.com

--B1
Content-Type: message/rfc822

Return-Path: <bounces+abcdefgh@example.com>
Received: from mx.example.com (192.0.2.10) by mta1234.mail.bf1.yahoo.com
Message-ID: <orig-123@example.com>
From: News <news@example.com>
To: someone@yahoo.com
Subject: Your newsletter
X-Herald-Queue-ID: 0123456789abcdef
x-herald-recipient: 42
MIME-Version: 1.0
Content-Type: text/plain

Hello.

--B1--
`)

var outlookARF = crlf(`From: staff@hotmail.com
To: jmrp@example.com
Subject: complaint about message from 192.0.2.10
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report;
	boundary="--boundary_0_1"

----boundary_0_1
Content-Type: text/plain

This is an email abuse report for an email message received from IP 192.0.2.10.

----boundary_0_1
Content-Type: message/feedback-report
Content-Disposition: inline

Feedback-Type: abuse
User-Agent: Microsoft Junk Mail Reporting Program
Version: 1.0
Source-IP: [2001:db8::10]
Reported-Domain: example.com
Original-Rcpt-To: <redacted@hotmail.com>
Original-Rcpt-To: <second@outlook.com>

----boundary_0_1
Content-Type: message/rfc822
Content-Disposition: inline

X-HmXmrOriginalRecipient: <redacted@hotmail.com>
Message-ID: <orig-456@example.com>
From: billing@example.com
To: <redacted@hotmail.com>
Subject: Invoice

Body.
----boundary_0_1--
`)

// AOL style: older Received-Date field and only the original's headers.
var aolARF = crlf(`From: scomp@aol.net
Subject: Email Feedback Report for IP 192.0.2.10
MIME-Version: 1.0
Content-Type: multipart/report; report-type=feedback-report; boundary="AOL"

--AOL
Content-Type: text/plain

This is an email abuse report.
--AOL
Content-Type: message/feedback-report

Feedback-Type: abuse
User-Agent: AOL SComp
Version: 0.1
Received-Date: Thu, 26 Nov 2026 09:00:00 -0500
Source-IP: 192.0.2.10
Reported-Domain: example.com
Original-Mail-From: bounces+zzzz@example.com
--AOL
Content-Type: text/rfc822-headers

Return-Path: <bounces+zzzz@example.com>
Message-ID: <orig-789@example.com>
From: alerts@example.com
To: redacted@aol.com
X-Herald-Queue-ID: fedcba9876543210
--AOL--
`)

func TestParseARFYahoo(t *testing.T) {
	t.Parallel()
	fb, err := ParseARF(strings.NewReader(yahooARF))
	if err != nil {
		t.Fatal(err)
	}
	if fb.Type != FeedbackAbuse || fb.UserAgent != "Yahoo!-Mail-Feedback/2.0" || fb.Version != "1" {
		t.Errorf("type/agent/version = %q %q %q", fb.Type, fb.UserAgent, fb.Version)
	}
	if fb.OriginalMailFrom != "bounces+abcdefgh@example.com" {
		t.Errorf("OriginalMailFrom = %q", fb.OriginalMailFrom)
	}
	if len(fb.OriginalRcptTo) != 1 || fb.OriginalRcptTo[0] != "someone@yahoo.com" {
		t.Errorf("OriginalRcptTo = %q", fb.OriginalRcptTo)
	}
	if want := time.Date(2026, 11, 26, 9, 58, 0, 0, time.UTC); !fb.ArrivalDate.Equal(want) {
		t.Errorf("ArrivalDate = %v", fb.ArrivalDate)
	}
	if fb.ReportingMTA != "mta1234.mail.bf1.yahoo.com" {
		t.Errorf("ReportingMTA = %q", fb.ReportingMTA)
	}
	if fb.SourceIP != netip.MustParseAddr("192.0.2.10") {
		t.Errorf("SourceIP = %v", fb.SourceIP)
	}
	if len(fb.ReportedDomain) != 1 || fb.ReportedDomain[0] != "example.com" {
		t.Errorf("ReportedDomain = %q", fb.ReportedDomain)
	}
	if !strings.HasPrefix(fb.Description, "This is an email abuse report") {
		t.Errorf("Description = %q", fb.Description)
	}
	o := fb.Original
	if !fb.HasOriginal || o.MessageID != "orig-123@example.com" || o.From != "News <news@example.com>" ||
		o.To != "someone@yahoo.com" || o.Subject != "Your newsletter" || o.ReturnPath != "bounces+abcdefgh@example.com" {
		t.Errorf("Original = %+v", o)
	}
	if o.Herald["X-Herald-Queue-Id"] != "0123456789abcdef" || o.Herald["X-Herald-Recipient"] != "42" || len(o.Herald) != 2 {
		t.Errorf("Herald headers = %v", o.Herald)
	}
}

func TestParseARFOutlook(t *testing.T) {
	t.Parallel()
	fb, err := ParseARF(strings.NewReader(outlookARF))
	if err != nil {
		t.Fatal(err)
	}
	if fb.Type != FeedbackAbuse || fb.Version != "1.0" || fb.OriginalMailFrom != "" {
		t.Errorf("fields = %+v", fb)
	}
	if fb.SourceIP != netip.MustParseAddr("2001:db8::10") {
		t.Errorf("SourceIP = %v", fb.SourceIP)
	}
	if len(fb.OriginalRcptTo) != 2 || fb.OriginalRcptTo[1] != "second@outlook.com" {
		t.Errorf("OriginalRcptTo = %q", fb.OriginalRcptTo)
	}
	if !fb.HasOriginal || fb.Original.MessageID != "orig-456@example.com" || fb.Original.Herald != nil {
		t.Errorf("Original = %+v", fb.Original)
	}
	if !fb.ArrivalDate.IsZero() {
		t.Errorf("ArrivalDate = %v, want zero", fb.ArrivalDate)
	}
}

func TestParseARFAOLHeadersOnly(t *testing.T) {
	t.Parallel()
	fb, err := ParseARF(strings.NewReader(aolARF))
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Date(2026, 11, 26, 14, 0, 0, 0, time.UTC); !fb.ArrivalDate.Equal(want) {
		t.Errorf("ArrivalDate (Received-Date) = %v", fb.ArrivalDate)
	}
	if fb.OriginalMailFrom != "bounces+zzzz@example.com" {
		t.Errorf("OriginalMailFrom = %q", fb.OriginalMailFrom)
	}
	o := fb.Original
	if !fb.HasOriginal || o.MessageID != "orig-789@example.com" || o.ReturnPath != "bounces+zzzz@example.com" ||
		o.Herald["X-Herald-Queue-Id"] != "fedcba9876543210" {
		t.Errorf("Original = %+v", o)
	}
}

func TestParseARFTypes(t *testing.T) {
	t.Parallel()
	for _, typ := range []string{"abuse", "fraud", "virus", "other", "not-spam", "Auth-Failure"} {
		msg := strings.Replace(aolARF, "Feedback-Type: abuse", "Feedback-Type: "+typ+" (comment)", 1)
		fb, err := ParseARF(strings.NewReader(msg))
		if err != nil {
			t.Fatalf("%s: %v", typ, err)
		}
		if fb.Type != strings.ToLower(typ) {
			t.Errorf("Type = %q, want %q", fb.Type, strings.ToLower(typ))
		}
	}
}

func TestParseARFRejects(t *testing.T) {
	t.Parallel()
	noType := strings.Replace(aolARF, "Feedback-Type: abuse\r\n", "", 1)
	dsnMsg := strings.Replace(aolARF, "message/feedback-report", "message/delivery-status", 1)
	for name, in := range map[string]string{
		"no feedback-type": noType,
		"a DSN":            dsnMsg,
		"plain":            "Subject: hi\r\n\r\nhello\r\n",
	} {
		if _, err := ParseARF(strings.NewReader(in)); !errors.Is(err, ErrNotARF) {
			t.Errorf("%s: err = %v, want ErrNotARF", name, err)
		}
	}
	if _, err := ParseARF(strings.NewReader("\x00\x01 not a header")); err == nil {
		t.Error("garbage accepted")
	}
}

func TestParseARFBounds(t *testing.T) {
	t.Parallel()
	var b strings.Builder
	b.WriteString("Feedback-Type: abuse\r\n")
	for range 1000 {
		b.WriteString("Original-Rcpt-To: <a@example.com>\r\nReported-Domain: example.com\r\n")
	}
	msg := strings.Replace(aolARF, "Feedback-Type: abuse\r\n", b.String(), 1)
	var hdr strings.Builder
	for i := range 200 {
		hdr.WriteString("X-Herald-H" + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + string(rune('a'+i/26)) + ": v\r\n")
	}
	msg = strings.Replace(msg, "X-Herald-Queue-ID: fedcba9876543210\r\n", hdr.String(), 1)
	fb, err := ParseARF(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	// A report's fields are also capped per group (64) by fieldGroups.
	if n, m := len(fb.OriginalRcptTo), len(fb.ReportedDomain); n == 0 || m == 0 || n > maxARFListValues || m > maxARFListValues {
		t.Errorf("kept %d recipients and %d domains, want 1..%d", n, m, maxARFListValues)
	}
	if len(fb.Original.Herald) != maxHeraldHeaders {
		t.Errorf("kept %d X-Herald headers, want %d", len(fb.Original.Herald), maxHeraldHeaders)
	}
}

func FuzzParseARF(f *testing.F) {
	f.Add([]byte(yahooARF))
	f.Add([]byte(outlookARF))
	f.Add([]byte(aolARF))
	f.Fuzz(func(t *testing.T, b []byte) {
		fb, err := ParseARF(strings.NewReader(string(b)))
		if err != nil {
			return
		}
		if fb.Type == "" {
			t.Fatal("report without Feedback-Type accepted")
		}
		if len(fb.OriginalRcptTo) > maxARFListValues || len(fb.ReportedDomain) > maxARFListValues ||
			len(fb.Original.Herald) > maxHeraldHeaders || len(fb.Description) > maxARFDescription {
			t.Fatal("bounds exceeded")
		}
	})
}
