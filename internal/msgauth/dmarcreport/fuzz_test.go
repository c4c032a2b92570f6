package dmarcreport

import (
	"bytes"
	"testing"
)

func FuzzParseReport(f *testing.F) {
	x := readFile(f, "google.xml")
	f.Add(x)
	f.Add(readFile(f, "dmarcbis.xml"))
	f.Add(gz(f, x))
	f.Add(zipped(f, zipEntry{"r.xml", x}))
	f.Add(mail("application/gzip", "r.xml.gz", gz(f, x)))
	f.Add(mail("text/xml", "r.xml", x))
	lim := Limits{MaxMessageSize: 1 << 20, MaxXMLSize: 1 << 20, MaxRecords: 50, MaxZipEntries: 4}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func() (*Report, error){
			func() (*Report, error) { return lim.ParseAttachment(data) },
			func() (*Report, error) { return lim.ParseMessage(bytes.NewReader(data)) },
		} {
			r, err := parse()
			if (r == nil) == (err == nil) {
				t.Fatalf("report %v with error %v", r, err)
			}
			if r == nil {
				continue
			}
			if len(r.Records) > lim.MaxRecords || r.ReportID == "" || r.Policy.Domain == "" || r.End.Before(r.Begin) {
				t.Fatalf("accepted a report breaking its invariants: %+v", r)
			}
			for _, rec := range r.Records {
				if !rec.SourceIP.IsValid() || rec.Count < 0 {
					t.Fatalf("bad record %+v", rec)
				}
			}
		}
	})
}
