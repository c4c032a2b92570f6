package main

import (
	"bytes"
	"context"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// copyRow returns the numbers of kind in herald store copy's table.
func copyRow(t *testing.T, out, kind string) []int {
	t.Helper()
	re := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(kind) + `\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$`)
	m := re.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q row in:\n%s", kind, out)
	}
	var n []int
	for _, s := range m[1:] {
		v, _ := strconv.Atoi(s)
		n = append(n, v)
	}
	return n
}

// herald store copy moves a SQLite node's store into PostgreSQL: refused
// while herald serve holds the data directory, then everything copied,
// the queued message with its body; a second run copies nothing twice; a
// destination with another VERP key is refused with the reason.
func TestStoreCopyToPostgres(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	c.ok("", "domain", "add", "example.com")
	c.ok("a-long-enough-password\n", "user", "add", "alice@example.com")
	c.ok("", "alias", "add", "postmaster@example.com", "alice@example.com")
	c.ok("", "dkim", "keygen", "example.com")
	c.ok("", "account", "add", "acme")
	c.ok("", "apikey", "add", "acme", "--scope", "send")
	msg := "To: bob@remote.test\nSubject: queued\n\n" + strings.Repeat("a line of the body\n", 20000)
	if code, _, errs := c.run(msg, "sendmail", "-t", "-f", "cron@example.com"); code != 0 {
		t.Fatalf("sendmail: %d %q", code, errs)
	}
	id := c.onlyQueued()
	src := c.store()
	wantBody := readAll(t, src, id)
	wantKey, err := src.Secret(context.Background(), "verp", nil)
	src.Close()
	if err != nil {
		t.Fatalf("the source has no VERP key: %v", err)
	}

	_, dsn := pgtest.NewSchema(t)
	lock, err := pidlock.Acquire(filepath.Join(c.dataDir, "herald.pid"))
	if err != nil {
		t.Fatal(err)
	}
	code, _, errs := c.run("", "store", "copy", "--to", dsn)
	lock.Release()
	if code != 69 {
		t.Errorf("copy while herald serve runs: exit %d, want 69", code)
	}
	oneLine(t, "copy while serving", errs, "is in use by herald serve (pid ")

	code, out, errs := c.run("", "store", "copy", "--to", dsn)
	if code != 0 || !strings.Contains(errs, "created a new store in postgres://") {
		t.Fatalf("store copy: exit %d\n%s%s", code, out, errs)
	}
	for kind, want := range map[string][]int{"messages": {1, 1, 0, 0}, "domains": {1, 1, 0, 0}, "users": {1, 1, 0, 0},
		"aliases": {1, 1, 0, 0}, "dkim keys": {1, 1, 0, 0}, "api keys": {1, 1, 0, 0}, "secrets": {1, 1, 0, 0}, "accounts": {2, 1, 1, 0}} {
		if got := copyRow(t, out, kind); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v (in source, copied, already there, replaced)", kind, got, want)
		}
	}

	node := newCLI(t, "node_id = \"pg1\"\n[store]\nurl = \""+dsn+"\"\n")
	if got := node.ok("", "domain", "list"); got != "example.com\n" {
		t.Errorf("domain list on the copy: %q", got)
	}
	if got := node.ok("", "user", "list"); !strings.Contains(got, "alice@example.com") {
		t.Errorf("user list on the copy: %q", got)
	}
	if got := node.ok("", "dkim", "list"); !strings.Contains(got, "example.com") {
		t.Errorf("dkim list on the copy: %q", got)
	}
	if got := node.onlyQueued(); got != id {
		t.Errorf("queued on the copy: %s, want %s", got, id)
	}
	dst := node.store()
	if got := readAll(t, dst, id); !bytes.Equal(got, wantBody) {
		t.Errorf("body on the copy: %d bytes, want %d", len(got), len(wantBody))
	}
	if key, err := dst.Secret(context.Background(), "verp", nil); err != nil || !bytes.Equal(key, wantKey) {
		t.Errorf("VERP key on the copy: %x %v", key, err)
	}
	dst.Close()

	// Again: nothing copied twice.
	out = c.ok("", "store", "copy", "--to", dsn)
	for _, kind := range []string{"messages", "domains", "events", "secrets"} {
		if got := copyRow(t, out, kind); got[1] != 0 || got[2] != got[0] {
			t.Errorf("second copy, %s: %v, want all already there", kind, got)
		}
	}
	if n := pgtest.Query[int64](t, `SELECT count(*) FROM `+pgx.Identifier{schemaOf(t, dsn)}.Sanitize()+`.messages`); n != 1 {
		t.Errorf("%d messages after the second copy, want 1", n)
	}

	// A destination where a node already made its own VERP key.
	_, other := pgtest.NewSchema(t)
	pg, err := postgres.Open(context.Background(), other, postgres.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pg.Secret(context.Background(), "verp", bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	pg.Close()
	code, _, errs = c.run("", "store", "copy", "--to", other)
	if code != 65 {
		t.Errorf("copy into another VERP key: exit %d, want 65", code)
	}
	oneLine(t, "conflicting VERP key", errs, `different secret "verp"; nothing was copied (a node already ran on the destination and made its own VERP key`)
	if n := pgtest.Query[int64](t, `SELECT count(*) FROM `+pgx.Identifier{schemaOf(t, other)}.Sanitize()+`.domains`); n != 0 {
		t.Errorf("the refused copy wrote %d domains", n)
	}
	out = c.ok("", "store", "copy", "--to", other, "--replace")
	if got := copyRow(t, out, "secrets"); got[3] != 1 {
		t.Errorf("--replace, secrets: %v, want 1 replaced", got)
	}
}

// herald store migrate says from which schema version to which, for both
// backends, and refuses a schema newer than this herald.
func TestStoreMigrate(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "")
	code, _, errs := c.run("", "store", "migrate")
	if code != 66 {
		t.Errorf("migrate without a store: exit %d, want 66", code)
	}
	oneLine(t, "migrate without a store", errs, "holds no store")
	c.ok("", "domain", "add", "example.com")
	want := "store " + c.dataDir + "/herald.db: schema version " + strconv.Itoa(sqlite.SchemaVersion()) + ", up to date\n"
	if out := c.ok("", "store", "migrate"); out != want {
		t.Errorf("migrate: %q, want %q", out, want)
	}
	schema, dsn := pgtest.NewSchema(t)
	p := newCLI(t, "[store]\nurl = \""+dsn+"\"\n")
	code, _, errs = p.run("", "store", "migrate")
	if code != 66 {
		t.Errorf("migrate an empty schema: exit %d, want 66", code)
	}
	oneLine(t, "migrate an empty schema", errs, "holds no herald store")
	p.ok("", "domain", "add", "example.com")
	if out := p.ok("", "store", "migrate"); !strings.Contains(out, "schema version "+strconv.Itoa(postgres.SchemaVersion())+", up to date") {
		t.Errorf("migrate on PostgreSQL: %q", out)
	}
	// An older shared schema: commands (and herald serve, which opens the
	// store the same way) refuse it and say what to do; nothing changes.
	pgtest.Exec(t, `UPDATE `+pgx.Identifier{schema}.Sanitize()+`.schema_version SET version = version - 1`)
	for _, args := range [][]string{{"domain", "list"}, {"domain", "add", "example.net"}} {
		code, _, errs = p.run("", args...)
		if code != 78 {
			t.Errorf("herald %s on an older schema: exit %d, want 78", strings.Join(args, " "), code)
		}
		oneLine(t, "older schema", errs, "schema version "+strconv.Itoa(postgres.SchemaVersion()-1)+" is older than this herald's ("+
			strconv.Itoa(postgres.SchemaVersion())+") (run herald store migrate once")
	}
	if v := pgtest.Query[int32](t, `SELECT version FROM `+pgx.Identifier{schema}.Sanitize()+`.schema_version`); int(v) != postgres.SchemaVersion()-1 {
		t.Errorf("a refused command changed the schema version to %d", v)
	}
	pgtest.Exec(t, `UPDATE `+pgx.Identifier{schema}.Sanitize()+`.schema_version SET version = 99`)
	code, _, errs = p.run("", "store", "migrate")
	if code != 78 {
		t.Errorf("migrate a newer schema: exit %d, want 78", code)
	}
	oneLine(t, "migrate a newer schema", errs, "schema version 99 is newer than this herald")
}

func readAll(t *testing.T, st interface {
	OpenBody(context.Context, string) (io.ReadCloser, error)
}, id string) []byte {
	t.Helper()
	rc, err := st.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// schemaOf returns the schema a pgtest DSN selects.
func schemaOf(t *testing.T, dsn string) string {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Trim(strings.Split(cfg.RuntimeParams["search_path"], ",")[0], `" `)
}
