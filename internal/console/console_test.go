package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// env is a console on a real SQLite store behind a real HTTP server.
type env struct {
	t     *testing.T
	st    *sqlite.Store
	clk   *clock.Fake
	con   *Console
	srv   *httptest.Server
	keys  map[string]store.APIKey // token -> key
	bounc *fakeBouncer
}

type fakeBouncer struct{ ids []string }

func (b *fakeBouncer) BounceMessage(_ context.Context, id, _ string) error {
	b.ids = append(b.ids, id)
	return nil
}

func newEnv(t *testing.T, tlsServer bool) *env {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st, clk: clock.NewFake(time.Now()), keys: map[string]store.APIKey{}, bounc: &fakeBouncer{}}
	e.con, err = New(Config{Hostname: "mx.test"}, Deps{Store: st, Clock: e.clk, Bouncer: e.bounc, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		APIKeys: func(_ context.Context, tok string) (store.APIKey, error) {
			k, ok := e.keys[tok]
			if !ok {
				return k, errors.New("bad key")
			}
			return k, nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	if tlsServer {
		e.srv = httptest.NewTLSServer(e.con)
	} else {
		e.srv = httptest.NewServer(e.con)
	}
	t.Cleanup(e.srv.Close)
	return e
}

var fastHash string

func init() {
	// One real argon2id hash shared by the tests (hashing is slow).
	h, err := auth.HashPassword("correct horse battery")
	if err != nil {
		panic(err)
	}
	fastHash = h
}

const password = "correct horse battery"

func (e *env) addOperator(name string) {
	if err := e.st.AddOperator(context.Background(), store.Operator{Name: name, PasswordHash: fastHash}); err != nil {
		e.t.Fatal(err)
	}
}

// addMember creates account acct with a user and a domain.
func (e *env) addMember(acct, user, domain string) {
	ctx := context.Background()
	if acct != store.DefaultAccount {
		if err := e.st.AddAccount(ctx, store.Account{ID: acct, Name: acct}); err != nil {
			e.t.Fatal(err)
		}
	}
	if err := e.st.AddDomain(ctx, domain); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.SetDomainAccount(ctx, domain, acct); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.AddUser(ctx, store.User{Address: user, PasswordHash: fastHash}); err != nil {
		e.t.Fatal(err)
	}
	if err := e.st.SetUserAccount(ctx, user, acct); err != nil {
		e.t.Fatal(err)
	}
}

// enqueue queues a message of acct and records its accepted event.
func (e *env) enqueue(acct, sender, rcpt string) string {
	ctx := context.Background()
	b, err := e.st.NewBody()
	if err != nil {
		e.t.Fatal(err)
	}
	io.WriteString(b, "Subject: hi\r\n\r\nbody\r\n")
	m := &store.Message{ID: store.NewID(), Sender: sender, Received: e.clk.Now(), Size: b.Size(), Account: acct, Source: "api",
		Recipients: []store.Recipient{{Address: rcpt, Status: store.StatusQueued, NextAttempt: e.clk.Now().Add(time.Hour)}}}
	if _, err := e.st.Enqueue(ctx, m, b, time.Time{}); err != nil {
		e.t.Fatal(err)
	}
	return m.ID
}

// client is a browser-like client with a cookie jar.
type client struct {
	e    *env
	hc   *http.Client
	csrf string
}

func (e *env) client() *client {
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Transport: e.srv.Client().Transport, Jar: jar}
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &client{e: e, hc: hc}
}

var csrfRe = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func (c *client) get(path string) (*http.Response, string) {
	c.e.t.Helper()
	resp, err := c.hc.Get(c.e.srv.URL + path)
	if err != nil {
		c.e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if m := csrfRe.FindSubmatch(b); m != nil {
		c.csrf = string(m[1])
	}
	return resp, string(b)
}

func (c *client) post(path string, form url.Values, hdr map[string]string) (*http.Response, string) {
	c.e.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, c.e.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		c.e.t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// login logs in with a name and password (or an API key) and reports the
// status of the POST.
func (c *client) login(name, pw, key string) *http.Response {
	c.e.t.Helper()
	c.get("/login")
	resp, _ := c.post("/login", url.Values{"csrf": {c.csrf}, "name": {name}, "password": {pw}, "apikey": {key}, "next": {"/"}},
		map[string]string{"Origin": c.e.srv.URL, "Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode == http.StatusSeeOther {
		c.get("/") // pick up the session's CSRF token
	}
	return resp
}

func (c *client) mustLogin(name string) {
	c.e.t.Helper()
	if resp := c.login(name, password, ""); resp.StatusCode != http.StatusSeeOther {
		c.e.t.Fatalf("login %s: %d", name, resp.StatusCode)
	}
}

func (c *client) action(path string, form url.Values) *http.Response {
	c.e.t.Helper()
	if form == nil {
		form = url.Values{}
	}
	form.Set("csrf", c.csrf)
	resp, _ := c.post(path, form, map[string]string{"Origin": c.e.srv.URL, "Sec-Fetch-Site": "same-origin"})
	return resp
}

func TestLoginSessionCookieAndExpiry(t *testing.T) {
	e := newEnv(t, false)
	e.addOperator("admin")
	c := e.client()
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("anonymous GET /: %d %s, want a redirect to the login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if resp := c.login("admin", "wrong password", ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	c.get("/login")
	resp, _ := c.post("/login", url.Values{"csrf": {c.csrf}, "name": {"admin"}, "password": {password}}, nil)
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == sessionCookie {
			ck = k
		}
	}
	if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure || ck.Path != "/" || len(ck.Value) != 43 {
		t.Fatalf("session cookie = %+v", ck)
	}
	// The store keeps the hash of the ID, never the ID.
	sum := sha256.Sum256([]byte(ck.Value))
	s, err := e.st.GetSession(context.Background(), sum[:])
	if err != nil || s.Kind != store.SessionOperator || s.Subject != "admin" || s.CSRF == "" {
		t.Fatalf("stored session = %+v, %v", s, err)
	}
	if _, err := e.st.GetSession(context.Background(), []byte(ck.Value)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the raw session ID is a key of the store: %v", err)
	}
	if resp, body := c.get("/"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "Overview") {
		t.Fatalf("GET / after login: %d", resp.StatusCode)
	}
	// Idle expiry: 29 minutes apart is fine, 30 minutes of idling ends it.
	e.clk.Advance(29 * time.Minute)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after 29 idle minutes: %d", resp.StatusCode)
	}
	e.clk.Advance(30 * time.Minute)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after 30 idle minutes: %d, want the login", resp.StatusCode)
	}
	if _, err := e.st.GetSession(context.Background(), sum[:]); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("idle session still stored: %v", err)
	}
	// Absolute expiry: used every 20 minutes, it still ends after 12h.
	c.mustLogin("admin")
	for range 35 { // 11h40m
		e.clk.Advance(20 * time.Minute)
		if resp, _ := c.get("/"); resp.StatusCode != http.StatusOK {
			t.Fatalf("active session ended early: %d", resp.StatusCode)
		}
	}
	e.clk.Advance(20 * time.Minute)
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("session older than 12h still valid: %d", resp.StatusCode)
	}
	// Logout ends the session in the store.
	c.mustLogin("admin")
	if resp := c.action("/logout", nil); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout: %d", resp.StatusCode)
	}
}

func TestSecureCookieOverHTTPS(t *testing.T) {
	e := newEnv(t, true)
	e.addOperator("admin")
	c := e.client()
	c.get("/login")
	resp, _ := c.post("/login", url.Values{"csrf": {c.csrf}, "name": {"admin"}, "password": {password}}, nil)
	var ck *http.Cookie
	for _, k := range resp.Cookies() {
		if k.Name == "__Host-"+sessionCookie {
			ck = k
		}
	}
	if ck == nil || !ck.Secure || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode {
		t.Fatalf("HTTPS session cookie = %+v (cookies %v)", ck, resp.Cookies())
	}
	if resp.Header.Get("Strict-Transport-Security") == "" {
		t.Error("no HSTS over HTTPS")
	}
}

func TestCSRF(t *testing.T) {
	e := newEnv(t, false)
	e.addOperator("admin")
	if err := e.st.AddSuppression(context.Background(), store.Suppression{Account: store.DefaultAccount, Address: "x@example.com", Reason: "manual"}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	// The login form itself needs its token (login CSRF).
	c.get("/login")
	if resp, _ := c.post("/login", url.Values{"csrf": {"forged"}, "name": {"admin"}, "password": {password}}, nil); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("login with a forged token: %d", resp.StatusCode)
	}
	c.mustLogin("admin")
	form := func(tok string) url.Values { return url.Values{"csrf": {tok}, "address": {"x@example.com"}} }
	same := map[string]string{"Origin": e.srv.URL, "Sec-Fetch-Site": "same-origin"}
	for _, tc := range []struct {
		name string
		tok  string
		hdr  map[string]string
	}{
		{"no token", "", same},
		{"wrong token", strings.Repeat("A", len(c.csrf)), same},
		{"foreign origin", c.csrf, map[string]string{"Origin": "http://evil.example"}},
		{"cross-site fetch", c.csrf, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"same-site fetch", c.csrf, map[string]string{"Sec-Fetch-Site": "same-site"}},
	} {
		if resp, _ := c.post("/suppressions/delete", form(tc.tok), tc.hdr); resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", tc.name, resp.StatusCode)
		}
	}
	if ok, _ := e.st.IsSuppressed(context.Background(), store.DefaultAccount, "x@example.com"); !ok {
		t.Fatal("a refused request removed the suppression")
	}
	// Another session's token does not work either.
	other := e.client()
	other.mustLogin("admin")
	if resp, _ := c.post("/suppressions/delete", form(other.csrf), same); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another session's token: %d", resp.StatusCode)
	}
	if resp, _ := c.post("/suppressions/delete", form(c.csrf), same); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right token: %d", resp.StatusCode)
	}
	if ok, _ := e.st.IsSuppressed(context.Background(), store.DefaultAccount, "x@example.com"); ok {
		t.Fatal("suppression not removed")
	}
}

func TestLoginRateLimits(t *testing.T) {
	e := newEnv(t, false)
	e.addOperator("admin")
	c := e.client()
	// Per name: 10 attempts a minute, then even the right password waits.
	for i := range 10 {
		if resp := c.login("admin", "wrong", ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i+1, resp.StatusCode)
		}
	}
	if resp := c.login("admin", password, ""); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("11th attempt for the name: %d, want 429", resp.StatusCode)
	}
	e.clk.Advance(70 * time.Second) // a minute plus the window's 5s slot
	if resp := c.login("admin", password, ""); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after a minute: %d", resp.StatusCode)
	}
	// Per address: 20 a minute across names.
	e.clk.Advance(time.Hour)
	c2 := e.client()
	for i := range 20 {
		if resp := c2.login("nobody"+string(rune('a'+i)), "x", ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("address attempt %d: %d", i+1, resp.StatusCode)
		}
	}
	if resp := c2.login("admin", password, ""); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("21st attempt from the address: %d, want 429", resp.StatusCode)
	}
}

func TestSecurityHeaders(t *testing.T) {
	e := newEnv(t, false)
	resp, _ := e.client().get("/login")
	for k, want := range map[string]string{
		"X-Frame-Options":        "DENY",
		"X-Content-Type-Options": "nosniff",
		"Referrer-Policy":        "same-origin",
	} {
		if got := resp.Header.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"script-src 'self'", "frame-ancestors 'none'", "default-src 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("CSP allows inline code: %q", csp)
	}
	// No page has an inline script or event handler attribute.
	for _, name := range []string{"layout", "login", "overview", "message", "messages"} {
		b, err := files.ReadFile("templates/" + name + ".html")
		if err != nil {
			t.Fatal(err)
		}
		if regexp.MustCompile(`<script>|<script [^s]|\son[a-z]+=`).Match(b) {
			t.Errorf("template %s has inline script", name)
		}
	}
}

// TestAccountScoping: a member sees and changes only its own account's
// data, whatever the URL says.
func TestAccountScoping(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	e.addMember("acme", "ann@acme.test", "acme.test")
	e.addMember("other", "olga@other.test", "other.test")
	mine := e.enqueue("acme", "ann@acme.test", "x@dest.test")
	theirs := e.enqueue("other", "olga@other.test", "secret-recipient@dest.test")
	now := e.clk.Now()
	if err := e.st.AddEvents(ctx, []store.Event{
		{Time: now, Type: store.EventDelivered, Account: "acme", MessageID: "MINE1", Recipient: "r@dest.test", Sender: "ann@acme.test"},
		{Time: now, Type: store.EventBounced, Account: "other", MessageID: "THEIRS1", Recipient: "hidden@dest.test", Sender: "olga@other.test"},
		{Time: now, Type: store.EventBounced, Account: "other", MessageID: "THEIRS1", Recipient: "hidden2@dest.test", Sender: "olga@other.test"},
	}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []store.Suppression{{Account: "acme", Address: "mine@x.test", Reason: "manual"}, {Account: "other", Address: "theirs@x.test", Reason: "manual"}} {
		if err := e.st.AddSuppression(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.AddWebhook(ctx, store.Webhook{ID: "hook-other", Account: "other", URL: "https://other.example/hook", Secret: "s"}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	c.mustLogin("ann@acme.test")

	for _, path := range []string{"/messages", "/messages?account=other", "/suppressions?account=other", "/suppressions.csv?account=other",
		"/destinations?account=other", "/overview.json?account=other", "/webhooks?account=other", "/apikeys?account=other", "/accounts", "/domains"} {
		resp, body := c.get(path)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: %d", path, resp.StatusCode)
		}
		for _, leak := range []string{theirs, "THEIRS1", "hidden@", "theirs@x.test", "olga@", "hook-other", "other.test"} {
			if strings.Contains(body, leak) {
				t.Errorf("%s shows %q of another account", path, leak)
			}
		}
	}
	if _, body := c.get("/messages"); !strings.Contains(body, mine) || !strings.Contains(body, "MINE1") {
		t.Errorf("own messages not listed")
	}
	if _, body := c.get("/suppressions.csv?account=other"); !strings.Contains(body, "mine@x.test") {
		t.Errorf("own suppressions not exported: %q", body)
	}
	if _, body := c.get("/overview.json?account=other"); !strings.Contains(body, `"delivered":1`) || strings.Contains(body, `"bounced":2`) {
		t.Errorf("overview totals not the member's own: %s", body)
	}
	// Forged URLs of another account's things are not found.
	for _, path := range []string{"/messages/" + theirs, "/messages/THEIRS1", "/messages/" + theirs + "?account=other",
		"/webhooks/hook-other", "/webhooks/hook-other?account=other", "/domains/other.test"} {
		if resp, body := c.get(path); resp.StatusCode != http.StatusNotFound || strings.Contains(body, "secret-recipient") {
			t.Errorf("%s: %d, want 404", path, resp.StatusCode)
		}
	}
	if resp, _ := c.get("/messages/" + mine); resp.StatusCode != http.StatusOK {
		t.Errorf("own message: %d", resp.StatusCode)
	}
	// Actions on another account's message change nothing.
	for _, a := range []string{"delete", "retry", "bounce"} {
		if resp := c.action("/messages/"+theirs+"/"+a, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s of another account's message: %d", a, resp.StatusCode)
		}
	}
	if _, err := e.st.Get(ctx, theirs); err != nil {
		t.Fatalf("another account's message was touched: %v", err)
	}
	if len(e.bounc.ids) != 0 {
		t.Fatalf("bounced %v", e.bounc.ids)
	}
	// Removing "theirs@x.test" with ?account=other acts on the own account
	// (where it does not exist).
	if resp := c.action("/suppressions/delete?account=other", url.Values{"address": {"theirs@x.test"}}); resp.StatusCode != http.StatusNotFound {
		t.Errorf("removing another account's suppression: %d", resp.StatusCode)
	}
	if ok, _ := e.st.IsSuppressed(ctx, "other", "theirs@x.test"); !ok {
		t.Fatal("another account's suppression was removed")
	}
	// Operator-only pages.
	for _, path := range []string{"/alerts", "/blocklists"} {
		if resp, _ := c.get(path); resp.StatusCode != http.StatusForbidden {
			t.Errorf("member on %s: %d", path, resp.StatusCode)
		}
	}
	// The own message's actions work.
	if resp := c.action("/messages/"+mine+"/bounce", nil); resp.StatusCode != http.StatusSeeOther || len(e.bounc.ids) != 1 || e.bounc.ids[0] != mine {
		t.Errorf("bounce own: %d %v", resp.StatusCode, e.bounc.ids)
	}
	if resp := c.action("/messages/"+mine+"/delete", nil); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("delete own: %d", resp.StatusCode)
	}
	if _, err := e.st.Get(ctx, mine); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("own message not deleted: %v", err)
	}
	// Moving the user to another account ends the session.
	if err := e.st.SetUserAccount(ctx, "ann@acme.test", "other"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.get("/messages"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("session of a user moved to another account still valid: %d", resp.StatusCode)
	}
	// The operator sees both.
	op := e.client()
	e.addOperator("root")
	op.mustLogin("root")
	if _, body := op.get("/messages"); !strings.Contains(body, theirs) || !strings.Contains(body, "THEIRS1") {
		t.Error("operator does not see every account")
	}
}

func TestAPIKeyLogin(t *testing.T) {
	e := newEnv(t, false)
	e.addMember("acme", "ann@acme.test", "acme.test")
	ctx := context.Background()
	e.keys["hk_read"] = store.APIKey{ID: "readkey", Account: "acme", Scopes: []string{store.ScopeRead}, SecretHash: []byte("h")}
	e.keys["hk_send"] = store.APIKey{ID: "sendkey", Account: "acme", Scopes: []string{store.ScopeSend}, SecretHash: []byte("h")}
	for _, k := range e.keys {
		if err := e.st.AddAPIKey(ctx, k); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.st.AddSuppression(ctx, store.Suppression{Account: "acme", Address: "s@x.test", Reason: "manual"}); err != nil {
		t.Fatal(err)
	}
	c := e.client()
	if resp := c.login("", "", "hk_send"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("send-only key: %d, want refused", resp.StatusCode)
	}
	if resp := c.login("", "", "hk_read"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("read key: %d", resp.StatusCode)
	}
	if _, body := c.get("/suppressions"); !strings.Contains(body, "s@x.test") || strings.Contains(body, ">Remove<") {
		t.Errorf("read-only key: suppressions not shown, or shown with actions")
	}
	if resp := c.action("/suppressions/delete", url.Values{"address": {"s@x.test"}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("read-only key changed something: %d", resp.StatusCode)
	}
	// Deleting the key ends the session.
	if err := e.st.DeleteAPIKey(ctx, "acme", "readkey"); err != nil {
		t.Fatal(err)
	}
	if resp, _ := c.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("session of a deleted key: %d", resp.StatusCode)
	}
}

func TestEscapedEverywhere(t *testing.T) {
	e := newEnv(t, false)
	e.addOperator("admin")
	ctx := context.Background()
	payload := `"><img src=x onerror=alert(1)><script>alert(2)</script>`
	id := e.enqueue(store.DefaultAccount, payload+"@evil.test", "victim@dest.test")
	if err := e.st.AddEvents(ctx, []store.Event{{Time: e.clk.Now(), Type: store.EventBounced, Account: store.DefaultAccount,
		MessageID: id, Recipient: "victim@dest.test", Sender: payload, Reply: "550 " + payload}}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.AddSuppression(ctx, store.Suppression{Account: store.DefaultAccount, Address: "a@b.test", Reason: "manual", Detail: payload}); err != nil {
		t.Fatal(err)
	}
	// The explanation quotes the remote's reply: escaped like the rest.
	var explained []string
	e.con.deps.Explain = func(_ context.Context, mid, account string) ([]string, error) {
		explained = append(explained, mid+"|"+account)
		return []string{"victim@dest.test: bounced: 550 " + payload}, nil
	}
	c := e.client()
	c.mustLogin("admin")
	if _, body := c.get("/messages/" + id); !strings.Contains(body, `id="why"`) || !strings.Contains(body, "victim@dest.test: bounced: 550 &#34;&gt;&lt;img") {
		t.Errorf("the message page lacks the escaped explanation")
	}
	if len(explained) != 1 || explained[0] != id+"|" {
		t.Errorf("explained %q, want the message for an operator (every account)", explained)
	}
	for _, path := range []string{"/", "/messages", "/messages/" + id, "/suppressions", "/destinations", "/messages?sender=" + url.QueryEscape(payload)} {
		resp, body := c.get(path)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
		if strings.Contains(body, "<img src=x") || strings.Contains(body, "<script>alert") {
			t.Errorf("%s shows the payload unescaped", path)
		}
	}
	if _, body := c.get("/messages/" + id); !strings.Contains(body, "&lt;script&gt;") {
		t.Error("payload not shown escaped on the timeline")
	}
	_, body := c.get("/suppressions.csv")
	if !bytes.Contains([]byte(body), []byte(`"""><img`)) {
		t.Errorf("CSV does not quote the payload: %q", body)
	}
	if got := csvCell("=HYPERLINK(1)"); got != "'=HYPERLINK(1)" {
		t.Errorf("csvCell = %q", got)
	}
}

func TestSafeNext(t *testing.T) {
	for in, want := range map[string]string{"/messages?id=1": "/messages?id=1", "//evil.example/": "/", "https://evil.example/": "/",
		"/\\evil.example": "/", "": "/", "/\t/evil.example": "/", "/\n/evil.example": "/", "/ok?x=%2F%2F": "/ok?x=%2F%2F"} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func openBenchStore(b *testing.B) *sqlite.Store {
	st, err := sqlite.Open(b.TempDir(), sqlite.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestFlashOnlyOwnWords(t *testing.T) {
	e := newEnv(t, false)
	e.addOperator("admin")
	c := e.client()
	c.mustLogin("admin")
	if _, body := c.get("/suppressions?done=removed"); !strings.Contains(body, "Done: removed") {
		t.Error("own confirmation not shown")
	}
	if _, body := c.get("/suppressions?done=" + url.QueryEscape("your password expired, log in at evil.example")); strings.Contains(body, "evil.example") {
		t.Error("a link put its text on the page")
	}
}

// Two nodes (two consoles on one store) share the login limits.
func TestLoginLimitsSharedByNodes(t *testing.T) {
	e := newEnv(t, false)
	e.addOperator("admin")
	other, err := New(Config{}, Deps{Store: e.st, Clock: e.clk, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(other)
	defer srv2.Close()
	c := e.client()
	for range 10 {
		c.login("admin", "wrong", "")
	}
	e2 := *e
	e2.srv = srv2
	c2 := e2.client()
	if resp := c2.login("admin", password, ""); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("on the other node after 10 attempts: %d, want 429", resp.StatusCode)
	}
}
