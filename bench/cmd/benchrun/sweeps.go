package main

import (
	"fmt"
	"slices"
	"strings"
)

// The flat-cost sweeps (issue 13): throughput and CPU per message as the
// concurrent sessions grow (1 / 10 / 100 / 1,000, 4 KB) and as the messages
// grow (1 KB / 100 KB / 1 MB / 10 MB, 20 sessions), each beside Postfix and
// the no-MTA ceiling. They are opt-in (-only flat, sessions or sizes): at
// the default counts they would add tens of minutes to a full run.

// Scenario groups for -only.
const (
	groupDefault  = "default"  // the scenarios a run without -only runs
	groupSessions = "sessions" // sess-1 ... sess-1000
	groupSizes    = "sizes"    // size-1k ... size-10m
	groupFlat     = "flat"     // both sweeps
)

// selectors lists the -only group names.
var selectors = []string{groupDefault, groupSessions, groupSizes, groupFlat}

// mE2EMB is the end-to-end rate in bytes of message (as smtp-source sizes
// them) rather than messages.
var mE2EMB = metricDef{"e2emb", "end-to-end MB/s (1 MB = 2^20 bytes)", true}

// sweepCase is one row of a sweep: a scenario of smtp-source load with one
// message per connection.
type sweepCase struct {
	name     string // scenario name, e.g. sess-100
	group    string // groupSessions or groupSizes
	label    string // row title in the summary table, e.g. "100" or "1 MB"
	sessions int    // concurrent smtp-source sessions
	size     int    // message size in bytes (smtp-source -l)
	n        int    // messages per run
	why      string // how n follows from -messages
}

// sweeps returns the rows of both sweeps, with message counts from
// -messages (n) chosen so that a run takes seconds, not minutes, on a
// 2-core machine: one session gets n/5 (it is the slowest), 1,000 sessions
// at least two messages each, and the larger sizes n/10, n/100 and n/1000
// (at least one message per session, 20).
func (b *bench) sweeps() []sweepCase {
	n := max(b.o.messages, 1)
	return []sweepCase{
		{"sess-1", groupSessions, "1", 1, 4096, max(n/5, 1), "-messages/5"},
		{"sess-10", groupSessions, "10", 10, 4096, n, "-messages"},
		{"sess-100", groupSessions, "100", 100, 4096, n, "-messages"},
		{"sess-1000", groupSessions, "1,000", 1000, 4096, max(n, 2000), "-messages, at least 2,000"},
		{"size-1k", groupSizes, "1 KB", 20, 1 << 10, n, "-messages"},
		{"size-100k", groupSizes, "100 KB", 20, 100 << 10, max(n/10, 20), "-messages/10, at least 20"},
		{"size-1m", groupSizes, "1 MB", 20, 1 << 20, max(n/100, 20), "-messages/100, at least 20"},
		{"size-10m", groupSizes, "10 MB", 20, 10 << 20, max(n/1000, 20), "-messages/1000, at least 20"},
	}
}

// postfixProcessLimit is Postfix's default_process_limit for a run with the
// given concurrent sessions: Postfix's default (100, which also sizes the
// smtpd listen backlog) up to 100 sessions, else room for every session
// plus the cleanup and delivery processes they need, as an administrator
// expecting that many clients would set it. 0 leaves the default.
func postfixProcessLimit(sessions int) int {
	if sessions <= 100 {
		return 0
	}
	return sessions + 100
}

// sweepScenarios are the sweeps as scenarios. They run without the side
// probe client: with it, sess-1 would have two sessions, and the probe's 1
// KB messages would be CPU not counted in the per-message cost.
func (b *bench) sweepScenarios() []scenario {
	var out []scenario
	for _, s := range b.sweeps() {
		metrics := []metricDef{mAccept, mE2E, mMem, mCPU, mCPUDB}
		if s.group == groupSizes {
			metrics = []metricDef{mAccept, mE2E, mE2EMB, mMem, mCPU, mCPUDB}
		}
		desc := fmt.Sprintf("%d messages of %s (%s), %d concurrent session(s), one message per connection; no latency probe", s.n, sizeLabel(s.size), s.why, s.sessions)
		if l := postfixProcessLimit(s.sessions); l > 0 {
			desc += fmt.Sprintf("; Postfix with default_process_limit = %d (so smtpd can serve every session)", l)
		}
		out = append(out, scenario{name: s.name, desc: desc, generator: "smtp-source", metrics: metrics,
			groups: []string{s.group, groupFlat}, optIn: true,
			run: func(m MTA) (map[string]float64, error) {
				if p, ok := m.(*Postfix); ok {
					p.ProcessLimit = postfixProcessLimit(s.sessions)
					defer func() { p.ProcessLimit = 0 }()
				}
				res, err := b.throughputShape(m, s.n, sourceShape{sessions: s.sessions, size: s.size}, false)
				if v, ok := res["e2e"]; ok && s.group == groupSizes {
					res["e2emb"] = v * float64(s.size) / (1 << 20)
				}
				return res, err
			}})
	}
	return out
}

// sizeLabel names a message size: 4 KB, 1 MB.
func sizeLabel(size int) string {
	switch {
	case size >= 1<<20 && size%(1<<20) == 0:
		return fmt.Sprintf("%d MB", size>>20)
	case size >= 1<<10 && size%(1<<10) == 0:
		return fmt.Sprintf("%d KB", size>>10)
	}
	return fmt.Sprintf("%d bytes", size)
}

// selected reports whether -only selects sc: by its name or one of its
// groups; without -only, every scenario that is not opt-in.
func (b *bench) selected(sc scenario) bool {
	if strings.TrimSpace(b.o.only) == "" {
		return !sc.optIn
	}
	for _, t := range strings.Split(b.o.only, ",") {
		t = strings.TrimSpace(t)
		if t == sc.name || t == groupDefault && !sc.optIn {
			return true
		}
		for _, g := range sc.groups {
			if t == g {
				return true
			}
		}
	}
	return false
}

// selectedNames are the names of the scenarios -only selects.
func (b *bench) selectedNames() map[string]bool {
	sel := map[string]bool{}
	for _, sc := range b.scenarios() {
		if b.selected(sc) {
			sel[sc.name] = true
		}
	}
	return sel
}

// checkOnly rejects -only names that are neither a scenario nor a group,
// so a typo does not run nothing.
func (b *bench) checkOnly() error {
	if strings.TrimSpace(b.o.only) == "" {
		return nil
	}
	known := map[string]bool{}
	for _, g := range selectors {
		known[g] = true
	}
	var names []string
	for _, sc := range b.scenarios() {
		known[sc.name] = true
		names = append(names, sc.name)
	}
	for _, t := range strings.Split(b.o.only, ",") {
		if t = strings.TrimSpace(t); t != "" && !known[t] {
			return fmt.Errorf("-only %q: no scenario or group %q (groups: %s; scenarios: %s)", b.o.only, t, strings.Join(selectors, ", "), strings.Join(names, ", "))
		}
	}
	return nil
}

// sweepSummaries are the two compact tables of the sweeps, for those that
// ran: "Cost as sessions grow" and "Cost as messages grow".
func (b *bench) sweepSummaries() string {
	var r strings.Builder
	b.sweepTable(&r, groupSessions, "Cost as sessions grow", "sessions")
	b.sweepTable(&r, groupSizes, "Cost as messages grow", "message size")
	b.depthReport(&r)
	return r.String()
}

// sweepTable writes the summary table of one sweep group: per row Herald's
// and Postfix's end-to-end rate and CPU per message beside the no-MTA
// ceiling, cells "median (min–max)".
func (b *bench) sweepTable(r *strings.Builder, group, title, rowTitle string) {
	var rows []sweepCase
	for _, s := range b.sweeps() {
		if s.group == group && len(b.results[s.name]) > 0 {
			rows = append(rows, s)
		}
	}
	if len(rows) == 0 {
		return
	}
	// The Herald variants that ran, in b.mtas order: the first (the SQLite
	// node if it ran) is the main column set, the others (PostgreSQL,
	// several nodes) get their own rate and CPU columns.
	var ran []string
	for _, m := range b.mtas {
		if isHerald(m) && slices.ContainsFunc(rows, func(s sweepCase) bool { return len(b.results[s.name][m.Name()]) > 0 }) {
			ran = append(ran, m.Name())
		}
	}
	herald, others := "", []string(nil)
	if len(ran) > 0 {
		herald, others = ran[0], ran[1:]
	}
	postfix := false
	for _, s := range rows {
		postfix = postfix || len(b.results[s.name]["postfix"]) > 0
	}
	mb := group == groupSizes
	ceilName := "Go sink"
	if b.ceilBySink {
		ceilName = "smtp-sink"
	}
	hl := b.label(herald)
	fmt.Fprintf(r, "## %s\n\n", title)
	cols := []string{rowTitle, "msgs per run", hl + " e2e msgs/s"}
	if mb {
		cols = append(cols, hl+" MB/s")
	}
	cols = append(cols, hl+" CPU ms/msg", ceilName+" ceiling msgs/s")
	if mb {
		cols = append(cols, "ceiling MB/s")
	}
	cols = append(cols, hl+" % of ceiling")
	for _, o := range others {
		cols = append(cols, b.label(o)+" e2e msgs/s", b.label(o)+" CPU ms/msg")
	}
	if postfix {
		cols = append(cols, "Postfix e2e msgs/s")
		if mb {
			cols = append(cols, "Postfix MB/s")
		}
		cols = append(cols, "Postfix CPU ms/msg", hl+"/Postfix e2e")
	}
	fmt.Fprintf(r, "| %s |\n|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	for _, s := range rows {
		mib := float64(s.size) / (1 << 20)
		cells := []string{s.label, fmt.Sprintf("%d", s.n), b.cell(s.name, herald, mE2E.key)}
		if mb {
			cells = append(cells, b.cell(s.name, herald, mE2EMB.key))
		}
		cells = append(cells, b.cell(s.name, herald, mCPU.key))
		cv := b.ceilRuns[s.name]
		cells = append(cells, spread(cv))
		if mb {
			var v []float64
			for _, x := range cv {
				v = append(v, x*mib)
			}
			cells = append(cells, spread(v))
		}
		pct := "–"
		if h, ok := b.median(s.name, herald, mE2E.key); ok && b.ceil[s.name] > 0 {
			pct = fmt.Sprintf("%.0f %%", h/b.ceil[s.name]*100)
		}
		cells = append(cells, pct)
		for _, o := range others {
			cells = append(cells, b.cell(s.name, o, mE2E.key), b.cell(s.name, o, mCPU.key))
		}
		if postfix {
			cells = append(cells, b.cell(s.name, "postfix", mE2E.key))
			if mb {
				cells = append(cells, b.cell(s.name, "postfix", mE2EMB.key))
			}
			cells = append(cells, b.cell(s.name, "postfix", mCPU.key))
			ratio := "–"
			h, ok1 := b.median(s.name, herald, mE2E.key)
			p, ok2 := b.median(s.name, "postfix", mE2E.key)
			if ok1 && ok2 && p > 0 {
				ratio = fmt.Sprintf("%.2fx", h/p)
			}
			cells = append(cells, ratio)
		}
		fmt.Fprintf(r, "| %s |\n", strings.Join(cells, " | "))
	}
	pgNote := ""
	if len(others) > 0 {
		pgNote = " (with PostgreSQL, its server's backends too)"
	}
	fmt.Fprintf(r, "\nsmtp-source, one message per connection, no latency probe; the ceiling is smtp-source into %s with the same shape and count. CPU ms/msg is all of the MTA's processes' CPU time over the messages delivered%s.\n\n", ceilName, pgNote)
}
