package explain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/store/storetest"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// env is an Explainer over a real SQLite store acting as node mx1, with a
// fake clock near the wall clock (the store stamps events with it).
type env struct {
	t   *testing.T
	st  backend
	clk *clock.Fake
	x   *Explainer
}

// backend is a store explanations read and tests write.
type backend interface {
	store.Store
	store.QueueLeases
}

// both runs f on a SQLite store and on a PostgreSQL store (a private
// schema of HERALD_TEST_POSTGRES), each acting as node mx1.
func both(t *testing.T, f func(t *testing.T, e *env)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		st, err := sqlite.Open(t.TempDir(), sqlite.Options{Node: "mx1", ReadConns: 2})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f(t, newEnv(t, st))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		_, dsn := pgtest.NewSchema(t)
		st, err := postgres.Open(context.Background(), dsn, postgres.Options{Node: "mx1", Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		f(t, newEnv(t, st))
	})
}

func newEnv(t *testing.T, st backend) *env {
	t.Helper()
	clk := clock.NewFake(time.Now().UTC().Truncate(time.Second))
	keys := map[string]string{"googlemail.com": "gmail.com"}
	x := New(st, Config{MaxLifetime: 72 * time.Hour, DelayWarning: 4 * time.Hour, DestinationKey: func(d string) string {
		if k, ok := keys[d]; ok {
			return k
		}
		return d
	}}, clk)
	return &env{t: t, st: st, clk: clk, x: x}
}

// enqueue queues a message of account to rcpts, received now.
func (e *env) enqueue(account string, leaseUntil time.Time, rcpts ...string) *store.Message {
	e.t.Helper()
	m := storetest.NewMessage(e.clk.Now(), rcpts...)
	m.Account = account
	storetest.Enqueue(e.t, e.st, m, []byte("Subject: x\r\n\r\nhi\r\n"), leaseUntil)
	return m
}

func (e *env) update(m *store.Message, i int, o store.Outcome) {
	e.t.Helper()
	o.RecipientID = m.Recipients[i].ID
	if err := e.st.Update(context.Background(), m.ID, "", []store.Outcome{o}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) explain(id, account string) *Explanation {
	e.t.Helper()
	x, err := e.x.Explain(context.Background(), id, account)
	if err != nil {
		e.t.Fatalf("Explain %s as %q: %v", id, account, err)
	}
	return x
}

// says fails unless one of the sentences contains every part.
func says(t *testing.T, sentences []string, parts ...string) {
	t.Helper()
	for _, s := range sentences {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(s, p)
		}
		if ok {
			return
		}
	}
	t.Errorf("no sentence says %q:\n%s", parts, strings.Join(sentences, "\n"))
}

func TestQueuedFresh(t *testing.T) { both(t, testQueuedFresh) }

func testQueuedFresh(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	x := e.explain(m.ID, "acme")
	if x.State != StateQueued || !x.InQueue || x.Account != "acme" {
		t.Fatalf("state %q in_queue %v account %q, want queued, in the queue, acme", x.State, x.InQueue, x.Account)
	}
	r := x.Recipients[0]
	if !r.Due || r.Attempts != 0 || r.Lease != nil || r.Throttle != nil || r.Suppressed || r.Destination != "example.org" {
		t.Errorf("recipient %+v, want due now, no attempt, lease, throttle or suppression, destination example.org", r)
	}
	if want := m.Received.Add(72 * time.Hour); x.ExpiresAt == nil || !x.ExpiresAt.Equal(want) {
		t.Errorf("expires_at %v, want %v", x.ExpiresAt, want)
	}
	if want := m.Received.Add(4 * time.Hour); x.DelayWarningAt == nil || !x.DelayWarningAt.Equal(want) {
		t.Errorf("delay_warning_at %v, want %v", x.DelayWarningAt, want)
	}
	says(t, x.Summary, "bob@example.org", "first attempt, due now")
	says(t, x.Summary, "expires on "+clockTime(m.Received.Add(72*time.Hour)), "in 3 days")
	says(t, x.Summary, "delay notice from "+clockTime(m.Received.Add(4*time.Hour)))
}

// A message held for later (a scheduled send: queued, first attempt in
// the future) says when it leaves.
func TestScheduled(t *testing.T) { both(t, testScheduled) }

func testScheduled(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	at := e.clk.Now().Add(2 * time.Hour)
	e.update(m, 0, store.Outcome{Status: store.StatusQueued, NextAttempt: at})
	x := e.explain(m.ID, "acme")
	r := x.Recipients[0]
	if x.State != StateQueued || r.Due || r.Attempts != 0 || r.NextAttempt == nil || !r.NextAttempt.Equal(at) {
		t.Fatalf("state %q recipient %+v, want queued, not due, first attempt at %s", x.State, r, at)
	}
	says(t, x.Summary, "bob@example.org: not attempted yet; its first attempt is at "+clockTime(at)+" (in 2 h)")
}

func TestDeferredWithReply(t *testing.T) { both(t, testDeferredWithReply) }

func testDeferredWithReply(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	next := e.clk.Now().Add(15 * time.Minute)
	e.update(m, 0, store.Outcome{Status: store.StatusDeferred, NextAttempt: next, Reply: "421 4.7.0 Try again later",
		RemoteMTA: "mx.example.org", Enhanced: "4.7.0", TLS: "TLSv1.3"})
	e.clk.Advance(6 * time.Minute)
	x := e.explain(m.ID, "acme")
	if x.State != StateDeferred {
		t.Fatalf("state %q, want deferred", x.State)
	}
	r := x.Recipients[0]
	if r.Status != "deferred" || r.Due || r.NextAttempt == nil || !r.NextAttempt.Equal(next) || r.Attempts != 1 ||
		r.LastReply != "421 4.7.0 Try again later" || r.Enhanced != "4.7.0" || r.RemoteMTA != "mx.example.org" || r.TLS != "TLSv1.3" || r.LastAttempt == nil {
		t.Errorf("recipient %+v, want deferred until %s after one attempt with its reply, code, MTA, TLS and time", r, next)
	}
	says(t, x.Summary, "waiting for example.org", `got "421 4.7.0 Try again later" from mx.example.org`,
		"next attempt at "+clockTime(next), "(in 9 min)")
	// Once the next attempt is due, it says so.
	e.clk.Advance(10 * time.Minute)
	x = e.explain(m.ID, "acme")
	if !x.Recipients[0].Due {
		t.Error("the recipient is not due after its next attempt time")
	}
	says(t, x.Summary, "the next attempt is due now")
}

func TestDestinationBackedOff(t *testing.T) { both(t, testDestinationBackedOff) }

func testDestinationBackedOff(t *testing.T, e *env) {
	ctx := context.Background()
	now := e.clk.Now()
	paused, since := now.Add(10*time.Minute), now.Add(-4*time.Minute)
	if ok, err := e.st.SetDestinationState(ctx, "gmail.com", 0, store.DestinationState{Factor: 0.5, Strikes: 2, PausedUntil: paused, LastChange: since}); err != nil || !ok {
		t.Fatalf("SetDestinationState: %v %v", ok, err)
	}
	m := e.enqueue("acme", time.Time{}, "ann@googlemail.com", "bob@example.org", "cid@gmail.com")
	e.update(m, 0, store.Outcome{Status: store.StatusDeferred, NextAttempt: paused, Reply: "421 4.7.28 rate limited", Enhanced: "4.7.28"})
	x := e.explain(m.ID, "acme")
	r := x.Recipients[0]
	if r.Destination != "gmail.com" || r.Throttle == nil || r.Throttle.Factor != 0.5 || r.Throttle.Strikes != 2 ||
		r.Throttle.PausedUntil == nil || !r.Throttle.PausedUntil.Equal(paused) || r.Throttle.Since == nil || !r.Throttle.Since.Equal(since) {
		t.Fatalf("recipient %+v throttle %+v, want gmail.com at 50 %% paused until %s since %s", r, r.Throttle, paused, since)
	}
	if x.Recipients[1].Throttle != nil {
		t.Errorf("example.org has a throttle %+v, want none", x.Recipients[1].Throttle)
	}
	says(t, r.Sentences, "waiting for gmail.com", "rate limited")
	says(t, x.Summary, "gmail.com is backed off to 50 % of its sending limits since "+clockTime(since))
	says(t, x.Summary, "gmail.com is paused until "+clockTime(paused))
	if r := x.Recipients[2]; r.Throttle == nil || r.Destination != "gmail.com" {
		t.Errorf("the second gmail.com recipient: %+v", r)
	}
	n := 0
	for _, s := range x.Summary {
		if strings.Contains(s, "gmail.com is backed off") {
			n++
		}
	}
	if n != 1 {
		t.Errorf("the summary says %d times that gmail.com is backed off, want once", n)
	}
	// After the pause the destination is no longer said to be paused.
	e.clk.Advance(11 * time.Minute)
	x = e.explain(m.ID, "acme")
	for _, s := range x.Summary {
		if strings.Contains(s, "paused") {
			t.Errorf("after the pause: %q", s)
		}
	}
}

// A recipient the throttle held back (no session started) is said to be
// rate-limited by Herald, not refused by the remote side.
func TestHeldBackByRateLimit(t *testing.T) { both(t, testHeldBackByRateLimit) }

func testHeldBackByRateLimit(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "ann@gmail.com")
	next := e.clk.Now().Add(30 * time.Second)
	e.update(m, 0, store.Outcome{Status: store.StatusDeferred, NextAttempt: next, Reply: "held back: destination rate limit"})
	x := e.explain(m.ID, "acme")
	if r := x.Recipients[0]; !r.RateLimited || r.Destination != "gmail.com" {
		t.Fatalf("recipient %+v, want rate-limited for gmail.com", r)
	}
	says(t, x.Summary, "ann@gmail.com: held back by Herald's sending limits for gmail.com", "next attempt at "+clockTime(next), "(in 30 s)")
}

func TestInDelivery(t *testing.T) { both(t, testInDelivery) }

func testInDelivery(t *testing.T, e *env) {
	until := e.clk.Now().Add(time.Minute)
	m := e.enqueue("acme", until, "bob@example.org")
	x := e.explain(m.ID, "acme")
	if x.State != StateInDelivery {
		t.Fatalf("state %q, want in_delivery", x.State)
	}
	l := x.Recipients[0].Lease
	if l == nil || l.Node != "mx1" || !l.Until.Equal(until) || l.Expired {
		t.Fatalf("lease %+v, want held by mx1 until %s", l, until)
	}
	says(t, x.Summary, "being delivered now by node mx1", clockTime(until))
	e.clk.Advance(2 * time.Minute)
	x = e.explain(m.ID, "acme")
	if l := x.Recipients[0].Lease; l == nil || !l.Expired {
		t.Fatalf("lease %+v after its end, want expired", l)
	}
	says(t, x.Summary, "hold ran out", "another node takes it over")
}

func TestSuppressedRecipient(t *testing.T) { both(t, testSuppressedRecipient) }

func testSuppressedRecipient(t *testing.T, e *env) {
	ctx := context.Background()
	m := e.enqueue("acme", time.Time{}, "bob@example.org", "eve@example.org")
	if err := e.st.AddSuppression(ctx, store.Suppression{Account: "acme", Address: "eve@example.org", Reason: store.SuppressManual, Created: e.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	// Another account's list says nothing of acme's recipients.
	if err := e.st.AddSuppression(ctx, store.Suppression{Account: "beta", Address: "bob@example.org", Reason: store.SuppressManual, Created: e.clk.Now()}); err != nil {
		t.Fatal(err)
	}
	x := e.explain(m.ID, "acme")
	if x.Recipients[0].Suppressed || !x.Recipients[1].Suppressed {
		t.Fatalf("suppressed = %v, %v; want false, true", x.Recipients[0].Suppressed, x.Recipients[1].Suppressed)
	}
	says(t, x.Recipients[1].Sentences, "eve@example.org is on the account's suppression list")

	// Suppressed at acceptance: the message never entered the queue.
	if err := e.st.AddEvents(ctx, []store.Event{{Time: e.clk.Now(), Type: store.EventSuppressed, Account: "acme", MessageID: "SUPP1", Recipient: "eve@example.org", Sender: "a@acme.example"}}); err != nil {
		t.Fatal(err)
	}
	x = e.explain("SUPP1", "acme")
	if x.State != StateSuppressed || x.InQueue || !x.Recipients[0].Suppressed {
		t.Fatalf("state %q in_queue %v recipient %+v, want suppressed, gone", x.State, x.InQueue, x.Recipients[0])
	}
	says(t, x.Summary, "eve@example.org: not sent", "suppression list")
}

func TestDeliveredFromEvents(t *testing.T) { both(t, testDeliveredFromEvents) }

func testDeliveredFromEvents(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	e.update(m, 0, store.Outcome{Status: store.StatusDelivered, Reply: "250 2.0.0 OK queued as 123", RemoteMTA: "mx.example.org", Enhanced: "2.0.0", TLS: "TLSv1.3"})
	if _, err := e.st.Get(context.Background(), m.ID); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the delivered message is still in the queue: %v", err)
	}
	x := e.explain(m.ID, "acme")
	if x.State != StateDelivered || x.InQueue || x.ExpiresAt != nil || x.Received == nil || x.Sender != m.Sender {
		t.Fatalf("explanation %+v, want delivered, out of the queue, with its sender and reception", x)
	}
	r := x.Recipients[0]
	if r.Status != StateDelivered || r.RemoteMTA != "mx.example.org" || r.TLS != "TLSv1.3" || r.Attempts != 1 {
		t.Errorf("recipient %+v", r)
	}
	says(t, x.Summary, "no longer in the queue", "delivered to every recipient")
	says(t, x.Summary, "bob@example.org: delivered", "by mx.example.org", "OK queued as 123")
}

func TestBounced(t *testing.T) { both(t, testBounced) }

func testBounced(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org", "amy@example.org")
	e.update(m, 0, store.Outcome{Status: store.StatusFailed, Reply: "550 5.1.1 no such user", RemoteMTA: "mx.example.org", Enhanced: "5.1.1", Bounce: "hard:mailbox-unknown"})
	// Half the message in the queue: the bounced recipient is final, the
	// other pending.
	x := e.explain(m.ID, "acme")
	if x.State != StateQueued || x.Recipients[0].Status != StateBounced {
		t.Fatalf("state %q, recipient %+v", x.State, x.Recipients[0])
	}
	says(t, x.Summary, "1 of 2 recipients pending")
	says(t, x.Summary, "bob@example.org: bounced")
	says(t, x.Recipients[0].Sentences, "bob@example.org: bounced", "550 5.1.1 no such user", "hard:mailbox-unknown")
	e.update(m, 1, store.Outcome{Status: store.StatusFailed, Reply: "550 5.7.1 refused", Enhanced: "5.7.1", Bounce: "hard:policy"})
	x = e.explain(m.ID, "acme")
	if x.State != StateBounced || x.Recipients[0].Bounce != "hard:mailbox-unknown" || x.Recipients[0].Enhanced != "5.1.1" {
		t.Fatalf("state %q, recipient %+v, want bounced with the class and code", x.State, x.Recipients[0])
	}
	says(t, x.Summary, "bounced for every recipient")
}

func TestExpired(t *testing.T) { both(t, testExpired) }

func testExpired(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	e.update(m, 0, store.Outcome{Status: store.StatusDeferred, NextAttempt: e.clk.Now().Add(time.Hour), Reply: "451 4.4.1 connection timed out"})
	e.clk.Advance(73 * time.Hour)
	x := e.explain(m.ID, "acme")
	says(t, x.Summary, "queue lifetime ran out on "+clockTime(m.Received.Add(72*time.Hour)))
	e.update(m, 0, store.Outcome{Status: store.StatusExpired, Reply: "451 4.4.1 connection timed out"})
	x = e.explain(m.ID, "acme")
	if x.State != StateExpired || x.Recipients[0].Status != StateExpired {
		t.Fatalf("state %q recipient %+v, want expired", x.State, x.Recipients[0])
	}
	says(t, x.Summary, "bob@example.org: expired", "connection timed out")
}

func TestNotFound(t *testing.T) { both(t, testNotFound) }

func testNotFound(t *testing.T, e *env) {
	ctx := context.Background()
	for _, id := range []string{"NOSUCHMESSAGE", "", strings.Repeat("A", 65)} {
		if _, err := e.x.Explain(ctx, id, "acme"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Explain %q: %v, want ErrNotFound", id, err)
		}
	}
	// Another account's message, in the queue or gone, is not found; the
	// operator ("") sees it.
	live := e.enqueue("beta", time.Time{}, "bob@example.org")
	gone := e.enqueue("beta", time.Time{}, "bob@example.org")
	e.update(gone, 0, store.Outcome{Status: store.StatusDelivered, Reply: "250 ok"})
	for _, id := range []string{live.ID, gone.ID} {
		if _, err := e.x.Explain(ctx, id, "acme"); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Explain %s (account beta) as acme: %v, want ErrNotFound", id, err)
		}
		if x := e.explain(id, ""); x.Account != "beta" {
			t.Errorf("the operator sees account %q, want beta", x.Account)
		}
		if x := e.explain(id, "beta"); x.ID != id {
			t.Errorf("the owner sees %q", x.ID)
		}
	}
	// The default account's messages (Account "") belong to "default".
	def := e.enqueue("", time.Time{}, "bob@example.org")
	if x := e.explain(def.ID, store.DefaultAccount); x.Account != store.DefaultAccount {
		t.Errorf("account %q, want default", x.Account)
	}
	if _, err := e.x.Explain(ctx, def.ID, "acme"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the default account's message as acme: %v", err)
	}
}

// A remote reply is attacker-controlled: a sentence carries it on one
// line, bounded.
func TestReplyBounded(t *testing.T) { both(t, testReplyBounded) }

func testReplyBounded(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	e.update(m, 0, store.Outcome{Status: store.StatusDeferred, NextAttempt: e.clk.Now().Add(time.Hour), Reply: "451 evil\r\nInjected: line " + strings.Repeat("x", 5000)})
	x := e.explain(m.ID, "acme")
	for _, s := range x.Summary {
		if strings.ContainsAny(s, "\r\n") || len(s) > 600 {
			t.Errorf("sentence of %d bytes with line breaks %v", len(s), strings.ContainsAny(s, "\r\n"))
		}
	}
}

func TestSpan(t *testing.T) {
	for d, want := range map[time.Duration]string{
		45 * time.Second:               "45 s",
		9 * time.Minute:                "9 min",
		2*time.Hour + 5*time.Minute:    "2 h 5 min",
		3 * time.Hour:                  "3 h",
		76 * time.Hour:                 "3 days 4 h",
		72 * time.Hour:                 "3 days",
		8*time.Minute + 40*time.Second: "9 min",
		47*time.Hour + 59*time.Minute:  "47 h 59 min",
	} {
		if got := span(d); got != want {
			t.Errorf("span(%s) = %q, want %q", d, got, want)
		}
	}
}

// BenchmarkExplain1000Recipients: a message to 1,000 recipients over 10
// domains, half deferred with a reply, on SQLite.
func BenchmarkExplain1000Recipients(b *testing.B) {
	st, err := sqlite.Open(b.TempDir(), sqlite.Options{Node: "mx1", ReadConns: 2})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	now := time.Now().UTC()
	var rcpts []string
	for i := range 1000 {
		rcpts = append(rcpts, fmt.Sprintf("u%d@d%d.example", i, i%10))
	}
	m := storetest.NewMessage(now, rcpts...)
	m.Account = "acme"
	storetest.Enqueue(b, st, m, []byte("Subject: x\r\n\r\nhi\r\n"), time.Time{})
	var outs []store.Outcome
	for i := 0; i < 1000; i += 2 {
		outs = append(outs, store.Outcome{RecipientID: m.Recipients[i].ID, Status: store.StatusDeferred, NextAttempt: now.Add(time.Hour), Reply: "421 4.7.0 later"})
	}
	if err := st.Update(context.Background(), m.ID, "", outs); err != nil {
		b.Fatal(err)
	}
	x := New(st, Config{}, clock.NewFake(now))
	b.ResetTimer()
	for range b.N {
		if _, err := x.Explain(context.Background(), m.ID, "acme"); err != nil {
			b.Fatal(err)
		}
	}
}
