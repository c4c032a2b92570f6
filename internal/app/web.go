package app

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/acme"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/unsubscribe"
	"github.com/heraldmail/herald/internal/wellknown"
)

// web is what Herald serves on the web besides its API: the MTA-STS
// policies and client autoconfiguration (wellknown), and, with ACME on,
// the certificates and the :80/:443 listeners the CA validates on.
type web struct {
	wk       *wellknown.Handler
	acme     *acme.Manager
	http     *http.Server // :80 (acme.http_address)
	https    *http.Server // :443 (acme.https_address)
	httpLns  []net.Listener
	httpsLns []net.Listener
	unsub    *unsubscribe.Handler // one-click unsubscribe links (unsubscribe.go)
}

// newWellKnown builds the handler of the documents clients and senders
// fetch; it announces the ports the submission listeners are bound to.
func (a *App) newWellKnown(cfg *config.Config) *wellknown.Handler {
	w := cfg.WellKnown
	wc := wellknown.Config{Hostname: cfg.Server.Hostname, MX: w.MTASTSMX, MaxAge: w.MTASTSMaxAge,
		Submission: a.boundPort("submission"), Submissions: a.boundPort("submissions"),
		Autoconfig: w.Autoconfig, Dir: a.store, Log: a.log}
	if w.IMAPHost != "" {
		wc.IMAP = wellknown.Server{Host: w.IMAPHost, Port: w.IMAPPort}
	}
	return wellknown.New(wc)
}

// boundPort returns the port of the first listener of section name, 0
// for none.
func (a *App) boundPort(name string) int {
	for _, l := range a.listeners {
		if l.name == name {
			if tcp, ok := l.ln.Addr().(*net.TCPAddr); ok {
				return tcp.Port
			}
		}
	}
	return 0
}

// setupWeb builds, when ACME is on, the certificate manager (a source of
// a.tls) and its listeners.
func (a *App) setupWeb(cfg *config.Config, opts Options) error {
	if !cfg.ACME.Enabled {
		return nil
	}
	client := &http.Client{Timeout: time.Minute}
	if cfg.ACME.CAFile != "" {
		pem, err := os.ReadFile(cfg.ACME.CAFile)
		if err != nil {
			return fmt.Errorf("acme.ca_file: %w", err)
		}
		roots, err := x509.SystemCertPool()
		if err != nil || roots == nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("acme.ca_file %s: no PEM certificate in it", cfg.ACME.CAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig.RootCAs = roots
		client.Transport = tr
	}
	m, err := acme.New(acme.Config{
		DirectoryURL: cfg.ACME.DirectoryURL, Email: cfg.ACME.Email, Hostname: cfg.Server.Hostname,
		HostPrefixes: cfg.ACME.Hosts, Domains: a.store.ListDomains, Challenges: cfg.ACME.Challenges,
		RenewBefore: cfg.ACME.RenewBefore, HTTPClient: client, Store: a.store, Clock: a.clock, Log: a.log,
	})
	if err != nil {
		return err
	}
	a.web.acme = m
	a.tls.AddSource(m)
	// Certificates obtained before (by this node or another) are served
	// from the first handshake; missing ones are ordered by Run.
	lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := m.Load(lctx); err != nil {
		return storeError(cfg, err)
	}

	var addrs = func(s string) []string {
		if s == "" {
			return nil
		}
		return []string{s}
	}
	if a.web.httpLns, err = bind("acme_http", addrs(cfg.ACME.HTTPAddress), opts.Listeners); err != nil {
		return err
	}
	if a.web.httpsLns, err = bind("acme_https", addrs(cfg.ACME.HTTPSAddress), opts.Listeners); err != nil {
		return err
	}
	// Public listeners: every client counts against limits.max_connections_per_ip.
	conns := ratelimit.NewConnLimiter(cfg.HTTP.MaxConnections, cfg.Limits.MaxConnectionsPerIP)
	for i, ln := range a.web.httpLns {
		a.web.httpLns[i] = httpapi.LimitListener(ln, conns)
	}
	for i, ln := range a.web.httpsLns {
		a.web.httpsLns[i] = httpapi.LimitListener(ln, conns)
	}
	scfg := httpapi.ServerConfig{ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout, ReadTimeout: cfg.HTTP.ReadTimeout,
		WriteTimeout: cfg.HTTP.WriteTimeout, IdleTimeout: cfg.HTTP.IdleTimeout, MaxHeaderBytes: cfg.HTTP.MaxHeaderBytes, Logger: a.log}
	// The handler is built once the submission listeners are bound.
	wk := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { a.web.wk.ServeHTTP(w, r) })
	a.web.https = httpapi.NewServer(withUnsubscribe(wk, a), scfg)
	a.web.https.TLSConfig = m.TLSConfig(a.tls)
	a.web.http = httpapi.NewServer(m.HTTPHandler(plainHandler(wk, m)), scfg)
	return nil
}

// withUnsubscribe serves the one-click unsubscribe links before next.
func withUnsubscribe(next http.Handler, a *App) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, unsubscribe.Path) && a.web.unsub != nil {
			a.web.unsub.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// plainHandler serves plain HTTP (port 80) after the ACME challenges:
// Thunderbird's autoconfig (it tries http:// too; the document holds no
// secret), and a redirect to https:// for the certified names. The
// MTA-STS policy is only ever served over HTTPS (RFC 8461).
func plainHandler(wk http.Handler, m *acme.Manager) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := strings.ToLower(r.URL.Path); p {
		case wellknown.AutoconfigPath, wellknown.WellKnownAutoconfigPath:
			wk.ServeHTTP(w, r)
			return
		}
		host := wellknown.Host(r.Host)
		if host == "" || !m.Whitelisted(host) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			http.NotFound(w, r)
			return
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
}

// mountWellKnown routes the well-known documents on the API listener too,
// by Host header: for a reverse proxy that terminates TLS with its own
// certificates, or a deployment without ACME. It builds the handler, so
// it is called once the listeners are bound.
func (a *App) mountWellKnown(mux *http.ServeMux) {
	a.web.wk = a.newWellKnown(a.cfg)
	for _, p := range []string{wellknown.MTASTSPath, wellknown.AutoconfigPath, wellknown.WellKnownAutoconfigPath,
		wellknown.AutodiscoverPath, "/Autodiscover/Autodiscover.xml"} {
		mux.Handle(p, a.web.wk)
	}
}

// runWeb serves the ACME listeners and maintains the certificates until
// ctx ends; errc receives listener failures.
func (a *App) runWeb(ctx context.Context, errc chan<- error, goFn func(func())) {
	if a.web.acme == nil {
		return
	}
	goFn(func() { a.web.acme.Run(ctx) })
	for _, ln := range a.web.httpLns {
		goFn(func() {
			if err := a.web.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("acme http on %s: %w", ln.Addr(), err)
			}
		})
	}
	for _, ln := range a.web.httpsLns {
		goFn(func() {
			if err := a.web.https.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("acme https on %s: %w", ln.Addr(), err)
			}
		})
	}
}

// shutdownWeb stops the ACME listeners.
func (a *App) shutdownWeb(ctx context.Context) {
	if a.web.http != nil {
		_ = a.web.http.Shutdown(ctx)
	}
	if a.web.https != nil {
		_ = a.web.https.Shutdown(ctx)
	}
}

// closeWeb closes the ACME listeners (after a failed New, or after Run).
func (a *App) closeWeb() {
	for _, ln := range a.web.httpLns {
		ln.Close()
	}
	for _, ln := range a.web.httpsLns {
		ln.Close()
	}
}

// webAddrs adds the ACME listeners' addresses to out.
func (a *App) webAddrs(out map[string][]string) {
	for _, ln := range a.web.httpLns {
		out["acme_http"] = append(out["acme_http"], ln.Addr().String())
	}
	for _, ln := range a.web.httpsLns {
		out["acme_https"] = append(out["acme_https"], ln.Addr().String())
	}
}
