package main

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"
)

// redactURL returns a database URL without its password.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(not a URL)"
}

// values collects metric key over runs.
func values(runs []map[string]float64, key string) []float64 {
	var v []float64
	for _, r := range runs {
		if x, ok := r[key]; ok {
			v = append(v, x)
		}
	}
	return v
}

// stats returns the median, minimum and maximum of v (non-empty).
func stats(v []float64) (med, lo, hi float64) {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	n := len(s)
	if n%2 == 1 {
		med = s[n/2]
	} else {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

func sortedKeys(m map[string]float64) []string {
	var k []string
	for x := range m {
		k = append(k, x)
	}
	sort.Strings(k)
	return k
}

func num(x float64) string {
	switch {
	case x == 0:
		return "0"
	case x >= 1000:
		return fmt.Sprintf("%.0f", x)
	case x >= 100:
		return fmt.Sprintf("%.0f", x)
	case x >= 10:
		return fmt.Sprintf("%.1f", x)
	default:
		return fmt.Sprintf("%.3g", x)
	}
}

// cell formats median and spread of metric key.
func (b *bench) cell(sc, mta, key string) string {
	return spread(values(b.results[sc][mta], key))
}

// spread formats the median of v and, with several values, its range:
// "median (min–max)"; "–" when v is empty.
func spread(v []float64) string {
	if len(v) == 0 {
		return "–"
	}
	med, lo, hi := stats(v)
	if len(v) == 1 {
		return num(med)
	}
	return fmt.Sprintf("%s (%s–%s)", num(med), num(lo), num(hi))
}

func sh(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(out))
}

func machine(work string) string {
	var b strings.Builder
	mem := "?"
	if d, err := os.ReadFile("/proc/meminfo"); err == nil {
		if v, ok := kbField(d, "MemTotal:"); ok {
			mem = fmt.Sprintf("%.1f GiB", float64(v)/(1<<30))
		}
	}
	model := "?"
	if d, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(d), "\n") {
			if strings.HasPrefix(l, "model name") {
				model = strings.TrimSpace(l[strings.IndexByte(l, ':')+1:])
				break
			}
		}
	}
	disk := sh("df", "-hT", work)
	if ls := strings.Split(disk, "\n"); len(ls) > 1 {
		disk = strings.Join(strings.Fields(ls[1])[:3], " ")
	}
	fmt.Fprintf(&b, "- CPU: %s cores (%s); the load generator, the MTA and the sink share them\n", sh("nproc"), model)
	fmt.Fprintf(&b, "- Memory: %s\n", mem)
	fmt.Fprintf(&b, "- Kernel: %s\n", sh("uname", "-sr"))
	fmt.Fprintf(&b, "- Disk (work directory %s): %s\n", work, disk)
	fmt.Fprintf(&b, "- Go: %s; Postfix: %s\n", runtime.Version(), postfixVersion())
	return b.String()
}

func postfixVersion() string {
	v := sh("dpkg-query", "-W", "-f=${Version}", "postfix")
	if v == "?" || v == "" {
		return "not installed"
	}
	return v
}

func (b *bench) report() string {
	var r strings.Builder
	fmt.Fprintf(&r, "# Herald benchmark results\n\n")
	fmt.Fprintf(&r, "Generated %s by `bench/run.sh` (bench/cmd/benchrun).\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"))
	if b.o.command != "" {
		fmt.Fprintf(&r, "Command: `%s`\n\n", b.o.command)
	}
	fmt.Fprintf(&r, "Counts: %d runs per MTA and scenario (alternating Herald, Postfix); %d messages per 4 KB run; backlog %d; restart %d; idle %d.\n\n",
		b.o.runs, b.o.messages, b.o.backlog, b.o.restart, b.o.idle)
	fmt.Fprintf(&r, "## Machine\n\n%s\n", machine(b.work))
	fmt.Fprintf(&r, "## Method\n\n")
	r.WriteString(`- Both MTAs listen on 127.0.0.1, relay everything from 127.0.0.0/8 and deliver to the same
  in-process counting sink (bench/cmd/benchrun/sink.go, ESMTP with PIPELINING); no DNS.
  Herald: ` + "`herald serve`" + ` with its embedded SQLite store, logging at info to a file.
  Postfix: a private instance (` + "`postfix -c DIR start`" + `, own queue directory, no chroot, queue
  files fsynced before 250 as by default, logging to a file via postlogd), relayhost = the sink.
- Cells are "median (min–max)" over the runs. Rates are per wall-clock second from the first
  command to the last arrival at the sink. Memory is the peak of the summed PSS of the MTA's
  processes (= RSS for Herald's single process), sampled every 250 ms. CPU is utime+stime from
  /proc of all MTA processes (for Postfix the master plus all children, including reaped ones).
- Latency: in smtp-source scenarios a Go probe client sends one timed 1 KB message per
  1/probe-rate seconds alongside the load; the latency is from the 250 after DATA to the message's
  arrival at the sink. In latency-half every message is timed.

`)
	if b.o.storeURL != "" {
		r.WriteString(`- Herald PG: the same configuration with ` + "`store.url`" + ` set to the PostgreSQL database
  ` + "`" + redactURL(b.o.storeURL) + "`" + ` on this machine, in a fresh schema per run (dropped afterwards); with
  several nodes, each ` + "`herald serve`" + ` has its own node_id, ports and data directory, and
  smtp-source is split between them (one smtp-source per node, each with its share of the
  messages and sessions; the probe client uses the first node). CPU adds the PostgreSQL
  backends serving the nodes' connections (pg_stat_activity by application_name; the server's
  WAL writer and checkpointer are not counted); memory counts the Herald processes only.

`)
	}
	if smtpSourceBin() == "" {
		r.WriteString("**smtp-source is not installed: the Go load generator stood in for it (one message per session).**\n\n")
	}
	fmt.Fprintf(&r, "## Ceiling (no MTA)\n\n| measure | value |\n|---|---|\n")
	for _, c := range b.ceilingShapes() {
		if b.ceilBySink {
			if v, ok := b.ceil[c.key]; ok {
				fmt.Fprintf(&r, "| smtp-source -> Postfix smtp-sink, %s (the ceiling shares are reported against) | %s msgs/s |\n", c.key, num(v))
			}
		}
		if v, ok := b.ceil[c.key+goSinkSuffix]; ok {
			fmt.Fprintf(&r, "| smtp-source -> the harness's Go sink, %s | %s msgs/s |\n", c.key, num(v))
		}
	}
	if v, ok := b.ceil["fsync"]; ok {
		fmt.Fprintf(&r, "| disk: 4 KB write + fdatasync (bench/cmd/fsyncrate) | %s /s |\n", num(v))
	}
	r.WriteString("\n")
	r.WriteString(b.sweepSummaries())
	for _, sc := range b.order {
		fmt.Fprintf(&r, "## %s\n\n%s. Load: %s.\n\n", sc.name, sc.desc, sc.generator)
		var cols []string // MTAs with runs of this scenario, in run order
		for _, m := range b.mtas {
			if len(b.results[sc.name][m.Name()]) > 0 {
				cols = append(cols, m.Name())
			}
		}
		type ratio struct{ num, den string }
		var ratios []ratio
		if slices.Contains(cols, "herald") && slices.Contains(cols, "postfix") {
			ratios = append(ratios, ratio{"herald", "postfix"})
		}
		for _, c := range cols {
			switch {
			case c == "herald" || c == "postfix":
			case c == pgName(1):
				if slices.Contains(cols, "herald") {
					ratios = append(ratios, ratio{c, "herald"})
				}
			case strings.HasPrefix(c, "herald-pg"):
				if slices.Contains(cols, pgName(1)) {
					ratios = append(ratios, ratio{c, pgName(1)})
				}
			}
		}
		ceilCol := ""
		if _, ok := b.ceil[sc.name]; ok {
			for _, c := range cols {
				if c != "postfix" {
					ceilCol = c
					break
				}
			}
		}
		r.WriteString("| metric |")
		for _, c := range cols {
			fmt.Fprintf(&r, " %s |", b.label(c))
		}
		for _, q := range ratios {
			fmt.Fprintf(&r, " %s/%s |", b.label(q.num), b.label(q.den))
		}
		if ceilCol != "" {
			fmt.Fprintf(&r, " %s %% of ceiling |", b.label(ceilCol))
		}
		r.WriteString("\n|---|" + strings.Repeat("---|", len(cols)+len(ratios)+btoi(ceilCol != "")) + "\n")
		for _, md := range sc.metrics {
			var cells []string
			have := false
			for _, c := range cols {
				cell := b.cell(sc.name, c, md.key)
				have = have || cell != "–"
				cells = append(cells, cell)
			}
			if !have && md.key == mCPUDB.key {
				continue // no database server in this run
			}
			fmt.Fprintf(&r, "| %s | %s |", md.label, strings.Join(cells, " | "))
			for _, q := range ratios {
				a, ok1 := b.median(sc.name, q.num, md.key)
				d, ok2 := b.median(sc.name, q.den, md.key)
				v := "–"
				if ok1 && ok2 && d != 0 {
					v = fmt.Sprintf("%.3g", a/d)
				}
				fmt.Fprintf(&r, " %s |", v)
			}
			if ceilCol != "" {
				pct := ""
				if hm, ok := b.median(sc.name, ceilCol, md.key); ok && (md.key == "accept" || md.key == "e2e") && b.ceil[sc.name] > 0 {
					pct = fmt.Sprintf("%.0f %%", hm/b.ceil[sc.name]*100)
				}
				fmt.Fprintf(&r, " %s |", pct)
			}
			r.WriteString("\n")
		}
		r.WriteString("\n")
	}
	r.WriteString(b.targets())
	if len(b.errors) > 0 {
		r.WriteString("## Errors\n\n")
		for _, e := range b.errors {
			fmt.Fprintf(&r, "- %s\n", e)
		}
		r.WriteString("\n")
	}
	return r.String()
}

// label is the column title of MTA name.
func (b *bench) label(name string) string {
	pg := b.o.storeURL != ""
	switch {
	case name == "herald" && pg:
		return "Herald SQLite"
	case name == "herald":
		return "Herald"
	case name == "postfix":
		return "Postfix"
	case name == pgName(1):
		return "Herald PG"
	case strings.HasPrefix(name, "herald-pg-"):
		return "Herald PG ×" + strings.TrimSuffix(strings.TrimPrefix(name, "herald-pg-"), "n")
	}
	return name
}

// targetsPG checks issue 9's targets: PostgreSQL at least 60 % of SQLite
// end to end, and several nodes at least as fast as one. Besides the ratio
// of the medians it gives the median of the ratios of the runs made one
// after the other (run i of each variant): on a shared machine whose load
// changes from minute to minute, that pairing is the steadier measure.
func (b *bench) targetsPG(yes func(bool) string) string {
	var r strings.Builder
	line := func(what, sc, num0, den string, want float64, pct bool) {
		a, ok1 := b.median(sc, num0, "e2e")
		d, ok2 := b.median(sc, den, "e2e")
		if !ok1 || !ok2 || d <= 0 {
			return
		}
		paired, n := b.pairedRatio(sc, num0, den, "e2e")
		f := func(x float64) string {
			if pct {
				return fmt.Sprintf("%.0f %%", x*100)
			}
			return fmt.Sprintf("%.2fx", x)
		}
		fmt.Fprintf(&r, "| %s, %s | %s of the medians (%s vs %s msgs/s); median of %d paired runs %s | %s |\n",
			what, sc, f(a/d), num(a), num(d), n, f(paired), yes(a/d >= want && (n == 0 || paired >= want)))
	}
	for _, sc := range []string{"4k-s20", "4k-s100"} {
		line("Herald on PostgreSQL >= 60 % of SQLite end to end", sc, pgName(1), "herald", 0.6, true)
		for _, n := range b.o.nodes {
			if n > 1 {
				line(fmt.Sprintf("%d nodes on one PostgreSQL >= one node", n), sc, pgName(n), pgName(1), 1, false)
			}
		}
	}
	return r.String()
}

// pairedRatio returns the median over runs i of metric key of mta a in run
// i divided by that of mta d in run i, and how many runs had both.
func (b *bench) pairedRatio(sc, a, d, key string) (float64, int) {
	ra, rd := b.results[sc][a], b.results[sc][d]
	var v []float64
	for i := range min(len(ra), len(rd)) {
		x, ok1 := ra[i][key]
		y, ok2 := rd[i][key]
		if ok1 && ok2 && y > 0 {
			v = append(v, x/y)
		}
	}
	if len(v) == 0 {
		return 0, 0
	}
	med, _, _ := stats(v)
	return med, len(v)
}

func (b *bench) targets() string {
	var r strings.Builder
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	h, ok1 := b.median("4k-s100", "herald", "e2e")
	p, ok2 := b.median("4k-s100", "postfix", "e2e")
	if ok1 && ok2 && p > 0 {
		fmt.Fprintf(&r, "| Herald >= 2x Postfix end-to-end, 4 KB, 100 sessions | %.2fx (%s vs %s msgs/s) | %s |\n", h/p, num(h), num(p), yes(h/p >= 2))
	}
	ceilName := "the Go sink"
	if b.ceilBySink {
		ceilName = "smtp-sink"
	}
	for _, c := range b.ceilingShapes()[:4] { // the sweeps have their own tables
		hv, ok := b.median(c.key, "herald", "e2e")
		if cv := b.ceil[c.key]; ok && cv > 0 {
			fmt.Fprintf(&r, "| Herald >= 50 %% of the no-MTA ceiling (%s), %s | %.1f %% (%s of %s msgs/s) | %s |\n", ceilName, c.key, hv/cv*100, num(hv), num(cv), yes(hv/cv >= 0.5))
		}
	}
	for _, c := range []struct {
		key string
		max float64
	}{{"4k-s20", 0.5}, {"4k-s20-reuse", 0.5}, {"4k-s100", 0.5}, {"100k-s20", 1.2}} {
		if v, ok := b.median(c.key, "herald", "cpu"); ok {
			fmt.Fprintf(&r, "| Herald CPU per message <= %.1f ms, %s | %.2f ms | %s |\n", c.max, c.key, v, yes(v <= c.max))
		}
	}
	if v, ok := b.median("latency-half", "herald", "p99"); ok {
		rate, _ := b.median("latency-half", "herald", "rate")
		fmt.Fprintf(&r, "| p99 latency < 20 ms at half of Herald's peak rate, 100 sessions (issue 13; issue 5 asked < 50 ms) | %s ms at %s msgs/s | %s |\n", num(v), num(rate), yes(v < 20))
	}
	if v, ok := b.median("idle", "herald", "perconn"); ok {
		n, _ := b.median("idle", "herald", "conns")
		fmt.Fprintf(&r, "| < 20 KB per idle connection | %s KB (%.0f connections) | %s |\n", num(v), n, yes(v < 20))
	}
	if v, ok := b.median("backlog", "herald", "mem"); ok {
		note := ""
		if b.o.backlog != 100000 {
			note = fmt.Sprintf(" (backlog of %d, not 100,000: not conclusive)", b.o.backlog)
		}
		fmt.Fprintf(&r, "| backlog of 100,000 held in < 500 MB | %s MB%s | %s |\n", num(v), note, yes(v < 500))
	}
	r.WriteString(b.targetsPG(yes))
	if r.Len() == 0 {
		return "" // none of the targets' scenarios ran (e.g. -only flat)
	}
	return "## Targets (issues 5, 9 and 13)\n\n| target | measured | met |\n|---|---|---|\n" + r.String() + "\n"
}
