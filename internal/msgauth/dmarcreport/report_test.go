package dmarcreport

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

func readFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type zipEntry struct {
	name string
	data []byte
}

func zipped(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	for _, e := range entries {
		f, err := w.Create(e.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// mail builds a multipart/mixed report message with a text part and one
// base64 attachment.
func mail(contentType, filename string, attachment []byte) []byte {
	enc := base64.StdEncoding.EncodeToString(attachment)
	var lines []string
	for len(enc) > 76 {
		lines = append(lines, enc[:76])
		enc = enc[76:]
	}
	lines = append(lines, enc)
	return []byte(strings.ReplaceAll(fmt.Sprintf(`From: noreply-dmarc-support@google.com
To: dmarc@herald.example
Subject: Report domain: herald.example Submitter: google.com Report-ID: 13622947891290042921
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="XYZ"

--XYZ
Content-Type: text/plain; charset=utf-8

This is an aggregate report from google.com.
--XYZ
Content-Type: %s; name="%s"
Content-Disposition: attachment; filename="%s"
Content-Transfer-Encoding: base64

%s
--XYZ--
`, contentType, filename, filename, strings.Join(lines, "\n")), "\n", "\r\n"))
}

func checkGoogle(t *testing.T, r *Report) {
	t.Helper()
	if r.OrgName != "google.com" || r.Email != "noreply-dmarc-support@google.com" || r.ReportID != "13622947891290042921" ||
		r.ExtraContactInfo != "https://support.google.com/a/answer/2466580" {
		t.Fatalf("metadata = %+v", r)
	}
	if !r.Begin.Equal(time.Unix(1795564800, 0)) || !r.End.Equal(time.Unix(1795651199, 0)) || r.Begin.Location() != time.UTC {
		t.Fatalf("range = %v .. %v", r.Begin, r.End)
	}
	want := PolicyPublished{Domain: "herald.example", ADKIM: "r", ASPF: "s", P: "reject", SP: "quarantine", NP: "reject", Pct: 100}
	if r.Policy != want {
		t.Fatalf("policy = %+v, want %+v", r.Policy, want)
	}
	if len(r.Records) != 2 {
		t.Fatalf("%d records, want 2", len(r.Records))
	}
	a, b := r.Records[0], r.Records[1]
	if a.SourceIP != netip.MustParseAddr("192.0.2.25") || a.Count != 12 || a.Disposition != "none" || a.DKIM != "pass" || a.SPF != "pass" ||
		a.HeaderFrom != "herald.example" || len(a.Reasons) != 0 {
		t.Fatalf("record 0 = %+v", a)
	}
	if len(a.DKIMResults) != 2 || a.DKIMResults[0] != (DKIMResult{"herald.example", "s2026", "pass", ""}) ||
		a.DKIMResults[1] != (DKIMResult{"esp.example", "", "fail", "body hash mismatch"}) {
		t.Fatalf("record 0 dkim = %+v", a.DKIMResults)
	}
	if len(a.SPFResults) != 1 || a.SPFResults[0] != (SPFResult{"herald.example", "mfrom", "pass"}) {
		t.Fatalf("record 0 spf = %+v", a.SPFResults)
	}
	if b.SourceIP != netip.MustParseAddr("2001:db8::66") || b.Count != 3 || b.Disposition != "reject" || b.DKIM != "fail" ||
		b.EnvelopeFrom != "list.example" || b.HeaderFrom != "herald.example" ||
		len(b.Reasons) != 1 || b.Reasons[0] != (Reason{"mailing_list", "list.example"}) ||
		len(b.DKIMResults) != 0 || len(b.SPFResults) != 1 || b.SPFResults[0].Result != "softfail" {
		t.Fatalf("record 1 = %+v", b)
	}
}

func TestParseXML(t *testing.T) {
	t.Parallel()
	r, err := ParseXML(bytes.NewReader(readFile(t, "google.xml")))
	if err != nil {
		t.Fatal(err)
	}
	checkGoogle(t, r)
}

func TestParseXMLDMARCbisLatin1(t *testing.T) {
	t.Parallel()
	r, err := ParseXML(bytes.NewReader(readFile(t, "dmarcbis.xml")))
	if err != nil {
		t.Fatal(err)
	}
	if r.Version != "1.0" || r.OrgName != "Exampl\u00e9 Mail" || r.ReportID != "abc-123" || r.Policy.P != "none" ||
		r.Policy.Pct != 100 || len(r.Errors) != 1 || len(r.Records) != 0 {
		t.Fatalf("report = %+v", r)
	}
}

func TestParseMessage(t *testing.T) {
	t.Parallel()
	x := readFile(t, "google.xml")
	for _, tc := range []struct {
		name, ct, file string
		data           []byte
	}{
		{"xml", "text/xml", "google.com!herald.example!1795564800!1795651199.xml", x},
		{"gzip", "application/gzip", "google.com!herald.example!1795564800!1795651199.xml.gz", gz(t, x)},
		{"zip", "application/zip", "google.com!herald.example!1795564800!1795651199.zip",
			zipped(t, zipEntry{"README.txt", []byte("hi")}, zipEntry{"google.com!herald.example.xml", x})},
		{"zip single entry without .xml", "application/zip", "r.zip", zipped(t, zipEntry{"report", x})},
		{"octet-stream gzip", "application/octet-stream", "report.bin", gz(t, x)},
		{"mislabelled gzip", "application/zip", "report.zip", gz(t, x)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := ParseMessage(bytes.NewReader(mail(tc.ct, tc.file, tc.data)))
			if err != nil {
				t.Fatal(err)
			}
			checkGoogle(t, r)
		})
	}
}

func TestParseMessageSinglePart(t *testing.T) {
	t.Parallel()
	enc := base64.StdEncoding.EncodeToString(gz(t, readFile(t, "google.xml")))
	msg := "From: a@b.example\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n\r\n" + enc + "\r\n"
	r, err := ParseMessage(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	checkGoogle(t, r)
}

func TestParseMessageNoReport(t *testing.T) {
	t.Parallel()
	msg := "From: a@b.example\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
	if _, err := ParseMessage(strings.NewReader(msg)); !errors.Is(err, ErrNoReport) {
		t.Fatalf("plain text: err = %v, want ErrNoReport", err)
	}
	_, err := ParseMessage(bytes.NewReader(mail("text/xml", "r.xml", []byte("<feedback><oops"))))
	if !errors.Is(err, ErrNoReport) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("broken XML: err = %v, want ErrNoReport wrapping ErrInvalid", err)
	}
}

func TestInvalidReports(t *testing.T) {
	t.Parallel()
	good := string(readFile(t, "google.xml"))
	for name, doc := range map[string]string{
		"wrong root":     "<html><body/></html>",
		"not xml":        "hello",
		"empty":          "",
		"bad ip":         strings.Replace(good, "192.0.2.25", "192.0.2.300", 1),
		"negative count": strings.Replace(good, "<count>12<", "<count>-12<", 1),
		"bad begin":      strings.Replace(good, "1795564800", "yesterday", 1),
		"end before":     strings.Replace(good, "<end>1795651199", "<end>1", 1),
		"pct too big":    strings.Replace(good, "<pct>100", "<pct>101", 1),
		"no policy":      strings.Replace(strings.Replace(good, "<policy_published>", "<x>", 1), "</policy_published>", "</x>", 1),
		"no report id":   strings.Replace(good, "13622947891290042921", "", 1),
		"truncated":      good[:len(good)/2],
		"entity":         `<!DOCTYPE feedback [<!ENTITY a "aaaa">]><feedback><report_metadata><org_name>&a;</org_name></report_metadata></feedback>`,
		"bad encoding":   `<?xml version="1.0" encoding="EBCDIC"?><feedback/>`,
	} {
		if _, err := ParseXML(strings.NewReader(doc)); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", name, err)
		}
	}
}

func TestLimits(t *testing.T) {
	t.Parallel()
	x := readFile(t, "google.xml")
	small := Limits{MaxXMLSize: 64 << 10, MaxMessageSize: 256 << 10, MaxRecords: 1, MaxZipEntries: 2}

	// Too many records.
	if _, err := small.ParseXML(bytes.NewReader(x)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("records: err = %v, want ErrTooLarge", err)
	}
	small.MaxRecords = 10

	// An XML document just over the limit (padding inside an ignored element).
	big := bytes.Replace(x, []byte("</feedback>"), []byte("<extension>"+strings.Repeat("x", 64<<10)+"</extension></feedback>"), 1)
	if _, err := small.ParseXML(bytes.NewReader(big)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big XML: err = %v, want ErrTooLarge", err)
	}
	if _, err := (Limits{MaxXMLSize: 1 << 20}).ParseXML(bytes.NewReader(big)); err != nil {
		t.Fatalf("big XML under a larger limit: %v", err)
	}

	// gzip bomb: 2 MiB of zeros compress to a few KiB.
	bomb := bytes.Replace(x, []byte("</feedback>"), append(append([]byte("<extension>"), make([]byte, 2<<20)...), "</extension></feedback>"...), 1)
	gzBomb := gz(t, bomb)
	if len(gzBomb) > 64<<10 {
		t.Fatalf("gzip bomb is %d bytes; the test wants a small one", len(gzBomb))
	}
	if _, err := small.ParseAttachment(gzBomb); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("gzip bomb: err = %v, want ErrTooLarge", err)
	}
	// zip bomb, honest header.
	if _, err := small.ParseAttachment(zipped(t, zipEntry{"r.xml", bomb})); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("zip bomb: err = %v, want ErrTooLarge", err)
	}
	// zip bomb whose header lies about the size: archive/zip stops at the
	// declared size (ErrFormat), our limit would stop it otherwise.
	if _, err := small.ParseAttachment(lyingZip(t, bomb)); !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrInvalid) {
		t.Fatalf("lying zip bomb: err = %v, want ErrTooLarge or ErrInvalid", err)
	}
	// Too many zip entries.
	many := zipped(t, zipEntry{"a.txt", nil}, zipEntry{"b.txt", nil}, zipEntry{"c.xml", x})
	if _, err := small.ParseAttachment(many); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("zip entries: err = %v, want ErrTooLarge", err)
	}
	// A message over the size limit.
	msg := mail("text/plain", "pad.txt", make([]byte, 300<<10))
	if _, err := small.ParseMessage(bytes.NewReader(msg)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("big message: err = %v, want ErrTooLarge", err)
	}
	// The same report in a message under the limits parses.
	if _, err := small.ParseMessage(bytes.NewReader(mail("application/gzip", "r.xml.gz", gz(t, x)))); err != nil {
		t.Fatalf("small message: %v", err)
	}
}

// lyingZip returns a zip with one deflated entry whose header declares 100
// bytes but which inflates to all of data.
func lyingZip(t *testing.T, data []byte) []byte {
	t.Helper()
	honest := zipped(t, zipEntry{"r.xml", data})
	zr, err := zip.NewReader(bytes.NewReader(honest), int64(len(honest)))
	if err != nil {
		t.Fatal(err)
	}
	f := zr.File[0]
	raw, err := f.OpenRaw()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	w := zip.NewWriter(&b)
	h := f.FileHeader
	h.UncompressedSize64 = 100
	out, err := w.CreateRaw(&h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, raw); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
