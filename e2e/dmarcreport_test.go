package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
)

const aggregateXML = `<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata>
    <org_name>google.com</org_name>
    <email>noreply-dmarc-support@google.com</email>
    <report_id>1234567890</report_id>
    <date_range><begin>1764028800</begin><end>1764115199</end></date_range>
  </report_metadata>
  <policy_published><domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>quarantine</p><sp>quarantine</sp><pct>100</pct></policy_published>
  <record>
    <row><source_ip>192.0.2.25</source_ip><count>42</count>
      <policy_evaluated><disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results><dkim><domain>example.com</domain><result>pass</result></dkim><spf><domain>example.com</domain><result>pass</result></spf></auth_results>
  </record>
  <record>
    <row><source_ip>203.0.113.66</source_ip><count>7</count>
      <policy_evaluated><disposition>quarantine</disposition><dkim>fail</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results><spf><domain>spoofer.test</domain><result>pass</result></spf></auth_results>
  </record>
</feedback>`

// A DMARC aggregate report mailed to one of our domains (gzip attachment)
// is delivered and also parsed and kept, so the operator sees who sends as
// the domain.
func TestDMARCAggregateReportKept(t *testing.T) {
	t.Parallel()
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addUser("dmarc@example.com")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(aggregateXML))
	zw.Close()
	b64 := base64.StdEncoding.EncodeToString(gz.Bytes())
	var lines []string
	for len(b64) > 76 {
		lines, b64 = append(lines, b64[:76]), b64[76:]
	}
	lines = append(lines, b64)
	msg := "From: noreply-dmarc-support@google.com\r\nTo: dmarc@example.com\r\n" +
		"Subject: Report domain: example.com Submitter: google.com Report-ID: 1234567890\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: application/gzip; name=\"google.com!example.com!1764028800!1764115199.xml.gz\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + strings.Join(lines, "\r\n") + "\r\n"
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO mail-sor-f41.google.com")
	if code, m := c.send("noreply-dmarc-support@google.com", []string{"dmarc@example.com"}, msg); code != 250 {
		t.Fatalf("report refused: %d %s", code, m)
	}
	h.waitMaildir("dmarc@example.com", 1)
	kept, err := h.app.Store().ListDMARCReports(context.Background(), "example.com")
	if err != nil {
		t.Fatal(err)
	}
	var reps []*dmarcreport.Report
	for _, k := range kept {
		var r dmarcreport.Report
		if err := json.Unmarshal(k.Data, &r); err != nil {
			t.Fatal(err)
		}
		reps = append(reps, &r)
	}
	if len(reps) != 1 || reps[0].OrgName != "google.com" || len(reps[0].Records) != 2 {
		t.Fatalf("kept reports: %+v", reps)
	}
	if r := reps[0].Records[1]; r.SourceIP.String() != "203.0.113.66" || r.Count != 7 || r.Disposition != "quarantine" {
		t.Errorf("second record: %+v", r)
	}
}
