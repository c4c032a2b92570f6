package submit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// Store is the state the pipeline reads: the directory, account ownership,
// suppressions, DKIM keys, the event log for recipients it suppresses, and
// the rate windows it charges.
type Store interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	GetUser(ctx context.Context, address string) (store.User, error)
	GetAlias(ctx context.Context, address string) (store.Alias, error)
	GetRoute(ctx context.Context, address string) (store.Route, error)
	DomainAccount(ctx context.Context, domain string) (string, error)
	UserAccount(ctx context.Context, address string) (string, error)
	GetAccount(ctx context.Context, id string) (store.Account, error)
	IsSuppressed(ctx context.Context, account, address string) (bool, error)
	// SuppressedFor: suppressed globally or in an unsubscribe group.
	SuppressedFor(ctx context.Context, account, address, group string) (bool, error)
	AddEvents(ctx context.Context, evs []store.Event) error
	ActiveDKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error)
	// The sending-rate windows of users and accounts, shared by every
	// node.
	store.RateCounters
}

// Spool makes an accepted message durable (package spool).
type Spool interface {
	Accept(ctx context.Context, msg *store.Message, r io.Reader, procs ...store.Processor) (string, error)
}

// Feedback handles the VERP addresses that bounces and complaints about
// mail Herald sent come back to.
type Feedback interface {
	// IsVERP reports whether address has the VERP form; Valid whether its
	// token is authentic.
	IsVERP(address string) bool
	Valid(address string) bool
	// Sender returns the VERP envelope sender for a message, or sender.
	Sender(msgID, sender string) string
	// Consume acts on a report (DSN or ARF) mailed to a VERP address.
	Consume(ctx context.Context, rcpt string, report []byte) error
}

// Inbound starts the authentication checks of one transaction from an
// anonymous peer (SPF at MAIL FROM).
type Inbound func(ctx context.Context, ip netip.Addr, helo, from string) InboundChecks

// InboundChecks are the rest of those checks: at RCPT TO (a domain's SPF
// policy) and while the message streams (DKIM, ARC, DMARC, report
// catching). domain is the local domain whose policy applies.
type InboundChecks interface {
	Rcpt(ctx context.Context, domain string) error
	Processors(ctx context.Context, domain string) []store.Processor
}

// Config holds the pipeline's limits and settings.
type Config struct {
	// Hostname qualifies generated Message-IDs.
	Hostname string
	// MaxMessageSize bounds a message from every source (the SMTP listener
	// also refuses it early, from SIZE and while reading DATA).
	MaxMessageSize int64
	// MaxRecipients bounds the envelope recipients of one message.
	MaxRecipients int
	// RelayAllow are the networks whose clients relay without AUTH.
	RelayAllow []netip.Prefix
	// VERP is "api" (API mail gets a VERP envelope sender), "all" (also
	// submission users) or "none".
	VERP string
	// UserLimits bound each submission user's recipients per minute, hour
	// and day (zero: none); account limits are in the store.
	UserLimits ratelimit.Limits
}

// traceAllowance is added to MaxMessageSize for the trace fields the
// entry points prepend (Received) before the pipeline sees the message.
const traceAllowance = 8 << 10

// Pipeline is the acceptance path. It is safe for concurrent use.
type Pipeline struct {
	cfg      Config
	st       Store
	spool    Spool
	feedback Feedback
	inbound  Inbound
	guard    func(size int64) error
	dnsbl    *dnsbl.Checker
	clock    clock.Clock
	log      *slog.Logger
}

// Deps are the pipeline's collaborators. Spool and Store are required;
// without Feedback no address is a VERP address, without Inbound anonymous
// mail is accepted unchecked, without Guard free space is not checked,
// without Blocklists (or with no list configured) no client is screened.
type Deps struct {
	Store      Store
	Spool      Spool
	Feedback   Feedback
	Inbound    Inbound
	Guard      func(size int64) error
	Blocklists *dnsbl.Checker
	Clock      clock.Clock
	Logger     *slog.Logger
}

// New returns a pipeline.
func New(cfg Config, d Deps) *Pipeline {
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 25 << 20
	}
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = 100
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Pipeline{cfg: cfg, st: d.Store, spool: d.Spool, feedback: d.Feedback, inbound: d.Inbound,
		guard: d.Guard, dnsbl: d.Blocklists, clock: d.Clock, log: d.Logger}
}

// Network identifies an SMTP client: a logged-in user, an allow-listed
// address, or an anonymous peer.
func (p *Pipeline) Network(ip netip.Addr, authUser, helo, source string) Identity {
	id := Identity{ClientIP: ip, HELO: helo, Source: source}
	switch {
	case authUser != "":
		id.Kind, id.User = User, authUser
	case p.allowListed(ip):
		id.Kind = Trusted
	default:
		id.Kind = Anonymous
	}
	return id
}

// Screen starts the DNS list lookups of a client that connected to the MX
// listener (source "smtp") and returns at once; the result is waited for
// at RCPT (Tx.Rcpt), so the lookups overlap the greeting. Clients in
// relay.allow and other listeners are not screened (nil), nor is anyone
// when no list is configured. A client that authenticates later becomes a
// User identity and is not refused either.
func (p *Pipeline) Screen(ctx context.Context, ip netip.Addr, source string) *dnsbl.Lookup {
	if source != "smtp" || !p.dnsbl.Enabled() || !ip.IsValid() || p.allowListed(ip) {
		return nil
	}
	return p.dnsbl.Start(ctx, ip)
}

func (p *Pipeline) allowListed(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, pfx := range p.cfg.RelayAllow {
		if pfx.Contains(ip) {
			return true
		}
	}
	return false
}

// CheckSize refuses a declared message size the node cannot take now
// (free disk space); it is also applied to every message's real size.
func (p *Pipeline) CheckSize(size int64) error {
	if p.guard == nil {
		return nil
	}
	if err := p.guard(size); err != nil {
		return storageRefusal(err)
	}
	return nil
}

// Request is a whole message submitted at once (API, sendmail, Herald's own
// mail): the transaction's steps in one call.
type Request struct {
	Identity Identity
	// ID is the queue ID to use; "" assigns one.
	ID         string
	From       string // envelope sender; "" is the null sender
	Ret, EnvID string
	SMTPUTF8   bool // the message needs SMTPUTF8 (UTF-8 in its header)
	Recipients []Recipient
	Body       io.Reader
	Tags       []string
	Metadata   map[string]string
	// UnsubscribeGroup is the message's unsubscribe group (one-click
	// unsubscribe): a recipient suppressed in it, or globally, is
	// skipped. "" checks the global suppressions only.
	UnsubscribeGroup string
	// SendAt schedules the message (scheduled send, issue 12): its
	// recipients are due then, not at once. Zero sends at once.
	SendAt time.Time
	// BatchID puts the message in a batch of the identity's account
	// (store.Batches), which may pause or cancel it; "" for none.
	BatchID string
}

// Recipient is one envelope recipient with its DSN parameters.
type Recipient struct {
	Address string
	Notify  string // "", "NEVER" or a list of SUCCESS,FAILURE,DELAY
	ORCPT   string // "rfc822;addr", decoded
}

// Result is what an accepted message became.
type Result struct {
	// ID is the queue ID; "" when nothing was queued because every
	// recipient was suppressed or was a feedback address.
	ID string
	// Queued is the number of final recipients queued (after aliases).
	Queued int
	// Suppressed lists the recipients skipped because of the suppression
	// list (Submit only; a transaction refuses them at Rcpt).
	Suppressed []string
	// Consumed counts reports handed to feedback processing.
	Consumed int
	// Rate is the account's sending limit after this message, when it has
	// one (zero Limit otherwise).
	Rate RateStatus
}

// Submit runs a whole message through the pipeline. Suppressed recipients
// are skipped (with a "suppressed" event) rather than failing the message;
// every other refusal fails it.
func (p *Pipeline) Submit(ctx context.Context, req *Request) (Result, error) {
	tx, err := p.Begin(ctx, req.Identity)
	if err != nil {
		return Result{}, err
	}
	if req.ID != "" {
		tx.id = req.ID
	}
	tx.tags, tx.metadata = req.Tags, req.Metadata
	tx.group = req.UnsubscribeGroup
	tx.sendAt, tx.batchID = req.SendAt, req.BatchID
	if err := tx.Mail(ctx, Mail{From: req.From, Ret: req.Ret, EnvID: req.EnvID, SMTPUTF8: req.SMTPUTF8}); err != nil {
		return Result{}, err
	}
	var suppressed []string
	for _, r := range req.Recipients {
		if err := tx.Rcpt(ctx, r); err != nil {
			if errors.Is(err, ErrSuppressed) {
				suppressed = append(suppressed, r.Address)
				continue
			}
			return Result{}, err
		}
	}
	res, err := tx.Data(ctx, req.Body)
	res.Suppressed = suppressed
	if err == nil && res.ID == "" && len(suppressed) > 0 {
		res.ID = tx.id // the events of the suppressed recipients carry it
	}
	return res, err
}

// Begin starts a transaction for id. A User identity's account is looked
// up here.
func (p *Pipeline) Begin(ctx context.Context, id Identity) (*Tx, error) {
	t := &Tx{p: p, ident: id, id: store.NewID(), seen: make(map[string]bool)}
	if id.Kind == User {
		u, err := p.st.GetUser(ctx, id.User)
		if err != nil {
			return nil, internal(fmt.Errorf("submit: user %s: %w", id.User, err))
		}
		t.user = u
		if acct, err := p.st.UserAccount(ctx, u.Address); err == nil {
			t.ident.Account = acct
		}
	}
	if t.ident.Account == "" && id.Kind != Anonymous {
		t.ident.Account = store.DefaultAccount
	}
	return t, nil
}

func (p *Pipeline) now() time.Time { return p.clock.Now() }
