package unsubscribe

import (
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

var testKey = []byte("0123456789abcdef0123456789abcdef")

func TestTokenRoundTrip(t *testing.T) {
	t.Parallel()
	for _, tok := range []Token{
		{Account: "acme", Recipient: "bob@example.com", Group: "news", MessageID: "0123456789ABCDEFGHJK"},
		{Account: "a", Recipient: "x@y.example"},
		{Account: "acme", Recipient: "\"odd local\"@example.com", Group: strings.Repeat("g", 64), MessageID: "M"},
	} {
		s, err := Sign(testKey, tok)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(s, "+/=%?#&") || len(s) > MaxTokenLen {
			t.Errorf("token %q is not compact and URL-safe", s)
		}
		got, err := Verify(testKey, s)
		if err != nil || got != tok {
			t.Errorf("Verify(Sign(%+v)) = %+v, %v", tok, got, err)
		}
	}
	s, _ := Sign(testKey, Token{Account: "acme", Recipient: "Bob@Example.COM", Group: "news", MessageID: "0123456789ABCDEFGHJK"})
	if len(s) > 100 {
		t.Errorf("token of a usual message is %d characters: %s", len(s), s)
	}
	if got, _ := Verify(testKey, s); got.Recipient != "bob@example.com" {
		t.Errorf("recipient not lower-cased: %q", got.Recipient)
	}
}

func TestTokenTamper(t *testing.T) {
	t.Parallel()
	tok := Token{Account: "acme", Recipient: "bob@example.com", Group: "news", MessageID: "Q1"}
	s, _ := Sign(testKey, tok)
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	// Every single-bit change anywhere is refused.
	for i := range raw {
		for bit := 0; bit < 8; bit++ {
			b := append([]byte(nil), raw...)
			b[i] ^= 1 << bit
			if _, err := Verify(testKey, base64.RawURLEncoding.EncodeToString(b)); err != ErrInvalid {
				t.Fatalf("byte %d bit %d flipped: %v", i, bit, err)
			}
		}
	}
	// Another account, group or recipient signed with another key.
	other, _ := Sign([]byte("another key, 32 bytes long......"), Token{Account: "evil", Recipient: "bob@example.com"})
	forged := []string{
		other,
		"",
		s[:len(s)-1],
		s + "A",
		s + "=",
		strings.Repeat("A", MaxTokenLen+1),
		"not base64!",
		base64.RawURLEncoding.EncodeToString(raw[:len(raw)-1]),
		base64.RawURLEncoding.EncodeToString(append(append([]byte(nil), raw...), 0)),
	}
	for _, f := range forged {
		if _, err := Verify(testKey, f); err != ErrInvalid {
			t.Errorf("Verify(%q) = %v, want ErrInvalid", f, err)
		}
	}
	if _, err := Sign(testKey, Token{Account: "acme"}); err == nil {
		t.Error("a token without recipient was signed")
	}
	if _, err := Sign(testKey, Token{Account: "acme", Recipient: "x@y", Group: strings.Repeat("g", maxField+1)}); err == nil {
		t.Error("an oversized field was signed")
	}
}

func TestLinks(t *testing.T) {
	t.Parallel()
	l := &Links{Key: testKey, BaseURL: "https://mail.example.org/"}
	lu, post, err := l.Headers("acme", "bob@example.com", "news", "Q1")
	if err != nil {
		t.Fatal(err)
	}
	if post != "List-Unsubscribe=One-Click" || !strings.HasPrefix(lu, "<https://mail.example.org/unsubscribe/") || !strings.HasSuffix(lu, ">") {
		t.Fatalf("headers %q %q", lu, post)
	}
	tok, err := Verify(testKey, strings.TrimSuffix(strings.TrimPrefix(lu, "<https://mail.example.org/unsubscribe/"), ">"))
	if err != nil || tok.Group != "news" || tok.MessageID != "Q1" {
		t.Errorf("link token %+v %v", tok, err)
	}
}

// fakeStore keeps suppressions and events in memory, like the real
// backends (storetest covers those).
type fakeStore struct {
	mu     sync.Mutex
	sups   map[string]store.Suppression
	events []store.Event
}

func (f *fakeStore) GetAccount(_ context.Context, id string) (store.Account, error) {
	if id == "gone" {
		return store.Account{}, store.ErrNotFound
	}
	return store.Account{ID: id}, nil
}

func (f *fakeStore) GetUnsubscribeGroup(_ context.Context, account, id string) (store.UnsubscribeGroup, error) {
	if id == "news" {
		return store.UnsubscribeGroup{Account: account, ID: id, Name: "<b>News</b>"}, nil
	}
	return store.UnsubscribeGroup{}, store.ErrNotFound
}

func (f *fakeStore) ListEvents(_ context.Context, fl store.EventFilter) ([]store.Event, error) {
	if fl.MessageID == "Q1" {
		return []store.Event{{Type: store.EventAccepted, Tags: []string{"promo"}, Metadata: map[string]string{"k": "v"}}}, nil
	}
	return nil, nil
}

func (f *fakeStore) Unsubscribe(_ context.Context, s store.Suppression, ev store.Event) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := s.Account + "/" + s.Address + "/" + s.Group
	if _, ok := f.sups[k]; ok {
		return false, nil
	}
	f.sups[k] = s
	f.events = append(f.events, ev)
	return true, nil
}

func newTestHandler(t *testing.T, cfg Config) (*fakeStore, *httptest.Server) {
	st := &fakeStore{sups: map[string]store.Suppression{}}
	srv := httptest.NewServer(New(cfg, testKey, st, clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)), nil))
	t.Cleanup(srv.Close)
	return st, srv
}

func TestHandlerOneClick(t *testing.T) {
	t.Parallel()
	st, srv := newTestHandler(t, Config{})
	tok, _ := Sign(testKey, Token{Account: "acme", Recipient: "bob@example.com", Group: "news", MessageID: "Q1"})
	u := srv.URL + Path + tok

	// GET shows a confirmation page and changes nothing.
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `<form method="post">`) || !strings.Contains(string(body), "&lt;b&gt;News&lt;/b&gt;") ||
		!strings.Contains(string(body), "bob@example.com") {
		t.Fatalf("GET: %d %s", resp.StatusCode, body)
	}
	if resp.Header.Get("X-Frame-Options") != "DENY" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Errorf("GET headers %v", resp.Header)
	}
	if len(st.sups) != 0 {
		t.Fatal("GET unsubscribed")
	}

	// A POST without the RFC 8058 body is refused.
	resp, _ = http.Post(u, "application/x-www-form-urlencoded", strings.NewReader("x=y"))
	resp.Body.Close()
	if resp.StatusCode != 400 || len(st.sups) != 0 {
		t.Fatalf("POST without List-Unsubscribe=One-Click: %d", resp.StatusCode)
	}

	// The one-click POST, twice (and once as multipart, as some
	// providers send it): one suppression, one event.
	for i := 0; i < 2; i++ {
		resp, err = http.PostForm(u, url.Values{"List-Unsubscribe": {"One-Click"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("POST %d: %d", i, resp.StatusCode)
		}
	}
	mp := "--b\r\nContent-Disposition: form-data; name=\"List-Unsubscribe\"\r\n\r\nOne-Click\r\n--b--\r\n"
	resp, _ = http.Post(u, "multipart/form-data; boundary=b", strings.NewReader(mp))
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("multipart POST: %d", resp.StatusCode)
	}
	if len(st.sups) != 1 || len(st.events) != 1 {
		t.Fatalf("suppressions %v events %v", st.sups, st.events)
	}
	sp := st.sups["acme/bob@example.com/news"]
	if sp.Kind != store.KindUnsubscribe || sp.Reason != store.SuppressUnsubscribe {
		t.Errorf("suppression %+v", sp)
	}
	ev := st.events[0]
	if ev.Type != store.EventUnsubscribed || ev.MessageID != "Q1" || ev.Recipient != "bob@example.com" || ev.Account != "acme" ||
		len(ev.Tags) != 1 || ev.Tags[0] != "promo" || ev.Metadata["k"] != "v" {
		t.Errorf("event %+v", ev)
	}
}

func TestHandlerRefusesBadTokens(t *testing.T) {
	t.Parallel()
	st, srv := newTestHandler(t, Config{})
	good, _ := Sign(testKey, Token{Account: "acme", Recipient: "bob@example.com"})
	gone, _ := Sign(testKey, Token{Account: "gone", Recipient: "bob@example.com"})
	forged, _ := Sign([]byte("another key, 32 bytes long......"), Token{Account: "acme", Recipient: "bob@example.com"})
	altered := good[:len(good)-2] + "AA"
	if altered == good {
		altered = good[:len(good)-2] + "BB"
	}
	var bodies []string
	for _, tok := range []string{forged, altered, gone, "x", strings.Repeat("A", 5000)} {
		for _, m := range []string{"GET", "POST"} {
			req, _ := http.NewRequest(m, srv.URL+Path+tok, strings.NewReader("List-Unsubscribe=One-Click"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 404 {
				t.Errorf("%s %.20s...: %d, want 404", m, tok, resp.StatusCode)
			}
			bodies = append(bodies, string(b))
		}
	}
	for _, b := range bodies {
		if b != bodies[0] {
			t.Errorf("answers differ between invalid tokens (an oracle):\n%s\n%s", b, bodies[0])
		}
	}
	if len(st.sups) != 0 {
		t.Errorf("a bad token unsubscribed: %v", st.sups)
	}
	// An oversized body is refused.
	resp, _ := http.Post(srv.URL+Path+good, "application/x-www-form-urlencoded",
		strings.NewReader("List-Unsubscribe=One-Click&pad="+strings.Repeat("x", 10000)))
	resp.Body.Close()
	if resp.StatusCode != 400 || len(st.sups) != 0 {
		t.Errorf("oversized body: %d", resp.StatusCode)
	}
}

func TestHandlerRateLimit(t *testing.T) {
	t.Parallel()
	_, srv := newTestHandler(t, Config{PerIPRate: 0.001, PerIPBurst: 3})
	tok, _ := Sign(testKey, Token{Account: "acme", Recipient: "bob@example.com"})
	var codes []int
	for i := 0; i < 5; i++ {
		resp, err := http.Get(srv.URL + Path + tok)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	if codes[2] != 200 || codes[3] != 429 || codes[4] != 429 {
		t.Errorf("codes %v, want 3 × 200 then 429", codes)
	}
}

// TestTokenOneSpelling: the base64 decoder skips CR and LF; a token with
// them inserted is refused, so a token has exactly one spelling.
func TestTokenOneSpelling(t *testing.T) {
	t.Parallel()
	s, _ := Sign(testKey, Token{Account: "acme", Recipient: "bob@example.com", MessageID: "Q1"})
	if _, err := Verify(testKey, s); err != nil {
		t.Fatalf("the token itself: %v", err)
	}
	for _, bad := range []string{s[:5] + "\r" + s[5:], s[:5] + "\n" + s[5:], s + "\r\n", s[:5] + "=" + s[5:]} {
		if _, err := Verify(testKey, bad); err == nil {
			t.Errorf("%q verified", bad)
		}
	}
}
