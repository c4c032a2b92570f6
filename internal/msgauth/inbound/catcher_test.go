package inbound_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// reportMail is a DMARC aggregate report as Google sends it: the sample
// report of package dmarcreport, gzipped and attached, then padding bytes
// of filler in a second text part.
func reportMail(t *testing.T, padding int) string {
	t.Helper()
	x, err := os.ReadFile("../dmarcreport/testdata/google.xml")
	if err != nil {
		t.Fatal(err)
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(x)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	enc := base64.StdEncoding.EncodeToString(gz.Bytes())
	var att strings.Builder
	for len(enc) > 76 {
		att.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	att.WriteString(enc + "\r\n")
	var pad strings.Builder
	line := strings.Repeat("x", 76) + "\r\n"
	for pad.Len() < padding {
		pad.WriteString(line)
	}
	return "From: noreply-dmarc-support@good.test\r\n" +
		"To: dmarc@example.test\r\n" +
		"Subject: Report domain: herald.example Submitter: google.com Report-ID: 13622947891290042921\r\n" +
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"XYZ\"\r\n" +
		"\r\n" +
		"--XYZ\r\n" +
		"Content-Type: application/gzip; name=\"google.com!herald.example!1795564800!1795651199.xml.gz\"\r\n" +
		"Content-Disposition: attachment; filename=\"google.com!herald.example!1795564800!1795651199.xml.gz\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		att.String() +
		"--XYZ\r\n" +
		"Content-Type: text/plain\r\n" +
		"\r\n" +
		pad.String() +
		"--XYZ--\r\n"
}

// arfMail is a feedback-loop complaint about a message Herald sent.
const arfMail = "From: fbl@good.test\r\n" +
	"To: fbl@example.test\r\n" +
	"Subject: complaint about a message\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/report;\r\n\treport-type=feedback-report; boundary=\"b\"\r\n" +
	"\r\n" +
	"--b\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"A user complained.\r\n" +
	"--b\r\n" +
	"Content-Type: message/feedback-report\r\n" +
	"\r\n" +
	"Feedback-Type: abuse\r\n" +
	"User-Agent: goodfbl/1.0\r\n" +
	"Version: 1\r\n" +
	"Original-Mail-From: <bounce+token@example.test>\r\n" +
	"Original-Rcpt-To: <angry@good.test>\r\n" +
	"Reporting-MTA: dns; fbl.good.test\r\n" +
	"\r\n" +
	"--b\r\n" +
	"Content-Type: text/rfc822-headers\r\n" +
	"\r\n" +
	"From: app@example.test\r\n" +
	"Subject: newsletter\r\n" +
	"\r\n" +
	"--b--\r\n"

// A DMARC aggregate report arriving as mail is kept where `herald dmarc
// reports` finds it, and the message itself is delivered as usual.
func TestCatcherKeepsDMARCReport(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	raw := reportMail(t, 0)
	s, err := w.accept("noreply-dmarc-support@good.test", "example.test", raw)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(s.data, raw) {
		t.Error("the report message was not stored whole")
	}
	reps := w.kept("herald.example")
	if len(reps) != 1 {
		t.Fatalf("%d reports kept, want 1", len(reps))
	}
	if r := reps[0]; r.ReportID != "13622947891290042921" || r.OrgName != "google.com" || r.Policy.Domain != "herald.example" || len(r.Records) == 0 {
		t.Errorf("kept report: id %q org %q domain %q, %d records", r.ReportID, r.OrgName, r.Policy.Domain, len(r.Records))
	}
	if n := len(w.gotComplaints()); n != 0 {
		t.Errorf("a DMARC report made %d complaints", n)
	}

	// The same report again is stored once (by domain, period, reporter
	// and ID).
	if _, err := w.accept("noreply-dmarc-support@good.test", "example.test", raw); err != nil {
		t.Fatal(err)
	}
	if reps := w.kept(""); len(reps) != 1 {
		t.Errorf("%d reports after a duplicate, want 1", len(reps))
	}
}

// Anyone can mail a report: one about a domain that is not ours is not
// kept (no files for made-up domains), though the message is delivered.
func TestCatcherKeepsOnlyOurDomains(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	if err := w.st.DeleteDomain(w.ctx, "herald.example"); err != nil {
		t.Fatal(err)
	}
	if _, err := w.accept("noreply-dmarc-support@good.test", "example.test", reportMail(t, 0)); err != nil {
		t.Fatal(err)
	}
	if reps := w.kept(""); len(reps) != 0 {
		t.Fatalf("a report about a foreign domain was kept: %+v", reps)
	}
}

// A feedback-loop report is parsed and handed to Complaint; the message
// is delivered as usual.
func TestCatcherHandsOverComplaint(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	s, err := w.accept("fbl@good.test", "example.test", arfMail)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(s.data, arfMail) {
		t.Error("the complaint message was not stored whole")
	}
	fbs := w.gotComplaints()
	if len(fbs) != 1 {
		t.Fatalf("Complaint called %d times, want once", len(fbs))
	}
	fb := fbs[0]
	if fb.Type != "abuse" || fb.OriginalMailFrom != "bounce+token@example.test" || fb.ReportingMTA != "fbl.good.test" ||
		len(fb.OriginalRcptTo) != 1 || fb.OriginalRcptTo[0] != "angry@good.test" || !fb.HasOriginal {
		t.Errorf("complaint as parsed: %+v", fb)
	}
	if reps := w.kept(""); len(reps) != 0 {
		t.Errorf("a complaint was kept as %d DMARC reports", len(reps))
	}
}

// Ordinary mail, and mail that only looks like a report, makes neither a
// report nor a complaint.
func TestCatcherIgnoresOtherMail(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	for _, raw := range []string{
		message("news@good.test", ""),
		// The report subject, but no report inside.
		message("news@good.test", "Subject: Report Domain: herald.example Submitter: x\r\n"),
		// A multipart/report that is a DSN, not a feedback report.
		strings.Replace(arfMail, "feedback-report", "delivery-status", -1),
	} {
		if _, err := w.accept("news@good.test", "example.test", raw); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(w.gotComplaints()); n != 0 {
		t.Errorf("%d complaints from ordinary mail", n)
	}
	if reps := w.kept(""); len(reps) != 0 {
		t.Errorf("%d reports from ordinary mail", len(reps))
	}
	if n := w.queued(); n != 3 {
		t.Errorf("%d messages queued, want 3", n)
	}
}

// Without a Complaint function feedback reports are not looked at.
func TestCatcherWithoutComplaint(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	w.ck.Catcher.Complaint = nil
	if _, err := w.accept("fbl@good.test", "example.test", arfMail); err != nil {
		t.Fatal(err)
	}
	if n := len(w.gotComplaints()); n != 0 {
		t.Errorf("%d complaints", n)
	}
}

// A report message larger than the catcher's bound is delivered but not
// parsed: the report in it (well within dmarcreport's own 25 MiB limit)
// is not kept.
func TestCatcherHugeReportMessage(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	raw := reportMail(t, 11<<20)
	s, err := w.accept("noreply-dmarc-support@good.test", "example.test", raw)
	if err != nil {
		t.Fatal(err)
	}
	if s.msg.Size < int64(len(raw)) || !strings.HasSuffix(s.data, raw) {
		t.Errorf("the huge report message was not stored whole (size %d, raw %d)", s.msg.Size, len(raw))
	}
	if reps := w.kept(""); len(reps) != 0 {
		t.Errorf("a report in an 11 MiB message was kept")
	}
	// The same report without the padding is kept: the size made the difference.
	if _, err := w.accept("noreply-dmarc-support@good.test", "example.test", reportMail(t, 256<<10)); err != nil {
		t.Fatal(err)
	}
	if reps := w.kept(""); len(reps) != 1 {
		t.Errorf("%d reports kept from a 256 KiB message, want 1", len(reps))
	}
}

// A report processor holds a bounded part of the message, however much
// streams through it. Not parallel: it reads the process's heap size.
func TestCatcherMemoryBounded(t *testing.T) {
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c := &inbound.Catcher{Reports: st, Log: discard(), Ours: func(context.Context, string) bool { return true }}
	p := c.Processor()
	ctx := context.Background()
	msg := &store.Message{Sender: "noreply@good.test"}
	chunk := bytes.Repeat([]byte("0123456789abcde\n"), 4096) // 64 KiB
	const streamed = 128 << 20

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	hdr, err := p.Header(ctx, msg, []byte("Subject: Report domain: herald.example\r\nContent-Type: text/plain\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	p.Write(hdr)
	for n := 0; n < streamed; n += len(chunk) {
		if k, err := p.Write(chunk); k != len(chunk) || err != nil {
			t.Fatalf("Write = %d, %v", k, err)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 32<<20 {
		t.Errorf("the heap grew by %d MiB while %d MiB streamed through the report processor", grown>>20, streamed>>20)
	}
	if h, err := p.Finish(ctx, msg); h != nil || err != nil {
		t.Errorf("Finish = %q, %v; want nothing", h, err)
	}
	if reps := keptReports(t, st, ""); len(reps) != 0 {
		t.Errorf("%d reports kept from an oversized message", len(reps))
	}
}

// The JSON files an earlier Herald kept under DATA_DIR/dmarc-reports are
// moved into the store once: each report is added (one the store holds
// already is skipped), and the directory is renamed so that the next
// start does not read it again.
func TestImportReportDir(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	x, err := os.ReadFile("../dmarcreport/testdata/google.xml")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := dmarcreport.ParseXML(bytes.NewReader(x))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "dmarc-reports")
	write := func(name string, r *dmarcreport.Report) {
		data, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		d := filepath.Join(dir, strings.ToLower(r.Policy.Domain))
		if err := os.MkdirAll(d, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, name), data, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	write("a.json", rep)
	other := *rep
	other.ReportID, other.Policy.Domain = "other-id", "example.test"
	write("b.json", &other)
	// The first report also arrived by mail on a node already running
	// the new version.
	if _, err := w.accept("noreply-dmarc-support@good.test", "example.test", reportMail(t, 0)); err != nil {
		t.Fatal(err)
	}
	n, err := inbound.ImportReportDir(w.ctx, dir, w.st, nil)
	if err != nil || n != 1 {
		t.Fatalf("import: %d, %v; want 1 new report", n, err)
	}
	if got := w.kept(""); len(got) != 2 {
		t.Fatalf("%d reports after the import, want 2", len(got))
	}
	if got := w.kept("example.test"); len(got) != 1 || got[0].ReportID != "other-id" || len(got[0].Records) != len(rep.Records) {
		t.Fatalf("imported report: %+v", got)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the directory is still there: %v", err)
	}
	if _, err := os.Stat(dir + ".imported"); err != nil {
		t.Fatalf("the directory was not renamed: %v", err)
	}
	if n, err := inbound.ImportReportDir(w.ctx, dir, w.st, nil); n != 0 || err != nil {
		t.Fatalf("second import: %d %v", n, err)
	}
}
