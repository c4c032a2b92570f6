package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Users looks up the accounts that may authenticate; store.Store is one.
type Users interface {
	// GetUser returns the user whose login name is address, or an error
	// wrapping store.ErrNotFound.
	GetUser(ctx context.Context, address string) (store.User, error)
}

// Outcome says how Authenticator.Check decided, for metrics and logs.
type Outcome int

// Outcomes of Authenticator.Check.
const (
	// Accepted: the password matched the stored hash.
	Accepted Outcome = iota + 1
	// AcceptedCached: the same credentials were verified recently against
	// the same stored hash; no hash was computed.
	AcceptedCached
	// Rejected: wrong password or unknown user (535 5.7.8).
	Rejected
	// LockedOut: the client address has too many failures; nothing was
	// checked (454 4.7.0).
	LockedOut
	// Unavailable: the user could not be looked up (454 4.7.0).
	Unavailable
	// Abandoned: the context ended (the client went away) before a
	// decision; nothing was checked or counted.
	Abandoned
)

var outcomeNames = [...]string{"", "accepted", "accepted_cached", "rejected", "locked_out", "unavailable", "abandoned"}

// String returns a lower-case name usable as a metric label.
func (o Outcome) String() string {
	if o < 0 || int(o) >= len(outcomeNames) {
		return "unknown"
	}
	return outcomeNames[o]
}

// OK reports whether the credentials were accepted.
func (o Outcome) OK() bool { return o == Accepted || o == AcceptedCached }

// Replies of Check besides smtp.ErrAuthFailed (RFC 4954 §6).
var (
	errLockedOut = smtp.Error{Code: 454, Enhanced: smtp.EnhancedCode{4, 7, 0}, Message: "Too many authentication failures, try again later"}
	errTemporary = smtp.Error{Code: 454, Enhanced: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure, try again later"}
)

// maxUserLen is the longest login name looked up (RFC 5321's path limit);
// longer ones are unknown users.
const maxUserLen = 256

// Config configures an Authenticator.
type Config struct {
	// Users looks the accounts up. Required.
	Users Users
	// MaxFailures is how many failed (or unresolved) checks a client
	// address (IPv6: its /64) may have within FailureWindow before it is
	// refused for Lockout; < 1 disables the lockout.
	MaxFailures   int
	FailureWindow time.Duration
	Lockout       time.Duration
	// FailureDelay is waited, per failure of the client address in the
	// window, before a check; 0 disables it.
	FailureDelay time.Duration
	// AccountDelay is waited before a check for an account that had
	// MaxFailures failures (from any addresses) within FailureWindow,
	// doubling with each further failure up to AccountMaxDelay. It slows
	// guessing at one account from many addresses without ever refusing
	// the account's owner. 0 disables it.
	AccountDelay    time.Duration
	AccountMaxDelay time.Duration
	// HashSlots bounds concurrent hash computations (argon2id needs 19 MiB
	// each); 0 means runtime.NumCPU().
	HashSlots int
	// CacheTTL is how long a successful login is remembered (see the
	// package's cache); 0 means 5 minutes, < 0 disables the cache.
	CacheTTL time.Duration
	// CacheSize bounds the users remembered; 0 means 10,000.
	CacheSize int
	// Clock tells the time; nil means the wall clock.
	Clock clock.Clock
	// Logger receives lookup and stored-hash errors; nil means
	// slog.Default().
	Logger *slog.Logger
	// Sleep waits d or until ctx ends (returning its error); nil means a
	// timer. Tests replace it to observe the delays asked for.
	Sleep func(ctx context.Context, d time.Duration) error
}

// Authenticator checks user names and passwords for SMTP AUTH with
// brute-force protection:
//
//   - Per client address (IPv6: per /64), an attempt counts as a failure
//     from the moment it starts until its password check succeeds, so at
//     most MaxFailures checks fail per window however many connections
//     check in parallel; then the address is refused (454 4.7.0) for
//     Lockout without any check. Each attempt first waits FailureDelay per
//     failure of its address.
//   - Per account name, failures from any address slow further attempts
//     at that account down (AccountDelay, doubling, capped), but never
//     refuse them: an attacker cannot lock the owner out.
//   - Unknown users cost the same hash computation (DummyCheck) and count
//     the same as wrong passwords, so neither timing nor limits tell
//     whether an account exists.
//   - At most HashSlots hashes are computed at once, and a login that
//     repeats credentials verified in the last CacheTTL against the same
//     stored hash computes none.
//
// It is safe for concurrent use.
type Authenticator struct {
	users    Users
	ips      *ratelimit.AuthFailures
	accounts *ratelimit.AccountFailures
	cache    *cache // nil if disabled
	slots    chan struct{}
	clk      clock.Clock
	log      *slog.Logger
	sleep    func(context.Context, time.Duration) error

	// check and dummy compute hashes; tests wrap them.
	check func(hash, password string) (bool, error)
	dummy func()

	hashes atomic.Int64
}

// NewAuthenticator returns an Authenticator configured by cfg.
func NewAuthenticator(cfg Config) (*Authenticator, error) {
	if cfg.Users == nil {
		return nil, errors.New("auth: Config.Users is required")
	}
	a := &Authenticator{
		users: cfg.Users,
		clk:   cfg.Clock,
		log:   cfg.Logger,
		sleep: cfg.Sleep,
		check: CheckPassword,
		dummy: DummyCheck,
	}
	if a.clk == nil {
		a.clk = clock.Real{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.sleep == nil {
		a.sleep = sleep
	}
	n := cfg.HashSlots
	if n <= 0 {
		n = runtime.NumCPU()
	}
	a.slots = make(chan struct{}, n)
	a.ips = ratelimit.NewAuthFailures(cfg.MaxFailures, cfg.FailureWindow, cfg.Lockout, cfg.FailureDelay, a.clk)
	a.accounts = ratelimit.NewAccountFailures(cfg.MaxFailures, cfg.FailureWindow, cfg.AccountDelay, cfg.AccountMaxDelay, a.clk)
	if cfg.CacheTTL >= 0 {
		ttl, size := cfg.CacheTTL, cfg.CacheSize
		if ttl == 0 {
			ttl = 5 * time.Minute
		}
		if size <= 0 {
			size = 10_000
		}
		a.cache = newCache(ttl, size)
	}
	return a, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Check decides whether password is right for username (case-insensitive)
// when presented by the client at ip. It returns nil only for an accepted
// outcome; otherwise an *smtp.Error to send (535 5.7.8 for bad credentials,
// 454 4.7.0 for a lockout or a lookup failure) or, for Abandoned, the
// context's error. It may wait (delays, hash slots) until ctx ends.
func (a *Authenticator) Check(ctx context.Context, ip netip.Addr, username, password string) (Outcome, error) {
	user := strings.ToLower(username)
	att, wait, err := a.ips.Reserve(ctx, ip)
	switch {
	case errors.Is(err, ratelimit.ErrLockedOut):
		e := errLockedOut
		return LockedOut, &e
	case err != nil:
		return Abandoned, fmt.Errorf("auth: waiting for a check slot: %w", err)
	}
	// Until the check fails, the reservation is released on every path.
	failed := false
	defer func() {
		if !failed {
			att.Succeed()
		}
	}()

	var u store.User
	lookupErr := store.ErrNotFound
	if len(user) <= maxUserLen && user != "" {
		u, lookupErr = a.users.GetUser(ctx, user)
	}
	switch {
	case lookupErr == nil:
		if a.cache != nil && a.cache.ok(user, password, u.PasswordHash, a.clk.Now()) {
			return AcceptedCached, nil
		}
	case errors.Is(lookupErr, store.ErrNotFound):
	case ctx.Err() != nil:
		return Abandoned, fmt.Errorf("auth: looking up %q: %w", user, ctx.Err())
	default:
		a.log.Error("auth: user lookup failed", "user", user, "err", lookupErr)
		e := errTemporary
		return Unavailable, &e
	}

	if d := max(wait, a.accounts.Delay(user)); d > 0 {
		if err := a.sleep(ctx, d); err != nil {
			return Abandoned, fmt.Errorf("auth: delaying the check: %w", err)
		}
	}
	select {
	case a.slots <- struct{}{}:
	case <-ctx.Done():
		return Abandoned, fmt.Errorf("auth: waiting for a hash slot: %w", ctx.Err())
	}
	ok := false
	if lookupErr == nil {
		var herr error
		ok, herr = a.check(u.PasswordHash, password)
		if herr != nil {
			a.log.Error("auth: bad stored hash", "user", user, "err", herr)
			a.dummy() // an unusable hash must not answer faster than a wrong password
		}
	} else {
		a.dummy() // same cost as a real check: no user enumeration by timing
	}
	<-a.slots
	a.hashes.Add(1)

	if ok {
		if a.cache != nil {
			a.cache.add(user, password, u.PasswordHash, a.clk.Now())
		}
		return Accepted, nil
	}
	failed = true
	att.Fail()
	a.accounts.Fail(user)
	e := smtp.ErrAuthFailed
	return Rejected, &e
}

// Hashes returns how many password hashes (real and dummy) have been
// computed, e.g. for a metric of the CPU spent on AUTH.
func (a *Authenticator) Hashes() int64 { return a.hashes.Load() }
