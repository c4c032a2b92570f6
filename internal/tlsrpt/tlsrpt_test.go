package tlsrpt_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/tlsrpt"
)

var day = time.Date(2026, 11, 27, 15, 4, 5, 0, time.UTC)

func filled(clk clock.Clock) *tlsrpt.Aggregator {
	a := tlsrpt.NewAggregator(clk)
	sts := []string{"version: STSv1", "mode: enforce", "mx: *.mail.example.com", "max_age: 86400"}
	for range 3 {
		a.RecordTLS(tlsrpt.Session{PolicyDomain: "Example.com", PolicyType: tlsrpt.PolicySTS, PolicyString: sts, MXPatterns: []string{"*.mail.example.com"}, Success: true, MXHost: "mx1.mail.example.com"})
	}
	for range 2 {
		a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", PolicyType: tlsrpt.PolicySTS, PolicyString: sts, MXPatterns: []string{"*.mail.example.com"},
			ResultType: tlsrpt.ResultCertExpired, MXHost: "mx2.mail.example.com", ReceivingIP: "192.0.2.2", Info: "expired"})
	}
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", PolicyType: tlsrpt.PolicyTLSA, PolicyString: []string{"3 1 1 abcd"},
		ResultType: tlsrpt.ResultValidationFailure, MXHost: "mx3.mail.example.com"})
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "other.test", Success: true})
	return a
}

func TestAggregateAndJSON(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(day)
	a := filled(clk)
	clk.Advance(24 * time.Hour)
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", Success: true}) // next day

	reps := a.Report(day)
	if len(reps) != 2 || reps[0].Domain != "example.com" || reps[1].Domain != "other.test" {
		t.Fatalf("reports %+v", reps)
	}
	raw, err := json.Marshal(reps[0])
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	dr := got["date-range"].(map[string]any)
	if dr["start-datetime"] != "2026-11-27T00:00:00Z" || dr["end-datetime"] != "2026-11-27T23:59:59Z" {
		t.Fatalf("date-range %v", dr)
	}
	for _, k := range []string{"organization-name", "contact-info", "report-id", "policies"} {
		if _, ok := got[k]; !ok {
			t.Errorf("missing %q in %s", k, raw)
		}
	}
	pols := got["policies"].([]any)
	if len(pols) != 2 {
		t.Fatalf("policies %s", raw)
	}
	sts := pols[0].(map[string]any)
	pol := sts["policy"].(map[string]any)
	if pol["policy-type"] != "sts" || pol["policy-domain"] != "example.com" || len(pol["policy-string"].([]any)) != 4 || pol["mx-host"].([]any)[0] != "*.mail.example.com" {
		t.Fatalf("policy %v", pol)
	}
	sum := sts["summary"].(map[string]any)
	if sum["total-successful-session-count"] != 3.0 || sum["total-failure-session-count"] != 2.0 {
		t.Fatalf("summary %v", sum)
	}
	fd := sts["failure-details"].([]any)[0].(map[string]any)
	if fd["result-type"] != "certificate-expired" || fd["receiving-mx-hostname"] != "mx2.mail.example.com" ||
		fd["receiving-ip"] != "192.0.2.2" || fd["failed-session-count"] != 2.0 || fd["additional-information"] != "expired" {
		t.Fatalf("failure details %v", fd)
	}
	tlsa := pols[1].(map[string]any)
	if tlsa["policy"].(map[string]any)["policy-type"] != "tlsa" || tlsa["summary"].(map[string]any)["total-failure-session-count"] != 1.0 {
		t.Fatalf("tlsa policy %v", tlsa)
	}
	if p := reps[1].Policies[0].Policy; p.Type != tlsrpt.PolicyNotFound {
		t.Fatalf("default policy type %q", p.Type)
	}
	if next := a.Report(day.Add(24 * time.Hour)); len(next) != 1 || next[0].Policies[0].Summary.Success != 1 {
		t.Fatalf("next day %+v", next)
	}
	a.Forget(day)
	if len(a.Report(day)) != 0 || len(a.Days()) != 1 {
		t.Fatal("Forget kept the day")
	}
}

func TestParseRecord(t *testing.T) {
	t.Parallel()
	ruas, err := tlsrpt.ParseRecord("v=TLSRPTv1; rua=mailto:tls@example.com, https://r.example.com/x ,ftp://no")
	if err != nil || len(ruas) != 2 || ruas[0] != "mailto:tls@example.com" || ruas[1] != "https://r.example.com/x" {
		t.Fatalf("%q %v", ruas, err)
	}
	for _, bad := range []string{"v=TLSRPTv2; rua=mailto:a@b", "rua=mailto:a@b", "v=TLSRPTv1;", "v=TLSRPTv1; rua=ftp://x"} {
		if _, err := tlsrpt.ParseRecord(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

type submitted struct {
	from, to string
	msg      []byte
}

func TestSendMailtoAndHTTPS(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var posts [][]byte
	var ctype string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		posts, ctype = append(posts, b), r.Header.Get("Content-Type")
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)

	d := testdns.Start(t)
	d.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1; rua=mailto:tls-reports@example.com,"+srv.URL+"/tlsrpt")
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	clk := clock.NewFake(day)
	agg := filled(clk) // other.test has no TLS-RPT record: skipped
	var subs []submitted
	s := &tlsrpt.Sender{
		Aggregator: agg, Resolver: r, Clock: clk,
		Organization: "Herald Test", Submitter: "mail.herald.test", Contact: "postmaster@herald.test",
		From: "tlsrpt@herald.test", HTTPClient: srv.Client(),
		Submit: func(_ context.Context, from, to string, msg []byte) error {
			subs = append(subs, submitted{from, to, msg})
			return nil
		},
	}
	// Nothing is due on the same day.
	if err := s.SendDue(context.Background()); err != nil || len(subs) != 0 {
		t.Fatalf("sent early: %v %d", err, len(subs))
	}
	clk.Advance(24 * time.Hour)
	if err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(agg.Days()) != 0 {
		t.Fatal("day not forgotten after sending")
	}

	// HTTPS: one POST of gzipped JSON.
	mu.Lock()
	if len(posts) != 1 || ctype != "application/tlsrpt+gzip" {
		t.Fatalf("%d posts, content type %q", len(posts), ctype)
	}
	rep := gunzip(t, posts[0])
	mu.Unlock()
	if rep.OrganizationName != "Herald Test" || rep.ContactInfo != "postmaster@herald.test" || !strings.Contains(rep.ReportID, "example.com") || len(rep.Policies) != 2 {
		t.Fatalf("posted report %+v", rep)
	}

	// mailto: an RFC 8460 §5.3 message.
	if len(subs) != 1 || subs[0].from != "tlsrpt@herald.test" || subs[0].to != "tls-reports@example.com" {
		t.Fatalf("submitted %+v", subs)
	}
	m, err := mail.ReadMessage(bytes.NewReader(subs[0].msg))
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("TLS-Report-Domain") != "example.com" || m.Header.Get("TLS-Report-Submitter") != "mail.herald.test" ||
		!strings.HasPrefix(m.Header.Get("Subject"), "Report Domain: example.com Submitter: mail.herald.test Report-ID: <") {
		t.Fatalf("headers %v", m.Header)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "tlsrpt" {
		t.Fatalf("content type %q %v %v", mt, params, err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	text, err := mr.NextPart()
	if err != nil || !strings.HasPrefix(text.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("first part %v %v", text, err)
	}
	att, err := mr.NextPart()
	if err != nil || att.Header.Get("Content-Type") != "application/tlsrpt+gzip" {
		t.Fatalf("second part %v %v", att, err)
	}
	if fn := att.FileName(); fn != "mail.herald.test!example.com!1795737600!1795823999.json.gz" {
		t.Fatalf("filename %q", fn)
	}
	b64, _ := io.ReadAll(att)
	gz, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b64)))
	if err != nil {
		t.Fatal(err)
	}
	if r := gunzip(t, gz); r.ReportID != rep.ReportID || r.Policies[0].Summary.Success != 3 {
		t.Fatalf("attached report %+v", r)
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Fatalf("extra part: %v", err)
	}
}

func gunzip(t *testing.T, b []byte) tlsrpt.ReportJSON {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var r tlsrpt.ReportJSON
	if err := json.NewDecoder(zr).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}
