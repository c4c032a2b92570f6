package alias

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

// fakeDir is an in-memory Directory. Keys are lower-case, as the store keeps them.
type fakeDir struct {
	domains map[string]bool
	users   map[string]bool
	aliases map[string][]string
	fail    error // returned by every lookup when set
}

func (d *fakeDir) GetAlias(_ context.Context, a string) (store.Alias, error) {
	if d.fail != nil {
		return store.Alias{}, d.fail
	}
	if t, ok := d.aliases[a]; ok {
		return store.Alias{Address: a, Targets: t}, nil
	}
	return store.Alias{}, store.ErrNotFound
}

func (d *fakeDir) GetUser(_ context.Context, a string) (store.User, error) {
	if d.fail != nil {
		return store.User{}, d.fail
	}
	if d.users[a] {
		return store.User{Address: a}, nil
	}
	return store.User{}, fmt.Errorf("user %q: %w", a, store.ErrNotFound)
}

func (d *fakeDir) IsLocalDomain(_ context.Context, dom string) (bool, error) {
	return d.domains[dom], nil
}

func newFakeDir() *fakeDir {
	return &fakeDir{
		domains: map[string]bool{"example.com": true, "example.org": true, "xn--bcher-kva.example": true},
		users: map[string]bool{
			"alice@example.com": true, "bob@example.com": true, "carol@example.org": true,
			"jörg@xn--bcher-kva.example": true,
		},
		aliases: map[string][]string{
			"postmaster@example.com": {"alice@example.com"},
			"team@example.com":       {"Alice@Example.COM", "sales@example.com", "Dave@Elsewhere.NET", "alice@example.com"},
			"sales@example.com":      {"bob@example.com", "carol@EXAMPLE.org"},
			"bob@example.com":        {"bob@example.com", "bob@remote.test"}, // keep a copy and forward
			"loop1@example.com":      {"loop2@example.com"},
			"loop2@example.com":      {"loop1@example.com", "alice@example.com"},
			"onlyloop1@example.com":  {"onlyloop2@example.com"},
			"onlyloop2@example.com":  {"onlyloop1@example.com"},
			"@example.org":           {"carol@example.org", "nobody@example.org"},
			"stale@example.com":      {"ghost@example.com", "alice@example.com"},
			"ghosts@example.com":     {"ghost@example.com"},
		},
	}
}

func TestExpand(t *testing.T) {
	t.Parallel()
	dir := newFakeDir()
	// A chain of 12 aliases, deeper than MaxAliasDepth.
	for i := range 12 {
		dir.aliases[fmt.Sprintf("deep%d@example.com", i)] = []string{fmt.Sprintf("deep%d@example.com", i+1)}
	}
	dir.aliases["deep12@example.com"] = []string{"alice@example.com"}
	// A chain of exactly MaxAliasDepth aliases works.
	for i := range MaxAliasDepth - 1 {
		dir.aliases[fmt.Sprintf("ok%d@example.com", i)] = []string{fmt.Sprintf("ok%d@example.com", i+1)}
	}
	dir.aliases[fmt.Sprintf("ok%d@example.com", MaxAliasDepth-1)] = []string{"alice@example.com"}

	ctx := context.Background()
	tests := []struct {
		addr    string
		want    []string
		wantErr error
	}{
		{"alice@example.com", []string{"alice@example.com"}, nil},
		{"ALICE@Example.Com", []string{"alice@example.com"}, nil},
		{"postmaster@example.com", []string{"alice@example.com"}, nil},
		{"bob@example.com", []string{"bob@example.com", "bob@remote.test"}, nil},
		{"team@example.com", []string{"alice@example.com", "bob@example.com", "bob@remote.test", "carol@example.org", "Dave@Elsewhere.NET"}, nil},
		{"loop1@example.com", []string{"alice@example.com"}, nil},
		{"onlyloop1@example.com", nil, store.ErrNotFound},
		{"anything@example.org", []string{"carol@example.org"}, nil},
		{"carol@example.org", []string{"carol@example.org"}, nil},
		{"stale@example.com", []string{"alice@example.com"}, nil},
		{"ghosts@example.com", nil, store.ErrNotFound},
		{"unknown@example.com", nil, store.ErrNotFound},
		{"noat", nil, store.ErrNotFound},
		{"jörg@bücher.example", []string{"jörg@xn--bcher-kva.example"}, nil},
		{"deep0@example.com", nil, ErrAliasDepth},
		{"ok0@example.com", []string{"alice@example.com"}, nil},
	}
	for _, tc := range tests {
		got, err := Expand(ctx, dir, tc.addr, nil)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("Expand(%q) = %v, %v; want error %v", tc.addr, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("Expand(%q) error: %v", tc.addr, err)
			continue
		}
		slices.Sort(got)
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("Expand(%q) = %q, want %q", tc.addr, got, want)
		}
	}
}

func TestExpandIsLocalOverrideAndErrors(t *testing.T) {
	t.Parallel()
	dir := newFakeDir()
	// With an isLocal saying example.org is remote, sales' carol is relayed as written.
	got, err := Expand(context.Background(), dir, "sales@example.com", func(d string) bool { return d == "example.com" })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"bob@example.com", "bob@remote.test", "carol@EXAMPLE.org"}; !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	boom := errors.New("database down")
	dir.fail = boom
	if _, err := Expand(context.Background(), dir, "alice@example.com", nil); !errors.Is(err, boom) {
		t.Fatalf("lookup failure: err = %v, want %v", err, boom)
	}
	if _, err := Exists(context.Background(), dir, "alice@example.com"); !errors.Is(err, boom) {
		t.Fatalf("Exists lookup failure: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dir.fail = nil
	if _, err := Expand(ctx, dir, "alice@example.com", nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("canceled: err = %v", err)
	}
}

func TestExists(t *testing.T) {
	t.Parallel()
	dir := newFakeDir()
	for addr, want := range map[string]bool{
		"alice@example.com":      true,
		"POSTMASTER@example.COM": true,
		"whoever@example.org":    true, // catch-all
		"whoever@example.com":    false,
		"bad":                    false,
	} {
		got, err := Exists(context.Background(), dir, addr)
		if err != nil || got != want {
			t.Errorf("Exists(%q) = %v, %v; want %v", addr, got, err, want)
		}
	}
}
