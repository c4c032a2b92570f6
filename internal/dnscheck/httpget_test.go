package dnscheck_test

import (
	"context"
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func TestNewHTTPGet(t *testing.T) {
	t.Parallel()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/mta-sts.txt":
			w.Header().Set("Content-Type", "text/plain")
			w.Write([]byte(policy)) //nolint:errcheck
		case "/moved":
			http.Redirect(w, r, "/.well-known/mta-sts.txt", http.StatusFound)
		case "/big":
			w.Write([]byte(strings.Repeat("x", 70<<10))) //nolint:errcheck
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL)
	port := u.Port()

	d := testdns.Start(t)
	d.AddA("mta-sts.example.com", "127.0.0.1")
	r, err := resolve.New(d.Addr(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The httptest certificate is for "example.com"; a config naming it
	// keeps verification on while the URL uses mta-sts.example.com.
	roots := srv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs
	get := dnscheck.NewHTTPGet(r, &tls.Config{RootCAs: roots, ServerName: "example.com"}, 2*time.Second)
	ctx := context.Background()
	base := "https://mta-sts.example.com:" + port

	body, err := get(ctx, base+"/.well-known/mta-sts.txt")
	if err != nil || string(body) != policy {
		t.Fatalf("get = %q, %v", body, err)
	}
	for path, wantErr := range map[string]string{
		"/moved":   "must not redirect",
		"/missing": "404",
		"/big":     "larger than",
	} {
		if _, err := get(ctx, base+path); err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Errorf("%s: err = %v, want %q", path, err, wantErr)
		}
	}
	if _, err := get(ctx, "https://nowhere.example.com:"+port+"/"); err == nil || !strings.Contains(err.Error(), "resolve nowhere.example.com") {
		t.Errorf("unresolvable host: err = %v", err)
	}
	// Without the test roots the certificate does not verify.
	strict := dnscheck.NewHTTPGet(r, &tls.Config{ServerName: "example.com"}, 2*time.Second)
	if _, err := strict(ctx, base+"/.well-known/mta-sts.txt"); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("untrusted certificate: err = %v", err)
	}
}
