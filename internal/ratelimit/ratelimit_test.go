package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestAuthFailuresLockoutAndExpiry(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := NewAuthFailures(3, 10*time.Minute, 15*time.Minute, time.Second, clk)
	ip := netip.MustParseAddr("192.0.2.7")

	if w, l := a.Check(ip); w != 0 || l {
		t.Fatalf("fresh client: wait %v locked %v", w, l)
	}
	for i := 1; i <= 2; i++ {
		a.Fail(ip)
		w, l := a.Check(ip)
		if l || w != time.Duration(i)*time.Second {
			t.Fatalf("after %d failures: wait %v locked %v; want %ds, false", i, w, l, i)
		}
	}
	a.Fail(ip)
	if w, l := a.Check(ip); !l || w != 3*time.Second {
		t.Fatalf("after 3 failures: wait %v locked %v; want 3s, true", w, l)
	}
	// More failures while locked do not extend the lockout nor the delay.
	clk.Advance(10 * time.Minute)
	a.Fail(ip)
	if w, l := a.Check(ip); !l || w != 3*time.Second {
		t.Fatalf("failing while locked: wait %v locked %v", w, l)
	}
	// Another address is unaffected.
	if w, l := a.Check(netip.MustParseAddr("192.0.2.8")); w != 0 || l {
		t.Fatalf("neighbour: wait %v locked %v", w, l)
	}
	clk.Advance(5*time.Minute - time.Nanosecond)
	if _, l := a.Check(ip); !l {
		t.Fatal("lockout ended early")
	}
	clk.Advance(time.Nanosecond)
	if w, l := a.Check(ip); l || w != 0 {
		t.Fatalf("after lockout: wait %v locked %v; want 0, false", w, l)
	}
	if a.Len() != 0 {
		t.Fatalf("expired entry kept: Len = %d", a.Len())
	}
}

func TestAuthFailuresWindowAndSucceed(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := NewAuthFailures(3, time.Minute, time.Hour, 2*time.Second, clk)
	ip := netip.MustParseAddr("2001:db8::1")
	a.Fail(ip)
	a.Fail(ip)
	clk.Advance(time.Minute) // window over: the count starts again
	a.Fail(ip)
	if w, l := a.Check(ip); l || w != 2*time.Second {
		t.Fatalf("after window: wait %v locked %v; want 2s, false", w, l)
	}
	a.Fail(ip)
	a.Succeed(ip)
	if w, l := a.Check(ip); l || w != 0 {
		t.Fatalf("after success: wait %v locked %v", w, l)
	}
}

func TestAuthFailuresIPv6Slash64(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := NewAuthFailures(2, time.Hour, time.Hour, time.Second, clk)
	a.Fail(netip.MustParseAddr("2001:db8:1:2::1"))
	a.Fail(netip.MustParseAddr("2001:db8:1:2:ffff:ffff:ffff:ffff"))
	if _, l := a.Check(netip.MustParseAddr("2001:db8:1:2::abcd")); !l {
		t.Fatal("same /64 not locked")
	}
	if _, l := a.Check(netip.MustParseAddr("2001:db8:1:3::1")); l {
		t.Fatal("other /64 locked")
	}
	// IPv4-mapped IPv6 counts as the IPv4 address.
	a.Fail(netip.MustParseAddr("::ffff:198.51.100.1"))
	a.Fail(netip.MustParseAddr("198.51.100.1"))
	if _, l := a.Check(netip.MustParseAddr("198.51.100.1")); !l {
		t.Fatal("mapped and plain IPv4 not counted together")
	}
	if _, l := a.Check(netip.MustParseAddr("198.51.100.2")); l {
		t.Fatal("IPv4 neighbour locked")
	}
}

func TestAuthFailuresBoundedMemory(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := NewAuthFailures(5, time.Minute, time.Minute, time.Second, clk)
	a.maxEntries = 1000
	ip := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }
	for i := range 5000 {
		a.Fail(ip(i))
		if a.Len() > a.maxEntries {
			t.Fatalf("Len %d > cap %d after %d inserts", a.Len(), a.maxEntries, i+1)
		}
	}
	// Expired entries are swept first: after the window only new ones remain.
	clk.Advance(time.Minute)
	a.Fail(ip(999_999))
	if a.Len() != 1 {
		t.Fatalf("after expiry and one insert Len = %d, want 1", a.Len())
	}
}

func TestConnLimiter(t *testing.T) {
	t.Parallel()
	l := NewConnLimiter(3, 2)
	a := netip.MustParseAddr("192.0.2.1")
	b := netip.MustParseAddr("192.0.2.2")
	r1, err := l.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := l.Acquire(a)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(a); !errors.Is(err, ErrIPConnections) {
		t.Fatalf("third from a: err = %v, want ErrIPConnections", err)
	}
	r3, err := l.Acquire(b)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(netip.MustParseAddr("192.0.2.3")); !errors.Is(err, ErrTotalConnections) {
		t.Fatalf("fourth overall: err = %v, want ErrTotalConnections", err)
	}
	r1()
	r1() // double release must not free a second slot
	if got := l.ActiveFrom(a); got != 1 {
		t.Fatalf("ActiveFrom(a) after release = %d, want 1", got)
	}
	if got := l.Active(); got != 2 {
		t.Fatalf("Active after release = %d, want 2", got)
	}
	r4, err := l.Acquire(a)
	if err != nil {
		t.Fatalf("slot not freed by release: %v", err)
	}
	for _, r := range []func(){r2, r3, r4} {
		r()
	}
	if l.Active() != 0 || len(l.perIn) != 0 {
		t.Fatalf("after all releases: Active %d, keys %d", l.Active(), len(l.perIn))
	}
	// IPv6 per-IP limit applies to the /64.
	_, err = l.Acquire(netip.MustParseAddr("2001:db8::1"))
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.Acquire(netip.MustParseAddr("2001:db8::2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Acquire(netip.MustParseAddr("2001:db8::3")); !errors.Is(err, ErrIPConnections) {
		t.Fatalf("third from the /64: err = %v", err)
	}
}

func TestConnLimiterConcurrent(t *testing.T) {
	t.Parallel()
	const total, perIP = 8, 3
	l := NewConnLimiter(total, perIP)
	ips := []netip.Addr{
		netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"),
		netip.MustParseAddr("192.0.2.3"), netip.MustParseAddr("192.0.2.4"),
	}
	var cur atomic.Int64
	var perCur [4]atomic.Int64
	var maxSeen, perMax atomic.Int64
	var ok, refused atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			i := g % len(ips)
			for range 500 {
				rel, err := l.Acquire(ips[i])
				if err != nil {
					refused.Add(1)
					continue
				}
				ok.Add(1)
				if n := cur.Add(1); n > maxSeen.Load() {
					maxSeen.Store(n) // racy max is fine: any overshoot is seen by someone
				}
				if n := perCur[i].Add(1); n > perMax.Load() {
					perMax.Store(n)
				}
				if n := cur.Load(); n > total {
					t.Errorf("%d connections held, limit %d", n, total)
				}
				if n := perCur[i].Load(); n > perIP {
					t.Errorf("%d connections from one IP, limit %d", n, perIP)
				}
				perCur[i].Add(-1)
				cur.Add(-1)
				rel()
			}
		}()
	}
	wg.Wait()
	if l.Active() != 0 {
		t.Fatalf("Active = %d after all released", l.Active())
	}
	if ok.Load() == 0 {
		t.Fatal("no acquisition succeeded")
	}
	t.Logf("acquired %d, refused %d, max held %d, max per IP %d", ok.Load(), refused.Load(), maxSeen.Load(), perMax.Load())
}

func TestBucket(t *testing.T) {
	t.Parallel()
	b := NewBucket(1.0/6, 3) // 10 per minute, burst 3
	now := t0
	for i := range 3 {
		if ok, _ := b.AllowN("alice", 1, now); !ok {
			t.Fatalf("event %d within burst refused", i)
		}
	}
	ok, retry := b.AllowN("alice", 1, now)
	if ok || retry != 6*time.Second {
		t.Fatalf("over burst: ok %v retry %v; want false, 6s", ok, retry)
	}
	if ok, _ := b.AllowN("bob", 1, now); !ok {
		t.Fatal("other key limited")
	}
	now = now.Add(6 * time.Second)
	if ok, _ := b.AllowN("alice", 1, now); !ok {
		t.Fatal("token not refilled after 6s")
	}
	if ok, _ := b.AllowN("alice", 1, now); ok {
		t.Fatal("second token appeared early")
	}
	// Refill is capped at burst.
	now = now.Add(time.Hour)
	if ok, _ := b.AllowN("alice", 3, now); !ok {
		t.Fatal("full burst refused after long idle")
	}
	if ok, retry := b.AllowN("alice", 4, now); ok || retry != time.Duration(1<<63-1) {
		t.Fatalf("n > burst: ok %v retry %v", ok, retry)
	}
}

func TestBucketBoundedMemory(t *testing.T) {
	t.Parallel()
	b := NewBucket(1, 1)
	b.maxEntries = 100
	for i := range 1000 {
		b.AllowN(fmt.Sprint("k", i), 1, t0)
		if b.Len() > 100 {
			t.Fatalf("Len %d > 100", b.Len())
		}
	}
	// After refill every bucket is full, so they are all swept.
	b.AllowN("new", 1, t0.Add(time.Second))
	if b.Len() != 1 {
		t.Fatalf("Len after sweep = %d, want 1", b.Len())
	}
}

// Reserved attempts count as failures until resolved: with max 3, three
// reservations leave no room; a success frees its place, failures lock.
func TestAuthFailuresReserve(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := NewAuthFailures(3, 10*time.Minute, 15*time.Minute, time.Second, clk)
	ip := netip.MustParseAddr("192.0.2.9")
	ctx := context.Background()
	var atts []*AuthAttempt
	for i := range 3 {
		att, wait, err := a.Reserve(ctx, ip)
		if err != nil {
			t.Fatalf("reservation %d: %v", i, err)
		}
		if wait != 0 {
			t.Errorf("reservation %d: wait %v, want 0 (attempts in flight are not failures yet)", i, wait)
		}
		atts = append(atts, att)
	}
	// Full: a further Reserve waits, here until its context ends.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := a.Reserve(done, ip); !errors.Is(err, context.Canceled) {
		t.Fatalf("fourth reservation with room for none: %v, want to wait (context.Canceled)", err)
	}
	// A waiting Reserve gets the place a success frees.
	got := make(chan error, 1)
	go func() {
		att, _, err := a.Reserve(ctx, ip)
		if err == nil {
			att.Fail()
		}
		got <- err
	}()
	atts[0].Succeed()
	atts[0].Fail() // resolved already: no effect
	if err := <-got; err != nil {
		t.Fatalf("waiting reservation after a success: %v", err)
	}
	// 1 failure (the waiter's) + 2 in flight: the next wait is 1s.
	if w, _ := a.Check(ip); w != time.Second {
		t.Errorf("after one failure: wait %v, want 1s", w)
	}
	// Failing both locks the client and wakes a waiter with ErrLockedOut.
	go func() {
		_, _, err := a.Reserve(ctx, ip)
		got <- err
	}()
	atts[1].Fail()
	atts[2].Fail()
	if err := <-got; !errors.Is(err, ErrLockedOut) {
		t.Fatalf("waiter after the lockout: %v, want ErrLockedOut", err)
	}
	if w, l := a.Check(ip); !l || w != 3*time.Second {
		t.Fatalf("after 3 failures: wait %v locked %v", w, l)
	}
	clk.Advance(15 * time.Minute)
	att, wait, err := a.Reserve(ctx, ip)
	if err != nil || wait != 0 {
		t.Fatalf("after the lockout: wait %v err %v", wait, err)
	}
	att.Succeed()
	if a.Len() != 0 {
		t.Errorf("Len %d after everything was resolved, want 0", a.Len())
	}
}

// Many goroutines reserving at once never have more than max failures
// plus attempts in flight.
func TestAuthFailuresReserveConcurrent(t *testing.T) {
	t.Parallel()
	a := NewAuthFailures(4, time.Hour, time.Hour, 0, clock.NewFake(t0))
	ip := netip.MustParseAddr("2001:db8::7")
	var inFlight, maxSeen, failed, locked atomic.Int64
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			att, _, err := a.Reserve(context.Background(), ip)
			if errors.Is(err, ErrLockedOut) {
				locked.Add(1)
				return
			}
			n := inFlight.Add(1)
			for m := maxSeen.Load(); n > m && !maxSeen.CompareAndSwap(m, n); m = maxSeen.Load() {
			}
			inFlight.Add(-1)
			failed.Add(1)
			att.Fail()
		}()
	}
	wg.Wait()
	if failed.Load() != 4 || locked.Load() != 46 || maxSeen.Load() > 4 {
		t.Errorf("failed %d locked %d max in flight %d; want 4, 46, <=4", failed.Load(), locked.Load(), maxSeen.Load())
	}
}

// An attempt whose entry was evicted still counts its failure.
func TestAuthFailuresReserveEvicted(t *testing.T) {
	t.Parallel()
	a := NewAuthFailures(2, time.Hour, time.Hour, 0, clock.NewFake(t0))
	a.maxEntries = 10
	ip := netip.MustParseAddr("192.0.2.1")
	att, _, err := a.Reserve(context.Background(), ip)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		a.Fail(netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	att.Fail()
	a.Fail(ip)
	if _, l := a.Check(ip); !l {
		t.Error("failure of an evicted reservation lost")
	}
}

func TestAccountFailures(t *testing.T) {
	t.Parallel()
	clk := clock.NewFake(t0)
	a := NewAccountFailures(3, 10*time.Minute, time.Second, 10*time.Second, clk)
	var got []time.Duration
	for range 8 {
		got = append(got, a.Delay("victim@example.test"))
		a.Fail("victim@example.test")
	}
	got = append(got, a.Delay("victim@example.test"))
	s := time.Second
	want := []time.Duration{0, 0, 0, s, 2 * s, 4 * s, 8 * s, 10 * s, 10 * s}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	if d := a.Delay("other@example.test"); d != 0 {
		t.Errorf("other account delayed %v", d)
	}
	clk.Advance(10 * time.Minute)
	if d := a.Delay("victim@example.test"); d != 0 || a.Len() != 0 {
		t.Errorf("after the window: delay %v, Len %d", d, a.Len())
	}
	// Disabled.
	off := NewAccountFailures(0, time.Hour, 0, 0, clk)
	off.Fail("x")
	if off.Delay("x") != 0 || off.Len() != 0 {
		t.Error("disabled tracker counted")
	}
}

// Spraying account names evicts the least-failed ones, not the account
// under attack.
func TestAccountFailuresBoundedMemory(t *testing.T) {
	t.Parallel()
	a := NewAccountFailures(0, time.Hour, time.Second, time.Minute, clock.NewFake(t0))
	a.maxEntries = 100
	for range 20 {
		a.Fail("victim@example.test")
	}
	for i := range 1000 {
		a.Fail(fmt.Sprintf("spray%d@example.test", i))
		if a.Len() > a.maxEntries {
			t.Fatalf("Len %d > cap %d", a.Len(), a.maxEntries)
		}
	}
	if d := a.Delay("victim@example.test"); d != time.Minute {
		t.Errorf("victim's delay %v after a spray, want 1m (count kept)", d)
	}
	long := strings.Repeat("a", 10_000)
	a.Fail(long)
	if a.Delay(long+"b") == 0 {
		t.Error("overlong names not keyed by their prefix")
	}
}
