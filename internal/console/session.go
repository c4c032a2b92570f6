package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/store"
)

// Cookie names. Over HTTPS the session cookie carries the __Host- prefix,
// which browsers accept only with Secure, Path=/ and no Domain.
const (
	sessionCookie      = "herald_session"
	loginCSRFCookie    = "herald_login"
	maxLoginFieldBytes = 1024
)

// viewer is the logged-in session of a request.
type viewer struct {
	s        store.Session
	Operator bool
	// Account is the member's account ("" for operators).
	Account string
	// ReadOnly: an API key without the admin scope may look, not change.
	ReadOnly bool
	Name     string // shown in the header
}

type access int

const (
	anyone       access = iota // any logged-in viewer
	mayChange                  // a state change: not a read-only key
	operatorOnly               // operators only
)

type viewerKey struct{}

func viewerOf(r *http.Request) *viewer { v, _ := r.Context().Value(viewerKey{}).(*viewer); return v }

// randomToken returns 32 random bytes, base64url.
func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func hashID(id string) []byte {
	h := sha256.Sum256([]byte(id))
	return h[:]
}

func cookieName(r *http.Request) string {
	if r.TLS != nil {
		return "__Host-" + sessionCookie
	}
	return sessionCookie
}

// session returns the live session of r, or nil. A session past its
// absolute expiry or idle too long is deleted; one whose operator, user or
// API key is gone (or whose user moved to another account) ends too.
func (c *Console) session(r *http.Request) (*viewer, error) {
	ck, err := r.Cookie(cookieName(r))
	if err != nil || len(ck.Value) != 43 {
		return nil, nil
	}
	ctx := r.Context()
	idh := hashID(ck.Value)
	s, err := c.st.GetSession(ctx, idh)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	now := c.clock.Now()
	if !now.Before(s.Expires) || now.Sub(s.LastSeen) >= c.cfg.IdleTimeout {
		_ = c.st.DeleteSession(ctx, idh)
		return nil, nil
	}
	v := &viewer{s: s, Name: s.Subject}
	gone := func(err error) (*viewer, error) {
		if errors.Is(err, store.ErrNotFound) {
			_ = c.st.DeleteSession(ctx, idh)
			return nil, nil
		}
		return nil, err
	}
	switch s.Kind {
	case store.SessionOperator:
		if _, err := c.st.GetOperator(ctx, s.Subject); err != nil {
			return gone(err)
		}
		v.Operator = true
	case store.SessionUser:
		if _, err := c.st.GetUser(ctx, s.Subject); err != nil {
			return gone(err)
		}
		acct, err := c.st.UserAccount(ctx, s.Subject)
		if err != nil {
			return gone(err)
		}
		if acct != s.Account {
			return gone(store.ErrNotFound)
		}
		v.Account = acct
	case store.SessionAPIKey:
		k, err := c.st.GetAPIKey(ctx, s.Subject)
		if err != nil {
			return gone(err)
		}
		if k.Account != s.Account {
			return gone(store.ErrNotFound)
		}
		v.Account = k.Account
		v.ReadOnly = !slices.Contains(k.Scopes, store.ScopeAdmin)
		v.Name = "API key " + k.Name
	default:
		return gone(store.ErrNotFound)
	}
	// Touch at most once a minute: one write per active viewer a minute.
	if now.Sub(s.LastSeen) >= time.Minute {
		if err := c.st.TouchSession(ctx, idh, now); err != nil && !errors.Is(err, store.ErrNotFound) {
			c.log.Warn("touching a console session", "err", err)
		}
	}
	c.prune(now)
	return v, nil
}

// prune deletes expired sessions, at most every 10 minutes per node.
func (c *Console) prune(now time.Time) {
	c.pruneMu.Lock()
	if now.Sub(c.lastPrune) < 10*time.Minute {
		c.pruneMu.Unlock()
		return
	}
	c.lastPrune = now
	c.pruneMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := c.st.PruneSessions(ctx, now, now.Add(-c.cfg.IdleTimeout)); err != nil {
			c.log.Warn("pruning console sessions", "err", err)
		}
	}()
}

// sameOrigin reports whether a state-changing request comes from the
// console's own pages: Sec-Fetch-Site, when the browser sends it, must be
// same-origin, and Origin, when sent, must be this host. (The
// synchronizer token is checked besides.)
func sameOrigin(r *http.Request) bool {
	if s := r.Header.Get("Sec-Fetch-Site"); s != "" && s != "same-origin" {
		return false
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || u.Host != r.Host {
			return false
		}
		want := "http"
		if r.TLS != nil {
			want = "https"
		}
		if u.Scheme != want {
			return false
		}
	}
	return true
}

func tokenOK(got, want string) bool {
	return want != "" && len(got) == len(want) && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// authed wraps a page: it needs a live session (else the login page for
// GET, 403 otherwise) and the access level; a POST needs the session's
// CSRF token and the same origin.
func (c *Console) authed(h func(http.ResponseWriter, *http.Request, *viewer), a access) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		v, err := c.session(r)
		if err != nil {
			c.fail(w, r, err)
			return
		}
		if v == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			http.Error(w, "not logged in", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			if !sameOrigin(r) || !tokenOK(r.PostFormValue("csrf"), v.s.CSRF) {
				http.Error(w, "cross-site request refused (reload the page and try again)", http.StatusForbidden)
				return
			}
		}
		if a == operatorOnly && !v.Operator || a == mayChange && v.ReadOnly {
			c.render(w, r, v, http.StatusForbidden, "error", errorPage{Title: "Not allowed",
				Message: "Your login may not see or do this."})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)), v)
	})
}

// clientIP is the request's remote address.
func clientIP(r *http.Request) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	ip, _ := netip.ParseAddr(host)
	return ip.Unmap()
}

type loginData struct {
	CSRF, Next, Name, Error string
}

// safeNext keeps a post-login redirect on this site: a path and query of
// printable characters, not "//host" or "/\\host" (browsers drop tabs and
// newlines in URLs, and read a backslash as a slash).
func safeNext(next string) string {
	if !strings.HasPrefix(next, "/") || len(next) > 2000 {
		return "/"
	}
	for _, r := range next {
		if r <= ' ' || r == '\\' || r >= 0x7f {
			return "/"
		}
	}
	if strings.HasPrefix(next, "//") {
		return "/"
	}
	return next
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.showLogin(w, r, http.StatusOK, "", "")
}

// showLogin renders the login form with a fresh pre-session CSRF token
// (a cookie the form must echo: double submit).
func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, status int, name, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: tok, Path: "/login", HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	c.render(w, r, nil, status, "login", loginData{CSRF: tok, Next: safeNext(r.FormValue("next")), Name: name, Error: msg})
}

// errLoginFailed is the one answer to a wrong name, password or key.
const errLoginFailed = "Login failed: wrong name, password or API key."

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	ck, err := r.Cookie(loginCSRFCookie)
	if !sameOrigin(r) || err != nil || !tokenOK(r.PostFormValue("csrf"), ck.Value) {
		c.showLogin(w, r, http.StatusForbidden, "", "The login form expired; please try again.")
		return
	}
	name := strings.ToLower(strings.TrimSpace(r.PostFormValue("name")))
	pw := r.PostFormValue("password")
	key := strings.TrimSpace(r.PostFormValue("apikey"))
	if len(name) > maxLoginFieldBytes || len(pw) > auth.MaxPasswordLen || len(key) > maxLoginFieldBytes {
		c.showLogin(w, r, http.StatusBadRequest, "", errLoginFailed)
		return
	}
	limName := name
	if key != "" {
		limName = "key:" + strings.SplitN(strings.TrimPrefix(key, "hk_"), "_", 2)[0]
	}
	allowed, err := c.allowAttempt(r.Context(), clientIP(r), limName)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if !allowed {
		c.log.Warn("console login rate-limited", "ip", clientIP(r), "name", limName)
		w.Header().Set("Retry-After", "60")
		c.showLogin(w, r, http.StatusTooManyRequests, name, "Too many login attempts; wait a minute and try again.")
		return
	}
	s, err := c.authenticate(r.Context(), name, pw, key)
	if err != nil {
		c.fail(w, r, err)
		return
	}
	if s == nil {
		c.log.Info("console login failed", "ip", clientIP(r), "name", limName)
		c.showLogin(w, r, http.StatusUnauthorized, name, errLoginFailed)
		return
	}
	id := randomToken()
	now := c.clock.Now()
	s.IDHash, s.CSRF, s.Created, s.LastSeen, s.Expires = hashID(id), randomToken(), now, now, now.Add(c.cfg.MaxAge)
	if err := c.st.AddSession(r.Context(), *s); err != nil {
		c.fail(w, r, err)
		return
	}
	c.log.Info("console login", "ip", clientIP(r), "kind", s.Kind, "subject", s.Subject, "account", s.Account)
	http.SetCookie(w, &http.Cookie{Name: loginCSRFCookie, Value: "", Path: "/login", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: id, Path: "/", HttpOnly: true, Secure: r.TLS != nil,
		SameSite: http.SameSiteStrictMode, MaxAge: int(c.cfg.MaxAge / time.Second)})
	http.Redirect(w, r, safeNext(r.PostFormValue("next")), http.StatusSeeOther)
}

// allowAttempt counts a login attempt for the client's address and the
// name, and reports whether both are within their limits. Every attempt
// counts, before its check, so that parallel guesses cannot outrun the
// count; the windows are the store's (store.RateCounters), shared by every
// node, so that a cluster does not multiply the allowance.
func (c *Console) allowAttempt(ctx context.Context, ip netip.Addr, name string) (bool, error) {
	now := c.clock.Now()
	ok, _, err := c.st.TakeRate(ctx, "console-login-ip:"+ratelimit.Key(ip).String(), c.cfg.LoginPerIP, 1, now)
	if err != nil || !ok {
		return false, err
	}
	ok, _, err = c.st.TakeRate(ctx, "console-login-name:"+name, c.cfg.LoginPerName, 1, now)
	return ok, err
}

// authenticate checks an API key, or a name and password against the
// operators first and then the users. It returns the session to create,
// or nil for wrong credentials.
func (c *Console) authenticate(ctx context.Context, name, pw, key string) (*store.Session, error) {
	if key != "" {
		if c.deps.APIKeys == nil {
			return nil, nil
		}
		k, err := c.deps.APIKeys(ctx, key)
		if err != nil || !slices.Contains(k.Scopes, store.ScopeRead) && !slices.Contains(k.Scopes, store.ScopeAdmin) {
			return nil, nil //nolint:nilerr // any failure is a failed login
		}
		return &store.Session{Kind: store.SessionAPIKey, Subject: k.ID, Account: k.Account}, nil
	}
	if name == "" || pw == "" {
		return nil, nil
	}
	if op, err := c.st.GetOperator(ctx, name); err == nil {
		if ok, err := c.checkHash(ctx, op.PasswordHash, pw); err != nil || !ok {
			return nil, err
		}
		return &store.Session{Kind: store.SessionOperator, Subject: op.Name}, nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return nil, err
	}
	u, err := c.st.GetUser(ctx, name)
	if errors.Is(err, store.ErrNotFound) {
		c.dummyHash(ctx)
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if ok, err := c.checkHash(ctx, u.PasswordHash, pw); err != nil || !ok {
		return nil, err
	}
	acct, err := c.st.UserAccount(ctx, u.Address)
	if err != nil {
		return nil, err
	}
	return &store.Session{Kind: store.SessionUser, Subject: u.Address, Account: acct}, nil
}

// checkHash checks a password with at most two hashes at a time (argon2id
// takes 19 MiB each).
func (c *Console) checkHash(ctx context.Context, hash, pw string) (bool, error) {
	select {
	case c.hashSem <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-c.hashSem }()
	ok, err := auth.CheckPassword(hash, pw)
	if err != nil {
		return false, nil //nolint:nilerr // an unusable stored hash is a failed login
	}
	return ok, nil
}

// dummyHash spends the time of a check for an unknown name.
func (c *Console) dummyHash(ctx context.Context) {
	select {
	case c.hashSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-c.hashSem }()
	auth.DummyCheck()
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request, v *viewer) {
	if err := c.st.DeleteSession(r.Context(), v.s.IDHash); err != nil {
		c.fail(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: cookieName(r), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
