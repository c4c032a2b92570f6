// Package app is Herald's composition root: it builds every component from
// the configuration, wires them together and runs them. Only this package
// knows the concrete types; main and the end-to-end tests use it.
package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/delivery/mtasts"
	"github.com/heraldmail/herald/internal/diskguard"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/feedback"
	"github.com/heraldmail/herald/internal/gateway"
	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/local"
	"github.com/heraldmail/herald/internal/local/httproute"
	"github.com/heraldmail/herald/internal/logfile"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/notify"
	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/privdrop"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtpserver"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/startup"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
	"github.com/heraldmail/herald/internal/throttle"
	"github.com/heraldmail/herald/internal/tlsconf"
	"github.com/heraldmail/herald/internal/tlsrpt"
	"github.com/heraldmail/herald/internal/tracking"
	"github.com/heraldmail/herald/internal/transport"
	"github.com/heraldmail/herald/internal/webhook"
)

// Options are what the embedding program (main or a test) adds to the
// configuration.
type Options struct {
	Logger    *slog.Logger // nil: built from cfg.Log
	Clock     clock.Clock  // nil: the wall clock
	Delivery  func(*delivery.Config)
	Webhook   func(*webhook.Options)    // adjusts the webhook dispatcher (tests: fast retries)
	Listeners map[string][]net.Listener // pre-bound listeners by section ("smtp", ...), for tests; New closes them if it fails
	// DropPrivileges switches a node started as root to server.user
	// once every listener is bound (herald serve sets it; tests that run
	// in-process do not, since it would change the whole test binary).
	DropPrivileges bool
}

// App is a running Herald node.
type App struct {
	cfg     *config.Config
	log     *slog.Logger
	logFile *logfile.File // nil when logging to stderr
	store   store.Store
	lock    *pidlock.Lock // DATA_DIR/herald.pid: one serving node per data directory
	tls     *tlsconf.Manager
	remote  *delivery.Client
	sched   *queue.Scheduler
	spool   *spool.Spool
	metrics *appMetrics

	pipeline *submit.Pipeline
	disk     *diskguard.Guard
	webhooks *webhook.Dispatcher
	mtasts   *mtasts.Cache
	tlsrpt   *tlsrpt.Aggregator
	alerts   *alert.Engine
	resolver resolve.Resolver
	clock    clock.Clock
	monitor  *dnsbl.Monitor // our own listings on DNS lists
	// explainer answers GET /v1/messages/{id}/explain.
	explainer *explain.Explainer
	// tracker rewrites API messages for open and click tracking and
	// serves the links (/t/ on the HTTP and ACME HTTPS listeners).
	tracker *tracking.Tracker

	servers   []*smtpserver.Server
	listeners []listener
	http      *http.Server
	httpLns   []net.Listener
	web       web // MTA-STS, autoconfig; ACME certificates and listeners
}

type listener struct {
	ln     net.Listener
	server *smtpserver.Server
	name   string
}

// New builds a node from cfg. Listeners are bound here (so errors such as
// "address in use" surface before Run), but nothing is served until Run.
//
// A second node on the same data directory is refused (DATA_DIR/herald.pid
// is locked while a node exists). Every error is one line saying what
// failed, where and what to do, with its exit status (internal/exitcode);
// whatever New opened before it failed is closed again.
func New(cfg *config.Config, opts Options) (_ *App, err error) {
	a := &App{cfg: cfg}
	defer func() {
		if err != nil {
			a.closeAll()
			for _, lns := range opts.Listeners {
				for _, ln := range lns {
					ln.Close()
				}
			}
		}
	}()
	dir := cfg.Server.DataDir
	a.log = opts.Logger
	if a.log == nil {
		if a.log, a.logFile, err = NewLogger(cfg.Log); err != nil {
			return nil, err
		}
	}
	clk := opts.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, startup.DataDir(dir, err)
	}
	// Before the store: a second node must not release the first one's
	// leases (double deliveries).
	if a.lock, err = pidlock.Acquire(filepath.Join(dir, "herald.pid")); err != nil {
		return nil, startup.Lock(dir, err)
	}
	if a.store, _, err = OpenStore(cfg, a.log, true); err != nil {
		return nil, err
	}
	if err := lockNode(cfg, a.store); err != nil {
		return nil, err
	}
	// What this node had in flight when it stopped is due again; other
	// nodes' leases are theirs.
	if err := a.store.ReleaseLeases(context.Background()); err != nil {
		return nil, storeError(cfg, err)
	}
	if a.tls, err = tlsconf.New(cfg.TLS.CertFile, cfg.TLS.KeyFile, dir, cfg.Server.Hostname, cfg.TLS.MinVersion, a.log); err != nil {
		return nil, startup.TLS(cfg.TLS.CertFile, cfg.TLS.KeyFile, dir, err)
	}
	res, err := resolve.NewClient(cfg.DNS.Resolver, cfg.DNS.Timeout)
	if err != nil {
		return nil, startup.Resolver(cfg.DNS.Resolver, err)
	}
	a.metrics = newMetrics(a.store)

	dcfg := deliveryConfig(cfg)
	if opts.Delivery != nil {
		opts.Delivery(&dcfg)
	}
	if cfg.Delivery.MTASTS {
		a.mtasts = mtasts.New(mtasts.Config{Resolver: res, RootCAs: dcfg.RootCAs, Clock: clk, Log: a.log})
		dcfg.MTASTS = a.mtasts
	}
	if cfg.TLSRPT.Enabled {
		a.tlsrpt = tlsrpt.NewAggregator(clk, a.store)
		dcfg.TLSReport = a.tlsrpt
	}
	a.remote = delivery.New(dcfg, res, a.log)
	a.resolver = res
	a.clock = clk
	if err := a.setupWeb(cfg, opts); err != nil {
		return nil, err
	}

	verpKey, err := loadVERPKey(cfg, a.store, a.log)
	if err != nil {
		return nil, err
	}
	fb := feedback.New(a.store, verpKey, clk, a.log)
	if n, err := inbound.ImportReportDir(context.Background(), DMARCReportDir(cfg), a.store, clk); err != nil {
		a.log.Error("DMARC report files of an earlier version not imported", "err", err)
	} else if n > 0 {
		a.log.Info("DMARC report files of an earlier version imported into the store", "reports", n)
	}
	a.disk = diskguard.New(cfg.Server.DataDir, cfg.Limits.QueueMinFree, a.log)
	a.disk.EnsureReserve()
	tr := transport.New(a.store, local.NewMaildir(filepath.Join(cfg.Server.DataDir, "mail")), a.remote,
		httproute.New(httproute.Options{Clock: clk}), a.log)
	notifier := &notify.Notifier{Hostname: cfg.Server.Hostname, Postmaster: postmaster(cfg), Bodies: a.store,
		Log: a.log, Counter: a.metrics.bounces}
	qcfg := queueConfig(cfg)
	qcfg.OnStorageFull = a.disk.Release
	a.sched = queue.New(qcfg, a.store, tr, notifier, clk, a.log, observers{a.metrics, fb})
	// The mailbox simulator's complaints go through feedback processing
	// once the delivery they are about is recorded.
	tr.SetComplaints(fb)
	a.sched.SetFollowUp(tr)
	// The throttle's state is in the store: all nodes together respect
	// queue.max_per_destination for every destination, the big providers'
	// table, and the back-off of a destination that answers with
	// throttling replies (delivery's own per-destination semaphore caps
	// each node as well). A delivery to a destination at its cap waits up
	// to 2s for a connection (woken when one of this node's ends) before
	// it is deferred.
	thr := throttle.New(throttle.Config{Store: a.store, Clock: clk, Logger: a.log,
		MaxPerDestination: cfg.Queue.MaxPerDestination, Hold: cfg.Queue.LeaseTimeout, ConnWait: 2 * time.Second,
		FirstPause: cfg.Queue.ThrottleBackoff, MaxPause: 30 * cfg.Queue.ThrottleBackoff})
	a.sched.SetThrottle(&transport.RemoteThrottle{T: thr, Dir: a.store})
	ecfg := ExplainConfig(cfg)
	ecfg.DestinationKey = thr.Key
	est, err := ExplainStore(a.store)
	if err != nil {
		return nil, err
	}
	a.explainer = explain.New(est, ecfg, clk)
	if err := a.setupTracking(cfg); err != nil {
		return nil, err
	}
	// A dead node's webhook deliveries are taken over like its mail: after
	// queue.lease_timeout (beyond the request's own webhook_timeout).
	wopts := webhook.Options{Clock: clk, Logger: a.log, Timeout: cfg.Platform.WebhookTimeout, MaxAge: cfg.Platform.WebhookMaxAge,
		LeaseDuration: cfg.Platform.WebhookTimeout + cfg.Queue.LeaseTimeout}
	if !cfg.Platform.WebhookAllowPrivate {
		wopts.Client = webhook.NewPublicClient(cfg.Platform.WebhookTimeout)
	}
	if opts.Webhook != nil {
		opts.Webhook(&wopts)
	}
	a.webhooks = webhook.New(a.store, wopts)
	a.spool = spool.New(a.store, a.sched, clk)
	a.spool.SetGuard(a.disk.Check)

	checker := &inbound.Checker{Resolver: res, Config: cfg.Checks, Policies: a.store, AuthservID: authservID(cfg), Log: a.log,
		Catcher: &inbound.Catcher{Reports: a.store, Clock: clk, Log: a.log, Complaint: fb.Complaint,
			Ours: func(ctx context.Context, domain string) bool {
				ok, err := a.store.IsLocalDomain(ctx, domain)
				return err == nil && ok
			}}}
	var blocklists *dnsbl.Checker
	blocklists, a.monitor = newBlocklists(cfg, res, a.store, a.metrics.reg, clk, a.log)
	a.pipeline = NewPipeline(cfg, PipelineDeps{Store: a.store, Spool: a.spool, Feedback: fb, Clock: clk, Logger: a.log,
		Blocklists: blocklists, Guard: a.disk.Check, Inbound: func(ctx context.Context, ip netip.Addr, helo, from string) submit.InboundChecks {
			return checker.Begin(ctx, ip, helo, from)
		}})
	notifier.Submit = a.pipeline
	if a.alerts, err = newAlerts(cfg, a, res); err != nil {
		return nil, err
	}

	authn, err := auth.NewAuthenticator(auth.Config{
		Users: a.store, MaxFailures: cfg.Auth.MaxFailures, FailureWindow: cfg.Auth.FailureWindow,
		Lockout: cfg.Auth.Lockout, FailureDelay: cfg.Auth.FailureDelay,
		AccountDelay: cfg.Auth.AccountDelay, AccountMaxDelay: cfg.Auth.AccountMaxDelay, Clock: clk, Logger: a.log,
	})
	if err != nil {
		return nil, err
	}
	be := &gateway.SMTP{
		Pipeline: a.pipeline,
		Auth:     authn,
		Log:      a.log,
		Metrics: gateway.Metrics{Sessions: a.metrics.sessions, Accepted: a.metrics.accepted,
			Rejected: a.metrics.rejected, AuthFailures: a.metrics.authFailures},
	}
	conns := ratelimit.NewConnLimiter(cfg.Limits.MaxConnections, cfg.Limits.MaxConnectionsPerIP)
	for _, l := range []struct {
		name string
		mode smtpserver.Mode
		lc   config.ListenConfig
	}{
		{"smtp", smtpserver.ModeMX, cfg.SMTP},
		{"submission", smtpserver.ModeSubmission, cfg.Submission},
		{"submissions", smtpserver.ModeSubmissions, cfg.Submissions},
	} {
		lns, err := bind(l.name, l.lc.Listen, opts.Listeners)
		if err != nil {
			return nil, err
		}
		if len(lns) == 0 {
			continue
		}
		srv := smtpserver.New(serverConfig(cfg, l.mode, a.tls, conns, a.log), be)
		a.servers = append(a.servers, srv)
		for _, ln := range lns {
			a.listeners = append(a.listeners, listener{ln: ln, server: srv, name: l.name})
		}
	}
	a.metrics.watchServers(a.servers)
	if a.httpLns, err = bind("http", cfg.HTTP.Listen, opts.Listeners); err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	api := &gateway.API{Pipeline: a.pipeline}
	links, err := a.setupUnsubscribe(cfg)
	if err != nil {
		return nil, err
	}
	mux.Handle("/v1/", httpapi.New(httpapi.Config{Hostname: cfg.Server.Hostname, MaxRecipients: cfg.Limits.MaxRecipients,
		MaxMessageBytes: apiMessageBytes(cfg.Limits.MaxMessageSize), UploadTimeout: cfg.HTTP.UploadTimeout,
		WebhookAllowPrivate: cfg.Platform.WebhookAllowPrivate, MaxWebhooks: cfg.Platform.MaxWebhooksPerAccount,
		MaxTemplates: cfg.Platform.MaxTemplatesPerAccount, MaxTemplateVersions: cfg.Platform.MaxTemplateVersions,
		MaxBatchRecipients: cfg.Platform.MaxBatchRecipients, MaxBatchBytes: cfg.Platform.MaxBatchSize, MaxBatchesPerDay: cfg.Platform.MaxBatchesPerDay}, httpapi.Deps{
		Platform: a.store, Messages: a.store, Submitter: api, Limits: api, Logger: a.log, Clock: clk,
		DNS: &dnsDoctor{res: res, keys: a.store, cfg: cfg}, Alerts: a.alertLister(), Explainer: a.explainer,
		Templates:   a.store,
		Unsubscribe: links,
		Tracker:     a.tracker,
		Batches:     a.store,
	}))
	mux.Handle(trackingPrefix, a.tracker.Handler())
	a.mountWellKnown(mux)
	a.mountUnsubscribe(mux)
	if cfg.Console.Enabled {
		con, err := a.newConsole(cfg, res, a.consoleSources())
		if err != nil {
			return nil, err
		}
		mux.Handle("/", con)
	}
	mux.Handle("GET /metrics", a.metrics.reg.Handler())
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	a.http = httpapi.NewServer(mux, httpapi.ServerConfig{ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout, ReadTimeout: cfg.HTTP.ReadTimeout,
		WriteTimeout: cfg.HTTP.WriteTimeout, IdleTimeout: cfg.HTTP.IdleTimeout, MaxHeaderBytes: cfg.HTTP.MaxHeaderBytes, Logger: a.log})
	httpConns := ratelimit.NewConnLimiter(cfg.HTTP.MaxConnections, cfg.HTTP.MaxConnectionsPerIP)
	for i, ln := range a.httpLns {
		a.httpLns[i] = httpapi.LimitListener(ln, httpConns)
	}
	if opts.DropPrivileges {
		if err := a.dropPrivileges(); err != nil {
			return nil, err
		}
	}
	return a, nil
}

// dropPrivileges switches a node started as root to server.user (see
// privdrop.Plan) now that the privileged ports are bound: the data
// directory and the log file are handed to the user first, since root
// created them. Nothing has been accepted yet, so no file is being
// written meanwhile.
func (a *App) dropPrivileges() error {
	acct, warn, err := privdrop.Plan(os.Geteuid(), a.cfg.Server.User)
	if err != nil {
		return startup.User(a.cfg.Server.User, err)
	}
	if warn != "" {
		a.log.Warn(warn)
	}
	if acct == nil {
		return nil
	}
	if err := privdrop.Chown(a.cfg.Server.DataDir, *acct); err != nil {
		return startup.User(acct.Name, err)
	}
	if a.logFile != nil {
		if err := os.Chown(a.logFile.Path(), acct.UID, acct.GID); err != nil {
			return startup.User(acct.Name, fmt.Errorf("handing the log file to it: %w", err))
		}
	}
	if err := privdrop.Drop(*acct); err != nil {
		return startup.User(acct.Name, err)
	}
	a.log.Info("switched to an unprivileged user now that the ports are bound", "user", acct.Name, "uid", acct.UID)
	return nil
}

// bind opens the configured addresses, or takes pre-bound listeners.
func bind(name string, addrs []string, pre map[string][]net.Listener) ([]net.Listener, error) {
	if lns, ok := pre[name]; ok {
		return lns, nil
	}
	var out []net.Listener
	for _, addr := range addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range out {
				l.Close()
			}
			return nil, startup.Listener(name, addr, err)
		}
		out = append(out, ln)
	}
	return out, nil
}

// Addrs returns the bound address of each listener, by section name.
func (a *App) Addrs() map[string][]string {
	out := make(map[string][]string)
	for _, l := range a.listeners {
		out[l.name] = append(out[l.name], l.ln.Addr().String())
	}
	for _, l := range a.httpLns {
		out["http"] = append(out["http"], l.Addr().String())
	}
	a.webAddrs(out)
	return out
}

// Logger returns the node's logger.
func (a *App) Logger() *slog.Logger { return a.log }

// Run serves until ctx is cancelled, then shuts down gracefully: listeners
// stop accepting, sessions in a transaction may finish, deliveries in flight
// get a drain period, and the store is closed. Nothing accepted is lost: an
// unfinished delivery stays in the queue.
func (a *App) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, len(a.listeners)+len(a.httpLns)+len(a.web.httpLns)+len(a.web.httpsLns))
	for _, l := range a.listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.server.Serve(l.ln); err != nil && !isClosed(err) {
				errc <- fmt.Errorf("%s on %s: %w", l.name, l.ln.Addr(), err)
			}
		}()
	}
	for _, ln := range a.httpLns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := a.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("http on %s: %w", ln.Addr(), err)
			}
		}()
	}
	// Its own context: a failed listener ends Run without ctx ending.
	webCtx, stopWeb := context.WithCancel(ctx)
	defer stopWeb()
	a.runWeb(webCtx, errc, func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f()
		}()
	})
	wg.Add(3)
	go func() {
		defer wg.Done()
		a.webhooks.Run(ctx)
	}()
	go func() {
		defer wg.Done()
		a.forwardWakes(ctx)
	}()
	go func() {
		defer wg.Done()
		a.pruneEvents(ctx)
	}()
	if a.monitor.Enabled() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.monitor.Run(ctx)
		}()
	}
	if a.tlsrpt != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.tlsReportSender().Run(ctx)
		}()
	}
	if a.alerts != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			a.alerts.Run(ctx)
		}()
	}
	schedCtx, stopSched := context.WithCancel(context.WithoutCancel(ctx))
	schedDone := make(chan struct{})
	go func() { a.sched.Run(schedCtx); close(schedDone) }()

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
		a.log.Error("listener failed; shutting down", "err", runErr)
		runErr = exitcode.With(exitcode.OSErr, runErr)
	}
	a.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), a.cfg.Server.ShutdownTimeout)
	defer cancel()
	for _, s := range a.servers {
		if err := s.Shutdown(sctx); err != nil {
			a.log.Warn("smtp shutdown", "err", err)
		}
	}
	_ = a.http.Shutdown(sctx)
	a.shutdownWeb(sctx)
	stopWeb()
	wg.Wait()
	stopSched()
	<-schedDone
	a.closeAll()
	a.log.Info("stopped")
	return runErr
}

// Reload re-reads the TLS certificate files, reopens the log file
// (SIGHUP: logrotate renames the file, then signals) and, with ACME on,
// checks the certificates at once (a domain added since).
func (a *App) Reload() error {
	if a.web.acme != nil {
		a.web.acme.Kick()
	}
	var errs []error
	if a.logFile != nil {
		if err := a.logFile.Reopen(); err != nil {
			errs = append(errs, fmt.Errorf("reopening %s, still logging to the old file: %w", a.logFile.Path(), err))
		}
	}
	if err := a.tls.Reload(); err != nil {
		errs = append(errs, fmt.Errorf("keeping the old TLS certificate: %w", err))
	}
	return errors.Join(errs...)
}

// pruneEvents deletes delivery events older than the retention, hourly,
// and compacts the rollups (minute buckets after two days, hour buckets
// after 90, day buckets after 400; pruning events changes no rollup).
func (a *App) pruneEvents(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		now := a.clock.Now()
		n, err := a.store.PruneEvents(ctx, now.Add(-a.cfg.Platform.EventRetention))
		if err != nil && ctx.Err() == nil {
			a.log.Error("pruning events", "err", err)
		} else if n > 0 {
			a.log.Info("pruned old events", "count", n)
		}
		n, err = a.store.CompactRollups(ctx, now.Add(-store.RollupMinuteRetention), now.Add(-store.RollupHourRetention),
			now.Add(-store.RollupDayRetention))
		if err != nil && ctx.Err() == nil {
			a.log.Error("compacting rollups", "err", err)
		} else if n > 0 {
			a.log.Debug("compacted rollups", "rows", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// tlsReportSender mails (DKIM-signed, through the spool) or posts the daily
// TLS-RPT reports.
func (a *App) tlsReportSender() *tlsrpt.Sender {
	host := a.cfg.Server.Hostname
	t := a.cfg.TLSRPT
	orDefault := func(v, def string) string {
		if v == "" {
			return def
		}
		return v
	}
	return &tlsrpt.Sender{
		Aggregator:   a.tlsrpt,
		Resolver:     a.resolver,
		Clock:        a.clock,
		Organization: orDefault(t.Organization, host),
		Submitter:    host,
		Contact:      orDefault(t.Contact, "postmaster@"+host),
		From:         orDefault(t.From, "tlsrpt-noreply@"+host),
		Log:          a.log,
		Submit: func(ctx context.Context, from, to string, msg []byte) error {
			_, err := a.pipeline.Submit(ctx, &submit.Request{
				Identity:   submit.Identity{Kind: submit.System, Source: "tlsrpt"},
				From:       from,
				Recipients: []submit.Recipient{{Address: to, Notify: "NEVER"}},
				Body:       bytes.NewReader(msg),
			})
			return err
		},
	}
}

// closeAll closes what New opened, in reverse dependency order; it is
// safe on a partly built App. The data directory's lock goes last, after
// the store, so that the next node finds it closed.
func (a *App) closeAll() {
	for _, l := range a.listeners {
		l.ln.Close() // already closed after Run: harmless
	}
	for _, ln := range a.httpLns {
		ln.Close()
	}
	a.closeWeb()
	if a.mtasts != nil {
		a.mtasts.Close()
	}
	if a.remote != nil {
		a.remote.Close()
	}
	if a.store != nil {
		if err := a.store.Close(); err != nil && a.log != nil {
			a.log.Error("closing store", "err", err)
		}
	}
	if err := a.lock.Release(); err != nil && a.log != nil {
		a.log.Error("releasing the data directory lock", "err", err)
	}
	if a.logFile != nil {
		a.logFile.Close()
	}
}

func isClosed(err error) bool {
	return errors.Is(err, net.ErrClosed) || errors.Is(err, smtpserver.ErrServerClosed)
}

// NewLogger builds the slog logger described by the [log] section.
// A log file is returned too (nil for stderr), for Reopen and Close.
func NewLogger(lc config.LogConfig) (*slog.Logger, *logfile.File, error) {
	var w io.Writer = os.Stderr
	var c *logfile.File
	if lc.File != "" {
		f, err := logfile.Open(lc.File, 0o640)
		if err != nil {
			return nil, nil, startup.LogFile(lc.File, errors.Unwrap(err))
		}
		w, c = f, f
	}
	hopts := &slog.HandlerOptions{Level: lc.Level}
	var h slog.Handler = slog.NewTextHandler(w, hopts)
	if lc.Format == "json" {
		h = slog.NewJSONHandler(w, hopts)
	}
	return slog.New(h), c, nil
}

// authservID is the name Herald signs its Authentication-Results with.
func authservID(cfg *config.Config) string {
	if cfg.Checks.AuthservID != "" {
		return cfg.Checks.AuthservID
	}
	return cfg.Server.Hostname
}

func deliveryConfig(cfg *config.Config) delivery.Config {
	d := cfg.Delivery
	helo := d.HeloName
	if helo == "" {
		helo = cfg.Server.Hostname
	}
	return delivery.Config{
		HELO:                     helo,
		Port:                     d.Port,
		ConnectTimeout:           d.ConnectTimeout,
		CommandTimeout:           d.CommandTimeout,
		MaxPerDestination:        cfg.Queue.MaxPerDestination,
		MaxTotal:                 cfg.Queue.Workers,
		MaxMessagesPerConnection: cfg.Queue.MaxMessagesPerConnection,
		Smarthost:                d.Smarthost,
		SmarthostUsername:        d.SmarthostUser,
		SmarthostPassword:        d.SmarthostPass,
		SmarthostTLS:             d.SmarthostTLS,
		Routes:                   d.Routes,
		RequireTLS:               d.RequireTLS,
		DisableDANE:              !d.DANE,
		SourceIPv4:               d.SourceIPv4,
		SourceIPv6:               d.SourceIPv6,
	}
}

func queueConfig(cfg *config.Config) queue.Config {
	q := cfg.Queue
	return queue.Config{
		RetryInitial: q.RetryInitial,
		RetryMax:     q.RetryMax,
		RetryFactor:  q.RetryFactor,
		RetryJitter:  q.RetryJitter,
		MaxLifetime:  q.MaxLifetime,
		DelayWarning: q.DelayWarning,
		PollInterval: q.PollInterval,
		LeaseTimeout: q.LeaseTimeout,
		Workers:      q.Workers,
		DrainTimeout: cfg.Server.ShutdownTimeout,
	}
}

func serverConfig(cfg *config.Config, mode smtpserver.Mode, t *tlsconf.Manager, conns *ratelimit.ConnLimiter, log *slog.Logger) smtpserver.Config {
	l := cfg.Limits
	var pregreet time.Duration // submission does not wait (see limits.pregreet_wait)
	if mode == smtpserver.ModeMX {
		pregreet = l.PregreetWait
	}
	return smtpserver.Config{
		Hostname:           cfg.Server.Hostname,
		Mode:               mode,
		TLSConfig:          t.ServerConfig(),
		MaxMessageBytes:    l.MaxMessageSize,
		MaxRecipients:      l.MaxRecipients,
		MaxLineLength:      l.MaxCommandLineLength,
		Conns:              conns,
		MaxJunkCommands:    l.MaxJunkCommands,
		MaxErrors:          l.MaxErrors,
		PregreetWait:       pregreet,
		IdleTimeout:        l.IdleTimeout,
		DataTimeout:        l.DataTimeout,
		SessionTimeout:     l.SessionTimeout,
		MaxReceivedHeaders: l.MaxReceivedHeaders,
		Logger:             log,
		DescribeTLS:        tlsconf.Describe,
	}
}
