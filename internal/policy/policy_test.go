package policy_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/heraldmail/herald/internal/local"
	"github.com/heraldmail/herald/internal/policy"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

func setup(t *testing.T, allow ...string) *policy.Policy {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ctx := context.Background()
	for _, d := range []string{"example.com", "other.org"} {
		if err := st.AddDomain(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	for _, u := range []store.User{
		{Address: "alice@example.com"},
		{Address: "bob@other.org", SendAs: []string{"other.org", "news.example.com", "ceo@example.com"}},
	} {
		if err := st.AddUser(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddAlias(ctx, store.Alias{Address: "team@example.com", Targets: []string{"alice@example.com"}}); err != nil {
		t.Fatal(err)
	}
	p := &policy.Policy{Dir: st, Exists: func(ctx context.Context, a string) (bool, error) { return local.Exists(ctx, st, a) }}
	for _, a := range allow {
		p.RelayAllow = append(p.RelayAllow, netip.MustParsePrefix(a))
	}
	return p
}

func code(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := smtp.AsError(err); ok {
		return e.Enhanced.String()
	}
	return err.Error()
}

func TestRecipient(t *testing.T) {
	p := setup(t, "192.0.2.0/24")
	ctx := context.Background()
	anon := policy.Client{IP: netip.MustParseAddr("198.51.100.7")}
	allowed := policy.Client{IP: netip.MustParseAddr("::ffff:192.0.2.9")}
	user := policy.Client{IP: anon.IP, AuthUser: "alice@example.com"}
	for _, tc := range []struct {
		c    policy.Client
		rcpt string
		want string
	}{
		{anon, "alice@example.com", "ok"},
		{anon, "ALICE@Example.COM", "ok"},
		{anon, "team@example.com", "ok"},
		{anon, "nobody@example.com", "5.1.1"},
		{anon, "someone@remote.test", "5.7.1"},
		{allowed, "someone@remote.test", "ok"},
		{user, "someone@remote.test", "ok"},
		{anon, "bad..addr@remote.test", "5.1.3"},
	} {
		if got := code(p.CheckRecipient(ctx, tc.c, tc.rcpt)); got != tc.want {
			t.Errorf("%v -> %s: %s, want %s", tc.c, tc.rcpt, got, tc.want)
		}
	}
}

func TestSender(t *testing.T) {
	p := setup(t)
	ctx := context.Background()
	ip := netip.MustParseAddr("198.51.100.7")
	alice := policy.Client{IP: ip, AuthUser: "alice@example.com"}
	bob := policy.Client{IP: ip, AuthUser: "bob@other.org"}
	for _, tc := range []struct {
		c      policy.Client
		sender string
		want   string
	}{
		{alice, "alice@example.com", "ok"},
		{alice, "anything@EXAMPLE.com", "ok"},
		{alice, "bob@other.org", "5.7.1"},
		{alice, "alice@sub.example.com", "5.7.1"},
		{alice, "", "ok"},
		{bob, "x@news.example.com", "ok"},
		{bob, "ceo@example.com", "ok"},
		{bob, "cfo@example.com", "5.7.1"},
		{policy.Client{IP: ip}, "whoever@example.com", "ok"}, // unauthenticated: SPF/DMARC judge
	} {
		if got := code(p.CheckSender(ctx, tc.c, tc.sender)); got != tc.want {
			t.Errorf("%s as %q: %s, want %s", tc.c.AuthUser, tc.sender, got, tc.want)
		}
	}
}
