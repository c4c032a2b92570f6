package alert_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// recorder keeps the notifications an engine sends.
type recorder struct {
	mu  sync.Mutex
	got []alert.Notification
}

func (r *recorder) Notify(_ context.Context, n alert.Notification) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, n)
	return nil
}

// take returns the notifications since the last call as "FIRING key" or
// "resolved key", sorted.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, n := range r.got {
		s := "resolved "
		if n.Firing {
			s = "FIRING "
		}
		out = append(out, s+n.Key)
	}
	r.got = nil
	slices.Sort(out)
	return out
}

func rule(kind string) alert.Rule {
	for _, r := range alert.DefaultRules() {
		if r.Kind == kind {
			return r
		}
	}
	panic(kind)
}

func expect(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: notified %q, want %q", what, got, want)
	}
}

func engine(st store.Store, clk *clock.Fake, sig alert.Signals, rules ...alert.Rule) (*alert.Engine, *recorder) {
	rec := &recorder{}
	return alert.New(alert.Options{Rules: rules, Store: st, Signals: sig, Clock: clk, Notifier: rec, Hostname: hostname}), rec
}

func eval(t *testing.T, e *alert.Engine) {
	t.Helper()
	if err := e.Evaluate(context.Background()); err != nil {
		t.Fatalf("Evaluate: %v", err)
	}
}

// Deferrals are judged per destination; a destination whose traffic
// stops resolves ("no longer measured"), and a rule with a destination
// judges only that one.
func TestDeferralRatePerDestination(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	only := rule(alert.KindDeferralRate)
	only.Name, only.Destination, only.Threshold = "slow_gmail", "gmail.test", 0.1
	e, rec := engine(st, clk, &alert.NodeSignals{Store: st, Clock: clk}, rule(alert.KindDeferralRate), only)
	events(t, st, clk.Now(), store.EventDeferred, "yahoo.test", 20)
	events(t, st, clk.Now(), store.EventDelivered, "yahoo.test", 10)
	events(t, st, clk.Now(), store.EventDeferred, "gmail.test", 3)
	events(t, st, clk.Now(), store.EventDelivered, "gmail.test", 27)
	events(t, st, clk.Now(), store.EventDeferred, "tiny.test", 5) // 100 %, but 5 attempts
	eval(t, e)
	expect(t, "first", rec.take(), "FIRING deferral_rate/yahoo.test")
	clk.Advance(time.Minute)
	events(t, st, clk.Now(), store.EventDeferred, "gmail.test", 2) // 5 of 32: above 10 %
	eval(t, e)
	expect(t, "gmail above its own threshold", rec.take(), "FIRING slow_gmail/gmail.test")
	// Half an hour later only gmail.test has traffic, healthy.
	clk.Advance(31 * time.Minute)
	events(t, st, clk.Now(), store.EventDelivered, "gmail.test", 30)
	eval(t, e)
	expect(t, "after the window", rec.take(), "resolved deferral_rate/yahoo.test", "resolved slow_gmail/gmail.test")
	eval(t, e)
	expect(t, "again", rec.take())
}

// The queue's backlog and age, the certificate's expiry, the disk and
// failing webhooks, each from the node's real inputs.
func TestNodeRules(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC().Truncate(time.Second)
	clk := clock.NewFake(now)
	st := openSQLite(t)
	ctx := context.Background()
	var cert tls.Certificate
	sig := &alert.NodeSignals{Store: st, DataDir: t.TempDir(), Clock: clk, Certificate: func() *tls.Certificate { return &cert }}
	backlog := rule(alert.KindQueueBacklog)
	backlog.Threshold = 1
	disk := rule(alert.KindDiskFree)
	disk.Threshold = 1 // a filesystem always has something used
	e, rec := engine(st, clk, sig, backlog, rule(alert.KindQueueOldest), rule(alert.KindCertExpiry), disk, rule(alert.KindWebhookFailing))

	cert = selfSigned(t, now.Add(30*24*time.Hour))
	for i := range 2 {
		body, err := st.NewBody()
		if err != nil {
			t.Fatal(err)
		}
		body.Write([]byte("Subject: x\r\n\r\nx\r\n"))
		m := &store.Message{ID: store.NewID(), Sender: "a@herald.test", Received: now.Add(-time.Duration(i) * time.Minute),
			Recipients: []store.Recipient{{Address: "b@remote.test"}}}
		if _, err := st.Enqueue(ctx, m, body, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.AddWebhook(ctx, store.Webhook{ID: "wh1", Account: store.DefaultAccount, URL: "https://hooks.example/", Secret: "s"}))
	must(st.AddEvents(ctx, []store.Event{{Time: now, Type: store.EventBounced, Account: store.DefaultAccount, Recipient: "x@y.test"}}))
	ds, err := st.LeaseWebhookDeliveries(ctx, time.Now().Add(time.Hour), time.Minute, 10)
	if err != nil || len(ds) != 1 {
		t.Fatalf("deliveries %v, %v", ds, err)
	}
	must(st.RecordWebhookAttempt(ctx, ds[0].ID, "pending", time.Now().Add(time.Hour), "HTTP 503", 503))

	eval(t, e)
	expect(t, "start", rec.take(), "FIRING disk_free/"+hostname, "FIRING queue_backlog")
	clk.Advance(61 * time.Minute)
	cert = selfSigned(t, now.Add(10*24*time.Hour)) // renewed badly: 10 days left
	eval(t, e)
	expect(t, "an hour later", rec.take(), "FIRING cert_expiry/"+hostname, "FIRING queue_oldest", "FIRING webhook_failing/wh1")
	// The queue drains, the webhook delivery succeeds, a good certificate.
	msgs, err := st.List(ctx, "", 10)
	must(err)
	for _, m := range msgs {
		must(st.Delete(ctx, m.ID))
	}
	must(st.RecordWebhookAttempt(ctx, ds[0].ID, "delivered", time.Time{}, "", 200))
	cert = selfSigned(t, now.Add(90*24*time.Hour))
	eval(t, e)
	expect(t, "repaired", rec.take(), "resolved cert_expiry/"+hostname, "resolved queue_backlog", "resolved queue_oldest", "resolved webhook_failing/wh1")
}

func selfSigned(t *testing.T, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: hostname}, DNSNames: []string{hostname},
		NotBefore: notAfter.Add(-90 * 24 * time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// dns_auth runs the real DNS doctor against a DNS server on loopback:
// a domain without SPF and DMARC fires; once they are published it
// resolves at the next run (the report is reused for DNSEvery).
func TestDNSAuth(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	dns := testdns.Start(t)
	dns.AddMX("herald.test", hostname, 10)
	dns.AddA(hostname, "192.0.2.25")
	res, err := resolve.New(dns.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.AddDomain(context.Background(), "herald.test"); err != nil {
		t.Fatal(err)
	}
	sig := &alert.NodeSignals{Store: st, Clock: clk, DNSReport: func(ctx context.Context, d string) dnscheck.Report {
		return dnscheck.Check(ctx, res, st, dnscheck.Options{Domain: d, Hostname: hostname, SendingIPs: []netip.Addr{netip.MustParseAddr("192.0.2.25")}})
	}}
	e, rec := engine(st, clk, sig, rule(alert.KindDNSAuth))
	eval(t, e)
	expect(t, "no SPF, no DMARC", rec.take(), "FIRING dns_auth/herald.test")
	v, err := alert.Overview(context.Background(), st, []alert.Rule{rule(alert.KindDNSAuth)}, clk.Now(), 10)
	if err != nil || len(v.Rules[0].Firing) != 1 || !strings.Contains(v.Rules[0].Firing[0].Detail, "spf: herald.test has no SPF record") ||
		!strings.Contains(v.Rules[0].Firing[0].Detail, "dmarc: ") {
		t.Fatalf("overview %+v, %v", v, err)
	}
	dns.AddTXT("herald.test", "v=spf1 ip4:192.0.2.25 -all")
	dns.AddTXT("_dmarc.herald.test", "v=DMARC1; p=reject; rua=mailto:dmarc@herald.test")
	clk.Advance(10 * time.Minute)
	eval(t, e)
	expect(t, "within DNSEvery: the last report", rec.take())
	clk.Advance(alert.DefaultDNSEvery)
	eval(t, e)
	expect(t, "published", rec.take(), "resolved dns_auth/herald.test")
}

// A signal without data (ErrNoData: the blocklist checker not plugged
// in, or not answering) keeps the alert as it is; a listing fires per
// listed address and list.
func TestNoDataKeepsState(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	var listings []alert.Listing
	var down bool
	sig := &alert.NodeSignals{Store: st, Clock: clk, Blocklists: func(context.Context) ([]alert.Listing, error) {
		if down {
			return nil, alert.ErrNoData
		}
		return listings, nil
	}}
	e, rec := engine(st, clk, sig, rule(alert.KindBlocklisted), rule(alert.KindLatencyP99))
	eval(t, e)
	expect(t, "clean", rec.take())
	listings = []alert.Listing{{Subject: "192.0.2.25", List: "zen.spamhaus.example"}}
	eval(t, e)
	expect(t, "listed", rec.take(), "FIRING blocklisted/192.0.2.25@zen.spamhaus.example")
	down, listings = true, nil
	eval(t, e)
	expect(t, "no data", rec.take())
	if sts, _ := st.AlertStates(context.Background()); len(sts) != 1 || !sts[0].Firing {
		t.Fatalf("no data changed the state: %+v", sts)
	}
	down = false
	eval(t, e)
	expect(t, "delisted", rec.take(), "resolved blocklisted/192.0.2.25@zen.spamhaus.example")
	if _, err := (&alert.NodeSignals{Store: st, Clock: clk}).Blocklistings(context.Background()); !errors.Is(err, alert.ErrNoData) {
		t.Errorf("Blocklistings without a monitor = %v, want ErrNoData", err)
	}
}

// The p99 latency rule reads the rollups' histogram: deliveries whose
// messages waited 20 minutes fire it, quick ones resolve it.
func TestLatencyFromRollups(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	st := openSQLite(t)
	r := rule(alert.KindLatencyP99)
	e, rec := engine(st, clk, &alert.NodeSignals{Store: st, Clock: clk}, r)
	deliver := func(n int, waited time.Duration) {
		evs := make([]store.Event, n)
		for i := range evs {
			evs[i] = store.Event{Time: clk.Now(), Type: store.EventDelivered, Account: store.DefaultAccount,
				Recipient: "r@a.test", Queued: clk.Now().Add(-waited)}
		}
		if err := st.AddEvents(context.Background(), evs); err != nil {
			t.Fatal(err)
		}
	}
	deliver(int(r.MinVolume), 20*time.Minute)
	eval(t, e)
	expect(t, "slow", rec.take(), "FIRING latency_p99")
	clk.Advance(2 * r.Window)
	deliver(int(r.MinVolume), time.Second)
	eval(t, e)
	expect(t, "fast again", rec.take(), "resolved latency_p99")
}

// The configuration changes built-in rules and adds rules of a kind.
func TestRulesFromConfig(t *testing.T) {
	t.Parallel()
	c, err := config.Parse("a.toml", []byte(`[alerts.rules.bounce_rate]
threshold = "2%"
[alerts.rules.disk_free]
enabled = false
[alerts.rules.gmail]
kind = "deferral_rate"
destination = "gmail.com"
min_volume = 5
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	rules := alert.Rules(c.Alerts.Rules)
	if got := alert.RuleNames(rules); len(got) != len(config.AlertKinds)+1 || !slices.Contains(got, "gmail") {
		t.Fatalf("rules %v", got)
	}
	by := map[string]alert.Rule{}
	for _, r := range rules {
		by[r.Name] = r
	}
	if r := by["bounce_rate"]; r.Threshold != 0.02 || r.Window != time.Hour || r.MinVolume != 100 || !r.Enabled {
		t.Errorf("bounce_rate %+v", r)
	}
	if by["disk_free"].Enabled {
		t.Errorf("disk_free still enabled")
	}
	if r := by["gmail"]; r.Kind != alert.KindDeferralRate || r.Destination != "gmail.com" || r.MinVolume != 5 || r.Threshold != 0.3 || r.Window != 30*time.Minute {
		t.Errorf("gmail %+v", r)
	}
	// Every kind the configuration knows has a built-in rule, and back.
	for kind := range config.AlertKinds {
		if by[kind].Kind != kind {
			t.Errorf("no built-in rule for kind %s", kind)
		}
	}
	if len(alert.DefaultRules()) != len(config.AlertKinds) {
		t.Errorf("%d built-in rules, %d kinds", len(alert.DefaultRules()), len(config.AlertKinds))
	}
	if d := by["complaint_rate"].Describe(); d != "complaint rate above 0.3 % over 1d (at least 1000 delivered)" {
		t.Errorf("complaint_rate: %q", d)
	}
}

// In a cluster each node's disk is an alert of its own: node a's full
// disk does not flap as node b evaluates its healthy one.
func TestPerNodeRulesDoNotFlap(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	full, fine := rule(alert.KindDiskFree), rule(alert.KindDiskFree)
	full.Threshold, fine.Threshold = 1, 0
	var engines []*alert.Engine
	rec := &recorder{}
	for i, r := range []alert.Rule{full, fine} {
		node := []string{"a", "b"}[i]
		engines = append(engines, alert.New(alert.Options{Rules: []alert.Rule{r}, Store: st, Clock: clk, Notifier: rec, Hostname: hostname, Node: node,
			Signals: &alert.NodeSignals{Store: st, DataDir: t.TempDir(), Clock: clk}}))
	}
	for range 3 {
		for _, e := range engines {
			eval(t, e)
		}
		clk.Advance(time.Minute)
	}
	expect(t, "two nodes", rec.take(), "FIRING disk_free/a")
}

// A storm of transitions (many destinations at once) sends at most
// MaxNotifications; every transition is still recorded.
func TestNotificationStormIsCapped(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	st := openSQLite(t)
	for i := range alert.MaxNotifications + 10 {
		events(t, st, clk.Now(), store.EventDeferred, fmt.Sprintf("d%d.test", i), 20)
	}
	e, rec := engine(st, clk, &alert.NodeSignals{Store: st, Clock: clk}, rule(alert.KindDeferralRate))
	eval(t, e)
	if got := rec.take(); len(got) != alert.MaxNotifications {
		t.Fatalf("%d notifications, want %d", len(got), alert.MaxNotifications)
	}
	if sts, _ := st.AlertStates(context.Background()); len(sts) != alert.MaxNotifications+10 {
		t.Fatalf("%d alerts recorded, want %d", len(sts), alert.MaxNotifications+10)
	}
}
