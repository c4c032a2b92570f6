// Package throttle shapes outbound traffic per destination so that mail
// waits in Herald's queue instead of being refused by the receiver: it caps
// concurrent sessions and messages per minute for each destination (a
// recipient domain, or the mailbox provider behind it), and backs off a
// destination automatically when it answers with throttling replies.
//
// The state is in the store (store.Destinations), so that the nodes of a
// cluster respect the limits together: the sessions of every node count
// against one connection cap and one minute, and a pause one node starts
// holds for all. A session's connection is held for Config.Hold and
// renewed every third of it while the session lasts, so a dead node's
// connections are given back within Hold.
//
// The queue calls Acquire before a delivery attempt; when it says "not now"
// the recipients are deferred, without an attempt, for the returned wait.
// After the attempt the queue calls the release function and reports each
// recipient's outcome with Observe.
//
// # What counts as throttling
//
// Only a reply that the destination's server sent (Reply.Remote) can back
// the destination off. Outcomes Herald makes up itself never do: TLS policy
// refusals (MTA-STS, DANE, "TLS required": 451 4.7.4 / 4.7.5), DNS and
// connection failures (4.4.x), local errors (451 4.3.0), and recipients
// the throttle itself held back. Of the remote replies (IsThrottling):
//
//   - 421 (service not available, closing the channel), at any stage
//     including the greeting, e.g. "421 4.7.0 Try again later, closing
//     connection", Yahoo "421 4.7.0 [TSS04] Messages from ... temporarily
//     deferred due to unexpected volume or user complaints", Gmail
//     "421 4.7.28 ... unusual rate of unsolicited mail", Comcast
//     "421 4.1.0 ... Throttled - try again later", web.de/GMX "421 ...
//     Too many messages have been received in a short period of time";
//   - 4xx with a provider's rate-limit status code: 4.7.28 (Gmail),
//     4.7.500 "Server busy" and 4.7.650 / 4.7.651 / 4.7.652 "temporarily
//     rate limited due to IP reputation" (Microsoft: Outlook, Hotmail,
//     Microsoft 365);
//   - 450, 451, 452 (and other 4xx) whose text names a rate or volume
//     limit: provider markers Yahoo "[TSS0x]" / "[TS0x]", Comcast
//     "RL00000x", Microsoft "RP-00x", and the phrases "rate limit",
//     "rate limited", "ratelimit", "too many connections", "too many
//     concurrent", "too many sessions", "too many messages", "throttl",
//     "unusual rate", "unexpected volume", "sending rate", "slow down",
//     "too fast", "server busy", "exceeded the rate", "connection limit".
//
// Never throttling, even from the remote: 5xx (permanent); anything
// mentioning greylisting ("greylist", "graylist", Postgrey's and rspamd's
// "451 4.7.1 ... try again later" without a rate phrase); 4.2.x mailbox
// states, which concern one recipient (452 4.2.2 mailbox full, Gmail's
// 450 4.2.1 "The user you are trying to contact is receiving mail at a
// rate that prevents additional messages from being delivered"); 4.5.3
// "too many recipients" (a per-transaction limit); 4.7.4 / 4.7.5 and
// "TLS required" replies; and a generic "451 4.3.0 try again later",
// 4.7.0 or 4.7.1 without a rate phrase.
//
// # Back-off
//
// A throttling reply pauses the destination for 1 minute, then 2, 4, 8, 16
// and at most 30 minutes for each further episode, and halves its
// effective message rate and connection cap (down to 1/16 of the
// configured limits). Replies that arrive while the destination is already
// paused come from sessions started before the pause and do not escalate
// it. Successful deliveries recover the destination gradually: at most
// once a minute, a success doubles the effective rate (up to the
// configured limit) and forgets one episode. Two nodes that see a
// throttling reply at once make one episode: the change is written only if
// the state is still the one it was computed from.
//
// # Rate
//
// MessagesPerMinute holds over any minute: a sliding window in 5 s slots,
// as the account limits are counted (ratelimit.SlidingWindows), so a
// destination gets at most that many new sessions in any 60 seconds, on all
// nodes together (a quiet minute allows them at once).
package throttle

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Limits are the traffic limits of one destination. Zero means unlimited.
type Limits struct {
	// MaxConnections caps concurrent sessions (Acquire holders), on all
	// nodes together.
	MaxConnections int
	// MessagesPerConnection is how many messages the delivery code should
	// send over one connection before closing it. Throttle does not
	// enforce it; read it with Throttle.Limits.
	MessagesPerConnection int
	// MessagesPerMinute caps the sessions started in any minute, on all
	// nodes together.
	MessagesPerMinute int
}

// DefaultLimits is a reasonable Config.Default for destinations not in the
// provider table: ten sessions, a hundred messages per connection, no rate
// limit.
var DefaultLimits = Limits{MaxConnections: 10, MessagesPerConnection: 100}

// DefaultDomains returns the default table for the big mailbox providers,
// keyed by the provider's canonical domain (see Key for the aliases and
// KeyForMX for custom domains hosted by them). The numbers are conservative
// defaults for a small or new sending IP, well under what these providers
// accept from an established sender with a good reputation; raise them in
// the configuration once the IP is warmed up.
func DefaultDomains() map[string]Limits {
	return map[string]Limits{
		"gmail.com":   {MaxConnections: 5, MessagesPerConnection: 50, MessagesPerMinute: 60},
		"outlook.com": {MaxConnections: 3, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"yahoo.com":   {MaxConnections: 3, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"icloud.com":  {MaxConnections: 3, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"gmx.net":     {MaxConnections: 2, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"web.de":      {MaxConnections: 2, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"mail.ru":     {MaxConnections: 3, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"yandex.ru":   {MaxConnections: 3, MessagesPerConnection: 20, MessagesPerMinute: 30},
		"comcast.net": {MaxConnections: 2, MessagesPerConnection: 20, MessagesPerMinute: 20},
	}
}

// aliases maps provider domains to the canonical key their shared
// infrastructure is throttled under.
var aliases = map[string]string{
	"googlemail.com": "gmail.com",
	"hotmail.com":    "outlook.com", "hotmail.co.uk": "outlook.com", "hotmail.fr": "outlook.com",
	"hotmail.de": "outlook.com", "hotmail.it": "outlook.com", "live.com": "outlook.com",
	"live.co.uk": "outlook.com", "live.fr": "outlook.com", "msn.com": "outlook.com",
	"outlook.de": "outlook.com", "outlook.fr": "outlook.com",
	"ymail.com": "yahoo.com", "rocketmail.com": "yahoo.com", "yahoo.co.uk": "yahoo.com",
	"yahoo.fr": "yahoo.com", "yahoo.de": "yahoo.com", "yahoo.co.jp": "yahoo.com",
	"aol.com": "yahoo.com", "aim.com": "yahoo.com",
	"me.com": "icloud.com", "mac.com": "icloud.com",
	"gmx.de": "gmx.net", "gmx.at": "gmx.net", "gmx.ch": "gmx.net", "gmx.com": "gmx.net",
	"gmx.fr": "gmx.net", "gmx.co.uk": "gmx.net",
	"bk.ru": "mail.ru", "list.ru": "mail.ru", "inbox.ru": "mail.ru", "internet.ru": "mail.ru",
	"yandex.com": "yandex.ru", "ya.ru": "yandex.ru", "yandex.by": "yandex.ru", "yandex.kz": "yandex.ru",
}

// mxSuffixes maps MX host name suffixes to provider keys, for custom domains
// hosted by a big provider (Google Workspace, Microsoft 365 ...).
var mxSuffixes = []struct{ suffix, key string }{
	{".google.com", "gmail.com"},
	{".googlemail.com", "gmail.com"},
	{".protection.outlook.com", "outlook.com"},
	{".yahoodns.net", "yahoo.com"},
	{".mail.icloud.com", "icloud.com"},
	{".gmx.net", "gmx.net"},
	{".web.de", "web.de"},
	{".mail.ru", "mail.ru"},
	{".yandex.ru", "yandex.ru"},
	{".yandex.net", "yandex.ru"},
	{".comcast.net", "comcast.net"},
}

// Config configures a Throttle.
type Config struct {
	// Store keeps the state of the destinations, shared by every node.
	// Required.
	Store store.Destinations
	// Default applies to destinations not in Domains; the zero value is
	// unlimited (see DefaultLimits).
	Default Limits
	// Domains holds per-destination limits keyed by lower-case domain. Nil
	// means DefaultDomains(); pass an empty map for no table.
	Domains map[string]Limits
	// MaxPerDestination caps the connections of every destination, table
	// entries included (queue.max_per_destination); 0 means no cap beyond
	// the limits.
	MaxPerDestination int
	// Hold is how long a session's connection is held without renewal; it
	// is renewed every third of it while the session lasts, and a dead
	// node's connections are given back after it. 0 means one minute.
	Hold time.Duration
	// Clock tells the time; nil means the wall clock.
	Clock clock.Clock
	// MaxDestinations bounds the destinations whose last state is kept
	// in memory (to know when a success should recover one); 0 means
	// 10000.
	MaxDestinations int
	// BusyWait is the wait returned when a destination is at its
	// connection cap, or the store failed; 0 means 2 seconds.
	BusyWait time.Duration
	// ConnWait is how long Acquire waits for a connection of a
	// destination at its cap before it says "not now": it is woken when
	// a session of this node to the destination ends, and tries again
	// every ConnRetry for the connections other nodes give back. At most
	// four callers per connection of the destination wait (as many queue
	// workers as keep its connections busy); the others are told at once.
	// 0 means no waiting.
	ConnWait time.Duration
	// ConnRetry is how often a waiting Acquire tries again; 0 means
	// 500 ms.
	ConnRetry time.Duration
	// Logger receives back-off and recovery events; nil means
	// slog.Default().
	Logger *slog.Logger
	// FirstPause is the pause after a destination's first throttling
	// reply, doubling with each further episode up to 30 times it (capped
	// at MaxPause); 0 means one minute.
	FirstPause time.Duration
	// MaxPause caps the pause; 0 means 30 minutes.
	MaxPause time.Duration
}

// Back-off parameters.
const (
	firstPause   = time.Minute
	maxPause     = 30 * time.Minute
	recoveryStep = time.Minute
	minFactor    = 1.0 / 16
	maxStrikes   = 6 // 1m << 5 = 32m, capped at 30m
	// storeTimeout bounds a call to the store.
	storeTimeout = 10 * time.Second
	// maxUpdates bounds the rereads of a state another node changed.
	maxUpdates = 5
	// waitersPerConn bounds the callers waiting for a connection of a
	// destination, per connection it has.
	waitersPerConn = 4
)

// Throttle applies per-destination limits. It is safe for concurrent use.
type Throttle struct {
	st       store.Destinations
	def      Limits
	domains  map[string]Limits
	maxPer   int
	hold     time.Duration
	clk      clock.Clock
	maxDest  int
	busyWait time.Duration
	connWait time.Duration
	retry    time.Duration
	log      *slog.Logger

	firstPause, maxPause time.Duration

	mu      sync.Mutex
	known   map[string]store.DestinationState // last state seen, by key
	waiting map[string][]chan struct{}        // Acquire calls waiting for a connection, by key, oldest first
}

// New returns a Throttle configured by cfg.
func New(cfg Config) *Throttle {
	t := &Throttle{
		st:       cfg.Store,
		def:      cfg.Default,
		domains:  make(map[string]Limits),
		maxPer:   cfg.MaxPerDestination,
		hold:     cfg.Hold,
		clk:      cfg.Clock,
		maxDest:  cfg.MaxDestinations,
		busyWait: cfg.BusyWait,
		connWait: cfg.ConnWait,
		retry:    cfg.ConnRetry,
		log:      cfg.Logger,
		known:    make(map[string]store.DestinationState),
		waiting:  make(map[string][]chan struct{}),

		firstPause: cfg.FirstPause,
		maxPause:   cfg.MaxPause,
	}
	if t.firstPause <= 0 {
		t.firstPause = firstPause
	}
	if t.maxPause <= 0 {
		t.maxPause = maxPause
	}
	if t.hold <= 0 {
		t.hold = time.Minute
	}
	doms := cfg.Domains
	if doms == nil {
		doms = DefaultDomains()
	}
	for d, l := range doms {
		t.domains[normalize(d)] = l
	}
	if t.clk == nil {
		t.clk = clock.Real{}
	}
	if t.maxDest <= 0 {
		t.maxDest = 10000
	}
	if t.busyWait <= 0 {
		t.busyWait = 2 * time.Second
	}
	if t.retry <= 0 {
		t.retry = 500 * time.Millisecond
	}
	if t.log == nil {
		t.log = slog.Default()
	}
	return t
}

func normalize(domain string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(domain)), ".")
}

// Key returns the destination key domain is throttled under: the domain
// itself (lower-case) when it has its own entry in the table, else the
// canonical provider domain for known aliases ("googlemail.com" ->
// "gmail.com", "hotmail.com" -> "outlook.com"), else the domain.
func (t *Throttle) Key(domain string) string {
	d := normalize(domain)
	if _, ok := t.domains[d]; ok {
		return d
	}
	if k, ok := aliases[d]; ok {
		return k
	}
	return d
}

// KeyForMX returns the destination key for a recipient domain whose MX hosts
// are mxHosts: Key(domain) if the domain is in the table or a known alias,
// else the provider key of the first MX host run by a known provider (so a
// Google Workspace domain shares gmail.com's limits), else the domain.
func (t *Throttle) KeyForMX(domain string, mxHosts []string) string {
	d := normalize(domain)
	if k := t.Key(d); k != d {
		return k
	}
	if _, ok := t.domains[d]; ok {
		return d
	}
	for _, h := range mxHosts {
		h = normalize(h)
		for _, s := range mxSuffixes {
			if strings.HasSuffix(h, s.suffix) {
				return s.key
			}
		}
	}
	return d
}

// Limits returns the configured limits of a destination (domain is mapped
// with Key), not reduced by back-off.
func (t *Throttle) Limits(domain string) Limits {
	return t.limitsFor(t.Key(domain))
}

func (t *Throttle) limitsFor(key string) Limits {
	if l, ok := t.domains[key]; ok {
		return l
	}
	return t.def
}

// destLimits are the limits of key as the store applies them: the table's
// (or the default), connections capped by MaxPerDestination.
func (t *Throttle) destLimits(key string) store.DestinationLimits {
	l := t.limitsFor(key)
	dl := store.DestinationLimits{MaxConnections: l.MaxConnections, MessagesPerMinute: l.MessagesPerMinute}
	if t.maxPer > 0 && (dl.MaxConnections <= 0 || dl.MaxConnections > t.maxPer) {
		dl.MaxConnections = t.maxPer
	}
	return dl
}

// Acquire asks to start a delivery session carrying one message to domain
// (mapped with Key). When ok, the session holds one of the destination's
// connections until release is called (release is idempotent), renewed
// meanwhile, and has used one message of its minute. When !ok nothing is
// held and the caller should defer the recipients, without an attempt,
// for wait: the destination is paused after throttling replies, at its
// connection cap (after waiting up to ConnWait for a connection), or out
// of rate (on all nodes together), or the store failed (refused for
// BusyWait: the limits hold even then).
func (t *Throttle) Acquire(domain string) (release func(), wait time.Duration, ok bool) {
	key := t.Key(domain)
	limits := t.destLimits(key)
	var deadline time.Time
	var turn chan struct{} // this call's place among the waiters, once it waits
	defer func() {
		if turn != nil {
			t.leave(key, turn)
		}
	}()
	for {
		now := t.clk.Now()
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		g, err := t.st.AcquireDestination(ctx, key, limits, now, now.Add(t.hold))
		cancel()
		if err != nil {
			t.log.Warn("throttle: destination state unavailable; holding the delivery back", "destination", key, "err", err)
			return nil, t.busyWait, false
		}
		t.remember(key, g.State)
		switch {
		case g.OK && g.Token == "":
			return func() {}, 0, true
		case g.OK:
			return t.holdConn(key, g.Token), 0, true
		case g.Wait > 0:
			return nil, g.Wait, false
		}
		// At the connection cap: wait for one, if there is room to.
		if deadline.IsZero() {
			deadline = now.Add(t.connWait)
		}
		left := deadline.Sub(now)
		if left <= 0 {
			return nil, t.busyWait, false
		}
		if turn == nil {
			if turn = t.join(key, waitersPerConn*limits.MaxConnections); turn == nil {
				return nil, t.busyWait, false
			}
		}
		tm := clock.NewTimer(t.clk, min(left, t.retry))
		select {
		case <-turn:
			turn = t.rejoin(key, turn)
		case <-tm.C():
		}
		tm.Stop()
	}
}

// join adds a waiter for a connection of key, unless limit wait already.
func (t *Throttle) join(key string, limit int) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if limit > 0 && len(t.waiting[key]) >= limit {
		return nil
	}
	ch := make(chan struct{}, 1)
	t.waiting[key] = append(t.waiting[key], ch)
	return ch
}

// rejoin puts a woken waiter back in line (first: it was woken for the
// connection given back, and someone else may have taken it).
func (t *Throttle) rejoin(key string, old chan struct{}) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(key, old)
	ch := make(chan struct{}, 1)
	t.waiting[key] = append([]chan struct{}{ch}, t.waiting[key]...)
	return ch
}

// leave removes a waiter.
func (t *Throttle) leave(key string, ch chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.removeLocked(key, ch)
}

func (t *Throttle) removeLocked(key string, ch chan struct{}) {
	w := t.waiting[key]
	for i, c := range w {
		if c == ch {
			w = append(w[:i:i], w[i+1:]...)
			break
		}
	}
	if len(w) == 0 {
		delete(t.waiting, key)
	} else {
		t.waiting[key] = w
	}
}

// wakeOne tells the oldest waiter for key that a connection was given
// back.
func (t *Throttle) wakeOne(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, ch := range t.waiting[key] {
		select {
		case ch <- struct{}{}:
			return
		default: // woken already, not yet back in line
		}
	}
}

// holdConn renews the connection token of key every third of Hold until
// the returned release function is called, which gives it back.
func (t *Throttle) holdConn(key, token string) func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		every := max(t.hold/3, time.Millisecond)
		for {
			tm := clock.NewTimer(t.clk, every)
			select {
			case <-stop:
				tm.Stop()
				return
			case <-tm.C():
			}
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			err := t.st.RenewDestination(ctx, key, token, t.clk.Now().Add(t.hold))
			cancel()
			if errors.Is(err, store.ErrLeaseLost) {
				t.log.Warn("throttle: a connection ran out before its session ended (the node stalled for longer than the hold)",
					"destination", key)
				return
			}
			if err != nil {
				t.log.Warn("throttle: renewing a connection", "destination", key, "err", err)
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(stop)
			<-done
			ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
			defer cancel()
			if err := t.st.ReleaseDestination(ctx, key, token); err != nil {
				t.log.Warn("throttle: giving a connection back; it runs out by itself", "destination", key, "err", err)
			}
			t.wakeOne(key)
		})
	}
}

// remember keeps the last state seen of key.
func (t *Throttle) remember(key string, st store.DestinationState) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.known[key]; !ok && len(t.known) >= t.maxDest {
		// Forget a tenth, idle ones first: the store has the truth, and
		// the next Acquire of a forgotten destination learns it again.
		now := t.clk.Now()
		drop := t.maxDest / 10
		for k, s := range t.known {
			if drop <= 0 {
				break
			}
			if s.Factor >= 1 && s.Strikes == 0 && !now.Before(s.PausedUntil) {
				delete(t.known, k)
				drop--
			}
		}
		for k := range t.known {
			if drop <= 0 {
				break
			}
			delete(t.known, k)
			drop--
		}
	}
	t.known[key] = st
}

// Reply is one delivery outcome, as the throttle needs to know it.
type Reply struct {
	Code     int               // basic reply code
	Enhanced smtp.EnhancedCode // zero if none
	Text     string            // reply text
	// Remote is set when the destination's server sent the reply. Outcomes
	// Herald made up itself (TLS policy refusals, DNS and connection
	// failures, local errors) have it unset and never back off.
	Remote bool
}

// Observe reports an outcome of a delivery to domain (mapped with Key).
// Throttling replies from the remote back the destination off; remote 2xx
// replies let it recover (see the package documentation). Other outcomes
// are ignored. A change is written to the store only if nobody changed the
// state since it was read.
func (t *Throttle) Observe(domain string, r Reply) {
	if !r.Remote {
		return
	}
	code := r.Code
	success := code >= 200 && code < 300
	throttling := !success && IsThrottling(code, r.Enhanced, r.Text)
	if !success && !throttling {
		return
	}
	key := t.Key(domain)
	now := t.clk.Now()
	recoverable := func(s store.DestinationState) bool {
		return (s.Factor < 1 || s.Strikes > 0) && now.Sub(s.LastChange) >= recoveryStep && !now.Before(s.PausedUntil)
	}
	if success {
		t.mu.Lock()
		s, ok := t.known[key]
		t.mu.Unlock()
		if !ok || !recoverable(s) {
			return // nothing to recover (as far as this node knows): no write
		}
	}
	t.update(key, func(s store.DestinationState) (store.DestinationState, bool) {
		if success {
			if !recoverable(s) {
				return s, false
			}
			s.Factor = min(s.Factor*2, 1)
			s.Strikes = max(s.Strikes-1, 0)
			s.LastChange = now
			t.log.Debug("throttle: destination recovering", "destination", key, "rate_factor", s.Factor)
			return s, true
		}
		if now.Before(s.PausedUntil) {
			return s, false // from a session started before the pause
		}
		s.Strikes = min(s.Strikes+1, maxStrikes)
		pause := min(t.firstPause<<(s.Strikes-1), t.maxPause)
		s.PausedUntil = now.Add(pause)
		s.Factor = max(s.Factor/2, minFactor)
		s.LastChange = now
		t.log.Info("throttle: destination backing off", "destination", key, "pause", pause,
			"rate_factor", s.Factor, "reply", code, "enhanced", r.Enhanced.String())
		return s, true
	})
}

// update applies change to key's state in the store, rereading it when
// another node changed it first.
func (t *Throttle) update(key string, change func(store.DestinationState) (store.DestinationState, bool)) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	for range maxUpdates {
		cur, err := t.st.DestinationState(ctx, key)
		if err != nil {
			t.log.Warn("throttle: destination state unavailable", "destination", key, "err", err)
			return
		}
		if cur.Factor <= 0 {
			cur.Factor = 1
		}
		next, ok := change(cur)
		if !ok {
			t.remember(key, cur)
			return
		}
		done, err := t.st.SetDestinationState(ctx, key, cur.Version, next)
		if err != nil {
			t.log.Warn("throttle: writing destination state", "destination", key, "err", err)
			return
		}
		if done {
			next.Version = cur.Version + 1
			t.remember(key, next)
			return
		}
	}
	t.log.Warn("throttle: destination state changed too often to update", "destination", key)
}

// Provider status codes that mean "you are sending too much" (see the
// package documentation).
var rateCodes = map[smtp.EnhancedCode]bool{
	{4, 7, 28}:  true, // Gmail: unusual rate of (unsolicited) mail
	{4, 7, 500}: true, // Microsoft: server busy
	{4, 7, 650}: true, // Microsoft: temporarily rate limited due to IP reputation
	{4, 7, 651}: true,
	{4, 7, 652}: true, // Microsoft: exceeded the maximum number of connections
}

// rateText are phrases (lower case) and provider markers that name a rate
// or volume limit on the sender; each must start a word.
var rateText = []string{
	"[tss0", "[ts0", // Yahoo / AOL: [TSS04] temporarily deferred, [TS01] ...
	"rl00000",    // Comcast: RL000001, RL000003 rate limits
	"rp-00",      // Microsoft: RP-001 rate limit, RP-002/003 connection limits
	"rate limit", // also "rate limited", "rate limiting", "rate limit exceeded"
	"rate-limit", "ratelimit",
	"too many connections", "too many concurrent", "too many sessions", "too many messages",
	"connection limit", "throttl", "unusual rate", "unexpected volume", "sending rate",
	"exceeded the rate", "slow down", "too fast", "server busy",
}

// notRateText are phrases that make a reply something else whatever it
// also says.
var notRateText = []string{"greylist", "graylist", "grey-list", "gray-list", "tls required", "requires tls"}

// IsThrottling reports whether a remote reply asks the sender to slow
// down: 421, a provider's rate-limit status code, or a temporary failure
// whose text names a rate or volume limit; never greylisting, mailbox
// states (4.2.x), too many recipients (4.5.3), TLS requirements (4.7.4,
// 4.7.5) or permanent failures. The package documentation lists the
// signals.
func IsThrottling(code int, enhanced smtp.EnhancedCode, text string) bool {
	if code < 400 || code >= 500 {
		return false
	}
	lt := strings.ToLower(text)
	for _, s := range notRateText {
		if strings.Contains(lt, s) {
			return false
		}
	}
	switch {
	case enhanced[0] == 4 && enhanced[1] == 2, // one mailbox: full, receiving too fast
		enhanced == smtp.EnhancedCode{4, 5, 3},                                           // too many recipients
		enhanced == smtp.EnhancedCode{4, 7, 4} || enhanced == smtp.EnhancedCode{4, 7, 5}: // TLS
		return false
	case code == 421, rateCodes[enhanced]:
		return true
	}
	for _, s := range rateText {
		if containsWord(lt, s) {
			return true
		}
	}
	return false
}

// containsWord reports whether s occurs in text at the start of a word, so
// that "rp-00" does not match "corp-001" nor "rate limit" "corporate
// limit".
func containsWord(text, s string) bool {
	for i := 0; ; {
		j := strings.Index(text[i:], s)
		if j < 0 {
			return false
		}
		j += i
		if j == 0 || !isAlnum(text[j-1]) {
			return true
		}
		i = j + 1
	}
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// Status returns the back-off of domain (mapped with Key) as the store
// has it.
func (t *Throttle) Status(domain string) (store.DestinationState, error) {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	return t.st.DestinationState(ctx, t.Key(domain))
}

// Len returns the number of destinations whose last state is kept in
// memory.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.known)
}
