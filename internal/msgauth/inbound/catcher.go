package inbound

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"

	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/message"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/store"
)

// maxReportMessage bounds the message a report processor buffers.
const maxReportMessage = 10 << 20

// Catcher keeps the reports that arrive in ordinary mail from outside:
// DMARC aggregate reports (RFC 7489 §7.2) for our domains, saved as JSON
// under Dir/DOMAIN/ (dmarcreport.Save), where `herald dmarc reports`
// reads them, and feedback-loop reports (ARF) handed to Complaint. The
// messages themselves are delivered as usual.
type Catcher struct {
	Dir       string
	Log       *slog.Logger
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
	if err := dmarcreport.Save(p.c.Dir, rep); err != nil {
		p.c.Log.Error("saving DMARC report", "err", err)
		return nil, nil
	}
	p.c.Log.Info("DMARC aggregate report kept", "domain", rep.Policy.Domain, "org", rep.OrgName, "report_id", rep.ReportID, "records", len(rep.Records))
	return nil, nil
}

func (p *reportCatcher) Abort() { p.buf = nil }
