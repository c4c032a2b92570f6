package inbound

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/store"
)

// maxReportMessage bounds the message a report processor buffers.
const maxReportMessage = 10 << 20

// Catcher keeps the reports that arrive in ordinary mail from outside:
// DMARC aggregate reports (RFC 7489 §7.2) for our domains, kept in the
// store (every node's reports in one place, each report once), where
// `herald dmarc reports` reads them, and feedback-loop reports (ARF)
// handed to Complaint. The messages themselves are delivered as usual.
type Catcher struct {
	Reports   store.DMARCReports
	Log       *slog.Logger
	Clock     clock.Clock                          // dates the reports received; nil: the wall clock
	Complaint func(context.Context, *dsn.Feedback) // nil: ARF reports are not looked at
	// Ours reports whether a domain is one of ours; reports about other
	// domains are not kept (anyone can mail a report). Nil keeps none.
	Ours func(ctx context.Context, domain string) bool
}

// Processor returns the spool processor for one message.
func (c *Catcher) Processor() store.Processor { return &reportCatcher{c: c} }

// reportCatcher is the spool processor of one message.
type reportCatcher struct {
	c      *Catcher
	buf    *bytes.Buffer // nil: not a report
	arf    bool          // a feedback report rather than a DMARC report
	tooBig bool
}

var reportSubject = regexp.MustCompile(`(?im)^subject:[ \t]*report domain:`)

func (p *reportCatcher) Header(_ context.Context, _ *store.Message, header []byte) ([]byte, error) {
	switch {
	case reportSubject.Match(header):
		p.buf = new(bytes.Buffer)
	case p.c.Complaint != nil && arfHeader(header):
		p.buf, p.arf = new(bytes.Buffer), true
	}
	return header, nil
}

// arfHeader reports whether a header section's Content-Type declares a
// feedback report (multipart/report; report-type=feedback-report).
func arfHeader(header []byte) bool {
	ct := message.FieldValues(message.Fields(header), "Content-Type")
	return len(ct) > 0 && strings.Contains(strings.ToLower(ct[0]), "feedback-report")
}

func (p *reportCatcher) Write(b []byte) (int, error) {
	if p.buf != nil && !p.tooBig {
		if p.buf.Len()+len(b) > maxReportMessage {
			p.tooBig, p.buf = true, nil // not a report we keep: free it now
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
			p.c.Complaint(ctx, fb)
		}
		return nil, nil
	}
	rep, err := dmarcreport.ParseMessage(bytes.NewReader(p.buf.Bytes()))
	p.buf = nil
	if err != nil {
		p.c.Log.Info("DMARC report not parsed", "from", msg.Sender, "err", err)
		return nil, nil
	}
	if p.c.Ours == nil || !p.c.Ours(ctx, strings.ToLower(rep.Policy.Domain)) {
		p.c.Log.Info("DMARC report about a domain that is not ours; not kept", "domain", rep.Policy.Domain, "org", rep.OrgName)
		return nil, nil
	}
	switch err := p.c.keep(ctx, rep); {
	case errors.Is(err, store.ErrExists):
		p.c.Log.Info("DMARC aggregate report received again; kept once", "domain", rep.Policy.Domain, "org", rep.OrgName, "report_id", rep.ReportID)
		return nil, nil
	case err != nil:
		p.c.Log.Error("keeping DMARC report", "err", err)
		return nil, nil
	}
	p.c.Log.Info("DMARC aggregate report kept", "domain", rep.Policy.Domain, "org", rep.OrgName, "report_id", rep.ReportID, "records", len(rep.Records))
	return nil, nil
}

func (p *reportCatcher) Abort() { p.buf = nil }

// keep stores rep (store.ErrExists when it is kept already).
func (c *Catcher) keep(ctx context.Context, rep *dmarcreport.Report) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	now := time.Now()
	if c.Clock != nil {
		now = c.Clock.Now()
	}
	return c.Reports.AddDMARCReport(ctx, store.DMARCReport{Domain: strings.ToLower(rep.Policy.Domain), Reporter: rep.OrgName,
		ReportID: rep.ReportID, Begin: rep.Begin, End: rep.End, Received: now, Data: data})
}

// ImportReportDir moves the reports an earlier Herald kept as JSON files
// under dir (DATA_DIR/dmarc-reports/DOMAIN/) into the store, once: the
// directory is renamed to dir + ".imported" afterwards, and a report the
// store holds already (another node imported the same) is skipped. A
// missing dir is nothing to do. It returns how many reports it added.
func ImportReportDir(ctx context.Context, dir string, reports store.DMARCReports, clk clock.Clock) (int, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	reps, err := dmarcreport.Load(dir, "")
	if err != nil {
		return 0, fmt.Errorf("reading the DMARC report files in %s: %w", dir, err)
	}
	c := &Catcher{Reports: reports, Clock: clk}
	n := 0
	for _, rep := range reps {
		switch err := c.keep(ctx, rep); {
		case err == nil:
			n++
		case !errors.Is(err, store.ErrExists):
			return n, fmt.Errorf("importing DMARC report %s from %s: %w", rep.ReportID, rep.OrgName, err)
		}
	}
	if err := os.Rename(dir, dir+".imported"); err != nil {
		return n, fmt.Errorf("DMARC reports imported, but: %w", err)
	}
	return n, nil
}
