package storetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

// dkimTests is the part of the suite for store.DKIMKeys.
var dkimTests = []test{
	{"AddGetList", testDKIMAddGetList},
	{"ActivePerAlgorithm", testDKIMActivePerAlgorithm},
	{"AddActiveReplaces", testDKIMAddActiveReplaces},
	{"DeactivateDelete", testDKIMDeactivateDelete},
	{"ConcurrentActivate", testDKIMConcurrentActivate},
}

func dkimKey(domain, selector, algo string, active bool) store.DKIMKey {
	return store.DKIMKey{
		Domain: domain, Selector: selector, Algorithm: algo, Active: active, Created: base,
		PrivateKey: []byte("-----BEGIN PRIVATE KEY-----\n" + selector + "\n-----END PRIVATE KEY-----\n"),
	}
}

func mustAddDKIM(t *testing.T, s store.Store, k store.DKIMKey) {
	t.Helper()
	if err := s.AddDKIMKey(context.Background(), k); err != nil {
		t.Fatalf("AddDKIMKey(%s, %s): %v", k.Domain, k.Selector, err)
	}
}

// activeSelectors returns "algorithm:selector" of the active keys of domain.
func activeSelectors(t *testing.T, s store.Store, domain string) string {
	t.Helper()
	ks, err := s.ActiveDKIMKeys(context.Background(), domain)
	if err != nil {
		t.Fatalf("ActiveDKIMKeys(%s): %v", domain, err)
	}
	var out []string
	for _, k := range ks {
		if !k.Active || k.Domain != domain {
			t.Errorf("ActiveDKIMKeys(%s) returned %+v", domain, k)
		}
		out = append(out, k.Algorithm+":"+k.Selector)
	}
	return fmt.Sprint(out)
}

func testDKIMAddGetList(t *testing.T, s store.Store) {
	ctx := context.Background()
	k := dkimKey("Example.COM", "s1", store.DKIMAlgorithmRSA, false)
	mustAddDKIM(t, s, k)
	if err := s.AddDKIMKey(ctx, dkimKey("example.com", "s1", store.DKIMAlgorithmEd25519, false)); !errors.Is(err, store.ErrExists) {
		t.Errorf("AddDKIMKey again: err = %v, want ErrExists", err)
	}
	if err := s.AddDKIMKey(ctx, dkimKey("example.com", "s9", "dsa", false)); err == nil {
		t.Error("AddDKIMKey with algorithm dsa succeeded")
	}
	mustAddDKIM(t, s, dkimKey("b.example", "s0", store.DKIMAlgorithmEd25519, false))
	mustAddDKIM(t, s, dkimKey("example.com", "a1", store.DKIMAlgorithmEd25519, false))

	got, err := s.GetDKIMKey(ctx, "EXAMPLE.com", "s1")
	if err != nil {
		t.Fatal(err)
	}
	if got.Domain != "example.com" || got.Selector != "s1" || got.Algorithm != store.DKIMAlgorithmRSA ||
		got.Active || !got.Created.Equal(base) || !bytes.Equal(got.PrivateKey, k.PrivateKey) {
		t.Errorf("GetDKIMKey = %+v", got)
	}
	_, err = s.GetDKIMKey(ctx, "example.com", "nope")
	expectNotFound(t, "GetDKIMKey unknown", err)

	names := func(ks []store.DKIMKey) string {
		var l []string
		for _, k := range ks {
			l = append(l, k.Domain+"/"+k.Selector)
		}
		return fmt.Sprint(l)
	}
	all, err := s.ListDKIMKeys(ctx, "")
	if err != nil || names(all) != "[b.example/s0 example.com/a1 example.com/s1]" {
		t.Errorf("ListDKIMKeys(all) = %v, %v", names(all), err)
	}
	one, err := s.ListDKIMKeys(ctx, "Example.com")
	if err != nil || names(one) != "[example.com/a1 example.com/s1]" {
		t.Errorf("ListDKIMKeys(example.com) = %v, %v", names(one), err)
	}
	none, err := s.ListDKIMKeys(ctx, "other.example")
	if err != nil || len(none) != 0 {
		t.Errorf("ListDKIMKeys(other) = %v, %v", names(none), err)
	}
	if a := activeSelectors(t, s, "example.com"); a != "[]" {
		t.Errorf("active keys before activation = %s", a)
	}
}

func testDKIMActivePerAlgorithm(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustAddDKIM(t, s, dkimKey("example.com", "r1", store.DKIMAlgorithmRSA, false))
	mustAddDKIM(t, s, dkimKey("example.com", "r2", store.DKIMAlgorithmRSA, false))
	mustAddDKIM(t, s, dkimKey("example.com", "e1", store.DKIMAlgorithmEd25519, false))
	mustAddDKIM(t, s, dkimKey("other.example", "r1", store.DKIMAlgorithmRSA, true))

	for _, step := range []struct{ sel, want string }{
		{"r1", "[rsa:r1]"},
		{"e1", "[ed25519:e1 rsa:r1]"}, // dual signing
		{"r2", "[ed25519:e1 rsa:r2]"}, // r2 replaces r1, e1 untouched
		{"r2", "[ed25519:e1 rsa:r2]"}, // idempotent
	} {
		if err := s.ActivateDKIMKey(ctx, "EXAMPLE.COM", step.sel); err != nil {
			t.Fatalf("ActivateDKIMKey(%s): %v", step.sel, err)
		}
		if a := activeSelectors(t, s, "example.com"); a != step.want {
			t.Errorf("after activating %s: active = %s, want %s", step.sel, a, step.want)
		}
	}
	if k, err := s.GetDKIMKey(ctx, "example.com", "r1"); err != nil || k.Active {
		t.Errorf("replaced key r1: active=%v err=%v", k.Active, err)
	}
	// Other domains are independent.
	if a := activeSelectors(t, s, "other.example"); a != "[rsa:r1]" {
		t.Errorf("other.example active = %s", a)
	}
	expectNotFound(t, "ActivateDKIMKey unknown", s.ActivateDKIMKey(ctx, "example.com", "zz"))
}

func testDKIMAddActiveReplaces(t *testing.T, s store.Store) {
	mustAddDKIM(t, s, dkimKey("example.com", "r1", store.DKIMAlgorithmRSA, true))
	mustAddDKIM(t, s, dkimKey("example.com", "e1", store.DKIMAlgorithmEd25519, true))
	mustAddDKIM(t, s, dkimKey("example.com", "r2", store.DKIMAlgorithmRSA, true))
	if a := activeSelectors(t, s, "example.com"); a != "[ed25519:e1 rsa:r2]" {
		t.Errorf("active = %s, want [ed25519:e1 rsa:r2]", a)
	}
	// A refused duplicate changes nothing.
	if err := s.AddDKIMKey(context.Background(), dkimKey("example.com", "r1", store.DKIMAlgorithmRSA, true)); !errors.Is(err, store.ErrExists) {
		t.Errorf("duplicate AddDKIMKey: %v", err)
	}
	if a := activeSelectors(t, s, "example.com"); a != "[ed25519:e1 rsa:r2]" {
		t.Errorf("after refused duplicate: active = %s", a)
	}
}

func testDKIMDeactivateDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustAddDKIM(t, s, dkimKey("example.com", "r1", store.DKIMAlgorithmRSA, true))
	mustAddDKIM(t, s, dkimKey("example.com", "e1", store.DKIMAlgorithmEd25519, true))
	if err := s.DeactivateDKIMKey(ctx, "example.com", "r1"); err != nil {
		t.Fatal(err)
	}
	if a := activeSelectors(t, s, "example.com"); a != "[ed25519:e1]" {
		t.Errorf("after deactivate: active = %s", a)
	}
	if err := s.DeleteDKIMKey(ctx, "Example.com", "e1"); err != nil {
		t.Fatal(err)
	}
	if a := activeSelectors(t, s, "example.com"); a != "[]" {
		t.Errorf("after delete: active = %s", a)
	}
	expectNotFound(t, "DeleteDKIMKey twice", s.DeleteDKIMKey(ctx, "example.com", "e1"))
	expectNotFound(t, "DeactivateDKIMKey unknown", s.DeactivateDKIMKey(ctx, "example.com", "e1"))
	_, err := s.GetDKIMKey(ctx, "example.com", "e1")
	expectNotFound(t, "GetDKIMKey deleted", err)
	if ks, err := s.ListDKIMKeys(ctx, ""); err != nil || len(ks) != 1 || ks[0].Selector != "r1" {
		t.Errorf("ListDKIMKeys after delete = %+v, %v", ks, err)
	}
}

// Concurrent activations of keys of one algorithm leave exactly one active.
func testDKIMConcurrentActivate(t *testing.T, s store.Store) {
	ctx := context.Background()
	const n = 8
	for i := range n {
		mustAddDKIM(t, s, dkimKey("example.com", fmt.Sprintf("r%d", i), store.DKIMAlgorithmRSA, false))
	}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := s.ActivateDKIMKey(ctx, "example.com", fmt.Sprintf("r%d", i)); err != nil {
				t.Errorf("ActivateDKIMKey(r%d): %v", i, err)
			}
		})
	}
	wg.Wait()
	ks, err := s.ActiveDKIMKeys(ctx, "example.com")
	if err != nil || len(ks) != 1 {
		t.Errorf("ActiveDKIMKeys after concurrent activation = %+v, %v; want exactly one", ks, err)
	}
}
