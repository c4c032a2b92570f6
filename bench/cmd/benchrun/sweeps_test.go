package main

import (
	"os/exec"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

func selectedSorted(only string) []string {
	b := &bench{o: options{only: only, messages: 5000}}
	var out []string
	for n := range b.selectedNames() {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func TestSelectGroups(t *testing.T) {
	def := selectedSorted("")
	for _, n := range def {
		if len(n) > 5 && (n[:5] == "sess-" || n[:5] == "size-") {
			t.Errorf("sweep %s runs without -only", n)
		}
	}
	if !slices.Contains(def, "4k-s20") || !slices.Equal(def, selectedSorted("default")) {
		t.Errorf("default run = %v, -only default = %v", def, selectedSorted("default"))
	}
	if got, want := selectedSorted("sessions"), []string{"sess-1", "sess-10", "sess-100", "sess-1000"}; !slices.Equal(got, want) {
		t.Errorf("-only sessions = %v, want %v", got, want)
	}
	if got, want := selectedSorted("size-10m, 4k-s20"), []string{"4k-s20", "size-10m"}; !slices.Equal(got, want) {
		t.Errorf("-only size-10m,4k-s20 = %v, want %v", got, want)
	}
	if got := selectedSorted("flat"); len(got) != 8 {
		t.Errorf("-only flat = %v, want the 8 sweep scenarios", got)
	}
}

func TestSweepCeilings(t *testing.T) {
	b := &bench{o: options{messages: 5000}}
	shapes := map[string]ceilingShape{}
	for _, c := range b.ceilingShapes() {
		shapes[c.key] = c
	}
	for _, s := range b.sweeps() {
		c, ok := shapes[s.name]
		if !ok || c.n != s.n || c.sh.sessions != s.sessions || c.sh.size != s.size || c.sh.reuse {
			t.Errorf("%s: ceiling %+v does not match the scenario %+v", s.name, c, s)
		}
	}
	if got := shapes["size-10m"].n; got != 20 {
		t.Errorf("size-10m at -messages 5000: %d messages, want 20", got)
	}
}

// TestPostfixProcessLimit checks that the generated main.cf gives Postfix
// the raised process limit (sess-1000) and leaves the default otherwise.
func TestPostfixProcessLimit(t *testing.T) {
	if _, err := exec.LookPath("postconf"); err != nil {
		t.Skip("postconf not installed")
	}
	for _, want := range []int{0, postfixProcessLimit(1000)} {
		p := &Postfix{Dir: t.TempDir(), Port: 2525, SinkPort: 2526, ProcessLimit: want}
		if err := p.setup(); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("postconf", "-c", p.confDir(), "-h", "default_process_limit", "message_size_limit").CombinedOutput()
		if err != nil {
			t.Fatalf("postconf: %v: %s", err, out)
		}
		got := strings.Fields(string(out))
		if want == 0 {
			want = 100
		}
		if len(got) != 2 || got[0] != strconv.Itoa(want) || got[1] != "52428800" {
			t.Errorf("ProcessLimit %d: postconf says %q, want [%d 52428800]", p.ProcessLimit, got, want)
		}
	}
}

// TestSweepTablePostgres checks that a sweep run on PostgreSQL too gets its
// own columns beside SQLite's, with its own numbers.
func TestSweepTablePostgres(t *testing.T) {
	pg := &PGHerald{name: pgName(1)}
	b := &bench{o: options{messages: 5000, storeURL: "postgres://x@127.0.0.1/db"},
		mtas:    []MTA{&Herald{}, pg},
		results: map[string]map[string][]map[string]float64{},
		ceil:    map[string]float64{"sess-10": 4000}, ceilRuns: map[string][]float64{"sess-10": {4000}}}
	b.add("sess-10", "herald", map[string]float64{"e2e": 900, "cpu": 1.1})
	b.add("sess-10", pg.Name(), map[string]float64{"e2e": 456, "cpu": 2.5})
	out := b.sweepSummaries()
	for _, want := range []string{"Herald PG e2e msgs/s | Herald PG CPU ms/msg", "| 10 | 5000 | 900 | 1.1 | 4000 | 22 % | 456 | 2.5 |", "its server's backends"} {
		if !strings.Contains(out, want) {
			t.Errorf("sweep table lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "Cost as messages grow") {
		t.Errorf("a size table without size runs:\n%s", out)
	}
}
