package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/store"
)

// maxReportMessage bounds the message a reportCatcher buffers.
const maxReportMessage = 10 << 20

// reportCatcher is the spool processor that keeps DMARC aggregate reports
// (RFC 7489 §7.2) arriving for our domains: a message whose Subject starts
// with "Report Domain:" is parsed (XML, gzip or zip attachment) and saved
// as JSON under DATA_DIR/dmarc-reports/DOMAIN/, where `herald dmarc
// reports` reads it. The message itself is delivered as usual.
type reportCatcher struct {
	dir       string
	log       *slog.Logger
	complaint func(context.Context, *dsn.Feedback) // feedback-loop reports (ARF) go here
	buf       *bytes.Buffer                        // nil: not a report
	arf       bool                                 // a feedback report rather than a DMARC report
	tooBig    bool
}

var reportSubject = regexp.MustCompile(`(?im)^subject:[ \t]*report domain:`)

func (p *reportCatcher) Header(_ context.Context, _ *store.Message, header []byte) ([]byte, error) {
	switch {
	case reportSubject.Match(header):
		p.buf = new(bytes.Buffer)
	case p.complaint != nil && arfHeader(header):
		p.buf, p.arf = new(bytes.Buffer), true
	}
	return header, nil
}

// arfHeader reports whether a header section's Content-Type declares a
// feedback report (multipart/report; report-type=feedback-report).
func arfHeader(header []byte) bool {
	unfolded := bytes.ReplaceAll(bytes.ReplaceAll(header, []byte("\r\n "), []byte(" ")), []byte("\r\n\t"), []byte(" "))
	for _, line := range bytes.Split(unfolded, []byte("\r\n")) {
		l := bytes.ToLower(line)
		if bytes.HasPrefix(l, []byte("content-type:")) {
			return bytes.Contains(l, []byte("feedback-report"))
		}
	}
	return false
}

func (p *reportCatcher) Write(b []byte) (int, error) {
	if p.buf != nil && !p.tooBig {
		if p.buf.Len()+len(b) > maxReportMessage {
			p.tooBig = true
		} else {
			p.buf.Write(b)
		}
	}
	return len(b), nil
}

func (p *reportCatcher) Finish(ctx context.Context, msg *store.Message) ([]byte, error) {
	if p.buf == nil || p.tooBig {
		return nil, nil
	}
	if p.arf {
		fb, err := dsn.ParseARF(bytes.NewReader(p.buf.Bytes()))
		p.buf = nil
		if err == nil {
			p.complaint(ctx, fb)
		}
		return nil, nil
	}
	rep, err := dmarcreport.ParseMessage(bytes.NewReader(p.buf.Bytes()))
	p.buf = nil
	if err != nil {
		p.log.Info("DMARC report not parsed", "from", msg.Sender, "err", err)
		return nil, nil
	}
	if err := saveReport(p.dir, rep); err != nil {
		p.log.Error("saving DMARC report", "err", err)
		return nil, nil
	}
	p.log.Info("DMARC aggregate report kept", "domain", rep.Policy.Domain, "org", rep.OrgName, "report_id", rep.ReportID, "records", len(rep.Records))
	return nil, nil
}

func (p *reportCatcher) Abort() { p.buf = nil }

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// saveReport writes rep as JSON, atomically, named by its period, reporter
// and ID so the same report received twice is stored once.
func saveReport(dir string, rep *dmarcreport.Report) error {
	domain := unsafeName.ReplaceAllString(strings.ToLower(rep.Policy.Domain), "_")
	if domain == "" || strings.HasPrefix(domain, ".") {
		return fmt.Errorf("report without a usable policy domain %q", rep.Policy.Domain)
	}
	d := filepath.Join(dir, domain)
	if err := os.MkdirAll(d, 0o750); err != nil {
		return err
	}
	name := fmt.Sprintf("%s_%s_%s.json", rep.Begin.UTC().Format("20060102T150405"),
		unsafeName.ReplaceAllString(rep.OrgName, "_"), unsafeName.ReplaceAllString(rep.ReportID, "_"))
	if len(name) > 200 {
		name = name[:200] + ".json"
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(d, ".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(d, name))
}

// LoadDMARCReports reads the kept reports of domain ("" for all domains).
func LoadDMARCReports(dataDir, domain string) ([]*dmarcreport.Report, error) {
	pattern := filepath.Join(dataDir, "dmarc-reports", "*", "*.json")
	if domain != "" {
		pattern = filepath.Join(dataDir, "dmarc-reports", unsafeName.ReplaceAllString(strings.ToLower(domain), "_"), "*.json")
	}
	files, err := filepath.Glob(pattern)
	if err != nil {
		return nil, err
	}
	var out []*dmarcreport.Report
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		var r dmarcreport.Report
		if err := json.Unmarshal(b, &r); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		out = append(out, &r)
	}
	return out, nil
}
