package resolve_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func newClient(t *testing.T, dns *testdns.Server) resolve.Resolver {
	t.Helper()
	r, err := resolve.New(dns.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookupMXSortedAndNull(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.AddMX("example.org", "MX2.example.org", 20)
	d.AddMX("example.org", "mx1.example.org", 10)
	d.AddMX("example.org", "mx3.example.org", 30)
	d.SetNullMX("null.example")
	r := newClient(t, d)
	ctx := context.Background()

	mxs, err := r.LookupMX(ctx, "Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	want := []resolve.MX{{"mx1.example.org", 10}, {"mx2.example.org", 20}, {"mx3.example.org", 30}}
	if !slices.Equal(mxs, want) {
		t.Fatalf("LookupMX = %v, want %v", mxs, want)
	}

	mxs, err = r.LookupMX(ctx, "null.example")
	if err != nil {
		t.Fatal(err)
	}
	if len(mxs) != 1 || mxs[0].Host != "" {
		t.Fatalf("null MX = %v, want one MX with empty host", mxs)
	}
}

func TestNotFoundAndTemporary(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.AddA("a-only.example", "192.0.2.1")
	d.SetServfail("broken.example")
	r := newClient(t, d)
	ctx := context.Background()

	if _, err := r.LookupMX(ctx, "nope.example"); !errors.Is(err, resolve.ErrNotFound) {
		t.Errorf("NXDOMAIN: err = %v, want ErrNotFound", err)
	}
	if _, err := r.LookupMX(ctx, "a-only.example"); !errors.Is(err, resolve.ErrNotFound) {
		t.Errorf("NODATA: err = %v, want ErrNotFound", err)
	}
	_, err := r.LookupMX(ctx, "broken.example")
	if !errors.Is(err, resolve.ErrTemporary) || errors.Is(err, resolve.ErrNotFound) {
		t.Errorf("SERVFAIL: err = %v, want ErrTemporary only", err)
	}
	if !strings.Contains(err.Error(), "broken.example") {
		t.Errorf("SERVFAIL error %q lacks the name asked", err)
	}
	if _, err := r.LookupIP(ctx, "broken.example"); !errors.Is(err, resolve.ErrTemporary) {
		t.Errorf("SERVFAIL IP: err = %v, want ErrTemporary", err)
	}
}

func TestTimeoutIsTemporary(t *testing.T) {
	t.Parallel()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0") // never answers
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	r, err := resolve.New(pc.LocalAddr().String(), 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = r.LookupMX(context.Background(), "example.org")
	if !errors.Is(err, resolve.ErrTemporary) {
		t.Fatalf("err = %v, want ErrTemporary", err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("timeout took %v", el)
	}
}

func TestLookupIPBothFamiliesAndCNAME(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.AddA("host.example", "192.0.2.7")
	d.AddAAAA("host.example", "2001:db8::7")
	d.AddCNAME("alias.example", "host.example")
	d.AddCNAME("far.example", "elsewhere.example") // answer stops at the CNAME
	d.AddA("elsewhere.example", "192.0.2.9")
	d.Add("mx.example. 60 IN MX 5 alias.example.")
	r := newClient(t, d)
	ctx := context.Background()

	want := []netip.Addr{netip.MustParseAddr("192.0.2.7"), netip.MustParseAddr("2001:db8::7")}
	for _, name := range []string{"host.example", "alias.example"} {
		ips, err := r.LookupIP(ctx, name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !slices.Equal(ips, want) {
			t.Fatalf("LookupIP(%s) = %v, want %v", name, ips, want)
		}
	}
	ips, err := r.LookupIP(ctx, "far.example")
	if err != nil || len(ips) != 1 || ips[0] != netip.MustParseAddr("192.0.2.9") {
		t.Fatalf("LookupIP(far.example) = %v, %v", ips, err)
	}
	if _, err := r.LookupIP(ctx, "missing.example"); !errors.Is(err, resolve.ErrNotFound) {
		t.Fatalf("missing host: err = %v, want ErrNotFound", err)
	}
}

func TestTXTPTRAndTCPFallback(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.AddTXT("example.org", "v=spf1 ", "-all")
	big := strings.Repeat("x", 250)
	for range 30 { // ~7.5 KB: truncated over UDP, retried over TCP
		d.AddTXT("big.example", big)
	}
	d.AddPTR("192.0.2.5", "Mail.Example.ORG")
	r := newClient(t, d)
	ctx := context.Background()

	txt, err := r.LookupTXT(ctx, "example.org")
	if err != nil || !slices.Equal(txt, []string{"v=spf1 -all"}) {
		t.Fatalf("LookupTXT = %q, %v", txt, err)
	}
	txt, err = r.LookupTXT(ctx, "big.example")
	if err != nil || len(txt) != 30 || txt[0] != big {
		t.Fatalf("big TXT: %d records, %v", len(txt), err)
	}
	names, err := r.LookupPTR(ctx, netip.MustParseAddr("192.0.2.5"))
	if err != nil || !slices.Equal(names, []string{"mail.example.org"}) {
		t.Fatalf("LookupPTR = %v, %v", names, err)
	}
}

func TestNewDefaultAndBadServer(t *testing.T) {
	t.Parallel()
	if _, err := resolve.New("no-port", time.Second); err == nil {
		t.Fatal("New accepted a server without a port")
	}
}
