package sqlite

import (
	"context"
	"path/filepath"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// The SQLite store keeps the coordination state that lives only as long
// as the processes using it — the sending-rate windows of accounts and
// users, and the destinations' connections, message rates and back-off —
// in memory, shared by every handle of one database in this process. Only
// one server runs per data directory (its herald.pid lock), so this is the
// whole cluster's state; keeping it in the database would cost a
// synchronous commit (an fsync) per charged message and two per remote
// delivery. Like the limiters it replaces, it does not survive a restart:
// a restarted node starts with empty rate windows and no back-off.

// maxDestinations bounds the destinations remembered; idle ones (no
// connection, no back-off) are forgotten first.
const maxDestinations = 10000

// volatile is the in-memory state of one database.
type volatile struct {
	refs  int
	rates *ratelimit.Windows // accounts and users
	dests destTable
}

var volatiles = struct {
	sync.Mutex
	m map[string]*volatile
}{m: map[string]*volatile{}}

// volatileKey names a database for the registry: its absolute path with
// symbolic links resolved, so that two spellings of one directory share.
func volatileKey(dir string) string {
	if p, err := filepath.Abs(dir); err == nil {
		dir = p
	}
	if p, err := filepath.EvalSymlinks(dir); err == nil {
		dir = p
	}
	return filepath.Join(dir, "herald.db")
}

// openVolatile returns the state of the database at key, shared with the
// other open handles on it.
func openVolatile(key string) *volatile {
	volatiles.Lock()
	defer volatiles.Unlock()
	v := volatiles.m[key]
	if v == nil {
		v = &volatile{rates: ratelimit.NewWindows(nil), dests: destTable{m: map[string]*destEntry{}, rates: ratelimit.NewWindows(nil)}}
		volatiles.m[key] = v
	}
	v.refs++
	return v
}

// closeVolatile drops a handle's reference; the state goes with the last.
func closeVolatile(key string) {
	volatiles.Lock()
	defer volatiles.Unlock()
	if v := volatiles.m[key]; v != nil {
		if v.refs--; v.refs <= 0 {
			delete(volatiles.m, key)
		}
	}
}

// live fails when the handle is closed or ctx ended: the volatile state
// outlives a handle (other handles share it), its methods must not.
func (s *Store) live(ctx context.Context) error {
	if s.closed.Load() {
		return ErrClosed
	}
	return ctx.Err()
}

// hasLimit reports whether l limits anything.
func hasLimit(l ratelimit.Limits) bool {
	return l.PerMinute > 0 || l.PerHour > 0 || l.PerDay > 0
}

// TakeRate charges n events to key if they fit under l (see
// store.RateCounters). Without any limit nothing is counted.
func (s *Store) TakeRate(ctx context.Context, key string, l ratelimit.Limits, n int, now time.Time) (bool, []ratelimit.Slot, error) {
	if err := s.live(ctx); err != nil {
		return false, nil, err
	}
	ok := true
	if hasLimit(l) && n > 0 {
		ok, _ = s.vol.rates.TakeAt(key, l, n, now)
	}
	return ok, s.vol.rates.SlotsAt(key, now), nil
}

// RateSlots returns key's live slots.
func (s *Store) RateSlots(ctx context.Context, key string, now time.Time) ([]ratelimit.Slot, error) {
	if err := s.live(ctx); err != nil {
		return nil, err
	}
	return s.vol.rates.SlotsAt(key, now), nil
}

// destTable holds the destinations of one database.
type destTable struct {
	mu    sync.Mutex
	m     map[string]*destEntry
	rates *ratelimit.Windows // messages per minute, by destination
}

type destEntry struct {
	state store.DestinationState
	conns map[string]destConn // by token
}

type destConn struct {
	owner string
	until time.Time
}

// idle reports whether e is the same as an unknown destination at now.
func (e *destEntry) idle(now time.Time) bool {
	return len(e.conns) == 0 && e.state.Factor >= 1 && e.state.Strikes == 0 && !now.Before(e.state.PausedUntil)
}

func (t *destTable) entryLocked(key string, now time.Time) *destEntry {
	if e := t.m[key]; e != nil {
		return e
	}
	if len(t.m) >= maxDestinations {
		for k, e := range t.m {
			e.expire(now)
			if e.idle(now) {
				delete(t.m, k)
			}
		}
	}
	e := &destEntry{state: store.DestinationState{Factor: 1}, conns: map[string]destConn{}}
	t.m[key] = e
	return e
}

// expire gives back the connections that ran out.
func (e *destEntry) expire(now time.Time) {
	for tok, c := range e.conns {
		if c.until.Before(now) {
			delete(e.conns, tok)
		}
	}
}

// AcquireDestination decides whether a session may start to key (see
// store.Destinations).
func (s *Store) AcquireDestination(ctx context.Context, key string, l store.DestinationLimits, now, until time.Time) (store.DestinationGrant, error) {
	if err := s.live(ctx); err != nil {
		return store.DestinationGrant{}, err
	}
	t := &s.vol.dests
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(key, now)
	g := store.DestinationGrant{State: e.state}
	if now.Before(e.state.PausedUntil) {
		g.Wait = e.state.PausedUntil.Sub(now)
		return g, nil
	}
	eff := l.Effective(e.state.Factor)
	if eff.MaxConnections > 0 {
		e.expire(now)
		if len(e.conns) >= eff.MaxConnections {
			return g, nil
		}
	}
	if eff.MessagesPerMinute > 0 {
		if ok, wait := t.rates.TakeAt(key, ratelimit.Limits{PerMinute: eff.MessagesPerMinute}, 1, now); !ok {
			g.Wait = wait
			return g, nil
		}
	}
	if eff.MaxConnections > 0 {
		g.Token = newToken()
		e.conns[g.Token] = destConn{owner: s.node, until: until}
	}
	g.OK = true
	return g, nil
}

// RenewDestination holds a connection longer; it is never shortened.
func (s *Store) RenewDestination(ctx context.Context, key, token string, until time.Time) error {
	if err := s.live(ctx); err != nil {
		return err
	}
	t := &s.vol.dests
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.m[key]
	if e == nil {
		return store.ErrLeaseLost
	}
	c, ok := e.conns[token]
	if !ok || token == "" {
		return store.ErrLeaseLost
	}
	if until.After(c.until) {
		c.until = until
		e.conns[token] = c
	}
	return nil
}

// ReleaseDestination gives a connection back.
func (s *Store) ReleaseDestination(ctx context.Context, key, token string) error {
	if err := s.live(ctx); err != nil {
		return err
	}
	t := &s.vol.dests
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.m[key]; e != nil {
		delete(e.conns, token)
	}
	return nil
}

// releaseDestinations gives back every connection this node holds.
func (s *Store) releaseDestinations() {
	t := &s.vol.dests
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, e := range t.m {
		for tok, c := range e.conns {
			if c.owner == s.node {
				delete(e.conns, tok)
			}
		}
	}
}

// DestinationState returns key's back-off.
func (s *Store) DestinationState(ctx context.Context, key string) (store.DestinationState, error) {
	if err := s.live(ctx); err != nil {
		return store.DestinationState{}, err
	}
	t := &s.vol.dests
	t.mu.Lock()
	defer t.mu.Unlock()
	if e := t.m[key]; e != nil {
		return e.state, nil
	}
	return store.DestinationState{Factor: 1}, nil
}

// SetDestinationState replaces key's back-off if its version is still
// version.
func (s *Store) SetDestinationState(ctx context.Context, key string, version int64, st store.DestinationState) (bool, error) {
	if err := s.live(ctx); err != nil {
		return false, err
	}
	t := &s.vol.dests
	t.mu.Lock()
	defer t.mu.Unlock()
	e := t.entryLocked(key, time.Now())
	if e.state.Version != version {
		return false, nil
	}
	st.Version = version + 1
	e.state = st
	return true, nil
}
