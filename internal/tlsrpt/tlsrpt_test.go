package tlsrpt_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/mail"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/tlsrpt"
)

var day = time.Date(2026, 11, 27, 15, 4, 5, 0, time.UTC)

// openStore returns a store of its own for one test.
func openStore(t *testing.T) *sqlite.Store {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func record(a *tlsrpt.Aggregator) {
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
}

func filled(t *testing.T, clk clock.Clock) *tlsrpt.Aggregator {
	a := tlsrpt.NewAggregator(clk, openStore(t))
	record(a)
	return a
}

func flush(t *testing.T, a *tlsrpt.Aggregator) {
	t.Helper()
	if dropped, err := a.Flush(context.Background()); err != nil || dropped != 0 {
		t.Fatalf("Flush: %d dropped, %v", dropped, err)
	}
}

func report(t *testing.T, a *tlsrpt.Aggregator, day time.Time) []tlsrpt.ReportJSON {
	t.Helper()
	reps, err := a.Report(context.Background(), day)
	if err != nil {
		t.Fatal(err)
	}
	return reps
}

func TestAggregateAndJSON(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(day)
	stor := openStore(t)
	a := tlsrpt.NewAggregator(clk, stor)
	record(a)
	if reps := report(t, a, day); len(reps) != 0 {
		t.Fatalf("counts reached the store before Flush: %+v", reps)
	}
	flush(t, a)
	clk.Advance(24 * time.Hour)
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", Success: true}) // next day
	flush(t, a)

	reps := report(t, a, day)
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
	if next := report(t, a, day.Add(24*time.Hour)); len(next) != 1 || next[0].Policies[0].Summary.Success != 1 {
		t.Fatalf("next day %+v", next)
	}
	// Another node's counts (or a later flush) add to the same counters.
	b := tlsrpt.NewAggregator(clock.NewFake(day), stor)
	b.RecordTLS(tlsrpt.Session{PolicyDomain: "other.test", Success: true})
	flush(t, b)
	if reps := report(t, a, day); reps[1].Policies[0].Summary.Success != 2 {
		t.Fatalf("after a second flush: %+v", reps[1])
	}
}

// failing is a real store whose AddTLSCounts fails while fail is set.
type failing struct {
	store.TLSReports
	fail atomic.Bool
}

func (f *failing) AddTLSCounts(ctx context.Context, c []store.TLSCount) error {
	if f.fail.Load() {
		return errors.New("database unavailable")
	}
	return f.TLSReports.AddTLSCounts(ctx, c)
}

// Counts that cannot be stored stay in memory, merged with later ones,
// until a flush succeeds; beyond the bound (DefaultMaxPending) of different outcomes,
// new ones are dropped and reported.
func TestFlushKeepsCountsOnFailure(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(day)
	st := &failing{TLSReports: openStore(t)}
	a := tlsrpt.NewAggregator(clk, st)
	record(a)
	st.fail.Store(true)
	if _, err := a.Flush(context.Background()); err == nil {
		t.Fatal("Flush into a failing store succeeded")
	}
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "other.test", Success: true})
	st.fail.Store(false)
	flush(t, a)
	reps := report(t, a, day)
	if len(reps) != 2 || reps[0].Policies[0].Summary.Success != 3 || reps[1].Policies[0].Summary.Success != 2 {
		t.Fatalf("after a failed and a good flush: %+v", reps)
	}
	tlsrpt.SetMaxPending(a, 100)
	for i := range 110 {
		a.RecordTLS(tlsrpt.Session{PolicyDomain: fmt.Sprintf("d%d.test", i), Success: true})
	}
	if dropped, err := a.Flush(context.Background()); err != nil || dropped != 10 {
		t.Fatalf("Flush after too many outcomes: %d dropped, %v; want 10", dropped, err)
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
	agg := filled(t, clk) // other.test has no TLS-RPT record: skipped
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
	// Nothing is due on the same day, nor just after midnight (other
	// nodes may not have flushed the day's last counts).
	if err := s.SendDue(context.Background()); err != nil || len(subs) != 0 {
		t.Fatalf("sent early: %v %d", err, len(subs))
	}
	clk.Advance(day.Truncate(24 * time.Hour).Add(24*time.Hour + 4*time.Minute).Sub(clk.Now()))
	if err := s.SendDue(context.Background()); err != nil || len(subs) != 0 {
		t.Fatalf("sent before the send delay: %v %d", err, len(subs))
	}
	clk.Advance(time.Minute)
	if err := s.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if reps := report(t, agg, day); len(reps) != 0 {
		t.Fatalf("counts kept after sending: %+v", reps)
	}
	// Sent once: the next run sends nothing again.
	if err := s.SendDue(context.Background()); err != nil || len(subs) != 1 {
		t.Fatalf("second run: %v, %d submitted", err, len(subs))
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

// Three nodes share one PostgreSQL database: each counts its own
// sessions, and at the day's end all three try to send. The domain gets
// one report, carrying the sessions of every node.
func TestReportSentOnceByNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var mu sync.Mutex
	var posts []tlsrpt.ReportJSON
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		rep := gunzip(t, b)
		mu.Lock()
		posts = append(posts, rep)
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	t.Cleanup(srv.Close)
	d := testdns.Start(t)
	d.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1; rua="+srv.URL+"/tlsrpt")
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, dsn := pgtest.NewSchema(t)
	clk := clock.NewFake(day)
	var senders []*tlsrpt.Sender
	for i := range 3 {
		st, err := postgres.Open(ctx, dsn, postgres.Options{Node: fmt.Sprintf("mx%d", i), Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		a := tlsrpt.NewAggregator(clk, st)
		for range i + 1 {
			a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", PolicyType: tlsrpt.PolicyNotFound, Success: true})
		}
		a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", PolicyType: tlsrpt.PolicyNotFound, ResultType: tlsrpt.ResultSTARTTLSNotSupported,
			MXHost: "mx.example.com"})
		senders = append(senders, &tlsrpt.Sender{Aggregator: a, Resolver: r, Clock: clk, Organization: "Herald", Submitter: fmt.Sprintf("mx%d.herald.test", i),
			Contact: "postmaster@herald.test", From: "tlsrpt@herald.test", HTTPClient: srv.Client()})
	}
	// Every node flushed its counts during the day.
	for _, s := range senders {
		flush(t, s.Aggregator)
	}
	clk.Advance(24 * time.Hour)
	var wg sync.WaitGroup
	for _, s := range senders {
		wg.Go(func() {
			if err := s.SendDue(ctx); err != nil {
				t.Errorf("SendDue: %v", err)
			}
		})
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(posts) != 1 {
		t.Fatalf("%d reports posted, want 1", len(posts))
	}
	sum := posts[0].Policies[0].Summary
	if sum.Success != 6 || sum.Failure != 3 || posts[0].Policies[0].FailureDetails[0].FailedSessionCount != 3 {
		t.Fatalf("the report counts %+v, want 6 successes and 3 failures from three nodes", posts[0].Policies)
	}
}

// Run flushes every FlushInterval, sends after midnight, and flushes what
// is left when it stops.
func TestRunFlushesAndSends(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(day)
	stor := openStore(t)
	a := tlsrpt.NewAggregator(clk, stor)
	d := testdns.Start(t)
	d.AddTXT("_smtp._tls.example.com", "v=TLSRPTv1; rua=mailto:tls@example.com")
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan string, 4)
	s := &tlsrpt.Sender{Aggregator: a, Resolver: r, Clock: clk, Submitter: "mx.herald.test", From: "tlsrpt@herald.test",
		FlushInterval: time.Minute, Submit: func(_ context.Context, _, to string, _ []byte) error { sent <- to; return nil }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "example.com", Success: true})
	waitCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	if err := clk.WaitTimers(waitCtx, 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)                           // the flush timer
	if err := clk.WaitTimers(waitCtx, 1); err != nil { // armed again after the flush
		t.Fatal(err)
	}
	if reps := report(t, a, day); len(reps) != 1 {
		t.Fatalf("the periodic flush stored %+v", reps)
	}
	// Past the next midnight and the send delay, the day goes out.
	for clk.Now().Before(day.Truncate(24 * time.Hour).Add(24*time.Hour + 5*time.Minute)) {
		if err := clk.WaitTimers(waitCtx, 1); err != nil {
			t.Fatal(err)
		}
		clk.Advance(time.Minute)
	}
	select {
	case to := <-sent:
		if to != "tls@example.com" {
			t.Fatalf("sent to %q", to)
		}
	case <-waitCtx.Done():
		t.Fatal("the report was not sent after midnight")
	}
	a.RecordTLS(tlsrpt.Session{PolicyDomain: "late.test", Success: true})
	cancel()
	<-done
	if reps := report(t, a, clk.Now()); len(reps) != 1 || reps[0].Domain != "late.test" {
		t.Fatalf("the last flush at stop: %+v", reps)
	}
}
