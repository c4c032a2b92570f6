package transport_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/throttle"
	"github.com/heraldmail/herald/internal/transport"
)

// newThrottle returns a RemoteThrottle over a throttle allowing one session
// per destination, with a fake clock, and the local domains of a real
// store (example.test).
func newThrottle(t *testing.T) *transport.RemoteThrottle {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddDomain(context.Background(), "example.test"); err != nil {
		t.Fatal(err)
	}
	return &transport.RemoteThrottle{
		T: throttle.New(throttle.Config{
			Store:   st,
			Default: throttle.Limits{MaxConnections: 1}, Domains: map[string]throttle.Limits{},
			Clock: clock.NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)), Logger: discard(),
			FirstPause: time.Minute, BusyWait: 3 * time.Second,
		}),
		Dir: st,
	}
}

// A local domain is never held back: not by the connection cap, not by a
// pause; a remote one is.
func TestThrottleNeverHoldsLocalDomains(t *testing.T) {
	t.Parallel()
	rt := newThrottle(t)
	for i := range 3 {
		release, wait, ok := rt.Acquire("example.test")
		if !ok || wait != 0 || release == nil {
			t.Fatalf("local domain, session %d: ok %v wait %v", i+1, ok, wait)
		}
	}
	release, _, ok := rt.Acquire("remote.test")
	if !ok {
		t.Fatal("first session to a remote domain refused")
	}
	if _, wait, ok := rt.Acquire("remote.test"); ok || wait != 3*time.Second {
		t.Errorf("second session to a remote domain capped at one: ok %v wait %v, want the busy wait", ok, wait)
	}
	release()

	// Even a throttling reply recorded under the local domain's name (it
	// was remote once) does not hold local delivery back.
	rt.T.Observe("example.test", throttle.Reply{Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 0}, Text: "too many connections", Remote: true})
	if _, wait, ok := rt.T.Acquire("example.test"); ok {
		t.Fatalf("the throttle itself did not pause example.test (wait %v): the test proves nothing", wait)
	}
	if _, wait, ok := rt.Acquire("example.test"); !ok || wait != 0 {
		t.Errorf("a paused name that is a local domain: ok %v wait %v", ok, wait)
	}
}

// Only replies from the destination's own server pause it: a remote 421
// does; the same reply from local delivery, an HTTP route, or made up by
// Herald itself (no remote MTA: DNS, TLS policy, connection failures) does
// not.
func TestThrottleObservesRemoteRepliesOnly(t *testing.T) {
	t.Parallel()
	reply := queue.Attempt{Result: queue.Temporary, Code: 421, Enhanced: smtp.EnhancedCode{4, 7, 0},
		Text: "Too many messages have been received in a short period of time"}
	for _, c := range []struct {
		remoteMTA string
		pauses    bool
	}{
		{"mx.remote.test[192.0.2.1]", true},
		{"local", false},
		{"http", false},
		{"", false},
	} {
		rt := newThrottle(t)
		a := reply
		a.RemoteMTA = c.remoteMTA
		rt.Observe("remote.test", a)
		release, wait, ok := rt.Acquire("remote.test")
		if c.pauses {
			if ok || wait != time.Minute {
				t.Errorf("after a 421 from %q: ok %v wait %v, want a pause of a minute", c.remoteMTA, ok, wait)
			}
			continue
		}
		if !ok {
			t.Errorf("after a 421 from %q: held back for %v", c.remoteMTA, wait)
			continue
		}
		release()
	}
}
