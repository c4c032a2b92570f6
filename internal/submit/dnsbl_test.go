package submit_test

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// screened is env with a pipeline that screens MX clients on zen.test
// (weight 3) and the allow-list wl.test (weight -3), threshold 3.
//
//	127.0.0.2: on zen.test (with a TXT reason)
//	127.0.0.3: on zen.test and wl.test
//	127.0.0.4: on zen.test with Spamhaus's "public resolver" error code
//	127.0.0.5: on no list
func screened(t *testing.T) (*env, *submit.Pipeline, dnsbl.Metrics) {
	t.Helper()
	e := setup(t, submit.Config{RelayAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.64/26")}})
	ctx := context.Background()
	for _, a := range []string{"postmaster@example.test", "abuse@example.test"} {
		if err := e.st.AddAlias(ctx, store.Alias{Address: a, Targets: []string{"alice@example.test"}}); err != nil {
			t.Fatal(err)
		}
	}
	d := testdns.Start(t)
	d.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.2")
	d.AddTXT("2.0.0.127.zen.test", "Blocked, see https://zen.test/query/127.0.0.2")
	d.Add("3.0.0.127.zen.test. 300 IN A 127.0.0.2")
	d.Add("3.0.0.127.wl.test. 300 IN A 127.0.10.2")
	d.Add("4.0.0.127.zen.test. 300 IN A 127.255.255.254")
	d.Add("100.0.0.127.zen.test. 300 IN A 127.0.0.2") // in relay.allow
	res, err := resolve.NewClient(d.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var sites []dnsbl.Site
	for _, s := range []string{"zen.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-3"} {
		site, err := dnsbl.ParseSite(s, true)
		if err != nil {
			t.Fatal(err)
		}
		sites = append(sites, site)
	}
	m := dnsbl.NewMetrics(metrics.NewRegistry())
	chk := dnsbl.New(dnsbl.Config{Sites: sites, Threshold: 3, Resolver: res, Clock: e.clock, Metrics: m})
	p := submit.New(submit.Config{Hostname: "mx.herald.test", RelayAllow: []netip.Prefix{netip.MustParsePrefix("127.0.0.64/26")}},
		submit.Deps{Store: e.st, Spool: spool.New(e.st, nil, e.clock), Blocklists: chk, Clock: e.clock})
	return e, p, m
}

// mxTx starts a transaction of a client connected to the MX listener as
// the gateway does: Screen at connect, the identity at MAIL.
func mxTx(t *testing.T, p *submit.Pipeline, ip, authUser, source string) *submit.Tx {
	t.Helper()
	ctx := context.Background()
	addr := netip.MustParseAddr(ip)
	l := p.Screen(ctx, addr, source)
	id := p.Network(addr, authUser, "peer.test", source)
	id.Blocklists = l
	tx, err := p.Begin(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	from := "someone@elsewhere.test"
	if authUser != "" {
		from = authUser
	}
	if err := tx.Mail(ctx, submit.Mail{From: from}); err != nil {
		t.Fatal(err)
	}
	return tx
}

func rcpt(tx *submit.Tx, addr string) error {
	return tx.Rcpt(context.Background(), submit.Recipient{Address: addr})
}

func TestBlocklistedClientRefusedAtRcpt(t *testing.T) {
	e, p, m := screened(t)
	tx := mxTx(t, p, "127.0.0.2", "", "smtp")
	err := rcpt(tx, "alice@example.test")
	se, ok := smtp.AsError(err)
	if !ok || se.Code != 554 || se.Enhanced != (smtp.EnhancedCode{5, 7, 1}) {
		t.Fatalf("listed client: %v, want 554 5.7.1", err)
	}
	for _, want := range []string{"[127.0.0.2]", "zen.test", "https://zen.test/query/127.0.0.2"} {
		if !strings.Contains(se.Message, want) {
			t.Errorf("reply %q does not name %q", se.Message, want)
		}
	}
	if strings.Contains(se.Message, "wl.test") {
		t.Errorf("reply names the allow-list: %q", se.Message)
	}
	var r *submit.Refusal
	if !asRefusal(err, &r) || r.Reason != submit.ReasonDNSBL {
		t.Errorf("reason: %v", err)
	}
	// Unknown addresses are refused the same way: a listed client learns
	// nothing about our mailboxes.
	if got := code(rcpt(tx, "nobody@example.test")); got != "5.7.1" {
		t.Errorf("unknown recipient from a listed client: %s, want 5.7.1", got)
	}
	// postmaster@ and abuse@ stay reachable, in any case.
	for _, a := range []string{"postmaster@example.test", "Abuse@example.test"} {
		if err := rcpt(tx, a); err != nil {
			t.Errorf("%s from a listed client: %v", a, err)
		}
	}
	res, err := tx.Data(context.Background(), strings.NewReader("Subject: why am I listed?\r\n\r\nhello\r\n"))
	if err != nil || res.ID == "" {
		t.Fatalf("message to postmaster: %+v, %v", res, err)
	}
	msg, err := e.st.Get(context.Background(), res.ID)
	if err != nil || len(msg.Recipients) != 1 || msg.Recipients[0].Address != "alice@example.test" {
		t.Errorf("queued message: %+v, %v; want one recipient (postmaster and abuse go to alice)", msg, err)
	}
	if got := m.Rejects.Value("zen.test"); got != 1 {
		t.Errorf("rejects{zen.test} = %d, want 1 (once per session)", got)
	}
}

func TestBlocklistAcceptsOthers(t *testing.T) {
	_, p, m := screened(t)
	for _, c := range []struct {
		name, ip, user, source string
	}{
		{"not listed", "127.0.0.5", "", "smtp"},
		{"allow-list cancels the blocklist", "127.0.0.3", "", "smtp"},
		{"error code 127.255.255.254 is no listing", "127.0.0.4", "", "smtp"},
		{"authenticated on the MX listener", "127.0.0.2", "alice@example.test", "smtp"},
		{"submission listener", "127.0.0.2", "alice@example.test", "submission"},
		{"relay.allow client", "127.0.0.100", "", "smtp"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx := mxTx(t, p, c.ip, c.user, c.source)
			if err := rcpt(tx, "bob@example.test"); err != nil {
				t.Fatalf("refused: %v", err)
			}
		})
	}
	if got := m.Errors.Value("zen.test"); got != 1 {
		t.Errorf("errors{zen.test} = %d, want 1 (the error code)", got)
	}
	ctx := context.Background()
	if p.Screen(ctx, netip.MustParseAddr("127.0.0.2"), "submission") != nil {
		t.Error("a submission client was screened")
	}
	if p.Screen(ctx, netip.MustParseAddr("127.0.0.100"), "smtp") != nil {
		t.Error("a relay.allow client was screened")
	}
}

func asRefusal(err error, r **submit.Refusal) bool {
	rr, ok := err.(*submit.Refusal)
	if ok {
		*r = rr
	}
	return ok
}
