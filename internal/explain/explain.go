// Package explain answers "why is this message not delivered yet?": from
// the queue, the event log, the destinations' back-off and the suppression
// list (the same data the console shows) it says where a message is, per
// recipient and in sentences: in delivery on which node, waiting for its
// next attempt and why (the last reply, the destination's throttling), on
// the suppression list, when it expires; or, once it left the queue, how
// it ended.
package explain

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

// Store is the state an explanation reads; store.Store implements it.
type Store interface {
	Get(ctx context.Context, id string) (*store.Message, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	DestinationState(ctx context.Context, key string) (store.DestinationState, error)
	IsSuppressed(ctx context.Context, account, address string) (bool, error)
	GetBatch(ctx context.Context, account, id string) (store.Batch, error)
	store.QueueLeases
}

// Config is what the explanation needs of the server's configuration.
type Config struct {
	// MaxLifetime is queue.max_lifetime: a message not delivered by
	// Received + MaxLifetime expires. Default 120 hours (the
	// configuration's default).
	MaxLifetime time.Duration
	// DelayWarning is queue.delay_warning: when the sender is told of the
	// delay; 0 when no delay notices are sent.
	DelayWarning time.Duration
	// DestinationKey maps a recipient domain to the destination it is
	// throttled under (throttle.Throttle.Key); nil: the domain itself.
	DestinationKey func(domain string) string
}

// Overall states of a message.
const (
	StateQueued     = "queued"      // waiting for its first attempt
	StateScheduled  = "scheduled"   // waiting for the time it was scheduled for (send_at)
	StatePaused     = "paused"      // held: its batch is paused
	StateInDelivery = "in_delivery" // a node holds it for delivery now
	StateDeferred   = "deferred"    // a temporary failure; waiting for the next attempt
	StateDelivered  = "delivered"   // every recipient delivered
	StateBounced    = "bounced"     // every recipient failed permanently
	StateExpired    = "expired"     // the queue lifetime ran out for every recipient
	StateSuppressed = "suppressed"  // not sent: every recipient is on the suppression list
	StateRejected   = "rejected"    // refused before it was queued
	StateSandboxed  = "sandboxed"   // a sandbox send: checked, never queued
	StateFinished   = "finished"    // left the queue with mixed outcomes (see the recipients)
)

// heldBack starts the reply the queue records for recipients the throttle
// held back without an attempt (queue.throttled).
const heldBack = "held back:"

// maxEvents bounds the events read for one message.
const maxEvents = 1000

// Explanation is where a message is and why.
type Explanation struct {
	ID       string     `json:"id"`
	State    string     `json:"state"`
	InQueue  bool       `json:"in_queue"`
	Account  string     `json:"account,omitempty"`
	Sender   string     `json:"sender,omitempty"`
	Received *time.Time `json:"received,omitempty"`
	// ExpiresAt is when the message expires if it is not delivered (in
	// the queue only).
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	// DelayWarningAt is when the sender is (or was) told of the delay; nil
	// when delay notices are off or the message left the queue.
	DelayWarningAt *time.Time `json:"delay_warning_at,omitempty"`
	// ScheduledAt is the time a scheduled message was to leave (send_at).
	ScheduledAt *time.Time `json:"scheduled_at,omitempty"`
	// Batch is the batch the message belongs to, with its state.
	Batch      *Batch      `json:"batch,omitempty"`
	Summary    []string    `json:"summary"`
	Recipients []Recipient `json:"recipients"`
	Now        time.Time   `json:"now"`
}

// Recipient is one recipient's state and the reasons for it.
type Recipient struct {
	Address     string     `json:"address"`
	Status      string     `json:"status"` // queued, deferred, delivered, bounced, expired, suppressed, rejected
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	Due         bool       `json:"due,omitempty"` // the next attempt is due now
	LastAttempt *time.Time `json:"last_attempt,omitempty"`
	LastReply   string     `json:"last_reply,omitempty"`
	Enhanced    string     `json:"enhanced_status,omitempty"`
	RemoteMTA   string     `json:"remote_mta,omitempty"`
	TLS         string     `json:"tls,omitempty"`
	Bounce      string     `json:"bounce,omitempty"`
	// Lease is set while a node holds the recipient for delivery.
	Lease *Lease `json:"lease,omitempty"`
	// Held: the recipient's batch is paused; it is not attempted until the
	// batch resumes.
	Held bool `json:"held,omitempty"`
	// Destination is the key the recipient's domain is throttled under,
	// and Throttle its back-off when it has one.
	Destination string    `json:"destination"`
	Throttle    *Throttle `json:"throttle,omitempty"`
	// RateLimited: the last attempt did not start; Herald held it back
	// under the destination's limits (connections at once, messages per
	// minute, reduced while backed off).
	RateLimited bool `json:"rate_limited,omitempty"`
	// Suppressed: the address is on the account's suppression list now.
	Suppressed  bool     `json:"suppressed"`
	DelayWarned bool     `json:"delay_warned,omitempty"`
	Complained  bool     `json:"complained,omitempty"`
	Sentences   []string `json:"sentences"`
}

// Batch is the batch of a message.
type Batch struct {
	ID    string `json:"id"`
	State string `json:"state"` // active, paused, cancelled
}

// Lease is a node's hold on a recipient for delivery.
type Lease struct {
	Node    string    `json:"node"`
	Until   time.Time `json:"until"`
	Expired bool      `json:"expired"` // ran out; another node may take the recipient over
}

// Throttle is a destination's back-off.
type Throttle struct {
	Factor      float64    `json:"factor"` // fraction of the destination's limits in effect
	Strikes     int        `json:"strikes"`
	PausedUntil *time.Time `json:"paused_until,omitempty"`
	Since       *time.Time `json:"since,omitempty"` // the last back-off or recovery step
}

// Explainer explains messages.
type Explainer struct {
	st    Store
	cfg   Config
	clock clock.Clock
}

// New returns an Explainer over st; clk nil is the real clock.
func New(st Store, cfg Config, clk clock.Clock) *Explainer {
	if cfg.MaxLifetime <= 0 {
		cfg.MaxLifetime = 120 * time.Hour
	}
	if cfg.DestinationKey == nil {
		cfg.DestinationKey = func(d string) string { return strings.TrimSuffix(strings.ToLower(d), ".") }
	}
	if clk == nil {
		clk = clock.Real{}
	}
	return &Explainer{st: st, cfg: cfg, clock: clk}
}

// Explain explains message id as the caller of account sees it: a
// message of another account is not found, as is one unknown in both the
// queue and the event log (errors wrap store.ErrNotFound). account ""
// sees every account (the operator).
func (x *Explainer) Explain(ctx context.Context, id, account string) (*Explanation, error) {
	if id == "" || len(id) > 64 {
		return nil, fmt.Errorf("explain %q: %w", id, store.ErrNotFound)
	}
	now := x.clock.Now().UTC()
	m, err := x.st.Get(ctx, id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("explain %s: %w", id, err)
	}
	if m != nil && account != "" && accountOf(m.Account) != account {
		m = nil
	}
	evs, err := x.st.ListEvents(ctx, store.EventFilter{Account: account, MessageID: id, Limit: maxEvents})
	if err != nil {
		return nil, fmt.Errorf("explain %s: %w", id, err)
	}
	if m == nil && len(evs) == 0 {
		return nil, fmt.Errorf("explain %s: %w", id, store.ErrNotFound)
	}
	e := &Explanation{ID: id, Now: now, Summary: []string{}, Recipients: []Recipient{}}
	hist := history(evs)
	if m != nil {
		err = x.inQueue(ctx, e, m, hist, now)
	} else {
		err = x.finished(ctx, e, evs, hist)
	}
	if err != nil {
		return nil, fmt.Errorf("explain %s: %w", id, err)
	}
	return e, nil
}

// recipientHistory is what the event log says of one recipient.
type recipientHistory struct {
	last       *store.Event // the last event that changed its status
	attempt    *store.Event // the last delivery attempt (deferred, delivered, bounced)
	complained *store.Event
}

func history(evs []store.Event) map[string]*recipientHistory {
	h := make(map[string]*recipientHistory)
	for i := range evs {
		ev := &evs[i]
		if ev.Recipient == "" {
			continue
		}
		k := strings.ToLower(ev.Recipient)
		rh := h[k]
		if rh == nil {
			rh = &recipientHistory{}
			h[k] = rh
		}
		switch ev.Type {
		case store.EventComplained:
			rh.complained = ev
			continue
		case store.EventOpened, store.EventClicked:
			continue // tracking: nothing of the delivery
		case store.EventDeferred, store.EventDelivered, store.EventBounced:
			rh.attempt = ev
		}
		rh.last = ev
	}
	return h
}

func (x *Explainer) inQueue(ctx context.Context, e *Explanation, m *store.Message, hist map[string]*recipientHistory, now time.Time) error {
	e.InQueue = true
	e.Account, e.Sender, e.Received = accountOf(m.Account), sender(m.Sender), ts(m.Received)
	// The queue lifetime and the delay notice count from the time a
	// scheduled message was to leave.
	start := m.Start()
	expires := start.Add(x.cfg.MaxLifetime)
	e.ExpiresAt = ts(expires)
	if x.cfg.DelayWarning > 0 {
		e.DelayWarningAt = ts(start.Add(x.cfg.DelayWarning))
	}
	if !m.SendAt.IsZero() {
		e.ScheduledAt = ts(m.SendAt)
	}
	paused := false
	if m.BatchID != "" {
		b, err := x.st.GetBatch(ctx, e.Account, m.BatchID)
		switch {
		case err == nil:
			e.Batch = &Batch{ID: b.ID, State: b.State}
			paused = b.State == store.BatchPaused
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
	}
	scheduled := m.SendAt.After(now)
	leases, err := x.st.MessageLeases(ctx, m.ID)
	if err != nil {
		return err
	}
	leaseOf := make(map[int64]store.RecipientLease, len(leases))
	for _, l := range leases {
		leaseOf[l.RecipientID] = l
	}
	dests := make(map[string]*Throttle)
	pending, leased, deferred, held, waiting := 0, 0, 0, 0, 0
	for _, r := range m.Recipients {
		rv := Recipient{Address: r.Address, Status: statusName(r.Status), Attempts: r.Attempts, LastReply: r.LastReply,
			RemoteMTA: r.RemoteMTA, DelayWarned: r.DelayWarned, Sentences: []string{}}
		rh := hist[strings.ToLower(r.Address)]
		x.fromHistory(&rv, rh)
		if err := x.destination(ctx, &rv, dests); err != nil {
			return err
		}
		sup, err := x.st.IsSuppressed(ctx, e.Account, strings.ToLower(r.Address))
		if err != nil {
			return err
		}
		rv.Suppressed = sup
		if r.Status.Final() {
			rv.Sentences = append(rv.Sentences, finalSentence(&rv))
			e.Recipients = append(e.Recipients, rv)
			continue
		}
		pending++
		if r.Status == store.StatusDeferred {
			deferred++
		}
		rv.NextAttempt = ts(r.NextAttempt)
		rv.Due = !r.NextAttempt.After(now)
		rv.RateLimited = r.Status == store.StatusDeferred && strings.HasPrefix(r.LastReply, heldBack)
		if l, ok := leaseOf[r.ID]; ok {
			leased++
			rv.Lease = &Lease{Node: l.Owner, Until: l.Until.UTC(), Expired: l.Until.Before(now)}
		}
		switch {
		case paused && rv.Lease == nil:
			held++
			rv.Held = true
			rv.Sentences = append(rv.Sentences, fmt.Sprintf("%s: held: batch %s is paused; it is not attempted before the batch resumes.", r.Address, m.BatchID))
		case scheduled && rv.Lease == nil && rv.Attempts == 0 && rv.LastReply == "":
			waiting++
			rv.Sentences = append(rv.Sentences, fmt.Sprintf("%s: scheduled to be sent at %s (in %s).", r.Address, clockTime(m.SendAt), span(m.SendAt.Sub(now))))
		default:
			rv.Sentences = append(rv.Sentences, pendingSentences(&rv, now)...)
		}
		if sup {
			rv.Sentences = append(rv.Sentences, fmt.Sprintf("%s is on the account's suppression list now; a message already in the queue is still attempted (the list is checked when a message is accepted).", r.Address))
		}
		e.Recipients = append(e.Recipients, rv)
	}
	switch {
	case leased > 0:
		e.State = StateInDelivery
	case held > 0:
		e.State = StatePaused
	case waiting > 0:
		e.State = StateScheduled
	case deferred > 0:
		e.State = StateDeferred
	default:
		e.State = StateQueued
	}
	e.Summary = append(e.Summary, fmt.Sprintf("Message %s from %s is in the queue (received %s): %d of %d recipients pending.",
		m.ID, e.Sender, clockTime(m.Received), pending, len(m.Recipients)))
	if scheduled && pending > 0 {
		e.Summary = append(e.Summary, fmt.Sprintf("It is scheduled to be sent at %s (in %s).", clockTime(m.SendAt), span(m.SendAt.Sub(now))))
	}
	if paused && pending > 0 {
		e.Summary = append(e.Summary, fmt.Sprintf("Its batch %s is paused: its recipients are not attempted until the batch resumes.", m.BatchID))
	}
	// Every recipient's sentences, a destination's state said once.
	said := make(map[string]bool)
	for _, rv := range e.Recipients {
		for _, s := range rv.Sentences {
			if !said[s] {
				said[s] = true
				e.Summary = append(e.Summary, s)
			}
		}
	}
	if pending > 0 {
		if expires.After(now) {
			e.Summary = append(e.Summary, fmt.Sprintf("The message expires on %s (in %s) if not delivered by then.", clockTime(expires), span(expires.Sub(now))))
		} else {
			e.Summary = append(e.Summary, fmt.Sprintf("The message's queue lifetime ran out on %s; it expires at its next attempt.", clockTime(expires)))
		}
		if x.cfg.DelayWarning > 0 {
			at := start.Add(x.cfg.DelayWarning)
			warned := false
			for _, r := range m.Recipients {
				warned = warned || r.DelayWarned
			}
			switch {
			case warned:
				e.Summary = append(e.Summary, "The sender was sent a delay notice.")
			case at.After(now):
				e.Summary = append(e.Summary, fmt.Sprintf("If still not delivered, the sender gets a delay notice from %s (if it asked for one).", clockTime(at)))
			}
		}
	}
	return nil
}

// fromHistory fills what only the event log knows: the last attempt's time,
// enhanced code, TLS and bounce class.
func (x *Explainer) fromHistory(rv *Recipient, rh *recipientHistory) {
	if rh == nil {
		return
	}
	if a := rh.attempt; a != nil {
		rv.LastAttempt = ts(a.Time)
		rv.Enhanced, rv.TLS, rv.Bounce = a.Enhanced, a.TLS, a.Bounce
		if rv.LastReply == "" {
			rv.LastReply = a.Reply
		}
		if rv.RemoteMTA == "" {
			rv.RemoteMTA = a.RemoteMTA
		}
		if a.Attempt > rv.Attempts {
			rv.Attempts = a.Attempt
		}
	}
	if l := rh.last; l != nil && (l.Type == store.EventExpired || l.Type == store.EventSuppressed || l.Type == store.EventRejected ||
		l.Type == store.EventSandboxed || l.Type == store.EventCancelled) {
		if l.Reply != "" {
			rv.LastReply = l.Reply
		}
		if rv.LastAttempt == nil {
			rv.LastAttempt = ts(l.Time)
		}
	}
	rv.Complained = rh.complained != nil
}

// destination fills the recipient's destination and its back-off, read
// once per destination.
func (x *Explainer) destination(ctx context.Context, rv *Recipient, seen map[string]*Throttle) error {
	domain := rv.Address[strings.LastIndexByte(rv.Address, '@')+1:]
	rv.Destination = x.cfg.DestinationKey(domain)
	th, ok := seen[rv.Destination]
	if !ok {
		st, err := x.st.DestinationState(ctx, rv.Destination)
		if err != nil {
			return err
		}
		if st.Version != 0 && (st.Factor < 1 || st.Strikes > 0 || !st.PausedUntil.IsZero()) {
			th = &Throttle{Factor: st.Factor, Strikes: st.Strikes, PausedUntil: ts(st.PausedUntil), Since: ts(st.LastChange)}
		}
		seen[rv.Destination] = th
	}
	rv.Throttle = th
	return nil
}

// pendingSentences says why a pending recipient is not delivered yet.
func pendingSentences(rv *Recipient, now time.Time) []string {
	var out []string
	d := rv.Destination
	next := ""
	if rv.NextAttempt != nil {
		if rv.Due {
			next = "the next attempt is due now"
		} else {
			next = fmt.Sprintf("next attempt at %s (in %s)", clockTime(*rv.NextAttempt), span(rv.NextAttempt.Sub(now)))
		}
	}
	switch {
	case rv.Lease != nil && !rv.Lease.Expired:
		out = append(out, fmt.Sprintf("%s: being delivered now by node %s (held until %s).", rv.Address, nodeName(rv.Lease.Node), clockTime(rv.Lease.Until)))
	case rv.Lease != nil:
		out = append(out, fmt.Sprintf("%s: node %s took it for delivery but its hold ran out at %s; another node takes it over.", rv.Address, nodeName(rv.Lease.Node), clockTime(rv.Lease.Until)))
	case rv.Attempts == 0 && rv.LastReply == "":
		if rv.Due {
			out = append(out, fmt.Sprintf("%s: waiting for its first attempt, due now.", rv.Address))
		} else {
			out = append(out, fmt.Sprintf("%s: not attempted yet; its first attempt is at %s (in %s).", rv.Address, clockTime(*rv.NextAttempt), span(rv.NextAttempt.Sub(now))))
		}
	case rv.RateLimited:
		out = append(out, fmt.Sprintf("%s: held back by Herald's sending limits for %s (connections at once or messages per minute, on all nodes); %s.", rv.Address, d, next))
	default:
		when := ""
		if rv.LastAttempt != nil {
			when = " at " + clockTime(*rv.LastAttempt)
		}
		from := ""
		if rv.RemoteMTA != "" {
			from = " from " + rv.RemoteMTA
		}
		out = append(out, fmt.Sprintf("%s: waiting for %s: the last attempt%s got %s%s; %s.", rv.Address, d, when, quoteReply(rv.LastReply), from, next))
	}
	if t := rv.Throttle; t != nil {
		if t.PausedUntil != nil && t.PausedUntil.After(now) {
			out = append(out, fmt.Sprintf("%s is paused until %s after throttling replies (%d strikes): no delivery to it starts before then.", d, clockTime(*t.PausedUntil), t.Strikes))
		}
		if t.Factor > 0 && t.Factor < 1 {
			since := ""
			if t.Since != nil {
				since = " since " + clockTime(*t.Since)
			}
			out = append(out, fmt.Sprintf("%s is backed off to %.0f %% of its sending limits%s after throttling replies.", d, t.Factor*100, since))
		}
	}
	return out
}

// finalSentence says how a recipient ended.
func finalSentence(rv *Recipient) string {
	when := ""
	if rv.LastAttempt != nil {
		when = " at " + clockTime(*rv.LastAttempt)
	}
	reply := ""
	if rv.LastReply != "" {
		reply = ": " + quoteReply(rv.LastReply)
	}
	var s string
	switch rv.Status {
	case StateDelivered:
		by := ""
		if rv.RemoteMTA != "" {
			by = " by " + rv.RemoteMTA
		}
		s = fmt.Sprintf("%s: delivered%s, accepted%s%s.", rv.Address, when, by, reply)
	case StateBounced:
		class := ""
		if rv.Bounce != "" {
			class = " (" + rv.Bounce + ")"
		}
		s = fmt.Sprintf("%s: bounced%s after %d attempts%s%s.", rv.Address, when, rv.Attempts, reply, class)
	case StateExpired:
		s = fmt.Sprintf("%s: expired%s, the queue lifetime ran out after %d attempts%s.", rv.Address, when, rv.Attempts, reply)
	case StateSuppressed:
		s = fmt.Sprintf("%s: not sent%s: the address is on the account's suppression list.", rv.Address, when)
	case StateRejected:
		s = fmt.Sprintf("%s: refused before queueing%s%s.", rv.Address, when, reply)
	case StateSandboxed:
		s = fmt.Sprintf("%s: a sandbox send%s, checked and never queued%s.", rv.Address, when, reply)
	case store.EventCancelled:
		s = fmt.Sprintf("%s: not sent: its batch was cancelled%s.", rv.Address, when)
	default:
		s = fmt.Sprintf("%s: %s%s%s.", rv.Address, rv.Status, when, reply)
	}
	if rv.Complained {
		s += " The recipient complained (feedback loop)."
	}
	return s
}

// finished explains a message that left the queue from its events.
func (x *Explainer) finished(ctx context.Context, e *Explanation, evs []store.Event, hist map[string]*recipientHistory) error {
	var order []string
	seen := make(map[string]bool)
	for _, ev := range evs {
		if e.Account == "" {
			e.Account, e.Sender = accountOf(ev.Account), sender(ev.Sender)
		}
		if ev.Type == store.EventAccepted && e.Received == nil {
			e.Received = ts(ev.Time)
		}
		if k := strings.ToLower(ev.Recipient); ev.Recipient != "" && !seen[k] {
			seen[k] = true
			order = append(order, ev.Recipient)
		}
	}
	dests := make(map[string]*Throttle)
	states := make(map[string]int)
	for _, addr := range order {
		rh := hist[strings.ToLower(addr)]
		rv := Recipient{Address: addr, Sentences: []string{}}
		if rh.last != nil {
			rv.Status = eventStatus(rh.last.Type)
			rv.Attempts = rh.last.Attempt
		}
		x.fromHistory(&rv, rh)
		if err := x.destination(ctx, &rv, dests); err != nil {
			return err
		}
		rv.Throttle = nil // the back-off now says nothing of how it ended
		sup, err := x.st.IsSuppressed(ctx, e.Account, strings.ToLower(addr))
		if err != nil {
			return err
		}
		rv.Suppressed = sup
		if rv.Status == StateQueued {
			// Accepted, then gone without an outcome: deleted by an
			// operator, or the outcome's events were pruned.
			rv.Status = "removed"
			rv.Sentences = append(rv.Sentences, fmt.Sprintf("%s: accepted, then removed from the queue without a delivery outcome (deleted by an operator, or its events were pruned).", addr))
		} else {
			rv.Sentences = append(rv.Sentences, finalSentence(&rv))
		}
		states[rv.Status]++
		e.Recipients = append(e.Recipients, rv)
	}
	e.State = StateFinished
	if len(states) == 1 {
		for s := range states {
			if s != "removed" {
				e.State = s
			}
		}
	}
	e.Summary = append(e.Summary, fmt.Sprintf("Message %s is no longer in the queue: %s.", e.ID, stateWords(e.State)))
	for _, rv := range e.Recipients {
		e.Summary = append(e.Summary, rv.Sentences...)
	}
	return nil
}

func stateWords(s string) string {
	switch s {
	case StateDelivered:
		return "delivered to every recipient"
	case StateBounced:
		return "it bounced for every recipient"
	case StateExpired:
		return "it expired for every recipient"
	case StateSuppressed:
		return "not sent, every recipient is on the suppression list"
	case StateRejected:
		return "it was refused before queueing"
	case StateSandboxed:
		return "a sandbox send, nothing was queued or sent"
	case store.EventCancelled:
		return "not sent, its batch was cancelled"
	}
	return "the recipients ended differently"
}

// statusName maps a queue status to the explanation's words.
func statusName(s store.Status) string {
	if s == store.StatusFailed {
		return StateBounced
	}
	return string(s)
}

// eventStatus maps an event type to the recipient status it leaves.
func eventStatus(t string) string {
	switch t {
	case store.EventAccepted:
		return StateQueued
	case store.EventBounced:
		return StateBounced
	}
	return t // deferred, delivered, expired, suppressed, rejected
}

func accountOf(a string) string {
	if a == "" {
		return store.DefaultAccount
	}
	return a
}

func sender(s string) string {
	if s == "" {
		return "<>"
	}
	return s
}

func nodeName(n string) string {
	if n == "" {
		return "(this server)"
	}
	return n
}

// quoteReply bounds a remote reply (attacker-controlled) for a sentence:
// one line, at most 200 characters.
func quoteReply(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	if s == "" {
		return "no reply"
	}
	return `"` + s + `"`
}

func ts(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// clockTime formats t for a sentence, in UTC.
func clockTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

// span says a duration in words: "45 s", "9 min", "2 h 5 min", "3 days 4 h".
func span(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%d min", int(d.Round(time.Minute)/time.Minute))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		h, m := int(d/time.Hour), int(d%time.Hour/time.Minute)
		if m == 0 {
			return fmt.Sprintf("%d h", h)
		}
		return fmt.Sprintf("%d h %d min", h, m)
	}
	d = d.Round(time.Hour)
	days, h := int(d/(24*time.Hour)), int(d%(24*time.Hour)/time.Hour)
	if h == 0 {
		return fmt.Sprintf("%d days", days)
	}
	return fmt.Sprintf("%d days %d h", days, h)
}
