package app

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/tracking"
)

// The ACME HTTPS listener's handler serves the tracking links and leaves
// every other path to the well-known documents.
func TestWithTrackingRoutesLinks(t *testing.T) {
	t.Parallel()
	tr, err := tracking.New(tracking.Config{BaseURL: "https://mx.example.net"}, bytes.Repeat([]byte{3}, 32), tracking.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	a := &App{tracker: tr}
	h := a.withTracking(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }))
	get := func(path string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec
	}
	click := strings.TrimPrefix(tr.ClickURL(tracking.Target{Account: "acme", MessageID: "m1"}, "https://shop.example.com/"), "https://mx.example.net")
	if rec := get(click); rec.Code != http.StatusFound || rec.Header().Get("Location") != "https://shop.example.com/" {
		t.Errorf("click on the ACME listener: %d %q", rec.Code, rec.Header().Get("Location"))
	}
	if rec := get("/t/c/forged"); rec.Code != http.StatusNotFound {
		t.Errorf("forged token: %d", rec.Code)
	}
	if rec := get("/.well-known/mta-sts.txt"); rec.Code != http.StatusTeapot {
		t.Errorf("other paths: %d, want the well-known handler's", rec.Code)
	}
}
