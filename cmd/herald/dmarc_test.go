package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/store"
)

// `herald dmarc reports` lists the reports kept in the store (by any
// node), one line per record, and refuses a data directory without a
// store.
func TestDMARCReportsFromStore(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.fails(66, "holds no store", "dmarc", "reports")
	st := c.store()
	begin := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	for i, d := range []string{"example.com", "other.test"} {
		rep := dmarcreport.Report{OrgName: "google.com", ReportID: "r" + d, Begin: begin.Add(time.Duration(i) * 24 * time.Hour),
			End: begin.Add(time.Duration(i+1)*24*time.Hour - time.Second), Policy: dmarcreport.PolicyPublished{Domain: d},
			Records: []dmarcreport.Record{{SourceIP: netip.MustParseAddr("203.0.113.66"), Count: 7, Disposition: "quarantine",
				DKIM: "fail", SPF: "fail", HeaderFrom: d}}}
		data, err := json.Marshal(rep)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.AddDMARCReport(context.Background(), store.DMARCReport{Domain: d, Reporter: rep.OrgName, ReportID: rep.ReportID,
			Begin: rep.Begin, End: rep.End, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	out := c.ok("", "dmarc", "reports", "example.com")
	if !strings.Contains(out, "example.com  2026-11-25..11-25  google.com  203.0.113.66  7") ||
		strings.Contains(out, "other.test") || !strings.HasSuffix(out, "1 report(s), 7 message(s), 7 failing DMARC\n") {
		t.Errorf("reports of example.com:\n%s", out)
	}
	if out := c.ok("", "dmarc", "reports"); !strings.HasSuffix(out, "2 report(s), 14 message(s), 14 failing DMARC\n") {
		t.Errorf("all reports:\n%s", out)
	}
}
