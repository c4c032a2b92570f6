package unsubscribe

import (
	"context"
	"errors"
	"html/template"
	"log/slog"
	"net"
	"net/http"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// Store is the state the handler reads and writes.
type Store interface {
	GetAccount(ctx context.Context, id string) (store.Account, error)
	GetUnsubscribeGroup(ctx context.Context, account, id string) (store.UnsubscribeGroup, error)
	ListEvents(ctx context.Context, f store.EventFilter) ([]store.Event, error)
	Unsubscribe(ctx context.Context, s store.Suppression, ev store.Event) (bool, error)
}

// Config tunes the handler.
type Config struct {
	// PerIPRate and PerIPBurst bound the requests of one client address
	// (an IPv6 client by its /64): PerIPRate a second on average, bursts
	// of PerIPBurst. Defaults 1 and 30.
	PerIPRate  float64
	PerIPBurst int
	// MaxInFlight bounds the requests being handled at once; more get
	// 503. Default 32.
	MaxInFlight int
}

// Handler serves GET and POST /unsubscribe/{token}. It needs no cookie
// and no authentication (RFC 8058 §3.2): the token is the authority.
type Handler struct {
	key   []byte
	st    Store
	clock clock.Clock
	log   *slog.Logger
	ips   *ratelimit.Bucket
	slots chan struct{}
	mux   *http.ServeMux
}

// maxBody bounds the POST body (RFC 8058's is 26 bytes).
const maxBody = 4 << 10

// New returns the handler. Mount it at Path (both the pattern
// "/unsubscribe/" and its subtree).
func New(cfg Config, key []byte, st Store, clk clock.Clock, log *slog.Logger) *Handler {
	if cfg.PerIPRate <= 0 {
		cfg.PerIPRate = 1
	}
	if cfg.PerIPBurst <= 0 {
		cfg.PerIPBurst = 30
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = 32
	}
	if clk == nil {
		clk = clock.Real{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	h := &Handler{key: key, st: st, clock: clk, log: log, ips: ratelimit.NewBucket(cfg.PerIPRate, cfg.PerIPBurst),
		slots: make(chan struct{}, cfg.MaxInFlight), mux: http.NewServeMux()}
	h.mux.HandleFunc("GET "+Path+"{token}", h.confirmPage)
	h.mux.HandleFunc("POST "+Path+"{token}", h.unsubscribe)
	h.mux.HandleFunc(Path, func(w http.ResponseWriter, r *http.Request) {
		h.page(w, http.StatusNotFound, notFoundPage, nil)
	})
	return h
}

// ServeHTTP applies the limits and routes the request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("Referrer-Policy", "no-referrer") // the token is in the URL
	hd.Set("X-Frame-Options", "DENY")        // no clickjacking of the button
	hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'")
	hd.Set("X-Content-Type-Options", "nosniff")
	if ok, _ := h.ips.AllowN(clientKey(r), 1, h.clock.Now()); !ok {
		hd.Set("Retry-After", "60")
		h.page(w, http.StatusTooManyRequests, errorPage, "Too many requests; try again in a minute.")
		return
	}
	select {
	case h.slots <- struct{}{}:
		defer func() { <-h.slots }()
	default:
		hd.Set("Retry-After", "5")
		h.page(w, http.StatusServiceUnavailable, errorPage, "The server is busy; try again shortly.")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	h.mux.ServeHTTP(w, r)
}

// clientKey is the rate-limit key of the client: its IP, an IPv6 one by
// its /64.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return host
	}
	if ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String()
	}
	return ip.String()
}

// view is what the pages show.
type view struct {
	Address string
	Group   string // the group's name, "" for all mail
	Message string
}

// token verifies the request's token; an invalid one has been answered
// (404, the same for every kind of invalid token).
func (h *Handler) token(w http.ResponseWriter, r *http.Request) (Token, bool) {
	t, err := Verify(h.key, r.PathValue("token"))
	if err != nil {
		h.page(w, http.StatusNotFound, notFoundPage, nil)
		return Token{}, false
	}
	if _, err := h.st.GetAccount(r.Context(), t.Account); err != nil {
		// A deleted account: nothing to unsubscribe from, and no row
		// may be written for it.
		if !errors.Is(err, store.ErrNotFound) {
			h.log.Error("unsubscribe: account lookup", "account", t.Account, "err", err)
			h.page(w, http.StatusInternalServerError, errorPage, "Something went wrong; try again later.")
			return Token{}, false
		}
		h.page(w, http.StatusNotFound, notFoundPage, nil)
		return Token{}, false
	}
	return t, true
}

// groupName is the display name of t's group ("" when global).
func (h *Handler) groupName(ctx context.Context, t Token) string {
	if t.Group == "" {
		return ""
	}
	if g, err := h.st.GetUnsubscribeGroup(ctx, t.Account, t.Group); err == nil && g.Name != "" {
		return g.Name
	}
	return t.Group
}

// confirmPage answers GET: a page with a button that POSTs. A GET never
// unsubscribes (link checkers and scanners fetch every URL of a message).
func (h *Handler) confirmPage(w http.ResponseWriter, r *http.Request) {
	t, ok := h.token(w, r)
	if !ok {
		return
	}
	h.page(w, http.StatusOK, confirmPage, view{Address: t.Recipient, Group: h.groupName(r.Context(), t)})
}

// unsubscribe answers POST (RFC 8058 one-click, or the confirmation
// page's button): the suppression and its event, once.
func (h *Handler) unsubscribe(w http.ResponseWriter, r *http.Request) {
	t, ok := h.token(w, r)
	if !ok {
		return
	}
	if err := r.ParseMultipartForm(maxBody); err != nil && !errors.Is(err, http.ErrNotMultipart) {
		h.page(w, http.StatusBadRequest, errorPage, "The request could not be read.")
		return
	}
	if r.PostForm.Get("List-Unsubscribe") != "One-Click" {
		h.page(w, http.StatusBadRequest, errorPage, "The request must carry List-Unsubscribe=One-Click (RFC 8058).")
		return
	}
	ctx := context.WithoutCancel(r.Context()) // finish once started
	now := h.clock.Now()
	ev := store.Event{Time: now, Type: store.EventUnsubscribed, Account: t.Account, MessageID: t.MessageID, Recipient: t.Recipient}
	if t.Group == "" {
		ev.Reply = "unsubscribed from all mail of the account"
	} else {
		ev.Reply = "unsubscribed from group " + t.Group
	}
	if t.MessageID != "" {
		// The message's tags and metadata, from its accepted event.
		evs, err := h.st.ListEvents(ctx, store.EventFilter{Account: t.Account, MessageID: t.MessageID, Limit: 1})
		if err != nil {
			h.log.Warn("unsubscribe: reading the message's events", "id", t.MessageID, "err", err)
		} else if len(evs) > 0 {
			ev.Tags, ev.Metadata, ev.Sender = evs[0].Tags, evs[0].Metadata, evs[0].Sender
		}
	}
	sp := store.Suppression{Account: t.Account, Address: t.Recipient, Group: t.Group, Kind: store.KindUnsubscribe,
		Reason: store.SuppressUnsubscribe, Detail: "one-click unsubscribe, message " + t.MessageID, Created: now}
	added, err := h.st.Unsubscribe(ctx, sp, ev)
	if err != nil {
		h.log.Error("unsubscribe: recording", "account", t.Account, "group", t.Group, "err", err)
		h.page(w, http.StatusInternalServerError, errorPage, "Something went wrong; try again later.")
		return
	}
	if added {
		h.log.Info("unsubscribed", "account", t.Account, "group", t.Group, "id", t.MessageID)
	}
	h.page(w, http.StatusOK, donePage, view{Address: t.Recipient, Group: h.groupName(ctx, t)})
}

func (h *Handler) page(w http.ResponseWriter, status int, tmpl *template.Template, data any) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := tmpl.Execute(w, data); err != nil {
		h.log.Debug("unsubscribe: writing the page", "err", err)
	}
}

const pageHead = `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<meta name="robots" content="noindex"><title>Unsubscribe</title>
<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}button{font-size:1rem;padding:.5rem 1.25rem}</style>
</head><body>`

var (
	confirmPage = template.Must(template.New("confirm").Parse(pageHead + `<h1>Unsubscribe</h1>
<p>Stop sending {{if .Group}}“{{.Group}}” mail{{else}}mail{{end}} to <strong>{{.Address}}</strong>?</p>
<form method="post"><input type="hidden" name="List-Unsubscribe" value="One-Click"><button type="submit">Unsubscribe</button></form>
</body></html>`))
	donePage = template.Must(template.New("done").Parse(pageHead + `<h1>Unsubscribed</h1>
<p><strong>{{.Address}}</strong> will no longer receive {{if .Group}}“{{.Group}}” mail{{else}}this sender's mail{{end}}.</p>
</body></html>`))
	notFoundPage = template.Must(template.New("notfound").Parse(pageHead + `<h1>Link not valid</h1>
<p>This unsubscribe link is not valid.</p></body></html>`))
	errorPage = template.Must(template.New("error").Parse(pageHead + `<h1>Unsubscribe</h1><p>{{.}}</p></body></html>`))
)
