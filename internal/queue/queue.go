// Package queue schedules deliveries: it takes due recipients from the
// store, hands them to a Transport grouped by destination domain, applies
// the retry schedule with exponential backoff and jitter, and turns
// permanent failures and expiry into bounces.
//
// Several nodes may share one queue. A node leases the recipients it
// delivers for Config.LeaseTimeout and renews the lease every third of it
// while the delivery runs, so a slow delivery keeps its recipients and a
// dead node's are taken over by the others within LeaseTimeout. Outcomes
// are recorded with the lease's token; when the lease was lost (taken over
// after it expired), the outcome of this node's attempt is dropped and
// the new owner delivers.
//
// What can happen twice: a delivery whose lease was taken over while it
// ran (the new owner attempts again: at-least-once); and a DSN, when the
// node dies, or its lease is lost, between queueing the DSN and recording
// the outcome (the DSN is queued first so that a crash repeats it rather
// than losing it). The lease is renewed just before the DSNs are queued,
// so the second case needs the node to stall for a whole LeaseTimeout in
// between, or the store to refuse the outcome for that long.
package queue

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/bounce"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/workpool"
)

// Result classifies one delivery attempt for one recipient.
type Result int

// Attempt results.
const (
	Delivered Result = iota
	Temporary
	Permanent
)

func (r Result) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case Temporary:
		return "deferred"
	case Permanent:
		return "failed"
	}
	return "unknown"
}

// Attempt is the outcome of one delivery attempt for one recipient.
type Attempt struct {
	RecipientID int64
	Result      Result
	Code        int
	Enhanced    smtp.EnhancedCode
	Text        string // reply text or error description
	RemoteMTA   string // host[ip] that answered, "" for local delivery
	TLS         string // TLS outcome of the connection, "" if not applicable
	// DSNPassedOn: delivered to a next hop that took over DSN duties, so
	// no success notice is due from us.
	DSNPassedOn bool
	// Wait, when positive, means the recipient was not attempted: the
	// destination's budget is spent; try again after Wait (no attempt is
	// counted and nothing is logged as a delivery attempt).
	Wait time.Duration
	// RetryAfter, when positive on a temporary failure, asks for the next
	// attempt sooner than the retry schedule: it is due after the shorter
	// of RetryAfter and the schedule's delay (the mailbox simulator's soft
	// bounce is retried after a minute).
	RetryAfter time.Duration
}

// Throttle shapes traffic per destination so mail waits instead of being
// refused by the receiver.
type Throttle interface {
	// Acquire asks to start a delivery to domain; ok=false means wait.
	Acquire(domain string) (release func(), wait time.Duration, ok bool)
	// Observe reports the outcome of one recipient at domain, so that
	// throttling replies from the remote (a.RemoteMTA set) back off.
	Observe(domain string, a Attempt)
}

// throttled is the outcome of recipients held back by the throttle.
func throttled(rcpts []store.Recipient, wait time.Duration) []Attempt {
	out := make([]Attempt, len(rcpts))
	for i, r := range rcpts {
		out[i] = Attempt{RecipientID: r.ID, Result: Temporary, Wait: max(wait, time.Second),
			Text: "held back: destination rate limit"}
	}
	return out
}

// Reply formats the attempt's reply as "550 5.1.1 text".
func (a Attempt) Reply() string {
	if a.Code == 0 {
		return a.Text
	}
	return (&smtp.Error{Code: a.Code, Enhanced: a.Enhanced, Message: a.Text}).Error()
}

// Transport delivers a message to recipients that all share one domain. It
// must return exactly one Attempt per recipient.
type Transport interface {
	Deliver(ctx context.Context, msg *store.Message, domain string, rcpts []store.Recipient, body func() (io.ReadCloser, error)) []Attempt
}

// Bouncer sends delivery status notifications for a message. For a message
// with the null sender (itself a notification) it is called only with
// failed recipients, so that it can tell the postmaster. It must return
// only after the notification is durably queued (so a crash cannot lose it).
type Bouncer interface {
	Bounce(ctx context.Context, msg *store.Message, kind BounceKind, rcpts []BouncedRecipient) error
}

// BounceKind is the DSN action being reported.
type BounceKind int

// Bounce kinds.
const (
	BounceFailed    BounceKind = iota
	BounceDelayed              // delay warning
	BounceDelivered            // success notice for NOTIFY=SUCCESS
)

// BouncedRecipient is one recipient reported in a DSN.
type BouncedRecipient struct {
	Recipient store.Recipient
	Attempt   Attempt
	Expired   bool      // the queue lifetime ran out
	RetryTill time.Time // for delay notices
}

// Config is the retry schedule and concurrency.
type Config struct {
	RetryInitial time.Duration // first retry delay (default 5m)
	RetryMax     time.Duration // cap on the delay (default 1h)
	RetryFactor  float64       // growth per attempt (default 2)
	RetryJitter  float64       // +/- fraction (default 0.2)
	MaxLifetime  time.Duration // then expire and bounce (default 120h)
	DelayWarning time.Duration // 0 disables delay notices
	PollInterval time.Duration // how often to look for due work (default 1s)
	Workers      int           // concurrent message deliveries (default 100)
	// LeaseTimeout is how long a lease lasts without renewal (default 1m):
	// a running delivery renews its lease every LeaseTimeout/3, and the
	// work of a node that died is taken over by another within it.
	LeaseTimeout time.Duration
	DrainTimeout time.Duration // on shutdown, how long in-flight deliveries may finish (default 10s)
	UpdateRetry  time.Duration // how long to keep retrying to record outcomes (default 10m)
	// OnStorageFull is called when the store refuses a write for lack of
	// space (the app frees its reserve so outcomes can be recorded).
	OnStorageFull func()
}

// DefaultLeaseTimeout is Config.LeaseTimeout when it is not set.
const DefaultLeaseTimeout = time.Minute

func (c *Config) setDefaults() {
	if c.RetryInitial <= 0 {
		c.RetryInitial = 5 * time.Minute
	}
	if c.RetryMax <= 0 {
		c.RetryMax = time.Hour
	}
	if c.RetryFactor < 1 {
		c.RetryFactor = 2
	}
	if c.RetryJitter < 0 || c.RetryJitter >= 1 {
		c.RetryJitter = 0.2
	}
	if c.MaxLifetime <= 0 {
		c.MaxLifetime = 120 * time.Hour
	}
	if c.PollInterval <= 0 {
		c.PollInterval = time.Second
	}
	if c.Workers <= 0 {
		c.Workers = 100
	}
	if c.UpdateRetry <= 0 {
		c.UpdateRetry = 10 * time.Minute
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.LeaseTimeout <= 0 {
		c.LeaseTimeout = DefaultLeaseTimeout
	}
}

// Observer receives per-attempt notifications (metrics). It must not block.
type Observer interface {
	AttemptDone(msg *store.Message, a Attempt, latency time.Duration)
}

// Scheduler runs deliveries. Create it with New and start it with Run.
type Scheduler struct {
	cfg       Config
	store     store.Queue
	transport Transport
	bouncer   Bouncer
	clock     clock.Clock
	log       *slog.Logger
	observer  Observer
	throttle  Throttle
	followUp  FollowUp

	pool *workpool.Pool[store.Lease]
}

// New builds a scheduler. obs may be nil.
func New(cfg Config, q store.Queue, t Transport, b Bouncer, clk clock.Clock, log *slog.Logger, obs Observer) *Scheduler {
	cfg.setDefaults()
	s := &Scheduler{cfg: cfg, store: q, transport: t, bouncer: b, clock: clk, log: log, observer: obs}
	s.pool = workpool.New(workpool.Config[store.Lease]{
		Workers:      cfg.Workers,
		PollInterval: cfg.PollInterval,
		DrainTimeout: cfg.DrainTimeout,
		Lease:        s.lease,
		Work:         func(ctx context.Context, l store.Lease) { s.deliver(ctx, l) },
		LeaseError:   s.leaseError,
	})
	return s
}

// SetThrottle installs per-destination traffic shaping; call before Run.
func (s *Scheduler) SetThrottle(t Throttle) { s.throttle = t }

// FollowUp is told about a message's attempts once their outcomes are
// recorded, for what must come after them: the mailbox simulator's
// complaint follows the delivery it complains about. It runs on the
// delivering worker and should be quick. It is not called when the
// outcomes were not recorded (lease lost, store refusing); a crash between
// recording and the call loses the follow-up.
type FollowUp interface {
	Recorded(ctx context.Context, msg *store.Message, attempts []Attempt)
}

// SetFollowUp installs f; call before Run.
func (s *Scheduler) SetFollowUp(f FollowUp) { s.followUp = f }

// LeaseTimeout is how long the spool should lease a message it hands over
// with Submit (the worker renews the lease from then on).
func (s *Scheduler) LeaseTimeout() time.Duration { return s.cfg.LeaseTimeout }

// Reserve takes a worker for a message about to be submitted. If none is
// free it returns false and the message should be enqueued unleased and
// Notify called. A reserved worker must be given to Submit or returned
// with Unreserve.
func (s *Scheduler) Reserve() bool { return s.pool.Reserve() }

// Unreserve returns a worker taken by Reserve that will not be used.
func (s *Scheduler) Unreserve() { s.pool.Unreserve() }

// Submit hands a freshly enqueued, leased message to the worker taken by
// Reserve. It never blocks.
func (s *Scheduler) Submit(l store.Lease) { s.pool.Submit(l) }

// Notify tells the scheduler that a message was stored without a worker
// (none was free): it is taken as soon as a worker finishes.
func (s *Scheduler) Notify() { s.pool.Notify() }

// Wake makes the scheduler look for due work now (after a retry command).
func (s *Scheduler) Wake() { s.pool.Wake() }

// Run delivers until ctx is cancelled, then gives in-flight deliveries
// DrainTimeout to finish; work not finished by then is left leased and is
// retried after a restart.
func (s *Scheduler) Run(ctx context.Context) { s.pool.Run(ctx) }

// lease takes up to n due messages from the store.
func (s *Scheduler) lease(ctx context.Context, n int) ([]store.Lease, error) {
	return s.store.Lease(ctx, s.clock.Now(), s.cfg.LeaseTimeout, n)
}

func (s *Scheduler) leaseError(err error) {
	s.log.Error("queue lease failed", "err", err)
	if errors.Is(err, store.ErrStorageFull) && s.cfg.OnStorageFull != nil {
		s.cfg.OnStorageFull()
	}
}

// deliver attempts every leased recipient of l, grouped by domain, and
// records the outcomes under l's token. The lease is renewed while it
// runs; when it is lost, the attempts in progress are cancelled and their
// outcome dropped. A message of a paused or cancelled batch is not
// attempted (see held).
func (s *Scheduler) deliver(ctx context.Context, l store.Lease) {
	msg := l.Message
	if s.held(ctx, l) {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	k := s.keep(ctx, l, cancel)
	defer k.stop()
	groups := make(map[string][]store.Recipient)
	var order []string
	for _, r := range msg.Recipients {
		d := smtp.DomainOf(r.Address)
		if _, ok := groups[d]; !ok {
			order = append(order, d)
		}
		groups[d] = append(groups[d], r)
	}
	body := func() (io.ReadCloser, error) { return s.store.OpenBody(ctx, msg.ID) }
	start := s.clock.Now()
	results := make([][]Attempt, len(order))
	one := func(i int, d string) {
		if s.throttle != nil {
			release, wait, ok := s.throttle.Acquire(d)
			if !ok {
				results[i] = throttled(groups[d], wait)
				return
			}
			defer release()
		}
		results[i] = s.transport.Deliver(ctx, msg, d, groups[d], body)
		if s.throttle != nil {
			for _, a := range results[i] {
				s.throttle.Observe(d, a)
			}
		}
	}
	if len(order) == 1 {
		one(0, order[0])
	} else {
		var wg sync.WaitGroup
		for i, d := range order {
			wg.Add(1)
			go func() {
				defer wg.Done()
				one(i, d)
			}()
		}
		wg.Wait()
	}
	var all []Attempt
	for i, d := range order {
		all = append(all, s.complete(groups[d], results[i])...)
	}
	s.record(ctx, k, msg, all, start)
}

// BatchChecker is the store's check of a leased message of a batch
// (store.Batches.CheckBatch): a paused batch's recipients are held and a
// cancelled one's removed instead of attempted.
type BatchChecker interface {
	CheckBatch(ctx context.Context, messageID, batchID, token string) (string, error)
}

// held checks the batch of l's message, if it has one and the store
// checks batches, and reports whether the message must not be attempted
// now: its batch is paused (its recipients are held until it resumes) or
// cancelled (they were removed). A failed check leaves the lease to run
// out, so the message is tried again then rather than sent unchecked.
func (s *Scheduler) held(ctx context.Context, l store.Lease) bool {
	if l.Message.BatchID == "" {
		return false
	}
	bc, ok := s.store.(BatchChecker)
	if !ok {
		return false
	}
	state, err := bc.CheckBatch(ctx, l.Message.ID, l.Message.BatchID, l.Token)
	switch {
	case err != nil:
		s.log.Error("checking the message's batch failed; retried when the lease runs out", "id", l.Message.ID, "batch", l.Message.BatchID, "err", err)
		return true
	case state == store.BatchPaused:
		s.log.Info("message held: its batch is paused", "id", l.Message.ID, "batch", l.Message.BatchID)
		return true
	case state == store.BatchCancelled:
		s.log.Info("message not sent: its batch was cancelled", "id", l.Message.ID, "batch", l.Message.BatchID)
		return true
	}
	return false
}

// complete makes sure there is exactly one attempt per recipient.
func (s *Scheduler) complete(rcpts []store.Recipient, got []Attempt) []Attempt {
	seen := make(map[int64]bool, len(got))
	out := make([]Attempt, 0, len(rcpts))
	for _, a := range got {
		if !seen[a.RecipientID] {
			seen[a.RecipientID] = true
			out = append(out, a)
		}
	}
	for _, r := range rcpts {
		if !seen[r.ID] {
			out = append(out, Attempt{RecipientID: r.ID, Result: Temporary, Code: 451,
				Enhanced: smtp.EnhancedCode{4, 3, 0}, Text: "delivery produced no result"})
		}
	}
	return out
}

// record turns attempts into store outcomes, sends bounces first (so a crash
// repeats a bounce rather than losing it) and then updates the store under
// the lease's token. A lost lease drops everything: the node that took
// the recipients over delivers, bounces and records them.
func (s *Scheduler) record(ctx context.Context, k *keeper, msg *store.Message, attempts []Attempt, start time.Time) {
	if k.isLost() {
		s.log.Warn("delivery lease lost during the attempt; outcome dropped (another node delivers)", "id", msg.ID)
		return
	}
	now := s.clock.Now()
	byID := make(map[int64]store.Recipient, len(msg.Recipients))
	for _, r := range msg.Recipients {
		byID[r.ID] = r
	}
	outcomes := make([]store.Outcome, 0, len(attempts))
	var failed, delayed, succeeded []BouncedRecipient
	for _, a := range attempts {
		r := byID[a.RecipientID]
		if a.Wait > 0 {
			// Not attempted: back to queued, due after the wait, no
			// attempt counted.
			outcomes = append(outcomes, store.Outcome{RecipientID: a.RecipientID, Status: store.StatusQueued,
				NextAttempt: now.Add(a.Wait), Reply: r.LastReply, RemoteMTA: r.RemoteMTA, DelayWarned: r.DelayWarned})
			continue
		}
		o := store.Outcome{RecipientID: a.RecipientID, Reply: a.Reply(), RemoteMTA: a.RemoteMTA, DelayWarned: r.DelayWarned,
			TLS: a.TLS}
		if a.Code != 0 {
			o.Enhanced = a.Enhanced.String()
		}
		if a.Result != Delivered {
			o.Bounce = bounce.Classify(a.Code, a.Enhanced, a.Text).String()
		}
		switch a.Result {
		case Delivered:
			o.Status = store.StatusDelivered
			if !a.DSNPassedOn && strings.Contains(strings.ToUpper(r.Notify), "SUCCESS") {
				succeeded = append(succeeded, BouncedRecipient{Recipient: r, Attempt: a})
			}
		case Permanent:
			o.Status = store.StatusFailed
			failed = append(failed, BouncedRecipient{Recipient: r, Attempt: a})
		default:
			if now.Sub(msg.Start()) >= s.cfg.MaxLifetime {
				o.Status = store.StatusExpired
				failed = append(failed, BouncedRecipient{Recipient: r, Attempt: a, Expired: true})
				break
			}
			o.Status = store.StatusDeferred
			wait := s.Backoff(r.Attempts + 1)
			if a.RetryAfter > 0 {
				wait = min(wait, a.RetryAfter)
			}
			o.NextAttempt = now.Add(wait)
			if s.cfg.DelayWarning > 0 && !r.DelayWarned && now.Sub(msg.Start()) >= s.cfg.DelayWarning {
				o.DelayWarned = true
				delayed = append(delayed, BouncedRecipient{Recipient: r, Attempt: a, RetryTill: msg.Start().Add(s.cfg.MaxLifetime)})
			}
		}
		outcomes = append(outcomes, o)
		s.log.Info("delivery attempt", "id", msg.ID, "rcpt", r.Address, "result", a.Result.String(),
			"reply", a.Reply(), "remote", a.RemoteMTA, "tls", a.TLS, "attempt", r.Attempts+1,
			"delay", now.Sub(msg.Received).Round(time.Millisecond))
		if s.observer != nil {
			s.observer.AttemptDone(msg, a, now.Sub(start))
		}
	}
	if s.bouncer != nil && len(failed)+len(delayed)+len(succeeded) > 0 {
		// Make sure the lease is still ours, and fresh for the next
		// LeaseTimeout, before queueing notifications: a DSN for recipients
		// another node took over would be sent again by that node.
		if !k.confirm(ctx) {
			s.log.Warn("delivery lease lost before its DSNs; outcome and DSNs dropped (another node delivers)", "id", msg.ID)
			return
		}
		for _, set := range []struct {
			kind  BounceKind
			rcpts []BouncedRecipient
		}{{BounceFailed, failed}, {BounceDelayed, delayed}, {BounceDelivered, succeeded}} {
			if len(set.rcpts) == 0 || msg.Sender == "" && set.kind != BounceFailed {
				continue
			}
			if err := s.bouncer.Bounce(ctx, msg, set.kind, set.rcpts); err != nil {
				s.log.Error("queueing DSN failed", "id", msg.ID, "kind", set.kind, "err", err)
				s.unbounced(outcomes, set.kind, set.rcpts, now)
			}
		}
	}
	if s.update(ctx, k, msg.ID, outcomes) && s.followUp != nil {
		s.followUp.Recorded(ctx, msg, attempts)
	}
}

// update records outcomes under k's token, retrying while the store
// refuses (a full disk frees up, a busy database unlocks) for up to
// UpdateRetry; the lease is renewed meanwhile. Giving up leaves the
// recipients leased: they are attempted again when the lease expires or
// the node restarts, so the cost of failure is a duplicate, never a loss.
// A lost lease drops the outcomes: the new owner records its own. It
// reports whether the outcomes were recorded.
func (s *Scheduler) update(ctx context.Context, k *keeper, id string, outcomes []store.Outcome) bool {
	delay := 50 * time.Millisecond
	deadline := time.Now().Add(s.cfg.UpdateRetry)
	for {
		err := k.update(ctx, outcomes)
		if err == nil {
			return true
		}
		if errors.Is(err, store.ErrLeaseLost) {
			s.log.Warn("delivery lease lost before its outcome was recorded; outcome dropped (another node delivers)", "id", id, "err", err)
			return false
		}
		if errors.Is(err, store.ErrStorageFull) && s.cfg.OnStorageFull != nil {
			s.cfg.OnStorageFull()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.log.Error("recording delivery outcome failed; will retry after the lease", "id", id, "err", err)
			return false
		}
		s.log.Warn("recording delivery outcome failed; retrying", "id", id, "err", err, "in", delay)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// unbounced adjusts outcomes whose notification could not be queued. A
// failure must not become final without its DSN, so the recipient stays
// deferred and is tried (and bounced) again; a delay notice is retried at
// the next attempt; a success notice is best effort: the delivery stands.
func (s *Scheduler) unbounced(outcomes []store.Outcome, kind BounceKind, rcpts []BouncedRecipient, now time.Time) {
	if kind == BounceDelivered {
		return
	}
	for i := range outcomes {
		for _, b := range rcpts {
			if outcomes[i].RecipientID != b.Recipient.ID {
				continue
			}
			outcomes[i].DelayWarned = b.Recipient.DelayWarned
			if kind == BounceFailed {
				outcomes[i].Status = store.StatusDeferred
				outcomes[i].NextAttempt = now.Add(s.cfg.RetryInitial)
			}
		}
	}
}

// Backoff is the delay before attempt n+1 after n failed attempts
// (n >= 1): RetryInitial * RetryFactor^(n-1), capped at RetryMax, with
// +/- RetryJitter randomisation so retries of a burst spread out.
func (s *Scheduler) Backoff(n int) time.Duration {
	d := float64(s.cfg.RetryInitial) * math.Pow(s.cfg.RetryFactor, float64(max(n-1, 0)))
	if d > float64(s.cfg.RetryMax) {
		d = float64(s.cfg.RetryMax)
	}
	if j := s.cfg.RetryJitter; j > 0 {
		d *= 1 + j*(2*rand.Float64()-1)
	}
	return time.Duration(d)
}
