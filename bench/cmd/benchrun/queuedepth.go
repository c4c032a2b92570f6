package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Queue depth (issue 13): enqueue, lease and delete must not slow down as
// the queue grows. The stores' BenchmarkQueueDepth measures them through
// a queue prefilled with each depth (internal/store/storetest/queuedepth.go)
// and logs the query plans; -queue-depths runs it on SQLite (and on
// PostgreSQL with -store-url) and puts its numbers and plans in the report.

// depthResult is one sub-benchmark's metrics (unit -> value).
type depthResult struct {
	backend string
	depth   int
	metrics map[string]float64
}

// depthRun is what one backend's benchmark gave.
type depthRun struct {
	backend string
	command string
	results []depthResult
	plans   string // the plans logged at the deepest depth
	err     error
	took    time.Duration
}

var depthLine = regexp.MustCompile(`^BenchmarkQueueDepth/depth=(\d+)-\d+\s+\d+\s+(.*)$`)

// parseDepthOutput reads `go test -bench BenchmarkQueueDepth -v` output:
// the result lines, and the plans logged before the deepest depth's.
func parseDepthOutput(backend string, out []byte) ([]depthResult, string) {
	var res []depthResult
	var plans, cur []string
	inPlans := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trim := strings.TrimSpace(line)
		if strings.Contains(trim, "query plans at depth") {
			inPlans, cur = true, []string{trim[strings.Index(trim, "query plans"):]}
			continue
		}
		if inPlans {
			// go test indents the log's continuation lines by 8 spaces;
			// what follows is the plan's own indentation.
			if rest, ok := strings.CutPrefix(line, "        "); ok {
				cur = append(cur, strings.TrimRight(rest, " "))
				continue
			}
			inPlans, plans = false, cur
		}
		m := depthLine.FindStringSubmatch(trim)
		if m == nil {
			continue
		}
		depth, _ := strconv.Atoi(m[1])
		r := depthResult{backend: backend, depth: depth, metrics: map[string]float64{}}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				r.metrics[f[i+1]] = v
			}
		}
		res = append(res, r)
	}
	if inPlans {
		plans = cur
	}
	return res, strings.Join(accessPaths(plans), "\n")
}

var accessStep = regexp.MustCompile(`Scan|Insert on|Update on|Delete on|LockRows|Limit|Nested Loop|Join`)

// accessPaths shortens PostgreSQL's EXPLAIN ANALYZE output to the
// statement names and the steps that read or write a table (SQLite's
// plans are one line per statement already).
func accessPaths(lines []string) []string {
	pg := false
	for _, l := range lines {
		if strings.Contains(l, "(actual time=") {
			pg = true
			break
		}
	}
	if !pg {
		return lines
	}
	var out []string
	for _, l := range lines {
		if !strings.HasPrefix(l, " ") || accessStep.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// queueDepth runs the stores' queue-depth benchmark from the source tree.
func (b *bench) queueDepth() {
	type target struct{ backend, pkg, env string }
	targets := []target{{"SQLite", "./internal/store/sqlite", ""}}
	if u := b.o.depthStoreURL; u != "" {
		targets = append(targets, target{"PostgreSQL", "./internal/store/postgres", "HERALD_TEST_POSTGRES=" + u})
	}
	for _, t := range targets {
		args := []string{"test", "-run", "^$", "-bench", "BenchmarkQueueDepth", "-benchtime", fmt.Sprintf("%dx", b.o.depthMessages),
			"-count", "1", "-timeout", "60m", "-v", t.pkg}
		cmd := exec.Command("go", args...)
		cmd.Dir = b.o.src
		cmd.Env = append(os.Environ(), "HERALD_QUEUE_DEPTHS="+b.o.queueDepths)
		if t.env != "" {
			cmd.Env = append(cmd.Env, t.env)
		}
		b.log.Info("queue depth", "backend", t.backend, "depths", b.o.queueDepths)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		run := depthRun{backend: t.backend, took: time.Since(start),
			command: "HERALD_QUEUE_DEPTHS=" + b.o.queueDepths + " go " + strings.Join(args, " ")}
		run.results, run.plans = parseDepthOutput(t.backend, out)
		if err != nil || len(run.results) == 0 {
			run.err = fmt.Errorf("%v: %s", err, tailStr(string(out), 400))
			b.errors = append(b.errors, fmt.Sprintf("queue depth %s: %v", t.backend, run.err))
		}
		b.depth = append(b.depth, run)
	}
}

// depthReport writes the queue-depth section.
func (b *bench) depthReport(r *strings.Builder) {
	if len(b.depth) == 0 {
		return
	}
	r.WriteString("## Cost as the queue grows\n\n")
	r.WriteString("Fresh messages (1–3 recipients, 512 B) through a queue already holding the *queued* messages (90 %\n" +
		"deferred for hours, 5 % scheduled, 5 % leased by another node: nothing prefilled is due), in rounds of 1,000:\n" +
		"enqueue (32 concurrent `Enqueue`), lease (`Lease` of 100, as the scheduler), delivered outcome and\n" +
		"delete (32 concurrent `Update`). Wall µs per message of each phase, and CPU µs per message of the\n" +
		"whole (with PostgreSQL: this process and its server backends). One run per depth.\n\n")
	r.WriteString("| backend | queued | enqueue µs/msg | lease µs/msg | outcome + delete µs/msg | msgs/s | CPU µs/msg (enqueue / lease / done) | prefill s |\n|---|---|---|---|---|---|---|---|\n")
	for _, run := range b.depth {
		for _, d := range run.results {
			m := d.metrics
			fmt.Fprintf(r, "| %s | %s | %s | %s | %s | %s | %s (%s / %s / %s) | %s |\n", d.backend, group(d.depth),
				num(m["enqueue-µs/msg"]), num(m["lease-µs/msg"]), num(m["done-µs/msg"]), num(m["msgs/s"]),
				num(m["cpu-µs/msg"]), num(m["enqueue-cpu-µs/msg"]), num(m["lease-cpu-µs/msg"]), num(m["done-cpu-µs/msg"]), num(m["fill-s"]))
		}
	}
	r.WriteString("\n")
	for _, run := range b.depth {
		fmt.Fprintf(r, "%s: `%s` (%s)", run.backend, run.command, run.took.Round(time.Second))
		if run.err != nil {
			fmt.Fprintf(r, " — **failed**: %v", run.err)
		}
		r.WriteString("\n\n")
		if run.plans != "" {
			fmt.Fprintf(r, "%s plans at the deepest queue (`TestQueueDepthPlans` fails if one scans recipients, messages or events):\n\n```\n%s\n```\n\n", run.backend, run.plans)
		}
	}
}

// group writes n with thousands separators.
func group(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}
