package resolve_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func TestLookupTTL(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.Add("2.0.0.127.zen.test. 120 IN A 127.0.0.2")
	d.Add("2.0.0.127.zen.test. 60 IN A 127.0.0.4")
	d.Add("2.0.0.127.zen.test. 900 IN TXT \"listed\"")
	d.SetSOA("zen.test", 3600, 300)
	d.SetSOA("other.test", 30, 300)
	c, err := resolve.NewClient(d.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := c.LookupATTL(ctx, "2.0.0.127.zen.test")
	if err != nil || a.TTL != 60*time.Second || !slices.Equal(a.Addrs, []netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.4")}) {
		t.Errorf("A: %+v, %v; want both addresses, the smaller TTL 60s", a, err)
	}
	txt, err := c.LookupTXTTTL(ctx, "2.0.0.127.zen.test")
	if err != nil || txt.TTL != 900*time.Second || !slices.Equal(txt.TXT, []string{"listed"}) {
		t.Errorf("TXT: %+v, %v", txt, err)
	}
	// NXDOMAIN: the SOA's MINIMUM, or its TTL when smaller (RFC 2308 §5).
	if a, err := c.LookupATTL(ctx, "9.0.0.127.zen.test"); !errors.Is(err, resolve.ErrNotFound) || a.TTL != 300*time.Second {
		t.Errorf("NXDOMAIN: %+v, %v; want ErrNotFound with TTL 300s", a, err)
	}
	if a, err := c.LookupATTL(ctx, "9.0.0.127.other.test"); !errors.Is(err, resolve.ErrNotFound) || a.TTL != 30*time.Second {
		t.Errorf("NXDOMAIN: %+v, %v; want ErrNotFound with TTL 30s", a, err)
	}
	// NODATA (a name with a TXT record but no A) is not found too.
	d.Add("3.0.0.127.zen.test. 900 IN TXT \"only text\"")
	if a, err := c.LookupATTL(ctx, "3.0.0.127.zen.test"); !errors.Is(err, resolve.ErrNotFound) || a.TTL != 300*time.Second {
		t.Errorf("NODATA: %+v, %v", a, err)
	}
	d.SetServfail("4.0.0.127.zen.test")
	if _, err := c.LookupATTL(ctx, "4.0.0.127.zen.test"); !errors.Is(err, resolve.ErrTemporary) {
		t.Errorf("SERVFAIL: %v, want ErrTemporary", err)
	}
}
