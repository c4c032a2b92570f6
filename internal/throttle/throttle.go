// Package throttle shapes outbound traffic per destination so that mail
// waits in Herald's queue instead of being refused by the receiver: it caps
// concurrent sessions and messages per minute for each destination (a
// recipient domain, or the mailbox provider behind it), and backs off a
// destination automatically when it answers with throttling replies.
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
// configured limit) and forgets one episode.
package throttle

import (
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
)

// Limits are the traffic limits of one destination. Zero means unlimited.
type Limits struct {
	// MaxConnections caps concurrent sessions (Acquire holders).
	MaxConnections int
	// MessagesPerConnection is how many messages the delivery code should
	// send over one connection before closing it. Throttle does not
	// enforce it; read it with Throttle.Limits.
	MessagesPerConnection int
	// MessagesPerMinute is the average rate; up to this many may go at
	// once after a quiet minute (a token bucket with that burst).
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
	// Default applies to destinations not in Domains; the zero value is
	// unlimited (see DefaultLimits).
	Default Limits
	// Domains holds per-destination limits keyed by lower-case domain. Nil
	// means DefaultDomains(); pass an empty map for no table.
	Domains map[string]Limits
	// Clock tells the time; nil means the wall clock.
	Clock clock.Clock
	// MaxDestinations bounds the destinations remembered; 0 means 10000.
	MaxDestinations int
	// BusyWait is the wait returned when a destination is at its
	// connection cap; 0 means 2 seconds.
	BusyWait time.Duration
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
)

// Throttle applies per-destination limits. It is safe for concurrent use.
type Throttle struct {
	def      Limits
	domains  map[string]Limits
	clk      clock.Clock
	maxDest  int
	busyWait time.Duration
	log      *slog.Logger

	firstPause, maxPause time.Duration

	mu    sync.Mutex
	dests map[string]*dest
}

// dest is the state of one destination.
type dest struct {
	limits      Limits
	active      int
	tokens      float64
	last        time.Time // of the last refill
	factor      float64   // effective fraction of the limits, (0, 1]
	strikes     int       // throttling episodes not yet forgiven
	pausedUntil time.Time
	lastChange  time.Time // of the last back-off or recovery step
}

// New returns a Throttle configured by cfg.
func New(cfg Config) *Throttle {
	t := &Throttle{
		def:      cfg.Default,
		domains:  make(map[string]Limits),
		clk:      cfg.Clock,
		maxDest:  cfg.MaxDestinations,
		busyWait: cfg.BusyWait,
		log:      cfg.Logger,
		dests:    make(map[string]*dest),

		firstPause: cfg.FirstPause,
		maxPause:   cfg.MaxPause,
	}
	if t.firstPause <= 0 {
		t.firstPause = firstPause
	}
	if t.maxPause <= 0 {
		t.maxPause = maxPause
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

// Acquire asks to start a delivery session carrying one message to domain
// (mapped with Key). When ok, the session holds one of the destination's
// connections until release is called (release is idempotent) and has used
// one message of its rate. When !ok nothing is held and the caller should
// defer the recipients, without an attempt, for wait: the destination is
// paused after throttling replies, at its connection cap, or out of rate.
func (t *Throttle) Acquire(domain string) (release func(), wait time.Duration, ok bool) {
	key := t.Key(domain)
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	d := t.destLocked(key, now)
	d.refill(now)
	if now.Before(d.pausedUntil) {
		return nil, d.pausedUntil.Sub(now), false
	}
	if c := d.maxConns(); c > 0 && d.active >= c {
		return nil, t.busyWait, false
	}
	if r := d.ratePerSecond(); r > 0 {
		if d.tokens < 1 {
			w := time.Duration(math.Ceil((1 - d.tokens) / r * float64(time.Second)))
			return nil, max(w, time.Millisecond), false
		}
		d.tokens--
	}
	d.active++
	var once sync.Once
	return func() {
		once.Do(func() {
			t.mu.Lock()
			d.active--
			t.mu.Unlock()
		})
	}, 0, true
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
// are ignored.
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
	t.mu.Lock()
	defer t.mu.Unlock()
	d, found := t.dests[key]
	if !found {
		if success {
			return // nothing to recover
		}
		d = t.destLocked(key, now)
	}
	d.refill(now)
	if throttling {
		if now.Before(d.pausedUntil) {
			return // from a session started before the pause
		}
		d.strikes = min(d.strikes+1, maxStrikes)
		pause := min(t.firstPause<<(d.strikes-1), t.maxPause)
		d.pausedUntil = now.Add(pause)
		d.factor = max(d.factor/2, minFactor)
		if b := d.burst(); d.tokens > b {
			d.tokens = b
		}
		d.lastChange = now
		t.log.Info("throttle: destination backing off", "destination", key, "pause", pause,
			"rate_factor", d.factor, "reply", code, "enhanced", r.Enhanced.String())
		return
	}
	if (d.factor < 1 || d.strikes > 0) && now.Sub(d.lastChange) >= recoveryStep && !now.Before(d.pausedUntil) {
		d.factor = min(d.factor*2, 1)
		d.strikes = max(d.strikes-1, 0)
		d.lastChange = now
		t.log.Debug("throttle: destination recovering", "destination", key, "rate_factor", d.factor)
	}
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

// Status is a snapshot of a destination's state.
type Status struct {
	Active      int       // sessions held
	Tokens      float64   // messages that may start now under the rate
	RateFactor  float64   // effective fraction of the limits, (0, 1]
	PausedUntil time.Time // zero or past when not paused
}

// Status returns the current state of domain (mapped with Key).
func (t *Throttle) Status(domain string) Status {
	key := t.Key(domain)
	now := t.clk.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	d, ok := t.dests[key]
	if !ok {
		l := t.limitsFor(key)
		return Status{Tokens: float64(l.MessagesPerMinute), RateFactor: 1}
	}
	d.refill(now)
	return Status{Active: d.active, Tokens: d.tokens, RateFactor: d.factor, PausedUntil: d.pausedUntil}
}

// Len returns the number of destinations remembered.
func (t *Throttle) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.dests)
}

func (t *Throttle) destLocked(key string, now time.Time) *dest {
	if d, ok := t.dests[key]; ok {
		return d
	}
	if len(t.dests) >= t.maxDest {
		t.evictLocked(now)
	}
	l := t.limitsFor(key)
	d := &dest{limits: l, tokens: float64(l.MessagesPerMinute), last: now, factor: 1}
	t.dests[key] = d
	return d
}

// evictLocked forgets idle destinations (no session, not backed off, full
// bucket: the same as unknown ones) and, if that freed less than a tenth of
// the capacity, others without sessions, losing their back-off state.
// Destinations with sessions are never forgotten: their release functions
// refer to them.
func (t *Throttle) evictLocked(now time.Time) {
	for k, d := range t.dests {
		d.refill(now)
		if d.idle(now) {
			delete(t.dests, k)
		}
	}
	target := t.maxDest - t.maxDest/10
	for k, d := range t.dests {
		if len(t.dests) <= target {
			break
		}
		if d.active == 0 {
			delete(t.dests, k)
		}
	}
}

// idle reports whether d is the same as a new destination.
func (d *dest) idle(now time.Time) bool {
	full := d.limits.MessagesPerMinute <= 0 || d.tokens >= d.burst()
	return d.active == 0 && d.factor >= 1 && d.strikes == 0 && !now.Before(d.pausedUntil) && full
}

// maxConns is the effective connection cap, 0 if unlimited.
func (d *dest) maxConns() int {
	if d.limits.MaxConnections <= 0 {
		return 0
	}
	return max(1, int(float64(d.limits.MaxConnections)*d.factor))
}

// ratePerSecond is the effective refill rate, 0 if unlimited.
func (d *dest) ratePerSecond() float64 {
	return float64(d.limits.MessagesPerMinute) * d.factor / 60
}

// burst is the effective bucket size: at least one message.
func (d *dest) burst() float64 {
	return max(1, math.Floor(float64(d.limits.MessagesPerMinute)*d.factor))
}

func (d *dest) refill(now time.Time) {
	if el := now.Sub(d.last); el > 0 {
		if r := d.ratePerSecond(); r > 0 {
			d.tokens = min(d.burst(), d.tokens+el.Seconds()*r)
		}
		d.last = now
	}
}
