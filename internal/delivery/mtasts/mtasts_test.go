package mtasts_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/delivery/mtasts"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

func TestParse(t *testing.T) {
	t.Parallel()
	p, err := mtasts.Parse([]byte("version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 604800\r\nfuture: x\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != mtasts.Enforce || p.MaxAge != 7*24*time.Hour || len(p.MX) != 2 || p.MX[1] != "*.example.net" || len(p.Lines) != 6 {
		t.Fatalf("policy %+v", p)
	}
	p, err = mtasts.Parse([]byte("version: STSv1\nmode: none\nmax_age: 99999999999\n"))
	if err == nil {
		t.Fatalf("11-digit max_age accepted: %+v", p)
	}
	p, err = mtasts.Parse([]byte("version: STSv1\nmode: none\nmax_age: 999999999\n"))
	if err != nil || p.MaxAge != mtasts.MaxMaxAge {
		t.Fatalf("max_age not capped: %+v %v", p, err)
	}
	for _, bad := range []string{
		"mode: enforce\nmx: a.example\nmax_age: 1\n",                      // no version
		"version: STSv2\nmode: enforce\nmx: a.example\nmax_age: 1\n",      // wrong version
		"version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n",       // bad mode
		"version: STSv1\nmode: enforce\nmax_age: 1\n",                     // no mx
		"version: STSv1\nmode: testing\nmx: a.example\n",                  // no max_age
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age: -1\n",     // negative
		"version: STSv1\nmode: testing\nmx: a.example\nmax_age 1\n",       // no colon
		"<html>version: STSv1\nmode: testing\nmx: a.example\nmax_age 1\n", // garbage
	} {
		if _, err := mtasts.Parse([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	p := &mtasts.Policy{MX: []string{"mail.example.com", "*.example.net"}}
	for host, want := range map[string]bool{
		"mail.example.com": true, "MAIL.example.com.": true, "mx.mail.example.com": false,
		"mx1.example.net": true, "example.net": false, "a.b.example.net": false, "other.example.com": false,
		".example.net": false,
	} {
		if got := p.Match(host); got != want {
			t.Errorf("Match(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestParseTXT(t *testing.T) {
	t.Parallel()
	if id, err := mtasts.ParseTXT("v=STSv1; id=20160831085700Z;"); err != nil || id != "20160831085700Z" {
		t.Fatalf("id %q err %v", id, err)
	}
	for _, bad := range []string{"v=STSv1;", "v=STSv1; id=bad-id", "id=1; v=STSv1", "v=STSv1; id=" + string(make([]byte, 33))} {
		if _, err := mtasts.ParseTXT(bad); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}

// policyServer serves policy bodies over HTTPS at ip:443 with a test CA
// certificate for mta-sts.<domain>.
type policyServer struct {
	hits atomic.Int32
	mu   sync.Mutex
	body string
	ct   string
}

func (ps *policyServer) set(body string) {
	ps.mu.Lock()
	ps.body = body
	ps.mu.Unlock()
}

func startPolicyServer(t *testing.T, ip string, cert tls.Certificate) *policyServer {
	t.Helper()
	ln, err := tls.Listen("tcp", ip+":443", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	ps := &policyServer{ct: "text/plain; charset=utf-8"}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		ps.hits.Add(1)
		ps.mu.Lock()
		body, ct := ps.body, ps.ct
		ps.mu.Unlock()
		w.Header().Set("Content-Type", ct)
		w.Write([]byte(body)) //nolint:errcheck
	})}
	go srv.Serve(ln) //nolint:errcheck
	t.Cleanup(func() { srv.Close() })
	return ps
}

const enforce = "version: STSv1\nmode: enforce\nmx: mx.example.test\nmax_age: 3600\n"

func setup(t *testing.T) (*testdns.Server, *testmx.CA, resolve.Resolver) {
	t.Helper()
	d := testdns.Start(t)
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return d, testmx.NewCA(t, "Test CA"), r
}

func TestCacheFetchAndRefresh(t *testing.T) {
	t.Parallel()
	d, ca, r := setup(t)
	d.AddA("mta-sts.example.test", "127.0.1.1")
	d.AddTXT("_mta-sts.example.test", "v=STSv1; id=one;")
	ps := startPolicyServer(t, "127.0.1.1", ca.Issue("mta-sts.example.test"))
	ps.set(enforce)
	clk := clock.NewFake(time.Date(2026, 11, 27, 10, 0, 0, 0, time.UTC))
	c := mtasts.New(mtasts.Config{Resolver: r, RootCAs: ca.Pool(), Clock: clk, Timeout: 2 * time.Second})
	t.Cleanup(c.Close)
	ctx := context.Background()

	p, err := c.Get(ctx, "Example.test")
	if err != nil || p == nil || p.Mode != mtasts.Enforce || p.ID != "one" || p.Domain != "example.test" || !p.Match("mx.example.test") {
		t.Fatalf("policy %+v err %v", p, err)
	}
	// Cached: same id, no fetch.
	if p2, _ := c.Get(ctx, "example.test"); p2 != p || ps.hits.Load() != 1 {
		t.Fatalf("second Get fetched again (hits %d)", ps.hits.Load())
	}
	// A new id refetches.
	ps.set("version: STSv1\nmode: testing\nmx: mx.example.test\nmax_age: 3600\n")
	d.Remove("_mta-sts.example.test")
	d.AddTXT("_mta-sts.example.test", "v=STSv1; id=two;")
	if p, _ = c.Get(ctx, "example.test"); p == nil || p.Mode != mtasts.Testing || p.ID != "two" || ps.hits.Load() != 2 {
		t.Fatalf("after id change: %+v hits %d", p, ps.hits.Load())
	}
	// TXT record gone: the cached policy still applies until max_age.
	d.Remove("_mta-sts.example.test")
	if p, _ = c.Get(ctx, "example.test"); p == nil || p.ID != "two" {
		t.Fatalf("without TXT: %+v", p)
	}
	clk.Advance(time.Hour)
	if p, err = c.Get(ctx, "example.test"); p != nil || err != nil {
		t.Fatalf("expired policy still used: %+v %v", p, err)
	}
	if c.Fetches() != 2 {
		t.Fatalf("%d fetches, want 2", c.Fetches())
	}
}

func TestCacheFailures(t *testing.T) {
	t.Parallel()
	d, ca, r := setup(t)
	d.AddA("mta-sts.bad.test", "127.0.1.2")
	d.AddTXT("_mta-sts.bad.test", "v=STSv1; id=a1;")
	other := testmx.NewCA(t, "Other CA")
	startPolicyServer(t, "127.0.1.2", other.Issue("mta-sts.bad.test")).set(enforce)
	c := mtasts.New(mtasts.Config{Resolver: r, RootCAs: ca.Pool(), Timeout: 2 * time.Second})
	t.Cleanup(c.Close)
	ctx := context.Background()

	p, err := c.Get(ctx, "bad.test")
	var me *mtasts.Error
	if p != nil || !errors.As(err, &me) || me.Type != mtasts.ResultWebPKIInvalid {
		t.Fatalf("untrusted policy host: %+v %v", p, err)
	}
	// Invalid policy text.
	d.AddA("mta-sts.invalid.test", "127.0.1.3")
	d.AddTXT("_mta-sts.invalid.test", "v=STSv1; id=a1;")
	startPolicyServer(t, "127.0.1.3", ca.Issue("mta-sts.invalid.test")).set("version: STSv1\nmode: maybe\n")
	if _, err = c.Get(ctx, "invalid.test"); !errors.As(err, &me) || me.Type != mtasts.ResultPolicyInvalid {
		t.Fatalf("invalid policy: %v", err)
	}
	// No policy host at all.
	d.AddTXT("_mta-sts.nohost.test", "v=STSv1; id=a1;")
	if _, err = c.Get(ctx, "nohost.test"); !errors.As(err, &me) || me.Type != mtasts.ResultFetchError {
		t.Fatalf("no host: %v", err)
	}
	// Two STS records or none: no policy.
	d.AddTXT("_mta-sts.two.test", "v=STSv1; id=a1;")
	d.AddTXT("_mta-sts.two.test", "v=STSv1; id=a2;")
	d.AddTXT("_mta-sts.none.test", "v=spf1 -all")
	for _, dom := range []string{"two.test", "none.test", "nxdomain.test"} {
		if p, err := c.Get(ctx, dom); p != nil || err != nil {
			t.Fatalf("%s: %+v %v", dom, p, err)
		}
	}
}

func TestConcurrentGetSharesFetch(t *testing.T) {
	t.Parallel()
	d, ca, r := setup(t)
	d.AddA("mta-sts.many.test", "127.0.1.4")
	d.AddTXT("_mta-sts.many.test", "v=STSv1; id=x;")
	ps := startPolicyServer(t, "127.0.1.4", ca.Issue("mta-sts.many.test"))
	ps.set(enforce)
	c := mtasts.New(mtasts.Config{Resolver: r, RootCAs: ca.Pool(), Timeout: 2 * time.Second})
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if p, err := c.Get(context.Background(), "many.test"); p == nil || err != nil {
				t.Errorf("Get: %+v %v", p, err)
			}
		})
	}
	wg.Wait()
	if n := ps.hits.Load(); n != 1 {
		t.Fatalf("%d fetches for 8 concurrent lookups, want 1", n)
	}
}
