package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// Two nodes on one PostgreSQL store.url share the queue and the state.
// Their poll interval is an hour, so what they deliver they found through
// a wake-up: mail enqueued by a third handle (as herald sendmail does) is
// announced by NOTIFY and delivered at once by one of them, each message
// once; a user added through node A's handle logs in on node B, whose
// submission (a chunked 300 KB body) arrives intact; both nodes see the
// events of both.
func TestPostgresNodesShareQueue(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dsn := pgtest.NewSchema(t)
	node := func(id string) *herald {
		return startHerald(t, func(c *config.Config) {
			c.Store.URL = dsn
			c.Server.NodeID = id
			c.Queue.PollInterval = time.Hour
		})
	}
	a, b := node("node-a"), node("node-b")
	ip := nextMXIP()
	mx := testmx.Start(t, ip+":25", testmx.Config{})
	for _, h := range []*herald{a, b} {
		h.dns.AddMX("remote.test", "mx.remote.test", 10)
		h.dns.AddA("mx.remote.test", ip)
	}

	// A command's handle, another node name: it enqueues unleased mail.
	cfg := config.Default()
	cfg.Store.URL, cfg.Server.NodeID, cfg.Server.DataDir = dsn, "cli", t.TempDir()
	cli, _, err := app.OpenStore(cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	const n = 5
	var ids []string
	for i := range n {
		m := &store.Message{ID: store.NewID(), Sender: "cron@sender.test", Received: time.Now(), Source: "sendmail",
			Recipients: []store.Recipient{{Address: fmt.Sprintf("r%d@remote.test", i)}}}
		body, err := cli.NewBody()
		must(t, err)
		fmt.Fprintf(body, "Subject: woken %d\r\n\r\nhello\r\n", i)
		if _, err := cli.Enqueue(ctx, m, body, time.Time{}); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.ID)
	}
	got := mx.WaitMessages(t, n, 10*time.Second)
	var subjects []string
	for _, m := range got {
		_, rest, _ := strings.Cut(string(m.Body), "Subject: ")
		subj, _, _ := strings.Cut(rest, "\r\n")
		subjects = append(subjects, subj)
	}
	slices.Sort(subjects)
	if want := []string{"woken 0", "woken 1", "woken 2", "woken 3", "woken 4"}; !slices.Equal(subjects, want) {
		t.Errorf("delivered %v, want each of %v once", subjects, want)
	}
	a.waitQueueEmpty()

	// State written through one node is the other's (B's cache of the
	// local domains is at most a second old).
	a.addDomain("example.com")
	pw := a.addUser("alice@example.com")
	for deadline := time.Now().Add(10 * time.Second); ; {
		ok, err := b.app.Store().IsLocalDomain(ctx, "example.com")
		must(t, err)
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("node B does not see the domain added through node A")
		}
		time.Sleep(10 * time.Millisecond)
	}
	big := strings.Repeat("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n", 4700) // ~310 KB: chunked
	body := "From: Alice <alice@example.com>\r\nTo: carol@remote.test\r\nSubject: via B\r\n\r\n" + big
	b.submit("alice@example.com", pw, "alice@example.com", []string{"carol@remote.test"}, body)
	got = mx.WaitMessages(t, n+1, 10*time.Second)
	last := string(got[n].Body)
	if !strings.Contains(last, "Subject: via B\r\n") || !strings.HasSuffix(last, big) {
		t.Errorf("message submitted on node B arrived changed (%d bytes)", len(last))
	}
	b.waitQueueEmpty()
	for _, h := range []*herald{a, b} {
		evs, err := h.app.Store().ListEvents(ctx, store.EventFilter{Types: []string{store.EventDelivered}, Limit: 100})
		must(t, err)
		if len(evs) != n+1 {
			t.Errorf("a node sees %d delivered events, want %d", len(evs), n+1)
		}
	}
	for _, id := range ids {
		evs, err := b.app.Store().ListEvents(ctx, store.EventFilter{MessageID: id, Types: []string{store.EventDelivered}})
		must(t, err)
		if len(evs) != 1 {
			t.Errorf("message %s delivered %d times", id, len(evs))
		}
	}
}

// A second herald serve under the name of a running node on the same
// PostgreSQL store is refused before it touches anything (it would
// release the first one's leases and take its destination connections):
// one line naming the holder, exit 69.
func TestPostgresSameNodeIDRefused(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.NewSchema(t)
	startHerald(t, func(c *config.Config) {
		c.Store.URL = dsn
		c.Server.NodeID = "mx-dup"
	})
	base := startupBase(t)
	cfg := startupConfig(t, base, filepath.Join(base, "data"), takePort(t), fmt.Sprintf("[store]\nurl = %q\n", dsn))
	// node_id goes in [server].
	raw, err := os.ReadFile(cfg)
	must(t, err)
	must(t, os.WriteFile(cfg, []byte(strings.Replace(string(raw), "[server]\n", "[server]\nnode_id = \"mx-dup\"\n", 1)), 0o644))
	code, _, stderr := runBinary(t, 0, "", "serve", "--config", cfg)
	checkFailure(t, code, stderr, 69, `herald: server.node_id "mx-dup" is in use by another running herald (client 127.0.0.1, herald mx-dup lock, since `, true)
	if !strings.Contains(stderr, "give each node its own server.node_id") {
		t.Errorf("message: %s", stderr)
	}
}

// Two nodes on one PostgreSQL store, each accepting half of the mail for
// one slow remote domain and delivering it at once (its own workers),
// respect queue.max_per_destination together: the sink never sees more
// transactions at once than the limit, where each node alone would open
// that many. Every message arrives once.
func TestPostgresNodesShareDestinationLimit(t *testing.T) {
	t.Parallel()
	_, dsn := pgtest.NewSchema(t)
	const limit, perNode = 2, 5
	node := func(id string) *herald {
		return startHerald(t, func(c *config.Config) {
			c.Store.URL = dsn
			c.Server.NodeID = id
			c.Queue.MaxPerDestination = limit
			c.Relay.Allow = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		})
	}
	nodes := []*herald{node("node-a"), node("node-b")}
	ip := nextMXIP()
	mx := testmx.Start(t, ip+":25", testmx.Config{DataDelay: 150 * time.Millisecond})
	for _, h := range nodes {
		h.dns.AddMX("slow.test", "mx.slow.test", 10)
		h.dns.AddA("mx.slow.test", ip)
	}
	for i := range perNode {
		for j, h := range nodes {
			c := dial(t, h.addr("smtp"))
			c.ok(250, "EHLO client.test")
			if code, msg := c.send("app@sender.test", []string{fmt.Sprintf("r%d-%d@slow.test", j, i)}, testBody(fmt.Sprintf("m%d-%d", j, i))); code != 250 {
				t.Fatalf("node %d refused: %d %s", j, code, msg)
			}
			c.conn.Close()
		}
	}
	got := mx.WaitMessages(t, 2*perNode, 60*time.Second)
	if peak := mx.PeakTransactions(); peak > limit || peak < 1 {
		t.Errorf("the sink saw %d transactions at once, want at most %d (queue.max_per_destination on all nodes together)", peak, limit)
	}
	seen := map[string]int{}
	for _, m := range got {
		for _, r := range m.Rcpts {
			seen[r]++
		}
	}
	if len(seen) != 2*perNode {
		t.Errorf("%d distinct recipients delivered, want %d: %v", len(seen), 2*perNode, seen)
	}
	for r, n := range seen {
		if n != 1 {
			t.Errorf("%s delivered %d times", r, n)
		}
	}
}
