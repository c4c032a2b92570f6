package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

var _ Platform = (*sqlite.Store)(nil)
var _ store.Platform = (*sqlite.Store)(nil)

// fakeSubmitter records submissions; err, if set, is returned instead.
type fakeSubmitter struct {
	mu   sync.Mutex
	subs []*Submission
	err  error
	n    int
}

func (f *fakeSubmitter) Submit(_ context.Context, s *Submission) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return "", f.err
	}
	f.subs = append(f.subs, s)
	f.n++
	return fmt.Sprintf("q%04d", f.n), nil
}

func (f *fakeSubmitter) setErr(err error) {
	f.mu.Lock()
	f.err = err
	f.mu.Unlock()
}

func (f *fakeSubmitter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

func (f *fakeSubmitter) last() *Submission {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.subs) == 0 {
		return nil
	}
	return f.subs[len(f.subs)-1]
}

// env is an API served on loopback over a real SQLite store. Every
// response received through do is validated against the OpenAPI document.
type env struct {
	t     *testing.T
	st    *sqlite.Store
	sub   *fakeSubmitter
	clock *clock.Fake
	url   string
	logs  *bytes.Buffer

	mu      sync.Mutex
	checked map[string]bool // "METHOD /template STATUS" validated against the document
}

// validated records a response checked against the document.
func (e *env) validated(method, template string, status int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.checked == nil {
		e.checked = make(map[string]bool)
	}
	e.checked[fmt.Sprintf("%s %s %d", method, template, status)] = true
}

// statuses returns the statuses validated for an operation.
func (e *env) statuses(method, template string) []int {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []int
	for k := range e.checked {
		var m, tpl string
		var st int
		if _, err := fmt.Sscanf(k, "%s %s %d", &m, &tpl, &st); err == nil && m == method && tpl == template {
			out = append(out, st)
		}
	}
	return out
}

type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func newEnv(t *testing.T, cfg Config) *env { return newEnvDeps(t, cfg, nil) }

// newEnvDeps is newEnv with a chance to change the API's dependencies.
func newEnvDeps(t *testing.T, cfg Config, change func(*Deps)) *env {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{ReadConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	e := &env{t: t, st: st, sub: &fakeSubmitter{}, clock: clock.NewFake(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))}
	lb := &lockedBuffer{}
	e.logs = &lb.Buffer
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.example.net"
	}
	deps := Deps{Platform: st, Messages: st, Submitter: e.sub, Clock: e.clock, Logger: slog.New(slog.NewTextHandler(lb, nil)),
		Explainer: explain.New(st, explain.Config{}, e.clock),
		Templates: st, Batches: st}
	if change != nil {
		change(&deps)
	}
	h := New(cfg, deps)
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// account creates an account (unless it is the default) and a key with scopes.
func (e *env) key(account string, scopes ...string) string {
	e.t.Helper()
	ctx := context.Background()
	if account != store.DefaultAccount {
		if _, err := e.st.GetAccount(ctx, account); err != nil {
			if err := e.st.AddAccount(ctx, store.Account{ID: account, Name: account, Created: time.Now()}); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	tok, id, hash := NewToken()
	if err := e.st.AddAPIKey(ctx, store.APIKey{ID: id, Account: account, Scopes: scopes, SecretHash: hash, Created: time.Now()}); err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decoding %s: %v", r.body, err)
	}
}

// apiErr returns the error code and field of an error response.
func (r resp) apiErr(t *testing.T) (code, field string) {
	t.Helper()
	var b errorBody
	r.json(t, &b)
	if b.Error.Code == "" || b.Error.Message == "" {
		t.Fatalf("not an error body: %s", r.body)
	}
	return b.Error.Code, b.Error.Field
}

func (e *env) do(method, path, token, ctype string, body io.Reader, hdr ...string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	c := &http.Client{Timeout: 10 * time.Second}
	res, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	doc, err := loadAPIDoc()
	if err != nil {
		e.t.Fatalf("OpenAPI document: %v", err)
	}
	if tpl, problems, ok := doc.checkResponse(method, req.URL.Path, res.StatusCode, res.Header, b); ok {
		for _, p := range problems {
			e.t.Errorf("response differs from the OpenAPI document: %s", p)
		}
		e.validated(method, tpl, res.StatusCode)
	}
	return resp{res.StatusCode, res.Header, b}
}

func (e *env) get(path, token string) resp { return e.do("GET", path, token, "", nil) }

func (e *env) post(path, token string, v any, hdr ...string) resp {
	e.t.Helper()
	var body io.Reader
	switch x := v.(type) {
	case string:
		body = strings.NewReader(x)
	default:
		b, err := json.Marshal(v)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(b)
	}
	return e.do("POST", path, token, "application/json", body, hdr...)
}

func (e *env) del(path, token string) resp { return e.do("DELETE", path, token, "", nil) }

func want(t *testing.T, r resp, status int) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
}
