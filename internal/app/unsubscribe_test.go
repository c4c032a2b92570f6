package app

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/unsubscribe"
)

// The ACME HTTPS listener's handler serves the unsubscribe links before
// the well-known documents; the links use platform.public_url and the
// key shared in the store.
func TestUnsubscribeOnPublicListener(t *testing.T) {
	t.Parallel()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	if err := st.AddAccount(ctx, store.Account{ID: "acme", Name: "Acme"}); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Platform.PublicURL = "https://links.example.org/"
	a := &App{store: st, clock: clock.Real{}, log: slog.New(slog.DiscardHandler)}
	links, err := a.setupUnsubscribe(cfg)
	if err != nil {
		t.Fatal(err)
	}
	key, err := unsubscribe.LoadKey(ctx, st)
	if err != nil || string(key) != string(links.Key) {
		t.Fatalf("the links' key is not the store's: %v", err)
	}
	lu, _, err := links.Headers("acme", "bob@example.org", "", "Q1")
	if err != nil {
		t.Fatal(err)
	}
	path, ok := strings.CutPrefix(strings.Trim(lu, "<>"), "https://links.example.org")
	if !ok {
		t.Fatalf("link %s", lu)
	}
	wk := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "well-known") })
	srv := httptest.NewServer(withUnsubscribe(wk, a))
	defer srv.Close()
	resp, err := http.PostForm(srv.URL+path, url.Values{"List-Unsubscribe": {"One-Click"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %d", path, resp.StatusCode)
	}
	if ok, _ := st.IsSuppressed(ctx, "acme", "bob@example.org"); !ok {
		t.Error("not suppressed")
	}
	resp, err = http.Get(srv.URL + "/.well-known/mta-sts.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "well-known" {
		t.Errorf("other paths: %q", b)
	}
}
