package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// acmeTests is the part of the suite for store.ACMEStore on one node;
// acmeNodeTests covers two.
var acmeTests = []test{
	{"Certificates", testACMECertificates},
	{"OrderClaims", testACMEOrderClaims},
	{"Challenges", testACMEChallenges},
}

var acmeNodeTests = []nodeTest{
	{"ACMEOneOrder", testNodesACMEOneOrder},
}

func testACMECertificates(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.ACMECertificate(ctx, "mail.example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ACMECertificate of nothing: %v, want ErrNotFound", err)
	}
	c := store.ACMECertificate{Name: "Mail.Example.org", CertPEM: []byte("cert 1"), KeyPEM: []byte("key 1"),
		NotBefore: base, NotAfter: base.Add(90 * 24 * time.Hour), Updated: base}
	if err := s.PutACMECertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := s.ACMECertificate(ctx, "mail.example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "mail.example.org" || string(got.CertPEM) != "cert 1" || string(got.KeyPEM) != "key 1" ||
		!got.NotBefore.Equal(c.NotBefore) || !got.NotAfter.Equal(c.NotAfter) || !got.Updated.Equal(c.Updated) {
		t.Fatalf("got %+v, want %+v (name lower-case)", got, c)
	}
	c.CertPEM, c.KeyPEM, c.NotAfter = []byte("cert 2"), []byte("key 2"), base.Add(180*24*time.Hour)
	if err := s.PutACMECertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got, err = s.ACMECertificate(ctx, "mail.example.org"); err != nil || string(got.CertPEM) != "cert 2" ||
		string(got.KeyPEM) != "key 2" || !got.NotAfter.Equal(c.NotAfter) {
		t.Fatalf("after replacing: %+v, %v", got, err)
	}
	if _, err := s.ACMECertificate(ctx, "mta-sts.example.org"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("another name: %v, want ErrNotFound", err)
	}
	if err := s.PutACMECertificate(ctx, store.ACMECertificate{Name: "x.example.org"}); err == nil {
		t.Fatal("a certificate without PEM was stored")
	}
}

func testACMEOrderClaims(t *testing.T, s store.Store) {
	ctx := context.Background()
	tok, err := s.ClaimACMEOrder(ctx, "mail.example.org", base, base.Add(time.Minute))
	if err != nil || tok == "" {
		t.Fatalf("first claim: %q, %v", tok, err)
	}
	if tok2, err := s.ClaimACMEOrder(ctx, "MAIL.example.org", base.Add(30*time.Second), base.Add(2*time.Minute)); err != nil || tok2 != "" {
		t.Fatalf("claim while held: %q, %v; want none", tok2, err)
	}
	if tok2, err := s.ClaimACMEOrder(ctx, "mta-sts.example.org", base, base.Add(time.Minute)); err != nil || tok2 == "" {
		t.Fatalf("claim of another name: %q, %v", tok2, err)
	}
	// A claim that ran out is taken over; the old token no longer releases it.
	tok3, err := s.ClaimACMEOrder(ctx, "mail.example.org", base.Add(time.Minute), base.Add(2*time.Minute))
	if err != nil || tok3 == "" || tok3 == tok {
		t.Fatalf("claim after expiry: %q, %v", tok3, err)
	}
	if err := s.ReleaseACMEOrder(ctx, "mail.example.org", tok); err != nil {
		t.Fatal(err)
	}
	if tok4, err := s.ClaimACMEOrder(ctx, "mail.example.org", base.Add(90*time.Second), base.Add(3*time.Minute)); err != nil || tok4 != "" {
		t.Fatalf("stale token released the new claim: %q, %v", tok4, err)
	}
	if err := s.ReleaseACMEOrder(ctx, "mail.example.org", tok3); err != nil {
		t.Fatal(err)
	}
	if tok5, err := s.ClaimACMEOrder(ctx, "mail.example.org", base.Add(90*time.Second), base.Add(3*time.Minute)); err != nil || tok5 == "" {
		t.Fatalf("claim after release: %q, %v", tok5, err)
	}
}

func testACMEChallenges(t *testing.T, s store.Store) {
	ctx := context.Background()
	if _, err := s.ACMEChallenge(ctx, "http-01/abc", base); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no challenge: %v", err)
	}
	if err := s.PutACMEChallenge(ctx, "http-01/abc", []byte("abc.thumb"), base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := s.PutACMEChallenge(ctx, "http-01/old", []byte("old"), base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if v, err := s.ACMEChallenge(ctx, "http-01/abc", base); err != nil || string(v) != "abc.thumb" {
		t.Fatalf("challenge: %q, %v", v, err)
	}
	if _, err := s.ACMEChallenge(ctx, "http-01/old", base.Add(time.Minute)); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired challenge: %v, want ErrNotFound", err)
	}
	if err := s.PutACMEChallenge(ctx, "http-01/abc", []byte("new"), base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if v, err := s.ACMEChallenge(ctx, "http-01/abc", base); err != nil || string(v) != "new" {
		t.Fatalf("replaced challenge: %q, %v", v, err)
	}
	if err := s.DeleteACMEChallenge(ctx, "http-01/abc", base); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ACMEChallenge(ctx, "http-01/abc", base); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted challenge: %v", err)
	}
	if v, err := s.ACMEChallenge(ctx, "http-01/old", base); err != nil || string(v) != "old" {
		t.Fatalf("unexpired challenge deleted with another: %q, %v", v, err)
	}
}

// testNodesACMEOneOrder: nodes racing for one name's order get one claim,
// and a certificate one node stores is the one the other reads.
func testNodesACMEOneOrder(t *testing.T, s store.Store, open func(node string) store.Store) {
	ctx := context.Background()
	nodes := []store.Store{s, open("n2"), open("n3")}
	var mu sync.Mutex
	var wg sync.WaitGroup
	won := 0
	for _, n := range nodes {
		for range 4 {
			wg.Go(func() {
				tok, err := n.ClaimACMEOrder(ctx, "mail.example.org", base, base.Add(time.Minute))
				if err != nil {
					t.Error(err)
				}
				if tok != "" {
					mu.Lock()
					won++
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if won != 1 {
		t.Fatalf("%d claims granted, want 1", won)
	}
	c := store.ACMECertificate{Name: "mail.example.org", CertPEM: []byte("chain"), KeyPEM: []byte("key"), NotBefore: base, NotAfter: base.Add(time.Hour), Updated: base}
	if err := nodes[1].PutACMECertificate(ctx, c); err != nil {
		t.Fatal(err)
	}
	got, err := nodes[2].ACMECertificate(ctx, "mail.example.org")
	if err != nil || !bytes.Equal(got.CertPEM, c.CertPEM) {
		t.Fatalf("other node reads %+v, %v", got, err)
	}
}
