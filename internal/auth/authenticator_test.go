package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

var authT0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// users is an in-memory user directory.
type users struct {
	mu  sync.Mutex
	m   map[string]string // address -> hash
	err error             // returned by every lookup when set
}

func (u *users) GetUser(_ context.Context, addr string) (store.User, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.err != nil {
		return store.User{}, u.err
	}
	h, ok := u.m[addr]
	if !ok {
		return store.User{}, fmt.Errorf("user %s: %w", addr, store.ErrNotFound)
	}
	return store.User{Address: addr, PasswordHash: h}, nil
}

// delays records the waits an Authenticator asks for, without waiting.
type delays struct {
	mu sync.Mutex
	d  []time.Duration
}

func (r *delays) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	r.d = append(r.d, d)
	r.mu.Unlock()
	return ctx.Err()
}

func (r *delays) last() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.d) == 0 {
		return 0
	}
	return r.d[len(r.d)-1]
}

type fixture struct {
	a              *Authenticator
	clk            *clock.Fake
	users          *users
	delays         *delays
	checks, dummys atomic.Int64
}

func newFixture(t *testing.T, mutate func(*Config)) *fixture {
	t.Helper()
	f := &fixture{clk: clock.NewFake(authT0), users: &users{m: map[string]string{}}, delays: &delays{}}
	cfg := Config{
		Users: f.users, MaxFailures: 5, FailureWindow: 10 * time.Minute, Lockout: 15 * time.Minute,
		FailureDelay: time.Second, AccountDelay: time.Second, AccountMaxDelay: 15 * time.Second,
		Clock: f.clk, Sleep: f.delays.sleep, Logger: slog.New(slog.DiscardHandler),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	a, err := NewAuthenticator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check, dummy := a.check, a.dummy
	a.check = func(h, pw string) (bool, error) { f.checks.Add(1); return check(h, pw) }
	a.dummy = func() { f.dummys.Add(1); dummy() }
	f.a = a
	return f
}

// addUser stores addr with a cheap bcrypt hash of pw (or argon2id when
// real is set).
func (f *fixture) addUser(t *testing.T, addr, pw string, real bool) {
	t.Helper()
	var h string
	if real {
		var err error
		if h, err = HashPassword(pw); err != nil {
			t.Fatal(err)
		}
	} else {
		b, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		h = string(b)
	}
	f.users.mu.Lock()
	f.users.m[addr] = h
	f.users.mu.Unlock()
}

func wantReply(t *testing.T, err error, code int, enh smtp.EnhancedCode) {
	t.Helper()
	e, ok := smtp.AsError(err)
	if !ok || e.Code != code || e.Enhanced != enh {
		t.Fatalf("error %v, want %d %s", err, code, enh)
	}
}

var (
	enh578 = smtp.EnhancedCode{5, 7, 8}
	enh470 = smtp.EnhancedCode{4, 7, 0}
)

// The review's finding: parallel connections from one address each got a
// real password check because failures were counted only after it. Now
// 30 parallel guesses (real argon2id) yield at most MaxFailures checks.
func TestAuthenticatorParallelGuessesBounded(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		user string
	}{
		{"known user", "alice@example.test"},
		{"unknown user", "nobody@example.test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, nil)
			f.addUser(t, "alice@example.test", "right password", true)
			ip := netip.MustParseAddr("192.0.2.10")
			const n = 30
			outcomes := make([]Outcome, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					outcomes[i], errs[i] = f.a.Check(context.Background(), ip, tc.user, fmt.Sprintf("guess %d", i))
				}()
			}
			wg.Wait()
			rejected, locked := 0, 0
			for i, o := range outcomes {
				switch o {
				case Rejected:
					rejected++
					wantReply(t, errs[i], 535, enh578)
				case LockedOut:
					locked++
					wantReply(t, errs[i], 454, enh470)
				default:
					t.Fatalf("attempt %d: outcome %v (%v)", i, o, errs[i])
				}
			}
			if rejected != 5 || locked != n-5 {
				t.Errorf("%d rejected, %d locked out; want 5 and %d", rejected, locked, n-5)
			}
			if got := f.checks.Load() + f.dummys.Load(); got != 5 || f.a.Hashes() != 5 {
				t.Errorf("%d hash computations (Hashes %d), want 5 = max_failures", got, f.a.Hashes())
			}
			if tc.user == "nobody@example.test" && f.checks.Load() != 0 {
				t.Error("unknown user: a real check ran")
			}
			// The right password from the locked-out address is refused
			// without a check.
			o, err := f.a.Check(context.Background(), ip, "alice@example.test", "right password")
			if o != LockedOut {
				t.Fatalf("correct password while locked out: %v", o)
			}
			wantReply(t, err, 454, enh470)
			if f.a.Hashes() != 5 {
				t.Error("a locked-out attempt computed a hash")
			}
			// After the lockout the address gets its attempts again.
			f.clk.Advance(15 * time.Minute)
			if o, err := f.a.Check(context.Background(), ip, "alice@example.test", "right password"); o != Accepted {
				t.Fatalf("after the lockout: %v %v", o, err)
			}
		})
	}
}

// A client sending with many parallel sessions and the right password is
// not refused while its first attempts are in flight: the later ones wait
// and then find the verified credentials in the cache.
func TestAuthenticatorParallelCorrectLogins(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addUser(t, "app@example.test", "s3cret", true)
	ip := netip.MustParseAddr("2001:db8:5::1")
	const n = 12
	outcomes := make([]Outcome, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outcomes[i], _ = f.a.Check(context.Background(), ip, "App@Example.test", "s3cret")
		}()
	}
	wg.Wait()
	for i, o := range outcomes {
		if !o.OK() {
			t.Errorf("login %d: %v", i, o)
		}
	}
	if f.checks.Load() > 5 {
		t.Errorf("%d real checks for one set of credentials, want at most 5", f.checks.Load())
	}
	if len(f.delays.d) != 0 {
		t.Errorf("right password in parallel delayed %v", f.delays.d)
	}
	if o, _ := f.a.Check(context.Background(), ip, "app@example.test", "s3cret"); o != AcceptedCached {
		t.Errorf("repeat login: %v, want accepted_cached", o)
	}
}

// Guessing at one account from many addresses slows that account down,
// growing and capped, but never refuses it: the owner, from a fresh
// address and with the right password, gets in.
func TestAuthenticatorAccountSlowdown(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addUser(t, "victim@example.test", "the password", false)
	ctx := context.Background()
	var got []time.Duration
	for i := range 12 {
		ip := netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)})
		before := len(f.delays.d)
		o, err := f.a.Check(ctx, ip, "victim@example.test", "guess")
		if o != Rejected {
			t.Fatalf("guess %d from a fresh address: %v %v", i, o, err)
		}
		d := time.Duration(0)
		if len(f.delays.d) > before {
			d = f.delays.last()
		}
		got = append(got, d)
	}
	s := time.Second
	want := []time.Duration{0, 0, 0, 0, 0, s, 2 * s, 4 * s, 8 * s, 15 * s, 15 * s, 15 * s}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delays before each guess %v, want %v", got, want)
	}
	// The owner from a fresh address: slowed down, accepted.
	o, err := f.a.Check(ctx, netip.MustParseAddr("203.0.113.5"), "victim@example.test", "the password")
	if o != Accepted || err != nil {
		t.Fatalf("owner refused: %v %v", o, err)
	}
	if d := f.delays.last(); d != 15*time.Second {
		t.Errorf("owner waited %v, want the cap 15s", d)
	}
	// So is an address that took part (one failure is far from a lockout).
	if o, err := f.a.Check(ctx, netip.AddrFrom4([4]byte{198, 51, 100, 1}), "victim@example.test", "the password"); !o.OK() {
		t.Fatalf("owner from a guessing address: %v %v", o, err)
	}
	// Other accounts are not slowed down.
	f.addUser(t, "other@example.test", "pw", false)
	before := len(f.delays.d)
	if o, _ := f.a.Check(ctx, netip.MustParseAddr("203.0.113.6"), "other@example.test", "pw"); o != Accepted {
		t.Fatalf("other account: %v", o)
	}
	if len(f.delays.d) != before {
		t.Errorf("other account delayed %v", f.delays.last())
	}
	// The count ends with the window.
	f.clk.Advance(10 * time.Minute)
	before = len(f.delays.d)
	if o, _ := f.a.Check(ctx, netip.MustParseAddr("203.0.113.7"), "victim@example.test", "guess"); o != Rejected {
		t.Fatal("guess after the window not rejected")
	}
	if len(f.delays.d) != before {
		t.Errorf("delay %v after the window", f.delays.last())
	}
}

// Unknown users count like wrong passwords, at the same cost.
func TestAuthenticatorUnknownUserCounts(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	ip := netip.MustParseAddr("192.0.2.20")
	for i := range 5 {
		o, err := f.a.Check(context.Background(), ip, fmt.Sprintf("u%d@example.test", i), "x")
		if o != Rejected {
			t.Fatalf("unknown user %d: %v", i, o)
		}
		wantReply(t, err, 535, enh578)
	}
	if f.dummys.Load() != 5 || f.checks.Load() != 0 {
		t.Errorf("dummy checks %d, real %d; want 5, 0", f.dummys.Load(), f.checks.Load())
	}
	if o, _ := f.a.Check(context.Background(), ip, "u9@example.test", "x"); o != LockedOut {
		t.Errorf("sixth unknown user: %v, want locked_out", o)
	}
	// An overlong name is an unknown user, not looked up.
	o, _ := f.a.Check(context.Background(), netip.MustParseAddr("192.0.2.21"), strings.Repeat("a", 5000), "x")
	if o != Rejected || f.dummys.Load() != 6 {
		t.Errorf("overlong name: %v, dummy checks %d", o, f.dummys.Load())
	}
}

// A corrupt stored hash is a failure at the cost of a real check, logged.
func TestAuthenticatorBadStoredHash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.users.m["broken@example.test"] = "$argon2id$v=19$m=1,t=1,p=1$bad$bad"
	o, err := f.a.Check(context.Background(), netip.MustParseAddr("192.0.2.60"), "broken@example.test", "pw")
	if o != Rejected {
		t.Fatalf("outcome %v", o)
	}
	wantReply(t, err, 535, enh578)
	if f.dummys.Load() != 1 {
		t.Errorf("%d dummy checks, want 1 (same cost as a wrong password)", f.dummys.Load())
	}
}

// A success does not erase the address's failures: knowing one password
// must not reset the count between guesses at other accounts.
func TestAuthenticatorSuccessKeepsFailures(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addUser(t, "mine@example.test", "mine", false)
	f.addUser(t, "theirs@example.test", "theirs", false)
	ip := netip.MustParseAddr("2001:db8:7:7::1")
	ctx := context.Background()
	guess := 0
	for _, n := range []int{2, 2, 1} {
		for range n {
			guess++
			if o, _ := f.a.Check(ctx, ip, "theirs@example.test", fmt.Sprint("guess", guess)); o != Rejected {
				t.Fatalf("guess %d: %v", guess, o)
			}
		}
		if guess < 5 {
			if o, _ := f.a.Check(ctx, ip, "mine@example.test", "mine"); !o.OK() {
				t.Fatalf("own login after %d guesses: %v", guess, o)
			}
		}
	}
	// Had the successes reset the count, the fifth failure would not lock
	// the /64.
	if o, _ := f.a.Check(ctx, netip.MustParseAddr("2001:db8:7:7::2"), "mine@example.test", "mine"); o != LockedOut {
		t.Errorf("after 5 failures around own logins: %v, want locked_out", o)
	}
	if f.checks.Load() != 5+1 {
		t.Errorf("%d checks, want 6 (5 guesses, 1 own login, 1 from the cache)", f.checks.Load())
	}
}

// A failing directory answers 454 4.7.0 and counts nothing.
func TestAuthenticatorLookupFailure(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.users.err = errors.New("database is locked")
	ip := netip.MustParseAddr("192.0.2.30")
	for range 10 {
		o, err := f.a.Check(context.Background(), ip, "alice@example.test", "pw")
		if o != Unavailable {
			t.Fatalf("outcome %v, want unavailable", o)
		}
		wantReply(t, err, 454, enh470)
	}
	if f.a.Hashes() != 0 {
		t.Error("a hash was computed without a user")
	}
	f.users.err = nil
	f.addUser(t, "alice@example.test", "pw", false)
	if o, _ := f.a.Check(context.Background(), ip, "alice@example.test", "pw"); o != Accepted {
		t.Errorf("after the directory recovered: %v (lookup failures counted?)", o)
	}
}

// A client that goes away while waiting is neither checked nor counted.
func TestAuthenticatorAbandoned(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addUser(t, "alice@example.test", "pw", false)
	ip := netip.MustParseAddr("192.0.2.40")
	for i := range 4 {
		if o, _ := f.a.Check(context.Background(), ip, "alice@example.test", fmt.Sprint("bad", i)); o != Rejected {
			t.Fatal("guess not rejected")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if o, err := f.a.Check(ctx, ip, "alice@example.test", "bad"); o != Abandoned || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled check: %v %v", o, err)
	}
	if f.a.Hashes() != 4 {
		t.Errorf("%d hashes, want 4", f.a.Hashes())
	}
	if o, _ := f.a.Check(context.Background(), ip, "alice@example.test", "pw"); o != Accepted {
		t.Errorf("abandoned attempt was counted: %v", o)
	}
}

// The cache skips the hash for repeated credentials and forgets them when
// the stored hash changes.
func TestAuthenticatorCache(t *testing.T) {
	t.Parallel()
	f := newFixture(t, nil)
	f.addUser(t, "alice@example.test", "pw1", false)
	ip := netip.MustParseAddr("192.0.2.50")
	ctx := context.Background()
	if o, _ := f.a.Check(ctx, ip, "alice@example.test", "pw1"); o != Accepted {
		t.Fatal(o)
	}
	if o, _ := f.a.Check(ctx, ip, "ALICE@example.test", "pw1"); o != AcceptedCached {
		t.Fatalf("repeat: %v", o)
	}
	if o, _ := f.a.Check(ctx, ip, "alice@example.test", "pw2"); o != Rejected {
		t.Fatalf("other password: %v", o)
	}
	f.addUser(t, "alice@example.test", "pw2", false)
	if o, _ := f.a.Check(ctx, ip, "alice@example.test", "pw1"); o != Rejected {
		t.Fatalf("old password after a change: %v", o)
	}
	f.clk.Advance(5 * time.Minute)
	if o, _ := f.a.Check(ctx, ip, "alice@example.test", "pw2"); o != Accepted {
		t.Fatalf("new password: %v", o)
	}
	if f.checks.Load() != 4 {
		t.Errorf("%d checks, want 4", f.checks.Load())
	}
}
