package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// A single SQLite node moves into a PostgreSQL cluster (herald store
// copy). The node accepts mail for a remote whose MX is down, so it stays
// queued (deferred, with attempts), among it an API message with a VERP
// sender made with the node's key. herald store copy is refused while the
// node runs; the node is stopped and its store copied into a fresh
// schema, twice (the second run copies nothing). A cluster node on that
// schema, with the MX up, delivers every queued message exactly once, and
// a DSN to the old node's VERP address is recognised: a "bounced" event
// for the right message. A third copy after the deliveries brings nothing
// back.
func TestStoreCopySQLiteToCluster(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := heraldBinary(t)
	_, dsn := pgtest.NewSchema(t)
	dns := testdns.Start(t)
	mxIP := nextMXIP()
	dns.AddMX("remote.test", "mx.remote.test", 10)
	dns.AddA("mx.remote.test", mxIP)

	// The SQLite node.
	dir := t.TempDir()
	oldCfg := filepath.Join(dir, "herald.toml")
	smtpAddr, httpAddr := relayNodeConfig(t, oldCfg, "single.herald.test", filepath.Join(dir, "data"), dns.Addr())
	herald := func(cfg string, args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(bin, append(args, "--config", cfg)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String(), errb.String()
	}
	heraldOK := func(cfg string, args ...string) string {
		t.Helper()
		code, out, errs := herald(cfg, args...)
		if code != 0 {
			t.Fatalf("herald %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
		}
		return out
	}
	heraldOK(oldCfg, "account", "add", "acme")
	heraldOK(oldCfg, "domain", "add", "acme.test")
	heraldOK(oldCfg, "domain", "assign", "acme.test", "acme")
	token := strings.TrimSpace(heraldOK(oldCfg, "apikey", "add", "acme", "--scope", "send,read"))

	old := startProc(t, bin, oldCfg, filepath.Join(dir, "herald.log"))
	oldRunning := true
	defer func() {
		if oldRunning {
			old.term(t)
		}
	}()
	waitGreeting(t, smtpAddr)

	// Queued for the remote that is down: five relayed messages, and one
	// API message whose envelope sender is a VERP address.
	var rcpts []string
	c := dial(t, smtpAddr)
	c.ok(250, "EHLO client.test")
	for i := range 5 {
		r := fmt.Sprintf("r%d@remote.test", i)
		rcpts = append(rcpts, r)
		if code, msg := c.send("app@client.test", []string{r}, testBody("queued "+r)); code != 250 {
			t.Fatalf("relay to %s: %d %s", r, code, msg)
		}
	}
	c.cmd("QUIT")
	body, _ := json.Marshal(map[string]any{"from": "app@acme.test", "to": []string{"late@remote.test"}, "subject": "api", "text": "hello"})
	req, _ := http.NewRequest("POST", "http://"+httpAddr+"/v1/messages", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	var sent struct{ ID string }
	must(t, json.NewDecoder(resp.Body).Decode(&sent))
	resp.Body.Close()
	if resp.StatusCode != 202 || sent.ID == "" {
		t.Fatalf("POST /v1/messages: %d %+v", resp.StatusCode, sent)
	}
	rcpts = append(rcpts, "late@remote.test")

	// Wait until every recipient was tried (deferred: the MX is down).
	lcfg, err := config.Load(oldCfg)
	must(t, err)
	var verpAddr string
	deadline := time.Now().Add(20 * time.Second)
	for {
		st, _, err := app.OpenStore(lcfg, nil, false)
		must(t, err)
		ms, err := st.List(ctx, "", 100)
		st.Close()
		must(t, err)
		tried := 0
		for _, m := range ms {
			for _, r := range m.Recipients {
				if r.Status == store.StatusDeferred && r.Attempts > 0 {
					tried++
				}
			}
			if m.ID == sent.ID {
				verpAddr = m.Sender
			}
		}
		if len(ms) == 6 && tried == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d messages queued, %d recipients deferred; want 6 and 6", len(ms), tried)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.HasPrefix(verpAddr, "bounces+") || !strings.HasSuffix(verpAddr, "@acme.test") {
		t.Fatalf("API message's envelope sender %q, want a VERP address", verpAddr)
	}

	// Refused while the node runs; then copied, twice.
	code, _, errs := herald(oldCfg, "store", "copy", "--to", dsn)
	if code != 69 || strings.Count(errs, "\n") != 1 || !strings.Contains(errs, "is in use by herald serve (pid ") {
		t.Errorf("copy while the node runs: exit %d %q, want 69 and one line", code, errs)
	}
	old.term(t)
	oldRunning = false
	out := heraldOK(oldCfg, "store", "copy", "--to", dsn)
	t.Logf("first copy:\n%s", out)
	if got := copiedCounts(t, out, "messages"); got != [4]int{6, 6, 0, 0} {
		t.Errorf("first copy, messages: %v, want 6 copied", got)
	}
	// The VERP key and the keys of the unsubscribe and tracking links:
	// every secret, so the old node's links keep working.
	if got := copiedCounts(t, out, "secrets"); got[0] < 1 || got[1] != got[0] {
		t.Errorf("first copy, secrets: %v, want every secret (the VERP key among them) copied", got)
	}
	out = heraldOK(oldCfg, "store", "copy", "--to", dsn)
	if got := copiedCounts(t, out, "messages"); got != [4]int{6, 0, 6, 0} {
		t.Errorf("second copy, messages: %v, want 6 already there", got)
	}
	if got := copiedCounts(t, out, "events"); got[1] != 0 || got[0] == 0 {
		t.Errorf("second copy, events: %v, want none copied again", got)
	}
	db, err := pgx.Connect(ctx, dsn)
	must(t, err)
	defer db.Close(context.Background())
	var queued, leased int
	must(t, db.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE lease_until <> 0) FROM recipients`).Scan(&queued, &leased))
	if queued != 6 || leased != 0 {
		t.Fatalf("the copy holds %d recipients, %d leased; want 6, none leased", queued, leased)
	}

	// The cluster node, with the MX up.
	mx := testmx.Start(t, mxIP+":25", testmx.Config{})
	node := newClusterNode(t, "c1", nextMXIP(), dsn, dns.Addr())
	node.start(t, bin)
	defer node.stop(t)
	waitGreeting(t, node.addr)
	got := mx.WaitMessages(t, 6, 30*time.Second)
	deadline = time.Now().Add(20 * time.Second)
	for {
		var n int
		must(t, db.QueryRow(ctx, `SELECT count(*) FROM recipients`).Scan(&n))
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(node.logPath)
			t.Fatalf("%d recipients still queued on the cluster; log:\n%s", n, tail(string(b), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	per := map[string]int{}
	for _, m := range mx.Messages() {
		for _, r := range m.Rcpts {
			per[r]++
		}
		if m.Rcpts[0] == "late@remote.test" && m.From != verpAddr {
			t.Errorf("the API message went out from %q, want the VERP sender %q the old node made", m.From, verpAddr)
		}
	}
	for _, r := range rcpts {
		if per[r] != 1 {
			t.Errorf("%s delivered %d times, want once", r, per[r])
		}
	}
	if len(got) != 6 || len(per) != 6 {
		t.Errorf("%d deliveries to %d recipients, want 6 to 6", len(mx.Messages()), len(per))
	}

	// The remote bounces later, to the old node's VERP address.
	bc := dial(t, node.addr)
	bc.ok(250, "EHLO mx.remote.test")
	if code, msg := bc.send("", []string{verpAddr}, dsnFor(verpAddr, "late@remote.test")); code != 250 {
		t.Fatalf("DSN to the old node's VERP address: %d %s", code, msg)
	}
	bc.cmd("QUIT")
	deadline = time.Now().Add(15 * time.Second)
	for {
		var mid string
		err := db.QueryRow(ctx, `SELECT message_id FROM events WHERE type = 'bounced' AND recipient = 'late@remote.test'`).Scan(&mid)
		if err == nil {
			if mid != sent.ID {
				t.Errorf("bounce matched to message %q, want %q", mid, sent.ID)
			}
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(node.logPath)
			t.Fatalf("no bounced event for late@remote.test (%v); log:\n%s", err, tail(string(b), 30))
		}
		time.Sleep(20 * time.Millisecond)
	}

	// A copy after the deliveries brings nothing back.
	out = heraldOK(oldCfg, "store", "copy", "--to", dsn)
	if got := copiedCounts(t, out, "messages"); got != [4]int{6, 0, 6, 0} {
		t.Errorf("copy after delivery, messages: %v, want 6 already there", got)
	}
	var n int
	must(t, db.QueryRow(ctx, `SELECT count(*) FROM messages`).Scan(&n))
	if n != 0 {
		t.Errorf("%d messages queued again by a copy after their delivery", n)
	}
	var accepted, delivered int
	must(t, db.QueryRow(ctx, `SELECT count(*) FILTER (WHERE type = 'accepted'), count(*) FILTER (WHERE type = 'delivered') FROM events`).Scan(&accepted, &delivered))
	if accepted != 6 || delivered != 6 {
		t.Errorf("events: %d accepted, %d delivered; want 6 and 6 (the old node's accepted events copied once)", accepted, delivered)
	}
}

// copiedCounts returns kind's row of herald store copy's table: in
// source, copied, already there, replaced.
func copiedCounts(t *testing.T, out, kind string) [4]int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(kind) + `\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q row in:\n%s", kind, out)
	}
	var n [4]int
	for i := range n {
		fmt.Sscan(m[i+1], &n[i])
	}
	return n
}
