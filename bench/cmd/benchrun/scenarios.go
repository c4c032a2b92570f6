package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// metricDef names a metric in the report.
type metricDef struct {
	key, label string
	higher     bool // higher is better
}

var (
	mAccept  = metricDef{"accept", "acceptance msgs/s", true}
	mE2E     = metricDef{"e2e", "end-to-end msgs/s (at the sink)", true}
	mP50     = metricDef{"p50", "latency p50 ms (250 -> sink)", false}
	mP99     = metricDef{"p99", "latency p99 ms (250 -> sink)", false}
	mMem     = metricDef{"mem", "peak memory MB (PSS, all processes)", false}
	mCPU     = metricDef{"cpu", "CPU s per 1,000 msgs (all processes)", false}
	mCPUDB   = metricDef{"cpudb", "of which PostgreSQL backends", false}
	mDrain   = metricDef{"drain", "drain time s (sink up -> all delivered)", false}
	mDrainR  = metricDef{"drainrate", "drain msgs/s", true}
	mListen  = metricDef{"listen", "restart: s until listening", false}
	mFirst   = metricDef{"first", "restart: s until first delivery", false}
	mAll     = metricDef{"all", "restart: s until all delivered", false}
	mConns   = metricDef{"conns", "idle connections that got a banner", true}
	mPerConn = metricDef{"perconn", "KB per idle connection", false}
	mRate    = metricDef{"rate", "offered rate msgs/s", true}
)

// scenario is one benchmark case.
type scenario struct {
	name, desc string
	generator  string // who generates the load
	metrics    []metricDef
	heraldOnly bool
	multiNode  bool // runs several nodes too (the load is split between them)
	// groups are the -only group names that select the scenario besides its
	// own name (see selectors).
	groups []string
	// optIn keeps the scenario out of a run without -only: it is selected
	// by its name or one of its groups only.
	optIn bool
	run   func(m MTA) (map[string]float64, error)
}

func (b *bench) scenarios() []scenario {
	n := b.o.messages
	tput := []metricDef{mAccept, mE2E, mP50, mP99, mMem, mCPU, mCPUDB}
	var rcpts10 []string
	for d := 1; d <= 5; d++ {
		for u := 1; u <= 2; u++ {
			rcpts10 = append(rcpts10, fmt.Sprintf("u%d@d%d.test", u, d))
		}
	}
	return append([]scenario{
		{name: "4k-s20", desc: fmt.Sprintf("%d messages of 4 KB, 20 concurrent sessions", n), generator: "smtp-source", metrics: tput, multiNode: true,
			run: func(m MTA) (map[string]float64, error) { return b.throughputSource(m, n, 20, 4096) }},
		{name: "4k-s20-reuse", desc: fmt.Sprintf("%d messages of 4 KB, 20 concurrent sessions, each sending message after message over its connection (smtp-source -d)", n), generator: "smtp-source -d", metrics: tput, multiNode: true,
			run: func(m MTA) (map[string]float64, error) {
				return b.throughputShape(m, n, sourceShape{sessions: 20, size: 4096, reuse: true}, true)
			}},
		{name: "4k-s100", desc: fmt.Sprintf("%d messages of 4 KB, 100 concurrent sessions", n), generator: "smtp-source", metrics: tput, multiNode: true,
			run: func(m MTA) (map[string]float64, error) { return b.throughputSource(m, n, 100, 4096) }},
		{name: "100k-s20", desc: fmt.Sprintf("%d messages of 100 KB, 20 concurrent sessions", max(n/10, 1)), generator: "smtp-source", metrics: tput, multiNode: true,
			run: func(m MTA) (map[string]float64, error) { return b.throughputSource(m, max(n/10, 1), 20, 102400) }},
		{name: "rcpt10-dom5", desc: fmt.Sprintf("%d messages of 4 KB, 10 recipients each over 5 domains (5 sink addresses), 20 sessions; rates count recipients", max(n/4, 1)),
			generator: "Go load generator (bench/cmd/benchrun; smtp-source cannot vary domains)", metrics: tput,
			run: func(m MTA) (map[string]float64, error) {
				return b.throughputGo(m, LoadSpec{Sessions: 20, Messages: max(n/4, 1), Size: 4096, From: "a@load.test", Rcpts: rcpts10}, false)
			}},
		{name: "latency-half", desc: fmt.Sprintf("fixed rate = half of Herald's median 4k-s100 end-to-end rate, %d s, 4 KB, 100 sessions (the peak's); every message is timed", b.o.latencySecs),
			generator: "Go load generator (fixed rate)", metrics: []metricDef{mRate, mAccept, mE2E, mP50, mP99, mMem, mCPU},
			run: func(m MTA) (map[string]float64, error) {
				peak, ok := b.median("4k-s100", "herald", "e2e")
				if !ok || peak <= 0 {
					peak = 200
				}
				rate := peak / 2
				if b.o.latencyRate > 0 {
					rate = b.o.latencyRate
				}
				res, err := b.throughputGo(m, LoadSpec{Sessions: 100, Messages: max(int(rate*float64(b.o.latencySecs)), 1), Size: 4096, From: "a@load.test", Rcpts: []string{"b@sink.test"}, Rate: rate, Probe: true}, true)
				if res != nil {
					res["rate"] = rate
				}
				return res, err
			}},
		{name: "backlog", desc: fmt.Sprintf("%d messages of 4 KB accepted (20 sessions) while the sink is down, then the sink comes up", b.o.backlog), generator: "smtp-source",
			metrics: []metricDef{mAccept, mMem, mDrain, mDrainR, mCPU, mCPUDB},
			run:     func(m MTA) (map[string]float64, error) { return b.backlogRun(m, b.o.backlog) }},
		{name: "restart", desc: fmt.Sprintf("%d messages queued (sink down), MTA stopped, sink up, MTA started", b.o.restart), generator: "smtp-source",
			metrics: []metricDef{mListen, mFirst, mAll},
			run:     func(m MTA) (map[string]float64, error) { return b.restartRun(m, b.o.restart) }},
		{name: "idle", desc: fmt.Sprintf("%d idle connections (banner received, nothing sent)", b.o.idle), generator: "Go client",
			metrics: []metricDef{mConns, mPerConn},
			run:     func(m MTA) (map[string]float64, error) { return b.idleRun(m, b.o.idle) }},
		b.submission("submission", max(n/4, 1), 1, tput),
		b.submission("submission-10", max(n/4, 1), 10, tput),
	}, b.sweepScenarios()...)
}

// submission is the STARTTLS + AUTH scenario with perSession messages per
// authenticated session.
func (b *bench) submission(name string, n, perSession int, metrics []metricDef) scenario {
	return scenario{name: name,
		desc:      fmt.Sprintf("%d messages of 4 KB over STARTTLS + AUTH PLAIN, %d message(s) per session, 20 sessions (Herald only: Postfix would need a SASL server)", n, perSession),
		generator: "Go load generator (STARTTLS + AUTH)", metrics: metrics, heraldOnly: true,
		run: func(m MTA) (map[string]float64, error) {
			h := m.(heraldMTA)
			spec := LoadSpec{Sessions: 20, Messages: n, PerSession: perSession, Size: 4096, From: "bench@bench.test", Rcpts: []string{"b@sink.test"}, StartTLS: true, User: "bench@bench.test", Pass: "bench-password-123"}
			return b.measure(m, func() error { return h.AddUser("bench.test", spec.User, spec.Pass) }, int64(spec.Messages), true, func() (time.Duration, int, error) {
				spec.Addr = h.SubAddr()
				spec.Deadline = loadDeadline(spec.Messages)
				r := RunLoad(context.Background(), spec, "sub")
				return r.Elapsed, r.Accepted, loadErr(r)
			}, nil)
		}}
}

func loadDeadline(n int) time.Duration { return 60*time.Second + time.Duration(n)*20*time.Millisecond }

func loadErr(r LoadResult) error {
	if r.Failed > 0 {
		return fmt.Errorf("%d messages failed (first: %s)", r.Failed, r.FirstErr)
	}
	return nil
}

// smtpSource runs postfix's smtp-source against addr.
// sourceShape is how smtp-source sends: one message per connection (MX
// traffic, the default) or several over each connection (-d: a relay
// reusing its connections).
type sourceShape struct {
	sessions, size int
	reuse          bool
}

func smtpSource(addr string, n, sessions, size int) (time.Duration, error) {
	return smtpSourceShape(addr, n, sourceShape{sessions: sessions, size: size})
}

// perSession is the Go generator's messages per connection standing in for
// smtp-source: one, or with reuse as many as an even share gives.
func perSession(n, sessions int, reuse bool) int {
	if !reuse {
		return 1
	}
	return max(n/max(sessions, 1), 1)
}

// smtpSourceShape runs smtp-source with n messages of the given shape
// against addr.
func smtpSourceShape(addr string, n int, sh sourceShape) (time.Duration, error) {
	sessions, size := sh.sessions, sh.size
	// Large messages: a second more per 2 MiB on top of the per-message bound.
	deadline := loadDeadline(n) + time.Duration(int64(n)*int64(size)/(2<<20))*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	bin := smtpSourceBin()
	if bin == "" {
		// Smoke mode without Postfix installed: the Go generator with the
		// same shape (one message per session).
		r := RunLoad(ctx, LoadSpec{Addr: addr, Sessions: sessions, Messages: n, Size: size, From: "a@load.test", Rcpts: []string{"b@sink.test"}, Deadline: deadline, PerSession: perSession(n, sessions, sh.reuse)}, "src")
		return r.Elapsed, loadErr(r)
	}
	start := time.Now()
	args := []string{"-s", strconv.Itoa(sessions), "-l", strconv.Itoa(size), "-m", strconv.Itoa(n),
		"-f", "a@load.test", "-t", "b@sink.test", "-M", "load.test"}
	if sh.reuse {
		args = append(args, "-d")
	}
	cmd := exec.CommandContext(ctx, bin, append(args, addr)...)
	out, err := cmd.CombinedOutput()
	el := time.Since(start)
	if err != nil {
		return el, fmt.Errorf("smtp-source: %v: %s", err, tailStr(string(out), 400))
	}
	return el, nil
}

func tailStr(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// throughputSource runs smtp-source against m; with several nodes, one
// smtp-source per node, concurrently, each with its share of the messages
// and sessions.
func (b *bench) throughputSource(m MTA, n, sessions, size int) (map[string]float64, error) {
	return b.throughputShape(m, n, sourceShape{sessions: sessions, size: size}, true)
}

// throughputShape is throughputSource with the connection reuse chosen and,
// with probe, the side probe client sending timed messages alongside.
func (b *bench) throughputShape(m MTA, n int, sh sourceShape, probe bool) (map[string]float64, error) {
	sessions := sh.sessions
	return b.measure(m, nil, int64(n), probe, func() (time.Duration, int, error) {
		addrs := m.Addrs()
		k := len(addrs)
		els := make([]time.Duration, k)
		errs := make([]error, k)
		var wg sync.WaitGroup
		for i, a := range addrs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				msgs := n/k + btoi(i < n%k)
				els[i], errs[i] = smtpSourceShape(a, msgs, sourceShape{sessions: max(sessions/k, 1), size: sh.size, reuse: sh.reuse})
			}()
		}
		wg.Wait()
		return slices.Max(els), n, errors.Join(errs...)
	}, nil)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (b *bench) throughputGo(m MTA, spec LoadSpec, timeAll bool) (map[string]float64, error) {
	var acks map[string]time.Time
	return b.measure(m, nil, int64(spec.Messages*len(spec.Rcpts)), !timeAll, func() (time.Duration, int, error) {
		spec.Addr = m.Addr()
		spec.Deadline = loadDeadline(spec.Messages)
		r := RunLoad(context.Background(), spec, "go")
		acks = r.Acks
		return r.Elapsed, r.Accepted * len(spec.Rcpts), loadErr(r)
	}, func() map[string]time.Time { return acks })
}

// measure starts m fresh, runs the load (which returns its duration and the
// number of recipients accepted), waits for the sink to count want
// recipients, and computes the throughput metrics. With probe, a probe
// client sends timed messages alongside; otherwise acks (if set) gives the
// 250 times of timed messages.
func (b *bench) measure(m MTA, prepare func() error, want int64, probe bool, load func() (time.Duration, int, error), acks func() map[string]time.Time) (map[string]float64, error) {
	if err := m.Start(true); err != nil {
		return nil, err
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return nil, err
		}
	}
	cpu0 := cpuOf(m)
	db0 := sampleCPU(dbPids(m))
	mem := sampleMem(m, 250*time.Millisecond)
	t0 := time.Now()
	var (
		probeAcks map[string]time.Time
		pwg       sync.WaitGroup
	)
	pctx, pcancel := context.WithCancel(context.Background())
	defer pcancel()
	if probe {
		pwg.Add(1)
		go func() { defer pwg.Done(); probeAcks = Probe(pctx, m.Addr(), b.o.probeRate, sideProbePrefix+"probe") }()
	}
	el, accepted, lerr := load()
	if lerr != nil {
		pcancel()
		pwg.Wait()
		mem.Stop()
		return nil, lerr
	}
	if accepted < int(want) {
		want = int64(accepted)
	}
	werr := b.waitDelivered(want, 30*time.Second+3*el)
	pcancel()
	pwg.Wait()
	_, last := b.sink.Arrivals()
	cpu1 := cpuOf(m)
	db := sampleCPU(dbPids(m)).since(db0)
	peak := mem.Stop()
	msgs, rcpts := b.sink.Counts()
	res := map[string]float64{
		"accept": float64(accepted) / el.Seconds(),
		"mem":    float64(peak) / 1e6,
	}
	if !last.IsZero() {
		res["e2e"] = float64(rcpts) / last.Sub(t0).Seconds()
	}
	if msgs > 0 {
		res["cpu"] = (cpu1 - cpu0 + db) / float64(msgs) * 1000
		if _, ok := m.(*PGHerald); ok {
			res["cpudb"] = db / float64(msgs) * 1000
		}
	}
	a := probeAcks
	if acks != nil && len(acks()) > 0 {
		a = acks()
	}
	b.waitProbes(a, 5*time.Second)
	b.dumpLatency(m, a)
	if p50, p99, ok := b.latency(a); ok {
		res["p50"], res["p99"] = p50, p99
	}
	return res, werr
}

// waitDelivered waits until the sink has counted want recipients.
func (b *bench) waitDelivered(want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, r := b.sink.Counts()
		if r >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d recipients delivered after %s", r, want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (b *bench) waitProbes(acks map[string]time.Time, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for id := range acks {
		for {
			if _, ok := b.sink.Probe(id); ok || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// latency returns p50 and p99 in milliseconds of arrival minus 250 time.
// A message that arrived before its 250 reached the client counts as 0.
func (b *bench) latency(acks map[string]time.Time) (p50, p99 float64, ok bool) {
	var d []float64
	for id, t := range acks {
		arr, ok := b.sink.Probe(id)
		if !ok {
			continue // not delivered within the wait: left out (reported via counts)
		}
		d = append(d, max(0, arr.Sub(t).Seconds()*1000))
	}
	if len(d) == 0 {
		return 0, 0, false
	}
	sort.Float64s(d)
	return percentile(d, 0.50), percentile(d, 0.99), true
}

// dumpLatency writes acks' 250 times (ms since the first) and latencies
// (ms) to a new CSV file under -latency-csv, sorted by 250 time.
func (b *bench) dumpLatency(m MTA, acks map[string]time.Time) {
	if b.o.latencyCSV == "" || len(acks) == 0 {
		return
	}
	type row struct{ at, lat float64 }
	var rows []row
	var t0 time.Time
	for _, t := range acks {
		if t0.IsZero() || t.Before(t0) {
			t0 = t
		}
	}
	for id, t := range acks {
		if arr, ok := b.sink.Probe(id); ok {
			rows = append(rows, row{t.Sub(t0).Seconds() * 1000, max(0, arr.Sub(t).Seconds()*1000)})
		}
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].at < rows[j].at })
	var w strings.Builder
	fmt.Fprintf(&w, "# t0 %s\nack_ms,latency_ms\n", t0.UTC().Format(time.RFC3339Nano))
	for _, r := range rows {
		fmt.Fprintf(&w, "%.3f,%.3f\n", r.at, r.lat)
	}
	_ = os.MkdirAll(b.o.latencyCSV, 0o755)
	name := filepath.Join(b.o.latencyCSV, fmt.Sprintf("%s-%s.csv", m.Name(), time.Now().Format("150405.000")))
	if err := os.WriteFile(name, []byte(w.String()), 0o644); err != nil {
		b.log.Warn("latency csv", "err", err)
	}
}

func percentile(sorted []float64, q float64) float64 {
	i := int(q*float64(len(sorted)-1) + 0.5)
	return sorted[min(i, len(sorted)-1)]
}

func (b *bench) backlogRun(m MTA, n int) (map[string]float64, error) {
	b.sink.Down()
	if err := m.Start(true); err != nil {
		return nil, err
	}
	cpu0 := cpuOf(m)
	db0 := sampleCPU(dbPids(m))
	mem := sampleMem(m, 500*time.Millisecond)
	el, err := smtpSource(m.Addr(), n, 20, 4096)
	if err != nil {
		mem.Stop()
		return nil, err
	}
	time.Sleep(3 * time.Second) // let both MTAs find the destination down
	if err := b.sink.Up(); err != nil {
		mem.Stop()
		return nil, err
	}
	up := time.Now()
	werr := b.waitDelivered(int64(n), 60*time.Second+time.Duration(n)*10*time.Millisecond)
	_, last := b.sink.Arrivals()
	cpu1 := cpuOf(m)
	db := sampleCPU(dbPids(m)).since(db0)
	peak := mem.Stop()
	msgs, _ := b.sink.Counts()
	res := map[string]float64{"accept": float64(n) / el.Seconds(), "mem": float64(peak) / 1e6}
	if msgs > 0 && !last.IsZero() {
		res["drain"] = last.Sub(up).Seconds()
		res["drainrate"] = float64(msgs) / last.Sub(up).Seconds()
		res["cpu"] = (cpu1 - cpu0 + db) / float64(msgs) * 1000
		if _, ok := m.(*PGHerald); ok {
			res["cpudb"] = db / float64(msgs) * 1000
		}
	}
	return res, werr
}

// dbPids returns the database server processes serving m (none for an
// MTA with an embedded store).
func dbPids(m MTA) []int {
	if h, ok := m.(heraldMTA); ok {
		return h.DBPids()
	}
	return nil
}

func (b *bench) restartRun(m MTA, n int) (map[string]float64, error) {
	b.sink.Down()
	if err := m.Start(true); err != nil {
		return nil, err
	}
	if _, err := smtpSource(m.Addr(), n, 20, 4096); err != nil {
		return nil, err
	}
	if err := m.Stop(); err != nil {
		return nil, fmt.Errorf("stop: %w", err)
	}
	if err := b.sink.Up(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	if err := m.Start(false); err != nil {
		return nil, err
	}
	res := map[string]float64{"listen": time.Since(t0).Seconds()}
	deadline := time.Now().Add(120 * time.Second)
	for {
		if first, _ := b.sink.Arrivals(); !first.IsZero() {
			res["first"] = first.Sub(t0).Seconds()
			break
		}
		if time.Now().After(deadline) {
			return res, fmt.Errorf("no delivery within 120s of restart")
		}
		time.Sleep(5 * time.Millisecond)
	}
	werr := b.waitDelivered(int64(n), 60*time.Second+time.Duration(n)*10*time.Millisecond)
	if _, last := b.sink.Arrivals(); werr == nil {
		res["all"] = last.Sub(t0).Seconds()
	}
	return res, werr
}

func (b *bench) idleRun(m MTA, n int) (map[string]float64, error) {
	if err := m.Start(true); err != nil {
		return nil, err
	}
	time.Sleep(b.o.settle)
	mem0 := memOf(m)
	var (
		mu      sync.Mutex
		conns   []net.Conn
		fails   atomic.Int64
		next    atomic.Int64
		wg      sync.WaitGroup
		banners atomic.Int64
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) && fails.Load() < 200 {
				c, err := net.DialTimeout("tcp", m.Addr(), 3*time.Second)
				if err != nil {
					fails.Add(1)
					continue
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	// Read every banner, with one deadline for all.
	deadline := time.Now().Add(15 * time.Second)
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetReadDeadline(deadline)
			buf := make([]byte, 512)
			if k, err := c.Read(buf); err == nil && k >= 3 && string(buf[:3]) == "220" {
				banners.Add(1)
			}
		}()
	}
	wg.Wait()
	time.Sleep(b.o.settle) // let the server settle
	mem1 := memOf(m)
	res := map[string]float64{"conns": float64(banners.Load())}
	if k := banners.Load(); k > 0 {
		res["perconn"] = float64(mem1-mem0) / float64(k) / 1024
	}
	return res, nil
}

// ceilingShape is an smtp-source configuration whose no-MTA ceiling is
// measured: key is the scenario it is the ceiling of, n its message count.
type ceilingShape struct {
	key string
	sh  sourceShape
	n   int
}

// ceilingShapes are the smtp-source configurations whose no-MTA ceiling is
// measured (each only when its scenario is selected), with the scenario's
// message count.
func (b *bench) ceilingShapes() []ceilingShape {
	n := b.o.messages
	out := []ceilingShape{
		{"4k-s20", sourceShape{sessions: 20, size: 4096}, n},
		{"4k-s20-reuse", sourceShape{sessions: 20, size: 4096, reuse: true}, n},
		{"4k-s100", sourceShape{sessions: 100, size: 4096}, n},
		{"100k-s20", sourceShape{sessions: 20, size: 102400}, max(n/10, 1)},
	}
	for _, s := range b.sweeps() {
		out = append(out, ceilingShape{s.name, sourceShape{sessions: s.sessions, size: s.size}, s.n})
	}
	return out
}

// ceiling measures the no-MTA ceiling: smtp-source straight into Postfix's
// smtp-sink (the independent ceiling the shares are reported against;
// b.ceil[key]) and into the harness's Go sink (b.ceil[key+goSinkSuffix]),
// and the disk's fsync rate.
func (b *bench) ceiling() {
	b.ceil = map[string]float64{}
	b.ceilRuns = map[string][]float64{}
	b.sink.Reset()
	if err := b.sink.Up(); err != nil {
		b.errors = append(b.errors, "ceiling: "+err.Error())
		return
	}
	var sink *smtpSink
	if smtpSourceBin() != "" {
		var err error
		if sink, err = startSMTPSink(); err != nil {
			b.errors = append(b.errors, "ceiling: "+err.Error())
		} else {
			defer sink.stop()
		}
	}
	addr := b.sink.addrs[0]
	sel := b.selectedNames()
	for _, c := range b.ceilingShapes() {
		if !sel[c.key] {
			continue
		}
		n := c.n
		b.log.Info("ceiling", "shape", c.key, "messages", n)
		var goRates, sinkRates []float64
		for range b.o.runs {
			b.sink.Reset()
			el, err := smtpSourceShape(addr, n, c.sh)
			if err != nil {
				b.errors = append(b.errors, "ceiling: "+err.Error())
				continue
			}
			goRates = append(goRates, float64(n)/el.Seconds())
			if sink != nil {
				el, err := smtpSourceShape(sink.addr, n, c.sh)
				if err != nil {
					b.errors = append(b.errors, "ceiling (smtp-sink): "+err.Error())
					continue
				}
				sinkRates = append(sinkRates, float64(n)/el.Seconds())
			}
		}
		if len(goRates) > 0 {
			med, _, _ := stats(goRates)
			b.ceil[c.key+goSinkSuffix] = med
			b.ceil[c.key] = med // without smtp-sink the Go sink is the ceiling
			b.ceilRuns[c.key] = goRates
		}
		if len(sinkRates) > 0 {
			med, _, _ := stats(sinkRates)
			b.ceil[c.key] = med
			b.ceilRuns[c.key] = sinkRates
			b.ceilBySink = true
		}
	}
	b.sink.Reset()
	if b.o.fsyncBin != "" {
		out, err := exec.Command(b.o.fsyncBin, "-dir", b.work, "-duration", b.o.fsyncDur.String()).Output()
		if err == nil {
			if v, err := strconv.ParseFloat(string(trimNL(out)), 64); err == nil {
				b.ceil["fsync"] = v
			}
		}
	}
}

// goSinkSuffix marks, in bench.ceil, the ceiling measured into the Go sink.
const goSinkSuffix = "@go-sink"

// smtpSink is a running Postfix smtp-sink: the independent no-MTA ceiling.
type smtpSink struct {
	addr string
	cmd  *exec.Cmd
}

// startSMTPSink starts smtp-sink on a free loopback port and waits until it
// accepts connections.
func startSMTPSink() (*smtpSink, error) {
	bin := "/usr/sbin/smtp-sink"
	if p, err := exec.LookPath("smtp-sink"); err == nil {
		bin = p
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	// -u: the user it runs as once the socket is open (it refuses to stay
	// root); -m: concurrent sessions; backlog 1024 for 100 connecting at once.
	cmd := exec.Command(bin, "-u", "nobody", "-m", "2000", addr, "1024")
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	s := &smtpSink{addr: addr, cmd: cmd}
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return s, nil
		}
		if i == 50 {
			s.stop()
			return nil, fmt.Errorf("smtp-sink on %s did not start: %w", addr, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *smtpSink) stop() {
	s.cmd.Process.Kill()
	s.cmd.Wait()
}

func trimNL(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}

// smtpSourceBin returns the path of postfix's smtp-source, or "" if it is not
// installed.
func smtpSourceBin() string {
	if p, err := exec.LookPath("smtp-source"); err == nil {
		return p
	}
	if _, err := os.Stat("/usr/sbin/smtp-source"); err == nil {
		return "/usr/sbin/smtp-source"
	}
	return ""
}
