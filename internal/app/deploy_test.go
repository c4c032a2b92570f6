package app

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/alert"
)

// exported returns the names of every series family a node exports on
// /metrics (histograms with their _bucket, _sum and _count series).
func exported(t *testing.T) map[string]bool {
	t.Helper()
	a, err := New(goodConfig(t.TempDir()), quiet())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.closeAll)
	var b strings.Builder
	a.metrics.reg.Write(&b)
	names := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(b.String()))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
			continue
		}
		names[f[2]] = true
		if f[3] == "histogram" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				names[f[2]+s] = true
			}
		}
	}
	for _, want := range []string{"herald_alert_firing", "herald_alert_transitions_total", "herald_queue_messages",
		"herald_disk_free_bytes", "herald_tls_certificate_expiry_timestamp_seconds"} {
		if !names[want] {
			t.Fatalf("/metrics lacks %s: %v", want, names)
		}
	}
	return names
}

var (
	metricName = regexp.MustCompile(`\bherald_[a-z0-9_]+`)
	ruleLabel  = regexp.MustCompile(`herald_alert_firing\{rule="([^"]+)"\}`)
)

// checkExprs reports every herald_ series an expression uses that Herald
// does not export, and every alert rule name that is not Herald's.
func checkExprs(t *testing.T, where string, exprs []string, names map[string]bool) {
	t.Helper()
	rules := alert.RuleNames(alert.DefaultRules())
	used := 0
	for _, e := range exprs {
		for _, m := range metricName.FindAllString(e, -1) {
			used++
			if !names[m] {
				t.Errorf("%s uses %s, which Herald does not export (expression %q)", where, m, e)
			}
		}
		for _, m := range ruleLabel.FindAllStringSubmatch(e, -1) {
			if !slices.Contains(rules, m[1]) {
				t.Errorf("%s names alert rule %q, which Herald does not have", where, m[1])
			}
		}
	}
	if used < 10 {
		t.Errorf("%s: only %d series found in %d expressions", where, used, len(exprs))
	}
}

// The Prometheus rules shipped in deploy/ use only series Herald exports
// (promtool, in CI, checks their syntax).
func TestPrometheusRulesUseExportedMetrics(t *testing.T) {
	names := exported(t)
	data, err := os.ReadFile("../../deploy/prometheus/herald.rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	// The expressions: "expr: ..." on one line, or a "expr: |" block.
	var exprs []string
	lines := strings.Split(string(data), "\n")
	alerts := 0
	for i := 0; i < len(lines); i++ {
		l := strings.TrimSpace(lines[i])
		if strings.HasPrefix(l, "- alert: ") {
			alerts++
		}
		v, ok := strings.CutPrefix(l, "expr:")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "|" {
			indent := len(lines[i+1]) - len(strings.TrimLeft(lines[i+1], " "))
			v = ""
			for i+1 < len(lines) && (strings.TrimSpace(lines[i+1]) == "" || len(lines[i+1])-len(strings.TrimLeft(lines[i+1], " ")) >= indent) {
				i++
				v += lines[i] + "\n"
			}
		}
		exprs = append(exprs, v)
	}
	if alerts < 10 || len(exprs) != alerts {
		t.Fatalf("%d alerts, %d expressions", alerts, len(exprs))
	}
	checkExprs(t, "herald.rules.yml", exprs, names)
}

// The Grafana dashboard is valid JSON whose every panel queries series
// Herald exports.
func TestGrafanaDashboardUsesExportedMetrics(t *testing.T) {
	names := exported(t)
	data, err := os.ReadFile("../../deploy/grafana/herald-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("dashboard JSON: %v", err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) < 10 {
		t.Fatalf("dashboard %q (%q) has %d panels", dash.Title, dash.UID, len(dash.Panels))
	}
	var exprs []string
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
		}
	}
	checkExprs(t, "herald-dashboard.json", exprs, names)
}
