package dane_test

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/delivery/dane"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

func chainOf(t *testing.T, ca *testmx.CA, names ...string) []*x509.Certificate {
	t.Helper()
	c := ca.Issue(names...)
	var out []*x509.Certificate
	for _, der := range c.Certificate {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, cert)
	}
	return out
}

func TestVerify(t *testing.T) {
	t.Parallel()
	ca := testmx.NewCA(t, "TA")
	chain := chainOf(t, ca, "mx.example.test")
	other := chainOf(t, testmx.NewCA(t, "Other"), "mx.example.test")
	now := time.Now()
	rec := func(u, s, m uint8, c *x509.Certificate) resolve.TLSA {
		return resolve.TLSA{Usage: u, Selector: s, MatchingType: m, Data: dane.Association(c, s, m)}
	}
	for _, tc := range []struct {
		name  string
		recs  []resolve.TLSA
		chain []*x509.Certificate
		host  string
		ok    bool
	}{
		{"EE spki sha256", []resolve.TLSA{rec(3, 1, 1, chain[0])}, chain, "mx.example.test", true},
		{"EE cert sha512", []resolve.TLSA{rec(3, 0, 2, chain[0])}, chain, "mx.example.test", true},
		{"EE full spki, any name", []resolve.TLSA{rec(3, 1, 0, chain[0])}, chain, "elsewhere.test", true},
		{"EE other cert", []resolve.TLSA{rec(3, 1, 1, other[0])}, chain, "mx.example.test", false},
		{"TA cert sha256", []resolve.TLSA{rec(2, 0, 1, chain[1])}, chain, "mx.example.test", true},
		{"TA spki", []resolve.TLSA{rec(2, 1, 1, chain[1])}, chain, "mx.example.test", true},
		{"TA wrong name", []resolve.TLSA{rec(2, 0, 1, chain[1])}, chain, "other.example.test", false},
		{"TA leaf only", []resolve.TLSA{rec(2, 0, 1, chain[1])}, chain[:1], "mx.example.test", false},
		{"TA not the issuer", []resolve.TLSA{rec(2, 0, 1, chain[1])}, []*x509.Certificate{other[0], chain[1]}, "mx.example.test", false},
		{"second record matches", []resolve.TLSA{rec(3, 1, 1, other[0]), rec(3, 1, 1, chain[0])}, chain, "mx.example.test", true},
	} {
		err := dane.Verify(tc.recs, tc.chain, tc.host, now)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
	if err := dane.Verify([]resolve.TLSA{rec(3, 1, 1, other[0])}, chain, "mx.example.test", now); !errors.Is(err, dane.ErrNoMatch) {
		t.Errorf("mismatch error %v", err)
	}
}

func TestUsable(t *testing.T) {
	t.Parallel()
	recs := []resolve.TLSA{
		{Usage: 0, Selector: 0, MatchingType: 1, Data: []byte{1}}, // PKIX-TA: unusable for SMTP
		{Usage: 1, Selector: 1, MatchingType: 1, Data: []byte{1}}, // PKIX-EE
		{Usage: 3, Selector: 2, MatchingType: 1, Data: []byte{1}}, // bad selector
		{Usage: 3, Selector: 1, MatchingType: 3, Data: []byte{1}}, // bad matching type
		{Usage: 3, Selector: 1, MatchingType: 1, Data: []byte{1}},
		{Usage: 2, Selector: 0, MatchingType: 0, Data: []byte{1}},
	}
	if u := dane.Usable(recs); len(u) != 2 || u[0].Usage != 3 || u[1].Usage != 2 {
		t.Fatalf("usable %v", u)
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	c, err := resolve.NewClient(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d.AddA("mx.example.test", "127.0.0.2")
	d.AddTLSA("_25._tcp.mx.example.test", 3, 1, 1, []byte{0xab, 0xcd})
	d.AddA("pkix.example.test", "127.0.0.2")
	d.AddTLSA("_25._tcp.pkix.example.test", 1, 1, 1, []byte{0xab})
	d.AddA("broken.example.test", "127.0.0.2")
	d.SetServfail("_25._tcp.broken.example.test")

	// Without the AD bit TLSA records are ignored.
	if p := dane.Lookup(ctx, c, "mx.example.test", 25); p.State != dane.None {
		t.Fatalf("without AD: %+v", p)
	}
	if p := dane.Lookup(ctx, c, "broken.example.test", 25); p.State != dane.None {
		t.Fatalf("SERVFAIL, insecure host: %+v", p)
	}
	d.SetAD(true)
	p := dane.Lookup(ctx, c, "mx.example.test", 25)
	if p.State != dane.Authenticated || len(p.Records) != 1 || p.Records[0].String() != "3 1 1 abcd" {
		t.Fatalf("with AD: %+v", p)
	}
	if p := dane.Lookup(ctx, c, "pkix.example.test", 25); p.State != dane.Unusable || len(p.All) != 1 {
		t.Fatalf("unusable: %+v", p)
	}
	if p := dane.Lookup(ctx, c, "none.example.test", 25); p.State != dane.None {
		t.Fatalf("no TLSA: %+v", p)
	}
	if p := dane.Lookup(ctx, c, "broken.example.test", 25); p.State != dane.Failed || p.Err == nil {
		t.Fatalf("SERVFAIL, secure host: %+v", p)
	}
}
