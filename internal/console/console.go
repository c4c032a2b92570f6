// Package console is Herald's web console: server-rendered pages (with
// html/template, so everything shown is escaped for its context) on the
// HTTP listener beside the API, from templates and static assets embedded
// in the binary. Operators see every account; account members (users of
// an account, or holders of an account's API key) see only their account,
// which every handler enforces where it reads the data, not by hiding
// links.
//
// Logins are sessions kept in the store (every node of a cluster knows
// them): the cookie holds a random 256-bit ID of which the store keeps
// only the SHA-256, HttpOnly, SameSite=Strict and Secure over HTTPS; they
// end after an idle time, after an absolute lifetime, and at logout.
// Every state change carries the session's synchronizer token and must
// come from the console's own origin (Origin, Sec-Fetch-Site). Login
// attempts are counted per client address and per name before the
// password is checked.
//
// The statistics, alerts and blocklist listings come through small
// interfaces (OverviewSource, DestinationSource, AlertSource,
// BlocklistSource) that the composition root fills in; until the rollups
// exist, StoreStats serves the overview and destinations from the store
// directly, over a small recent window.
package console

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

//go:embed assets templates
var files embed.FS

// Store is the state the console reads and changes.
type Store interface {
	store.Queue
	store.Directory
	store.DKIMKeys
	store.Platform
	store.DMARCReports
	store.ConsoleAccess
	store.RateCounters
	DestinationState(ctx context.Context, key string) (store.DestinationState, error)
}

// Bouncer fails the pending recipients of a queued message with a DSN to
// its sender, as the queue does when a message expires.
type Bouncer interface {
	BounceMessage(ctx context.Context, id, reason string) error
}

// DNSDoctor runs the DNS doctor (internal/dnscheck) for a domain.
type DNSDoctor interface {
	CheckDomain(ctx context.Context, domain string) (dnscheck.Report, error)
}

// APIKeyVerifier checks an API token ("hk_...") and returns its key.
type APIKeyVerifier func(ctx context.Context, token string) (store.APIKey, error)

// Config configures the console.
type Config struct {
	// IdleTimeout ends a session not used for this long (default 30m).
	IdleTimeout time.Duration
	// MaxAge ends a session this long after the login, used or not
	// (default 12h).
	MaxAge time.Duration
	// LoginPerIP and LoginPerName bound login attempts (successful or
	// not, counted before the password is checked) per client address
	// (IPv6: per /64) and per login name, on all nodes together. Zero fields get the defaults:
	// 20 a minute and 100 an hour per address, 10 a minute and 30 an hour
	// per name.
	LoginPerIP, LoginPerName ratelimit.Limits
	// Hostname is shown in the page header.
	Hostname string
	// RefreshSeconds is the overview's live refresh period (default 10).
	RefreshSeconds int
}

// Deps are the console's collaborators. Store is required; the others may
// be nil (their pages say the data is not available).
type Deps struct {
	Store   Store
	Bouncer Bouncer
	DNS     DNSDoctor
	APIKeys APIKeyVerifier
	// Overview and Destinations default to StoreStats over Store.
	Overview     OverviewSource
	Destinations DestinationSource
	Alerts       AlertSource
	Blocklists   BlocklistSource
	// Explain, when set, says in sentences why a message of account
	// ("" for an operator) is where it is (internal/explain); the
	// message page shows them.
	Explain func(ctx context.Context, id, account string) ([]string, error)
	Clock   clock.Clock
	Logger  *slog.Logger
}

// Console is the web console's HTTP handler.
type Console struct {
	cfg     Config
	st      Store
	deps    Deps
	clock   clock.Clock
	log     *slog.Logger
	mux     *http.ServeMux
	pages   map[string]*template.Template
	hashSem chan struct{} // bounds concurrent argon2id checks (memory)

	pruneMu   sync.Mutex
	lastPrune time.Time
}

// New returns the console handler; mount it at "/".
func New(cfg Config, d Deps) (*Console, error) {
	if d.Store == nil {
		return nil, errors.New("console: no store")
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 30 * time.Minute
	}
	if cfg.MaxAge <= 0 {
		cfg.MaxAge = 12 * time.Hour
	}
	if cfg.LoginPerIP == (ratelimit.Limits{}) {
		cfg.LoginPerIP = ratelimit.Limits{PerMinute: 20, PerHour: 100}
	}
	if cfg.LoginPerName == (ratelimit.Limits{}) {
		cfg.LoginPerName = ratelimit.Limits{PerMinute: 10, PerHour: 30}
	}
	if cfg.RefreshSeconds <= 0 {
		cfg.RefreshSeconds = 10
	}
	if d.Clock == nil {
		d.Clock = clock.Real{}
	}
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	if d.Overview == nil || d.Destinations == nil {
		ss := &StoreStats{Store: d.Store}
		if d.Overview == nil {
			d.Overview = ss
		}
		if d.Destinations == nil {
			d.Destinations = ss
		}
	}
	c := &Console{cfg: cfg, st: d.Store, deps: d, clock: d.Clock, log: d.Logger.With("component", "console"),
		hashSem: make(chan struct{}, 2)}
	var err error
	if c.pages, err = parsePages(); err != nil {
		return nil, err
	}
	c.routes()
	return c, nil
}

// ServeHTTP adds the security headers to every response and serves the
// console.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"connect-src 'self'; font-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin") // not no-referrer: that makes browsers send "Origin: null" with form posts
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(files, "assets")
	fileServer := http.StripPrefix("/assets/", http.FileServerFS(static))
	m.Handle("GET /assets/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		fileServer.ServeHTTP(w, r)
	}))
	m.HandleFunc("GET /login", c.loginPage)
	m.HandleFunc("POST /login", c.login)
	m.Handle("POST /logout", c.authed(c.logout, anyone))

	m.Handle("GET /{$}", c.authed(c.overview, anyone))
	m.Handle("GET /overview.json", c.authed(c.overviewJSON, anyone))
	m.Handle("GET /destinations", c.authed(c.destinations, anyone))
	m.Handle("GET /messages", c.authed(c.messages, anyone))
	m.Handle("GET /messages/{id}", c.authed(c.message, anyone))
	m.Handle("POST /messages/{id}/{action}", c.authed(c.messageAction, mayChange))
	m.Handle("GET /suppressions", c.authed(c.suppressions, anyone))
	m.Handle("GET /suppressions.csv", c.authed(c.suppressionsCSV, anyone))
	m.Handle("POST /suppressions", c.authed(c.addSuppression, mayChange))
	m.Handle("POST /suppressions/delete", c.authed(c.deleteSuppression, mayChange))
	m.Handle("GET /domains", c.authed(c.domains, anyone))
	m.Handle("GET /domains/{domain}", c.authed(c.domain, anyone))
	m.Handle("GET /accounts", c.authed(c.accounts, anyone))
	m.Handle("GET /apikeys", c.authed(c.apiKeys, anyone))
	m.Handle("GET /webhooks", c.authed(c.webhooks, anyone))
	m.Handle("GET /webhooks/{id}", c.authed(c.webhook, anyone))
	m.Handle("GET /alerts", c.authed(c.alerts, operatorOnly))
	m.Handle("GET /blocklists", c.authed(c.blocklists, operatorOnly))
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { c.notFound(w, r, nil) })
	c.mux = m
}

// parsePages builds one template set per page: the layout plus the page.
func parsePages() (map[string]*template.Template, error) {
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(files, "templates/layout.html")
	if err != nil {
		return nil, err
	}
	names, err := fs.Glob(files, "templates/*.html")
	if err != nil {
		return nil, err
	}
	out := make(map[string]*template.Template)
	for _, n := range names {
		name := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(files, n)
		if err != nil {
			return nil, err
		}
		out[name] = t
	}
	return out, nil
}

var funcs = template.FuncMap{
	"time": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05")
	},
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return now.Sub(t).Round(time.Second).String()
	},
	"pct": func(f float64) string { return strings.TrimRight(strings.TrimRight(fmtFloat(100*f), "0"), ".") + " %" },
	"dur": func(d time.Duration) string {
		if d <= 0 {
			return "—"
		}
		if d < time.Second {
			return d.Round(time.Millisecond).String()
		}
		return d.Round(time.Second).String()
	},
	"join": strings.Join,
	"at": func(m map[string][]int64, k string, i int) int64 {
		if i < 0 || i >= len(m[k]) {
			return 0
		}
		return m[k][i]
	},
}
