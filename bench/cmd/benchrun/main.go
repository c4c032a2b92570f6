// Command benchrun is Herald's side-by-side benchmark against Postfix (issue
// 5). It runs a counting SMTP sink, starts each MTA in turn on loopback
// relaying everything to the sink, drives it with postfix's smtp-source (or
// the harness's own Go load generator where smtp-source cannot express the
// scenario), alternates runs A B A B, and writes a Markdown report. See
// bench/README.md; bench/run.sh is the entry point.
package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the command-line settings.
type options struct {
	herald, heraldProf, fsyncBin string
	runs                         int
	messages                     int
	backlog, restart             int
	idle                         int
	latencySecs                  int
	probeRate                    float64
	only                         string
	noPostfix                    bool
	smoke                        bool
	profileDir                   string
	out, command                 string
	workDir                      string
	settle, fsyncDur             time.Duration
	storeURL                     string
	latencyCSV                   string
	latencyRate                  float64
	nodes                        []int
	noSQLite                     bool
	queueDepths, depthStoreURL   string
	depthMessages                int
	src                          string
}

// parseNodes reads -nodes: a comma-separated list of node counts.
func parseNodes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 8 {
			return nil, fmt.Errorf("-nodes %q: want node counts from 1 to 8, e.g. 1,2", s)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out, nil
}

func main() {
	var o options
	flag.StringVar(&o.herald, "herald", "", "herald binary (go build ./cmd/herald)")
	flag.StringVar(&o.heraldProf, "heraldprof", "", "heraldprof binary, used with -profile")
	flag.StringVar(&o.fsyncBin, "fsyncrate", "", "fsyncrate binary")
	flag.IntVar(&o.runs, "runs", 3, "runs per MTA and scenario (alternating A B A B)")
	flag.IntVar(&o.messages, "messages", 20000, "messages per 4 KB throughput run (100 KB: /10, 10 recipients and submission: /4)")
	flag.IntVar(&o.backlog, "backlog", 100000, "messages accepted while the sink is down (backlog drain)")
	flag.IntVar(&o.restart, "restart", 100000, "queued messages at restart (restart scenario)")
	flag.IntVar(&o.idle, "idle", 10000, "idle connections")
	flag.IntVar(&o.latencySecs, "latency-seconds", 10, "length of the fixed-rate latency run")
	flag.Float64Var(&o.probeRate, "probe-rate", 10, "latency probes per second alongside smtp-source load")
	flag.StringVar(&o.only, "only", "", "comma-separated scenario names or groups to run: default (what runs without -only), sessions (sess-1 ... sess-1000), sizes (size-1k ... size-10m), flat (sessions and sizes)")
	flag.BoolVar(&o.noPostfix, "no-postfix", false, "run Herald only (and the ceiling)")
	flag.BoolVar(&o.smoke, "smoke", false, "tiny counts, one run, Herald only: checks the harness works")
	flag.StringVar(&o.profileDir, "profile", "", "write a Herald CPU profile per run into this directory (needs -heraldprof)")
	flag.StringVar(&o.out, "out", "", "write the Markdown report here (stdout always)")
	flag.StringVar(&o.command, "command", "", "the command line to record in the report")
	flag.StringVar(&o.workDir, "workdir", "", "scratch directory (default: a new temporary directory, removed at exit)")
	flag.DurationVar(&o.settle, "settle", 2*time.Second, "pause before and after opening idle connections")
	flag.DurationVar(&o.fsyncDur, "fsync-duration", 2*time.Second, "length of the fsync-rate measurement")
	flag.StringVar(&o.storeURL, "store-url", "", "also run Herald on this PostgreSQL database (store.url; each run in a fresh schema, dropped afterwards), e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	nodes := flag.String("nodes", "1", "with -store-url: node counts to run on PostgreSQL, e.g. 1,2 (the smtp-source load is split between the nodes)")
	flag.BoolVar(&o.noSQLite, "no-sqlite", false, "with -store-url: do not run Herald on SQLite")
	flag.StringVar(&o.queueDepths, "queue-depths", "", "also run the stores' BenchmarkQueueDepth at these depths, e.g. 1000,100000,1000000 (SQLite; PostgreSQL too with -store-url); needs go and the source tree (-src)")
	flag.IntVar(&o.depthMessages, "queue-depth-messages", 10000, "fresh messages per depth in the queue-depth benchmark")
	flag.StringVar(&o.src, "src", ".", "the Herald source tree (for -queue-depths)")
	flag.StringVar(&o.latencyCSV, "latency-csv", "", "write every timed message's 250 time and latency of each run as CSV into this directory (to find where a latency tail comes from)")
	flag.Float64Var(&o.latencyRate, "latency-rate", 0, "offered rate of latency-half in msgs/s (default: half of Herald's median 4k-s100 end-to-end rate in this run)")
	flag.StringVar(&o.depthStoreURL, "queue-depth-postgres", "", "with -queue-depths: also on this PostgreSQL database (default: -store-url)")
	flag.Parse()
	if o.depthStoreURL == "" {
		o.depthStoreURL = o.storeURL
	}
	var err error
	if o.nodes, err = parseNodes(*nodes); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(2)
	}
	if o.storeURL == "" && (*nodes != "1" || o.noSQLite) {
		fmt.Fprintln(os.Stderr, "benchrun: -nodes and -no-sqlite need -store-url (the embedded store is one node)")
		os.Exit(2)
	}
	if o.smoke {
		o.runs, o.messages, o.backlog, o.restart, o.idle, o.latencySecs = 1, 200, 300, 300, 200, 1
		o.settle, o.fsyncDur = 200*time.Millisecond, 500*time.Millisecond
		o.noPostfix = true
		if o.only == "" {
			o.only = "4k-s20,rcpt10-dom5,idle,submission-10"
		}
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "benchrun:", err)
		os.Exit(1)
	}
}

func raiseNofile() {
	lim := syscall.Rlimit{Cur: 200000, Max: 200000}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		var cur syscall.Rlimit
		if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &cur) == nil {
			cur.Cur = cur.Max
			syscall.Setrlimit(syscall.RLIMIT_NOFILE, &cur)
		}
	}
}

func run(o options) error {
	raiseNofile()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if o.herald == "" {
		return fmt.Errorf("-herald is required")
	}
	if smtpSourceBin() == "" {
		if !o.smoke {
			return fmt.Errorf("smtp-source not found (apt-get install postfix): it is the load generator")
		}
		log.Warn("smtp-source not installed: smoke mode uses the Go load generator instead")
	}
	work := o.workDir
	if work == "" {
		d, err := os.MkdirTemp("", "herald-bench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		work = d
	}
	os.Chmod(work, 0o755)
	pgPorts := 0
	for _, n := range o.nodes {
		pgPorts += 2 * n
	}
	if o.storeURL == "" {
		pgPorts = 0
	}
	ports, err := freePorts(4 + pgPorts)
	if err != nil {
		return err
	}
	sinkPort := ports[0]
	var sinkAddrs []string
	for i := 1; i <= 5; i++ {
		sinkAddrs = append(sinkAddrs, fmt.Sprintf("127.0.0.%d:%d", i, sinkPort))
	}
	sink := NewSink(sinkAddrs)
	defer sink.Close()

	h := &Herald{Bin: o.herald, Dir: filepath.Join(work, "herald"), Port: ports[1], SubPort: ports[2], SinkPort: sinkPort}
	var mtas []MTA
	if !o.noSQLite {
		mtas = append(mtas, h)
	}
	if o.storeURL != "" {
		next := ports[4:]
		for _, n := range o.nodes {
			c := NewPGHerald(pgName(n), o.herald, filepath.Join(work, pgName(n)), o.storeURL, n, next[:2*n], sinkPort)
			next = next[2*n:]
			mtas = append(mtas, c)
			defer c.Close()
			defer c.Stop()
		}
	}
	if !o.noPostfix {
		if !PostfixAvailable() {
			return fmt.Errorf("postfix is not installed (run bench/run.sh, which installs it, or pass -no-postfix)")
		}
		p := &Postfix{Dir: filepath.Join(work, "postfix"), Port: ports[3], SinkPort: sinkPort}
		mtas = append(mtas, p)
		defer p.Stop()
	}
	defer h.Stop()
	// On SIGINT/SIGTERM stop the servers before exiting.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		log.Warn("interrupted: stopping the servers")
		for _, m := range mtas {
			m.Stop()
		}
		os.Exit(130)
	}()
	if o.profileDir != "" {
		if o.heraldProf == "" {
			return fmt.Errorf("-profile needs -heraldprof")
		}
		heraldCLI = o.herald
		os.MkdirAll(o.profileDir, 0o755)
	}

	b := &bench{o: o, sink: sink, mtas: mtas, herald: h, work: work, log: log, results: map[string]map[string][]map[string]float64{}}
	if err := b.checkOnly(); err != nil {
		return err
	}
	b.ceiling()
	sel := b.selectedNames()
	for _, sc := range b.scenarios() {
		if !sel[sc.name] {
			continue
		}
		b.order = append(b.order, sc)
		for i := range o.runs {
			for _, m := range mtas {
				if sc.heraldOnly && !isHerald(m) || !sc.multiNode && len(m.Addrs()) > 1 {
					continue
				}
				if hh, ok := m.(heraldMTA); ok {
					hh.SetProfile(o.herald, "")
					if o.profileDir != "" {
						name := fmt.Sprintf("%s-%d.pprof", sc.name, i+1)
						if m.Name() != "herald" {
							name = fmt.Sprintf("%s-%s-%d.pprof", sc.name, m.Name(), i+1)
						}
						hh.SetProfile(o.heraldProf, filepath.Join(o.profileDir, name))
					}
				}
				log.Info("run", "scenario", sc.name, "mta", m.Name(), "run", i+1)
				// Write back what earlier runs left dirty (logs, Postfix's
				// queue files): else the kernel flushes it during this run and
				// this run's fsyncs queue behind it.
				syscall.Sync()
				sink.Reset()
				if err := sink.Up(); err != nil {
					return fmt.Errorf("sink: %w", err)
				}
				res, err := sc.run(m)
				m.Stop()
				if err != nil {
					log.Error("run failed", "scenario", sc.name, "mta", m.Name(), "err", err)
					res = map[string]float64{}
					b.errors = append(b.errors, fmt.Sprintf("%s/%s run %d: %v", sc.name, m.Name(), i+1, err))
				}
				log.Info("result", "scenario", sc.name, "mta", m.Name(), "run", i+1, "metrics", fmtMetrics(res))
				b.add(sc.name, m.Name(), res)
			}
		}
	}
	if o.queueDepths != "" {
		b.queueDepth()
	}
	report := b.report()
	fmt.Print(report)
	if o.out != "" {
		if err := os.WriteFile(o.out, []byte(report), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// pgName names the PostgreSQL variant with n nodes.
func pgName(n int) string {
	if n == 1 {
		return "herald-pg"
	}
	return fmt.Sprintf("herald-pg-%dn", n)
}

// isHerald reports whether m is a Herald variant.
func isHerald(m MTA) bool {
	_, ok := m.(heraldMTA)
	return ok
}

func fmtMetrics(m map[string]float64) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%.4g", k, m[k]))
	}
	return strings.Join(parts, " ")
}

// bench holds the state of one harness run.
type bench struct {
	o       options
	sink    *Sink
	mtas    []MTA
	herald  *Herald
	work    string
	log     *slog.Logger
	order   []scenario
	results map[string]map[string][]map[string]float64 // scenario -> mta -> runs
	ceil    map[string]float64
	// ceilRuns are the runs whose median is ceil[key].
	ceilRuns map[string][]float64
	// ceilBySink: the ceilings in ceil were measured into Postfix's
	// smtp-sink (else into the Go sink).
	ceilBySink bool
	errors     []string
	// depth holds the queue-depth benchmark's results (-queue-depths).
	depth []depthRun
}

func (b *bench) add(sc, mta string, res map[string]float64) {
	if b.results[sc] == nil {
		b.results[sc] = map[string][]map[string]float64{}
	}
	b.results[sc][mta] = append(b.results[sc][mta], res)
}

// median returns the median of metric key of mta in scenario sc.
func (b *bench) median(sc, mta, key string) (float64, bool) {
	v := values(b.results[sc][mta], key)
	if len(v) == 0 {
		return 0, false
	}
	med, _, _ := stats(v)
	return med, true
}
