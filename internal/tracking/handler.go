package tracking

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

// Events records the tracking events (store.Platform.AddEvents: the event
// log, and the webhooks' outbox in the same transaction).
type Events interface {
	AddEvents(ctx context.Context, evs []store.Event) error
}

// Messages finds the message a token names, for its sender, tags and
// metadata: in the queue (store.Queue.Get, an error wrapping
// store.ErrNotFound once it left), else in the event log.
type Messages interface {
	Get(ctx context.Context, id string) (*store.Message, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
}

// Accounts says whether the account a token names still exists, and
// since when (store.Platform.GetAccount; store.ErrNotFound if not).
type Accounts interface {
	GetAccount(ctx context.Context, id string) (store.Account, error)
}

// Deps are the tracker's collaborators; Events, Messages and Accounts are
// needed to serve links (Handler), not to rewrite.
type Deps struct {
	Events   Events
	Messages Messages
	// Accounts, when set, drops the events of tokens whose account was
	// deleted, or deleted and created anew after the message was sent:
	// a new account of the same ID never sees the old one's recipients.
	Accounts Accounts
	Clock    clock.Clock
	Logger   *slog.Logger
}

// gif is a transparent 1x1 GIF.
var gif = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

// recordTimeout bounds the writing of one event; the answer waits for it
// (a client going away does not cancel it).
const recordTimeout = 10 * time.Second

// Handler serves the public tracking links, GET (and HEAD) /t/o/{token}
// and /t/c/{token}. Mount it at "/t/" of the public listeners.
//
// The pixel answers a GIF that may not be cached, the link 302 to its URL;
// a GET records an "opened" or "clicked" event (HEAD, which link scanners
// use, records nothing). A token that does not verify — forged, changed,
// truncated, of the other kind — gets 404 and never a redirect. The same
// token records at most one event per Config.Dedupe on a node; a mail
// provider's image proxy fetching the pixel counts as an open.
func (t *Tracker) Handler() http.Handler {
	return http.HandlerFunc(t.serve)
}

func (t *Tracker) serve(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Cache-Control", "no-store, no-cache, must-revalidate, private, max-age=0")
	h.Set("Pragma", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	var kind byte
	var tok string
	switch p := r.URL.Path; {
	case strings.HasPrefix(p, OpenPath):
		kind, tok = kindOpen, p[len(OpenPath):]
	case strings.HasPrefix(p, ClickPath):
		kind, tok = kindClick, p[len(ClickPath):]
	default:
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	c, sum, err := verify(t.key, tok, kind)
	if err == nil && kind == kindClick && !CleanURL(c.url) {
		err = errBadToken // signed by us, so never; checked all the same
	}
	if err != nil {
		http.NotFound(w, r)
		return
	}
	if r.Method == http.MethodGet {
		t.record(r.Context(), c, sum)
	}
	if kind == kindOpen {
		h.Set("Content-Type", "image/gif")
		h.Set("Expires", "0")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write(gif)
		}
		return
	}
	h.Set("Location", c.url)
	w.WriteHeader(http.StatusFound)
}

// first reports whether the token with this MAC has recorded no event in
// the last Dedupe, and remembers that it records one now.
func (t *Tracker) first(sum []byte, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := string(sum)
	if last, ok := t.seen[k]; ok && now.Sub(last) < t.cfg.Dedupe {
		return false
	}
	if len(t.seen) >= t.cfg.MaxDedupe {
		for k, last := range t.seen {
			if now.Sub(last) >= t.cfg.Dedupe {
				delete(t.seen, k)
			}
		}
		if len(t.seen) >= t.cfg.MaxDedupe {
			clear(t.seen) // more live tokens than remembered: start over
		}
	}
	t.seen[k] = now
	return true
}

// record writes the token's event, with the message's sender, tags and
// metadata when it is still known. Failures are logged: the visitor gets
// the pixel or the redirect all the same.
func (t *Tracker) record(ctx context.Context, c claims, sum []byte) {
	now := t.clock.Now()
	if !t.first(sum, now) {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), recordTimeout)
	defer cancel()
	if !t.accountCurrent(ctx, c) {
		return
	}
	ev := store.Event{Time: now, Type: store.EventOpened, Account: c.account, MessageID: c.messageID, Recipient: c.recipient}
	if c.kind == kindClick {
		ev.Type, ev.Reply = store.EventClicked, c.url
	}
	t.describe(ctx, &ev)
	if t.deps.Events == nil {
		return
	}
	if err := t.deps.Events.AddEvents(ctx, []store.Event{ev}); err != nil {
		t.log.Error("tracking: recording event", "type", ev.Type, "account", ev.Account, "id", ev.MessageID, "err", err)
	}
}

// accountCurrent reports whether the token's account exists and existed
// when the token was made.
func (t *Tracker) accountCurrent(ctx context.Context, c claims) bool {
	if t.deps.Accounts == nil {
		return true
	}
	ac, err := t.deps.Accounts.GetAccount(ctx, c.account)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return false
	case err != nil:
		t.log.Warn("tracking: looking up account", "account", c.account, "err", err)
		return true
	}
	return ac.Created.Unix() <= c.issued
}

// describe copies the message's sender, tags and metadata onto ev: from
// the queue while the message is there, else from its first event.
func (t *Tracker) describe(ctx context.Context, ev *store.Event) {
	if t.deps.Messages == nil {
		return
	}
	m, err := t.deps.Messages.Get(ctx, ev.MessageID)
	switch {
	case err == nil && accountOf(m.Account) == ev.Account:
		ev.Sender, ev.Tags, ev.Metadata = m.Sender, m.Tags, m.Metadata
		return
	case err != nil && !errors.Is(err, store.ErrNotFound):
		t.log.Warn("tracking: looking up message", "id", ev.MessageID, "err", err)
	}
	evs, err := t.deps.Messages.ListEvents(ctx, store.EventFilter{Account: ev.Account, MessageID: ev.MessageID, Limit: 1})
	if err != nil {
		t.log.Warn("tracking: looking up message events", "id", ev.MessageID, "err", err)
		return
	}
	if len(evs) > 0 {
		ev.Sender, ev.Tags, ev.Metadata = evs[0].Sender, evs[0].Tags, evs[0].Metadata
	}
}

// accountOf treats an empty account as the default one.
func accountOf(a string) string {
	if a == "" {
		return store.DefaultAccount
	}
	return a
}
