package dmarc

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func newDNS(t *testing.T) (*testdns.Server, resolve.Resolver) {
	t.Helper()
	s := testdns.Start(t)
	r, err := resolve.New(s.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s, r
}

// fixed returns a random source that always draws n.
func fixed(n int) Option {
	return WithRand(func(int) int { return n })
}

func TestEvaluate(t *testing.T) {
	t.Parallel()
	s, r := newDNS(t)
	s.AddTXT("_dmarc.example.com", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:agg@example.com")
	s.AddTXT("_dmarc.own.example.com", "v=DMARC1; p=none")
	s.AddTXT("_dmarc.strict.example", "v=DMARC1; p=reject; adkim=s; aspf=s")
	s.AddTXT("_dmarc.nosp.example", "v=DMARC1; p=quarantine")
	s.AddTXT("_dmarc.pct0.example", "v=DMARC1; p=reject; pct=0")
	s.AddTXT("_dmarc.pct50.example", "v=DMARC1; p=reject; pct=50")
	s.AddTXT("_dmarc.q50.example", "v=DMARC1; p=quarantine; pct=50")
	s.AddTXT("_dmarc.bad.example", "v=DMARC1; p=bogus")
	s.AddTXT("_dmarc.two.example", "v=DMARC1; p=reject")
	s.AddTXT("_dmarc.two.example", "v=DMARC1; p=none")
	s.AddTXT("_dmarc.other-txt.example", "some verification token")
	s.AddTXT("_dmarc.example.co.uk", "v=DMARC1; p=reject")
	s.SetServfail("_dmarc.tmp.example")
	s.SetServfail("_dmarc.example.net")

	pass := func(d string) []DKIMInput { return []DKIMInput{{Domain: d, Result: "pass"}} }
	noSPF := SPFInput{}
	tests := []struct {
		name         string
		from         string
		spf          SPFInput
		dkim         []DKIMInput
		opts         []Option
		want         Status
		policy       Policy
		recPolicy    Policy
		recDomain    string
		spfA, dkimA  bool
		wantErr      bool
		wantOrg      string
		wantRecordOK bool
	}{
		{name: "aligned DKIM", from: "example.com", spf: SPFInput{"evil.example", "pass"}, dkim: pass("example.com"),
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "example.com", dkimA: true, wantOrg: "example.com", wantRecordOK: true},
		{name: "aligned SPF relaxed", from: "example.com", spf: SPFInput{"bounce.example.com", "pass"},
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "example.com", spfA: true, wantRecordOK: true},
		{name: "both aligned", from: "Example.COM.", spf: SPFInput{"example.com", "pass"}, dkim: pass("EXAMPLE.com"),
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "example.com", spfA: true, dkimA: true, wantRecordOK: true},
		{name: "neither: reject", from: "example.com", spf: SPFInput{"example.com", "fail"},
			dkim: []DKIMInput{{"example.com", "fail"}, {"other.example", "pass"}},
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "example.com", wantRecordOK: true},
		{name: "spf pass unaligned", from: "example.com", spf: SPFInput{"example.org", "pass"},
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "example.com", wantRecordOK: true},
		{name: "softfail does not count", from: "example.com", spf: SPFInput{"example.com", "softfail"},
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "example.com", wantRecordOK: true},
		{name: "lookalike org not aligned", from: "example.com", dkim: pass("notexample.com"),
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "example.com", wantRecordOK: true},
		{name: "strict DKIM subdomain fails", from: "strict.example", spf: noSPF, dkim: pass("mail.strict.example"),
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "strict.example", wantRecordOK: true},
		{name: "strict SPF subdomain fails", from: "strict.example", spf: SPFInput{"bounce.strict.example", "pass"},
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "strict.example", wantRecordOK: true},
		{name: "strict exact passes", from: "strict.example", dkim: pass("strict.example"),
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "strict.example", dkimA: true, wantRecordOK: true},
		{name: "relaxed DKIM subdomain passes", from: "example.com", dkim: pass("mail.example.com"),
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "example.com", dkimA: true, wantRecordOK: true},
		{name: "relaxed parent signs subdomain From", from: "news.example.com", dkim: pass("example.com"),
			want: Pass, policy: PolicyNone, recPolicy: PolicyQuarantine, recDomain: "example.com", dkimA: true, wantOrg: "example.com", wantRecordOK: true},
		{name: "subdomain uses sp", from: "news.example.com", spf: SPFInput{"news.example.com", "fail"},
			want: Fail, policy: PolicyQuarantine, recPolicy: PolicyQuarantine, recDomain: "example.com", wantOrg: "example.com", wantRecordOK: true},
		{name: "deep subdomain uses org record", from: "a.b.example.com",
			want: Fail, policy: PolicyQuarantine, recPolicy: PolicyQuarantine, recDomain: "example.com", wantRecordOK: true},
		{name: "subdomain own record wins", from: "own.example.com",
			want: Fail, policy: PolicyNone, recPolicy: PolicyNone, recDomain: "own.example.com", wantOrg: "example.com", wantRecordOK: true},
		{name: "subdomain without sp uses p", from: "x.nosp.example",
			want: Fail, policy: PolicyQuarantine, recPolicy: PolicyQuarantine, recDomain: "nosp.example", wantRecordOK: true},
		{name: "multi-label suffix org", from: "shop.example.co.uk", dkim: pass("mail.example.co.uk"),
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "example.co.uk", dkimA: true, wantOrg: "example.co.uk", wantRecordOK: true},
		{name: "pct=0 reject becomes quarantine", from: "pct0.example", opts: []Option{fixed(0)},
			want: Fail, policy: PolicyQuarantine, recPolicy: PolicyReject, recDomain: "pct0.example", wantRecordOK: true},
		{name: "pct=50 sampled", from: "pct50.example", opts: []Option{fixed(49)},
			want: Fail, policy: PolicyReject, recPolicy: PolicyReject, recDomain: "pct50.example", wantRecordOK: true},
		{name: "pct=50 not sampled", from: "pct50.example", opts: []Option{fixed(50)},
			want: Fail, policy: PolicyQuarantine, recPolicy: PolicyReject, recDomain: "pct50.example", wantRecordOK: true},
		{name: "quarantine pct=50 not sampled", from: "q50.example", opts: []Option{fixed(99)},
			want: Fail, policy: PolicyNone, recPolicy: PolicyQuarantine, recDomain: "q50.example", wantRecordOK: true},
		{name: "pass ignores pct", from: "pct0.example", dkim: pass("pct0.example"), opts: []Option{fixed(0)},
			want: Pass, policy: PolicyNone, recPolicy: PolicyReject, recDomain: "pct0.example", dkimA: true, wantRecordOK: true},
		{name: "no record", from: "norecord.example", dkim: pass("norecord.example"),
			want: None, policy: PolicyNone},
		{name: "non-DMARC TXT", from: "other-txt.example", want: None, policy: PolicyNone},
		{name: "two records", from: "two.example", want: None, policy: PolicyNone},
		{name: "temperror", from: "tmp.example", dkim: pass("tmp.example"), want: TempError, policy: PolicyNone, wantErr: true},
		{name: "temperror at org domain", from: "sub.example.net", want: TempError, policy: PolicyNone, wantErr: true},
		{name: "invalid record", from: "bad.example", want: PermError, policy: PolicyNone, wantErr: true},
		{name: "empty From domain", from: "", want: PermError, policy: PolicyNone, wantErr: true},
		{name: "bad From domain", from: "a..example", want: PermError, policy: PolicyNone, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			opts := tc.opts
			if opts == nil {
				opts = []Option{WithRand(func(int) int { t.Error("random source used without pct"); return 0 })}
			}
			got := Evaluate(ctx, r, tc.from, tc.spf, tc.dkim, opts...)
			if got.Result != tc.want || got.Policy != tc.policy || got.RecordPolicy != tc.recPolicy || got.RecordDomain != tc.recDomain {
				t.Fatalf("Evaluate(%q) = %+v\nwant result %s policy %s record policy %q at %q", tc.from, got, tc.want, tc.policy, tc.recPolicy, tc.recDomain)
			}
			if got.SPFAligned != tc.spfA || got.DKIMAligned != tc.dkimA {
				t.Fatalf("aligned spf=%v dkim=%v, want %v %v", got.SPFAligned, got.DKIMAligned, tc.spfA, tc.dkimA)
			}
			if (got.Err != nil) != tc.wantErr {
				t.Fatalf("Err = %v, want error: %v", got.Err, tc.wantErr)
			}
			if tc.wantOrg != "" && got.OrgDomain != tc.wantOrg {
				t.Fatalf("OrgDomain = %q, want %q", got.OrgDomain, tc.wantOrg)
			}
			if (got.Record != nil) != tc.wantRecordOK {
				t.Fatalf("Record = %+v, want present: %v", got.Record, tc.wantRecordOK)
			}
		})
	}
}

func TestRecordKeepsRUA(t *testing.T) {
	t.Parallel()
	s, r := newDNS(t)
	s.AddTXT("_dmarc.example.com", "v=DMARC1; p=reject; rua=mailto:agg@example.com,mailto:x@example.org")
	got := Evaluate(context.Background(), r, "example.com", SPFInput{}, nil)
	if got.Record == nil || len(got.Record.ReportURIAggregate) != 2 || got.Record.ReportURIAggregate[0] != "mailto:agg@example.com" {
		t.Fatalf("Record = %+v, want two rua URIs", got.Record)
	}
}

func TestOrgDomain(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"example.com":         "example.com",
		"a.b.Example.COM.":    "example.com",
		"mail.example.co.uk":  "example.co.uk",
		"com":                 "com",
		"co.uk":               "co.uk",
		"x.y.unlisted-tld-zz": "y.unlisted-tld-zz",
	} {
		if got := OrgDomain(in); got != want {
			t.Errorf("OrgDomain(%q) = %q, want %q", in, got, want)
		}
	}
}
