// Package archtest holds the architecture test: it reads the imports of
// every package of the module and fails when one breaks the one-way flow
// and layering written in docs/ARCHITECTURE.md.
package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/heraldmail/herald/"

// The pipeline stages, in the order mail flows through them. A stage may
// import an earlier stage (to implement an interface that stage declares)
// but never a later one: each calls forward through interfaces it declares
// itself, and only the composition root knows the concrete types.
var stages = map[string]int{
	"internal/smtpserver":      1, // entry points: protocols
	"internal/httpapi":         1,
	"internal/submit":          2, // the one acceptance path
	"internal/msgauth/inbound": 2, // its checks of mail from outside
	"internal/spool":           3, // durability
	"internal/diskguard":       3,
	"internal/queue":           4, // scheduling, retries
	"internal/transport":       5, // routing and delivery
	"internal/delivery":        5,
	"internal/local":           5,
	"internal/local/httproute": 5,
	"internal/notify":          5, // what delivery outcomes send back
	"internal/feedback":        5, // what comes back about sent mail
	"internal/delivery/mtasts": 5,
	"internal/delivery/dane":   5,
	"internal/alert":           5, // what the server says about itself (alert rules, notifications)
}

// Services are used by stages but know none: logins (password hashes,
// SASL, brute-force limits), webhook delivery from the event log, TLS
// reporting, the DNS doctor, destination throttling.
// The web console is a service too: it reads the store and acts on the
// queue only through interfaces it declares (Bouncer, the statistics).
// internal/stats: delivery statistics from the rollups.
// internal/explain: why a message is not delivered yet, from the queue,
// the event log, the destinations' back-off and the suppressions.
// internal/unsubscribe: one-click unsubscribe tokens and their public page.
// internal/tracking: open and click tracking (HTML rewriting, signed
// tokens, the public pixel and redirect, their events).
var services = set("internal/auth", "internal/webhook", "internal/tlsrpt", "internal/dnscheck", "internal/throttle",
	"internal/console", "internal/acme", "internal/wellknown", "internal/stats", "internal/explain",
	"internal/unsubscribe", "internal/tracking")

// Foundations import nothing of ours but each other.
var foundations = set("internal/smtp", "internal/clock", "internal/metrics", "internal/message",
	"internal/resolve", "internal/config", "internal/workpool", "internal/verp", "internal/tlsconf",
	"internal/ratelimit", "internal/testutil/testdns", "internal/testutil/testmx", "internal/testutil/pgtest", "internal/testutil/testacme",
	"internal/exitcode", "internal/pidlock", "internal/logfile", "internal/privdrop", "internal/dnsbl",
	"internal/simulator", "internal/tmpl")

// Protocol and format packages speak or parse a standard; they hold no
// state, so they import neither the store nor any stage.
var protocols = set("internal/smtp", "internal/message", "internal/smtpserver", "internal/delivery/smtpout",
	"internal/dsn", "internal/bounce", "internal/verp", "internal/msgauth/spf", "internal/msgauth/dkim",
	"internal/msgauth/dmarc", "internal/msgauth/arc", "internal/msgauth/authres", "internal/msgauth/dmarcreport")

// State: the store's interfaces and types, its backends, its conformance
// suite, and directory logic over it.
var state = set("internal/store", "internal/store/readcache", "internal/store/sqlite", "internal/store/postgres", "internal/store/storetest", "internal/alias")

// The composition root and the entry adapters that translate protocols
// into pipeline transactions; they may import anything, and only commands
// import them.
var composition = set("internal/app", "internal/backup", "internal/gateway", "internal/startup")

func set(xs ...string) map[string]bool {
	m := make(map[string]bool, len(xs))
	for _, x := range xs {
		m[x] = true
	}
	return m
}

// imports returns, per package directory (relative to the module root),
// the module packages its non-test files import.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string][]string)
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); name != "." && (strings.HasPrefix(name, ".") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, filepath.Dir(path))
		rel = filepath.ToSlash(rel)
		if _, ok := out[rel]; !ok {
			out[rel] = nil
		}
		for _, imp := range f.Imports {
			p := strings.Trim(imp.Path.Value, `"`)
			if strings.HasPrefix(p, module) {
				out[rel] = append(out[rel], strings.TrimPrefix(p, module))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEveryPackageHasAPlace(t *testing.T) {
	for pkg := range imports(t) {
		if !strings.HasPrefix(pkg, "internal/") || pkg == "internal/archtest" {
			continue
		}
		if _, ok := stages[pkg]; !ok && !foundations[pkg] && !protocols[pkg] && !state[pkg] && !services[pkg] && !composition[pkg] {
			t.Errorf("%s is not placed in the architecture: add it to a layer here and in docs/ARCHITECTURE.md", pkg)
		}
	}
}

func TestImportRules(t *testing.T) {
	all := imports(t)
	pkgs := make([]string, 0, len(all))
	for p := range all {
		pkgs = append(pkgs, p)
	}
	sort.Strings(pkgs)
	for _, pkg := range pkgs {
		for _, imp := range all[pkg] {
			if why := violation(pkg, imp); why != "" {
				t.Errorf("%s imports %s: %s", pkg, imp, why)
			}
		}
	}
}

// violation says which rule an import edge breaks, or "".
func violation(pkg, imp string) string {
	isStore := imp == "internal/store" || strings.HasPrefix(imp, "internal/store/")
	switch {
	case composition[imp] && !strings.HasPrefix(pkg, "cmd/") && !strings.HasPrefix(pkg, "bench/") && !composition[pkg]:
		return "only commands and the composition root import the composition root"
	case (imp == "internal/store/sqlite" || imp == "internal/store/postgres") && !composition[pkg] && !strings.HasPrefix(pkg, "cmd/") && !strings.HasPrefix(pkg, "bench/"):
		return "only the composition root knows the concrete store backend"
	case foundations[pkg] && !foundations[imp]:
		return "a foundation imports only other foundations"
	case protocols[pkg] && isStore:
		return "a protocol package imports no store"
	case protocols[pkg] && stages[imp] > 0:
		return "a protocol package imports no pipeline stage"
	case (state[pkg] || services[pkg]) && stages[imp] > 0:
		return "state and services import no pipeline stage"
	case stages[pkg] > 0 && stages[imp] > stages[pkg]:
		return "a pipeline stage never imports a later one (declare an interface instead)"
	}
	return ""
}

// The rules must be able to fail: each forbidden edge is caught.
func TestRulesCatchViolations(t *testing.T) {
	for _, e := range [][2]string{
		{"internal/smtpserver", "internal/submit"},
		{"internal/submit", "internal/spool"},
		{"internal/spool", "internal/queue"},
		{"internal/queue", "internal/transport"},
		{"internal/smtpserver", "internal/store"},
		{"internal/msgauth/dkim", "internal/store"},
		{"internal/dsn", "internal/queue"},
		{"internal/smtp", "internal/store"},
		{"internal/submit", "internal/store/sqlite"},
		{"internal/queue", "internal/store/postgres"},
		{"internal/webhook", "internal/store/postgres"},
		{"internal/queue", "internal/app"},
		{"internal/store", "internal/queue"},
		{"internal/webhook", "internal/queue"},
	} {
		if violation(e[0], e[1]) == "" {
			t.Errorf("the edge %s -> %s is not caught", e[0], e[1])
		}
	}
	for _, e := range [][2]string{
		{"internal/transport", "internal/queue"},
		{"internal/notify", "internal/submit"},
		{"internal/submit", "internal/store"},
		{"internal/gateway", "internal/submit"},
		{"internal/app", "internal/store/sqlite"},
		{"internal/app", "internal/store/postgres"},
		{"internal/startup", "internal/store/postgres"},
		{"cmd/herald", "internal/app"},
	} {
		if why := violation(e[0], e[1]); why != "" {
			t.Errorf("the allowed edge %s -> %s is refused: %s", e[0], e[1], why)
		}
	}
}

func TestMain(m *testing.M) {
	if _, err := os.Stat("../../go.mod"); err != nil {
		panic("archtest must run from internal/archtest")
	}
	os.Exit(m.Run())
}
