package main

import (
	"context"
	"io"
	"net/url"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// The commands work against a PostgreSQL store.url as against the
// embedded store: reading an empty schema is refused and creates nothing,
// the first adding command creates the store and says where (without the
// password), and two nodes' configurations (other data directories, one
// URL) see the same state.
func TestCommandsOnPostgres(t *testing.T) {
	t.Parallel()
	schema, dsn := pgtest.NewSchema(t)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	if u.User == nil || func() bool { _, ok := u.User.Password(); return !ok }() {
		// Trust authentication ignores it; the messages must not show it.
		u.User = url.UserPassword(u.User.Username(), "pw-s3cret")
	}
	conf := "[store]\nurl = \"" + u.String() + "\"\n"
	a := newCLI(t, "node_id = \"a\"\n"+conf) // still in [server]
	b := newCLI(t, "node_id = \"b\"\n"+conf)

	for _, args := range [][]string{{"domain", "list"}, {"queue", "list"}, {"user", "del", "x@example.com"}} {
		code, _, errs := a.run("", args...)
		if code != 66 {
			t.Errorf("herald %s on an empty schema: exit %d, want 66", strings.Join(args, " "), code)
		}
		oneLine(t, strings.Join(args, " "), errs, "holds no herald store (is store.url right?")
		if strings.Contains(errs, "pw-s3cret") {
			t.Errorf("the error shows the password: %q", errs)
		}
	}
	if n := pgtest.Query[int64](t, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, schema); n != 0 {
		t.Fatalf("refused commands created %d tables", n)
	}

	code, out, errs := a.run("", "domain", "add", "example.com")
	if code != 0 || !strings.Contains(out, "added") || !strings.Contains(errs, "created a new store in postgres://") {
		t.Fatalf("domain add on an empty schema: %d %q %q", code, out, errs)
	}
	if strings.Contains(errs, "pw-s3cret") {
		t.Errorf("the note shows the password: %q", errs)
	}
	a.ok("a-long-enough-password\n", "user", "add", "alice@example.com")
	// The other node sees it, and adds to it.
	if got := b.ok("", "domain", "list"); got != "example.com\n" {
		t.Errorf("node B domain list = %q", got)
	}
	if got := b.ok("", "user", "list"); !strings.Contains(got, "alice@example.com") {
		t.Errorf("node B user list = %q", got)
	}
	b.ok("", "alias", "add", "postmaster@example.com", "alice@example.com")
	if got := a.ok("", "alias", "list"); !strings.Contains(got, "postmaster@example.com") {
		t.Errorf("node A alias list = %q", got)
	}

	// sendmail enqueues into the shared queue; the queue commands of the
	// other node see, show and delete it, body included.
	msg := "To: bob@remote.test\nSubject: from cron\n\n" + strings.Repeat("a line of the body\n", 20000) // chunked
	if code, _, errs := a.run(msg, "sendmail", "-t", "-f", "cron@example.com"); code != 0 || errs != "" {
		t.Fatalf("sendmail: %d %q", code, errs)
	}
	id := b.onlyQueued()
	if out := b.ok("", "queue", "list"); !strings.Contains(out, id) || !strings.Contains(out, "1 message(s)") {
		t.Errorf("node B queue list:\n%s", out)
	}
	st := b.store()
	rc, err := st.OpenBody(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rc)
	rc.Close()
	st.Close()
	if !strings.Contains(string(body), "Subject: from cron\r\n") || strings.Count(string(body), "a line of the body\r\n") != 20000 {
		t.Errorf("queued body (%d bytes) is not the message", len(body))
	}
	b.ok("", "queue", "retry", id)
	a.ok("", "queue", "delete", id)
	if out := b.ok("", "queue", "list"); strings.Contains(out, id) {
		t.Errorf("deleted message still listed:\n%s", out)
	}
}
