package delivery_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/delivery/dane"
	"github.com/heraldmail/herald/internal/delivery/mtasts"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/testmx"
	"github.com/heraldmail/herald/internal/tlsrpt"
)

// stsServer serves MTA-STS policies over HTTPS on ip:443 for several
// domains (one certificate naming every mta-sts.<domain>).
type stsServer struct {
	mu       sync.Mutex
	policies map[string]string // by domain
	hits     atomic.Int32
}

func (s *stsServer) set(domain, policy string) {
	s.mu.Lock()
	s.policies[domain] = policy
	s.mu.Unlock()
}

// policies starts an HTTPS policy server on ip:443 for domains, publishing
// mta-sts.<domain> A records and _mta-sts TXT records with id "v1".
func (e *env) policies(ca *testmx.CA, ip string, domains ...string) *stsServer {
	e.t.Helper()
	var names []string
	for _, d := range domains {
		names = append(names, "mta-sts."+d)
		e.dns.AddA("mta-sts."+d, ip)
		e.dns.AddTXT("_mta-sts."+d, "v=STSv1; id=v1;")
	}
	ln, err := tls.Listen("tcp", ip+":443", &tls.Config{Certificates: []tls.Certificate{ca.Issue(names...)}})
	if err != nil {
		e.t.Fatal(err)
	}
	s := &stsServer{policies: map[string]string{}}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		p, ok := s.policies[strings.TrimPrefix(r.Host, "mta-sts.")]
		s.mu.Unlock()
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(p)) //nolint:errcheck
	})}
	go srv.Serve(ln) //nolint:errcheck
	e.t.Cleanup(func() { srv.Close() })
	return s
}

// tlsa publishes a TLSA record for host at the test's SMTP port.
func (e *env) tlsa(host string, usage, selector, matching uint8, data []byte) {
	e.dns.AddTLSA(fmt.Sprintf("_%d._tcp.%s", e.port, host), usage, selector, matching, data)
}

func policy(mode string, mx ...string) string {
	p := "version: STSv1\nmode: " + mode + "\nmax_age: 86400\n"
	for _, m := range mx {
		p += "mx: " + m + "\n"
	}
	return p
}

// newAggregator returns a TLS-RPT aggregator keeping its counts in a
// store of its own.
func newAggregator(t *testing.T) *tlsrpt.Aggregator {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return tlsrpt.NewAggregator(nil, st)
}

// report flushes agg's counts and returns today's reports.
func report(t *testing.T, agg *tlsrpt.Aggregator) []tlsrpt.ReportJSON {
	t.Helper()
	if _, err := agg.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	reps, err := agg.Report(context.Background(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return reps
}

// failures returns the result types counted for domain today.
func failures(t *testing.T, agg *tlsrpt.Aggregator, domain string) (success, failure int64, types []string) {
	t.Helper()
	for _, r := range report(t, agg) {
		if r.Domain != domain {
			continue
		}
		for _, p := range r.Policies {
			success += p.Summary.Success
			failure += p.Summary.Failure
			for _, f := range p.FailureDetails {
				types = append(types, f.ResultType)
			}
		}
	}
	return success, failure, types
}

func TestMTASTSEnforce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := testmx.NewCA(t, "Test CA")
	sts := e.policies(ca, "127.0.2.1", "good.test", "nomatch.test", "badcert.test", "untrusted.test", "plain.test")
	for _, d := range []string{"good.test", "nomatch.test", "badcert.test", "untrusted.test", "plain.test"} {
		e.dns.AddMX(d, "mx."+d, 10)
		sts.set(d, policy("enforce", "mx."+d, "*.alt."+d))
	}
	sts.set("nomatch.test", policy("enforce", "mx.elsewhere.test"))
	good := ca.Issue("mx.good.test")
	mxGood := e.mx("mx.good.test", "127.0.0.2", testmx.Config{STARTTLS: true, Certificate: &good})
	mxNoMatch := e.mx("mx.nomatch.test", "127.0.0.3", testmx.Config{STARTTLS: true, Certificate: &good})
	wrong := ca.Issue("other.test")
	mxBad := e.mx("mx.badcert.test", "127.0.0.4", testmx.Config{STARTTLS: true, Certificate: &wrong})
	mxUntrusted := e.mx("mx.untrusted.test", "127.0.0.5", testmx.Config{STARTTLS: true, Hostnames: []string{"mx.untrusted.test"}})
	mxPlain := e.mx("mx.plain.test", "127.0.0.6", testmx.Config{})

	cache := mtasts.New(mtasts.Config{Resolver: e.res, RootCAs: ca.Pool(), Timeout: 2 * time.Second})
	t.Cleanup(cache.Close)
	agg := newAggregator(t)
	c := e.client(func(c *delivery.Config) {
		c.RootCAs, c.MTASTS, c.TLSReport, c.IdleTimeout = ca.Pool(), cache, agg, -1
	})

	res := deliver(t, c, request("good.test", "a@good.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "mta-sts TLS1.3 ") || !strings.HasSuffix(res[0].TLS, "(verified)") || res[0].TLSPolicy != delivery.PolicyMTASTS {
		t.Fatalf("TLS %q policy %q", res[0].TLS, res[0].TLSPolicy)
	}
	// The second delivery uses the cached policy: no HTTPS fetch.
	expect(t, deliver(t, c, request("good.test", "b@good.test"))[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if n := sts.hits.Load(); n != 1 {
		t.Fatalf("%d policy fetches after two deliveries, want 1", n)
	}
	if len(mxGood.WaitMessages(t, 2, time.Second)) != 2 {
		t.Fatal("messages missing")
	}
	// A new id in the TXT record refetches.
	e.dns.Remove("_mta-sts.good.test")
	e.dns.AddTXT("_mta-sts.good.test", "v=STSv1; id=v2;")
	deliver(t, c, request("good.test", "c@good.test"))
	if n := sts.hits.Load(); n != 2 {
		t.Fatalf("%d policy fetches after the id changed, want 2", n)
	}

	cases := []struct {
		domain string
		mx     *testmx.Server
		enh    smtp.EnhancedCode
		tls    string
		rpt    string
	}{
		{"nomatch.test", mxNoMatch, smtp.EnhancedCode{4, 7, 5}, "mta-sts: mx.nomatch.test is not an MX host allowed by the policy of nomatch.test", tlsrpt.ResultValidationFailure},
		{"badcert.test", mxBad, smtp.EnhancedCode{4, 7, 5}, "mta-sts: certificate not valid for mx.badcert.test", tlsrpt.ResultCertHostMismatch},
		{"untrusted.test", mxUntrusted, smtp.EnhancedCode{4, 7, 5}, "mta-sts: certificate of mx.untrusted.test not trusted", tlsrpt.ResultCertNotTrusted},
		{"plain.test", mxPlain, smtp.EnhancedCode{4, 7, 4}, "mta-sts: STARTTLS not offered by mx.plain.test", tlsrpt.ResultSTARTTLSNotSupported},
	}
	for _, tc := range cases {
		res := deliver(t, c, request(tc.domain, "x@"+tc.domain))
		expect(t, res[0], delivery.Temporary, 451, tc.enh)
		if res[0].RemoteMTA != "" {
			t.Errorf("%s: our own policy refusal attributed to %q", tc.domain, res[0].RemoteMTA)
		}
		if res[0].TLS != tc.tls || res[0].TLSFailure != tc.tls || res[0].TLSPolicy != delivery.PolicyMTASTS {
			t.Errorf("%s: TLS %q failure %q policy %q, want %q", tc.domain, res[0].TLS, res[0].TLSFailure, res[0].TLSPolicy, tc.tls)
		}
		if n := len(tc.mx.Messages()); n != 0 {
			t.Errorf("%s: %d messages delivered despite the policy", tc.domain, n)
		}
		if tc.domain == "nomatch.test" && tc.mx.Connections() != 0 {
			t.Errorf("connected to an MX outside the policy")
		}
		if tc.domain == "badcert.test" && tc.mx.Connections() != 1 {
			t.Errorf("%d connections to the bad-certificate MX, want 1 (no clear-text retry)", tc.mx.Connections())
		}
		if s, f, types := failures(t, agg, tc.domain); s != 0 || f != 1 || len(types) != 1 || types[0] != tc.rpt {
			t.Errorf("%s: TLS-RPT success %d failure %d types %v, want one %s", tc.domain, s, f, types, tc.rpt)
		}
	}
	if s, f, _ := failures(t, agg, "good.test"); s != 3 || f != 0 {
		t.Errorf("good.test: TLS-RPT success %d failure %d, want 3/0", s, f)
	}
}

func TestMTASTSTesting(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := testmx.NewCA(t, "Test CA")
	sts := e.policies(ca, "127.0.2.2", "try.test")
	sts.set("try.test", policy("testing", "mx.elsewhere.test"))
	e.dns.AddMX("try.test", "mx.try.test", 10)
	mx := e.mx("mx.try.test", "127.0.0.2", testmx.Config{STARTTLS: true}) // untrusted certificate too
	cache := mtasts.New(mtasts.Config{Resolver: e.res, RootCAs: ca.Pool(), Timeout: 2 * time.Second})
	t.Cleanup(cache.Close)
	agg := newAggregator(t)
	c := e.client(func(c *delivery.Config) { c.RootCAs, c.MTASTS, c.TLSReport = ca.Pool(), cache, agg })

	res := deliver(t, c, request("try.test", "a@try.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "mta-sts-testing TLS1.3 ") || res[0].TLSPolicy != delivery.PolicyMTASTSTesting ||
		!strings.Contains(res[0].TLSFailure, "not an MX host allowed") {
		t.Fatalf("TLS %q policy %q failure %q", res[0].TLS, res[0].TLSPolicy, res[0].TLSFailure)
	}
	mx.WaitMessages(t, 1, time.Second)
	s, f, types := failures(t, agg, "try.test")
	if s != 0 || f != 1 || len(types) != 1 || types[0] != tlsrpt.ResultValidationFailure {
		t.Fatalf("TLS-RPT success %d failure %d types %v", s, f, types)
	}
	rep := report(t, agg)
	if len(rep) != 1 || rep[0].Policies[0].Policy.Type != tlsrpt.PolicySTS || len(rep[0].Policies[0].Policy.MXHost) != 1 {
		t.Fatalf("report %+v", rep)
	}
}

func TestDANE(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := testmx.NewCA(t, "Private CA") // not in RootCAs: only DANE can authenticate
	cert := ca.Issue("mx.dane.test")
	other := ca.Issue("mx.dane.test")
	for _, d := range []string{"dane.test", "wrong.test", "clear.test", "ta.test"} {
		e.dns.AddMX(d, "mx."+d, 10)
	}
	mxOK := e.mx("mx.dane.test", "127.0.0.2", testmx.Config{STARTTLS: true, Certificate: &cert})
	mxWrong := e.mx("mx.wrong.test", "127.0.0.3", testmx.Config{STARTTLS: true, Certificate: &other})
	mxClear := e.mx("mx.clear.test", "127.0.0.4", testmx.Config{})
	taCert := ca.Issue("mx.ta.test")
	mxTA := e.mx("mx.ta.test", "127.0.0.5", testmx.Config{STARTTLS: true, Certificate: &taCert})
	ee := dane.Association(cert.Leaf, dane.SelectorSPKI, dane.MatchSHA256)
	for _, d := range []string{"dane.test", "wrong.test", "clear.test"} {
		e.tlsa("mx."+d, 3, 1, 1, ee)
	}
	e.tlsa("mx.ta.test", 2, 0, 1, dane.Association(ca.Root, dane.SelectorCert, dane.MatchSHA256))
	agg := newAggregator(t)
	c := e.client(func(c *delivery.Config) { c.TLSReport = agg })

	// Without the AD bit the TLSA records are ignored: opportunistic.
	res := deliver(t, c, request("dane.test", "a@dane.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "opportunistic TLS1.3 ") || !strings.HasSuffix(res[0].TLS, "(unverified)") {
		t.Fatalf("without AD: TLS %q", res[0].TLS)
	}
	res = deliver(t, c, request("clear.test", "a@clear.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})

	e.dns.SetAD(true)
	c = e.client(func(c *delivery.Config) { c.TLSReport = agg })
	res = deliver(t, c, request("dane.test", "b@dane.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "dane TLS1.3 ") || !strings.HasSuffix(res[0].TLS, "(verified)") || res[0].TLSPolicy != delivery.PolicyDANE {
		t.Fatalf("DANE-EE: TLS %q policy %q", res[0].TLS, res[0].TLSPolicy)
	}
	res = deliver(t, c, request("ta.test", "b@ta.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "dane TLS1.3 ") {
		t.Fatalf("DANE-TA: TLS %q", res[0].TLS)
	}
	res = deliver(t, c, request("wrong.test", "b@wrong.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 7, 5})
	if res[0].TLS != "dane: no TLSA record matches the certificate of mx.wrong.test" {
		t.Fatalf("mismatch: TLS %q", res[0].TLS)
	}
	res = deliver(t, c, request("clear.test", "b@clear.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 7, 4})
	if res[0].TLS != "dane: STARTTLS not offered by mx.clear.test" {
		t.Fatalf("no STARTTLS: TLS %q", res[0].TLS)
	}
	mxOK.WaitMessages(t, 2, time.Second)
	mxTA.WaitMessages(t, 1, time.Second)
	if len(mxWrong.Messages()) != 0 || len(mxClear.Messages()) != 1 {
		t.Fatalf("messages: wrong %d clear %d", len(mxWrong.Messages()), len(mxClear.Messages()))
	}
	if mxWrong.Connections() != 1 {
		t.Fatalf("%d connections to the mismatching MX, want 1 (no clear-text retry)", mxWrong.Connections())
	}
	if s, f, types := failures(t, agg, "wrong.test"); s != 0 || f != 1 || types[0] != tlsrpt.ResultValidationFailure {
		t.Fatalf("TLS-RPT wrong.test: %d %d %v", s, f, types)
	}
	for _, r := range report(t, agg) {
		if r.Domain == "dane.test" {
			var types []string
			for _, p := range r.Policies {
				types = append(types, p.Policy.Type)
			}
			if len(types) != 2 || types[0] != tlsrpt.PolicyNotFound || types[1] != tlsrpt.PolicyTLSA {
				t.Fatalf("dane.test policies %v", types)
			}
		}
	}
}

// DANE takes precedence over MTA-STS (RFC 8461 §2): a host with valid
// TLSA records is used even if the MTA-STS policy would refuse it.
func TestDANEBeforeMTASTS(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ca := testmx.NewCA(t, "Test CA")
	sts := e.policies(ca, "127.0.2.3", "both.test")
	sts.set("both.test", policy("enforce", "mx.elsewhere.test"))
	e.dns.AddMX("both.test", "mx.both.test", 10)
	cert := ca.Issue("mx.both.test")
	mx := e.mx("mx.both.test", "127.0.0.2", testmx.Config{STARTTLS: true, Certificate: &cert})
	e.tlsa("mx.both.test", 3, 1, 1, dane.Association(cert.Leaf, dane.SelectorSPKI, dane.MatchSHA256))
	e.dns.SetAD(true)
	cache := mtasts.New(mtasts.Config{Resolver: e.res, RootCAs: ca.Pool(), Timeout: 2 * time.Second})
	t.Cleanup(cache.Close)
	res := deliver(t, e.client(func(c *delivery.Config) { c.MTASTS = cache }), request("both.test", "a@both.test"))
	expect(t, res[0], delivery.Delivered, 250, smtp.EnhancedCode{2, 0, 0})
	if !strings.HasPrefix(res[0].TLS, "dane ") {
		t.Fatalf("TLS %q", res[0].TLS)
	}
	mx.WaitMessages(t, 1, time.Second)
	// With DANE disabled, the MTA-STS policy refuses the host.
	res = deliver(t, e.client(func(c *delivery.Config) { c.MTASTS, c.DisableDANE = cache, true }), request("both.test", "b@both.test"))
	expect(t, res[0], delivery.Temporary, 451, smtp.EnhancedCode{4, 7, 5})
}
