package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/webhook"
)

// The kill test's queue.lease_timeout and platform.webhook_timeout, and
// the webhook dispatcher's workers per node (its default).
const (
	clusterLeaseTimeout = 2 * time.Second
	clusterHookTimeout  = 5 * time.Second
	hookWorkers         = 4
)

// Three herald serve processes (nodes n1, n2, n3 on their own loopback
// addresses, sending from them) share one PostgreSQL schema. Six relay
// clients spread a bounded stream of messages, one unique recipient each,
// over the three. Mid-load the sink parks n3's deliveries after their
// DATA (the remote has the message, n3 has not recorded it: the duplicate
// window) and the webhook receiver parks every request, until all webhook
// workers of all nodes wait; then n3 is killed with SIGKILL, and the
// clients send 300 more messages (to the survivors).
//
//   - every message that got a 250 is delivered by n1 and n2;
//   - a message arrives twice only if n3 delivered it before the kill
//     without recording it (its copy parked at the sink), never three times;
//   - the survivors deliver n3's leased recipients once their leases
//     expire (queue.lease_timeout = 2s; reported, bounded generously);
//   - every recipient has one accepted and one delivered event, and the
//     webhook receives every event, twice only for a delivery leased at
//     the kill (n3's are sent again after platform.webhook_timeout +
//     queue.lease_timeout);
//   - the queue drains, and the survivors stop cleanly.
func TestClusterKill9ThreeNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bin := heraldBinary(t)
	_, dsn := pgtest.NewSchema(t)
	dns := testdns.Start(t)
	sinkIP := nextMXIP()
	sink := startClusterSink(t, sinkIP+":25")
	dns.AddMX("remote.test", "mx.remote.test", 10)
	dns.AddA("mx.remote.test", sinkIP)
	hooks := startEventCounter(t)

	// A command's handle creates the schema and the webhook (all events
	// of the default account, whose mail relay clients send).
	ccfg := config.Default()
	ccfg.Store.URL, ccfg.Server.NodeID, ccfg.Server.DataDir = dsn, "cli", t.TempDir()
	cli, _, err := app.OpenStore(ccfg, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	must(t, cli.AddWebhook(ctx, store.Webhook{ID: "wh-kill", Account: store.DefaultAccount, URL: hooks.url, Secret: "kill-test"}))
	db, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())

	nodes := make([]*clusterNode, 3)
	for i := range nodes {
		nodes[i] = newClusterNode(t, fmt.Sprintf("n%d", i+1), nextMXIP(), dsn, dns.Addr())
	}
	for _, n := range nodes {
		n.start(t, bin)
	}
	defer func() {
		for _, n := range nodes {
			n.stop(t)
		}
	}()
	for _, n := range nodes {
		waitGreeting(t, n.addr)
	}
	victim := nodes[2]

	// The load: messages each to its own recipient, over 6 clients
	// starting two per node; a client whose node fails goes on with the
	// next node. It runs until afterKill messages were sent after the
	// kill (at most maxLoad in all).
	const clients, afterKill, maxLoad = 6, 300, 3000
	var (
		limit   atomic.Int64 // messages to send in all
		next    atomic.Int64
		mu      sync.Mutex
		acked   = map[string]int{} // recipient -> node index that said 250
		refused atomic.Int64       // attempts without a 250 (cut by the kill)
		wg      sync.WaitGroup
	)
	limit.Store(maxLoad)
	ackedCount := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ni := c % len(nodes)
			var sess *rawSession
			var conn net.Conn
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for {
				k := next.Add(1)
				if k > limit.Load() {
					return
				}
				rcpt := fmt.Sprintf("m%04d@remote.test", k)
				if sess == nil {
					for tries := 0; ; tries++ {
						if tries == 2*len(nodes) {
							return // every node refuses: the test fails on the counts
						}
						if !nodes[ni].killed.Load() {
							if cn, err := net.DialTimeout("tcp", nodes[ni].addr, 2*time.Second); err == nil {
								s := newRawSession(cn)
								if s.expect(220) && s.cmd("EHLO load.test", 250) {
									conn, sess = cn, s
									break
								}
								cn.Close()
							}
						}
						ni = (ni + 1) % len(nodes)
					}
				}
				ok := sess.cmd("MAIL FROM:<load@load.test>", 250) && sess.cmd("RCPT TO:<"+rcpt+">", 250) &&
					sess.cmd("DATA", 354) && sess.cmd("Subject: kill test\r\n\r\nbody of "+rcpt+"\r\n.", 250)
				if !ok {
					refused.Add(1)
					conn.Close()
					conn, sess = nil, nil
					ni = (ni + 1) % len(nodes)
					continue
				}
				mu.Lock()
				acked[rcpt] = ni
				mu.Unlock()
			}
		}()
	}
	failWithLogs := func(format string, args ...any) {
		t.Helper()
		for _, n := range nodes {
			b, _ := os.ReadFile(n.logPath)
			t.Logf("%s log tail:\n%s", n.id, tail(string(b), 30))
		}
		t.Fatalf(format, args...)
	}
	waitFor := func(what string, timeout time.Duration, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(timeout)
		for !cond() {
			if time.Now().After(deadline) {
				failWithLogs("still waiting for %s after %s", what, timeout)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	// Mid-load: park n3's deliveries at the sink, and every node's
	// webhook requests at the receiver; kill n3 once it has several
	// deliveries at the sink (recorded there, never confirmed) and every
	// webhook worker of every node waits for its answer (so n3's too).
	waitFor("150 messages acknowledged", 30*time.Second, func() bool { return ackedCount() >= 150 })
	sink.hold(victim.ip)
	hooks.park()
	waitFor("n3 deliveries parked at the sink", 15*time.Second, func() bool { return sink.parkedCount() >= 3 })
	waitFor("every node's webhook workers parked", 15*time.Second, func() bool { return hooks.parked() >= hookWorkers*len(nodes) })
	victim.kill9()
	killedAt := time.Now()
	ackedAtKill := ackedCount()
	limit.Store(min(next.Load()+afterKill, maxLoad))
	// n3's connections end with it; wait until PostgreSQL has dropped
	// them (a statement it sent may still have committed) before reading
	// what it held.
	waitFor("n3's database sessions to end", 15*time.Second, func() bool {
		var k int
		err := db.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'herald n3%'`).Scan(&k)
		return err == nil && k == 0
	})
	var leased []string // recipients n3 held at the kill
	rows, err := db.Query(ctx, `SELECT address FROM recipients
		WHERE lease_owner = 'n3' AND lease_until > 0 AND status IN ('queued', 'deferred')`)
	must(t, err)
	leased, err = pgx.CollectRows(rows, pgx.RowTo[string])
	must(t, err)
	sinceKill := time.Since(killedAt)
	rows, err = db.Query(ctx, `SELECT event_id FROM webhook_deliveries WHERE status = 'pending' AND lease_until > $1`, killedAt.UnixNano())
	must(t, err)
	hooksLeased, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	must(t, err)
	parked := sink.parkedRcpts()
	sink.release()
	hooks.release()
	if sinceKill >= clusterLeaseTimeout {
		// Only the report suffers: the survivors may have taken some over.
		t.Logf("warning: n3's leases were read %s after the kill, later than queue.lease_timeout", sinceKill)
	}
	wg.Wait()

	// Every acknowledged message arrives; the queue drains; every event's
	// webhook delivery is done.
	mu.Lock()
	ackedN := len(acked)
	mu.Unlock()
	total := int(min(limit.Load(), next.Load()))
	if ackedN < ackedAtKill+afterKill/2 {
		failWithLogs("%d messages acknowledged, %d of them before the kill: the survivors did not take the load", ackedN, ackedAtKill)
	}
	waitFor("every acknowledged message at the sink", 45*time.Second, func() bool {
		got := sink.byRcpt()
		for r := range acked {
			if len(got[r]) == 0 {
				return false
			}
		}
		return true
	})
	waitFor("the queue to drain", 30*time.Second, func() bool {
		var k int
		err := db.QueryRow(ctx, `SELECT count(*) FROM recipients`).Scan(&k)
		return err == nil && k == 0
	})
	waitFor("every webhook delivery done", 30*time.Second, func() bool {
		var k int
		err := db.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE status <> 'delivered'`).Scan(&k)
		return err == nil && k == 0
	})

	// Deliveries: the survivors delivered n3's in-flight mail again; only
	// mail n3 had delivered without recording it (parked at the sink at
	// the kill) arrived twice.
	got := sink.byRcpt()
	inflight := map[string]bool{} // leased by n3 at the kill
	for _, r := range append(leased, parked...) {
		inflight[r] = true
	}
	var dups, extra int
	var resumeFirst, resumeLast time.Duration
	perNode := map[string]int{}
	for r, ds := range got {
		for _, d := range ds {
			perNode[d.from]++
		}
		if _, ok := acked[r]; !ok {
			extra++ // committed, but the 250 was cut by the kill
		}
		if len(ds) > 1 {
			dups += len(ds) - 1
			if first := ds[0]; first.from != victim.ip || first.at.After(killedAt) || len(ds) > 2 {
				t.Errorf("%s delivered %d times (first by %s, %s after the kill): only mail n3 delivered before the kill without recording it may arrive twice",
					r, len(ds), first.from, first.at.Sub(killedAt))
			}
		}
	}
	for r := range inflight {
		var at time.Time
		for _, d := range got[r] {
			if d.from != victim.ip && (at.IsZero() || d.at.Before(at)) {
				at = d.at
			}
		}
		if at.IsZero() {
			t.Errorf("%s, leased by n3 at the kill, was not delivered by a survivor", r)
			continue
		}
		el := at.Sub(killedAt)
		if resumeFirst == 0 || el < resumeFirst {
			resumeFirst = el
		}
		resumeLast = max(resumeLast, el)
	}
	// Generous: the leases end at most lease_timeout after the kill, then
	// a poll (250 ms) and a delivery.
	if limit := clusterLeaseTimeout + 15*time.Second; resumeLast > limit {
		t.Errorf("n3's in-flight mail was delivered again %s after the kill, want within about queue.lease_timeout (%s; bound %s)",
			resumeLast, clusterLeaseTimeout, limit)
	}

	// Events: one accepted and one delivered per recipient, whatever was
	// attempted twice.
	var badEvents int
	must(t, db.QueryRow(ctx, `SELECT count(*) FROM (SELECT recipient FROM events GROUP BY recipient
		HAVING count(*) FILTER (WHERE type = 'accepted') <> 1 OR count(*) FILTER (WHERE type = 'delivered') <> 1) x`).Scan(&badEvents))
	if badEvents > 0 {
		t.Errorf("%d recipients do not have exactly one accepted and one delivered event", badEvents)
	}
	rows, err = db.Query(ctx, `SELECT id FROM events ORDER BY id`)
	must(t, err)
	eventIDs, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	must(t, err)
	var eventTypes string
	must(t, db.QueryRow(ctx, `SELECT string_agg(type || ' ' || n, ', ' ORDER BY type) FROM
		(SELECT type, count(*) AS n FROM events GROUP BY type) x`).Scan(&eventTypes))
	calls := hooks.times()
	leasedAtKill := map[int64]bool{}
	for _, id := range hooksLeased {
		leasedAtKill[id] = true
	}
	// A request cut by webhook_timeout (a very slow machine parking the
	// receiver's requests that long) is sent again too.
	rows, err = db.Query(ctx, `SELECT DISTINCT d.event_id FROM webhook_deliveries d JOIN webhook_attempts a ON a.delivery_id = d.id
		WHERE a.error <> ''`)
	must(t, err)
	failedOnce, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	must(t, err)
	hookFailed := map[int64]bool{}
	for _, id := range failedOnce {
		hookFailed[id] = true
	}
	var hookDups, hookMissing int
	var hookResume time.Duration
	for _, id := range eventIDs {
		switch n := len(calls[id]); {
		case n == 0:
			hookMissing++
		case n > 1:
			hookDups += n - 1
			hookResume = max(hookResume, calls[id][n-1].Sub(killedAt))
			if !leasedAtKill[id] && !hookFailed[id] {
				t.Errorf("event %d reached the webhook %d times but its delivery was neither leased at the kill nor failed once", id, n)
			}
		}
	}
	// n3's webhook workers were all waiting at the kill: their deliveries
	// are sent again by the survivors after the lease (webhook_timeout +
	// lease_timeout), bounded generously.
	if hookDups == 0 {
		t.Errorf("no webhook delivery was sent again: n3's parked requests were not taken over")
	}
	if limit := clusterHookTimeout + clusterLeaseTimeout + 15*time.Second; hookResume > limit {
		t.Errorf("n3's webhook deliveries were sent again %s after the kill, want within about %s (bound %s)",
			hookResume, clusterHookTimeout+clusterLeaseTimeout, limit)
	}
	if hookMissing > 0 {
		t.Errorf("%d of %d events never reached the webhook", hookMissing, len(eventIDs))
	}
	if len(calls) != len(eventIDs) {
		t.Errorf("the webhook received %d distinct event IDs, the store has %d events", len(calls), len(eventIDs))
	}
	t.Logf("accepted (250) %d of %d (%d at the kill, %d attempts cut), delivered %d recipients (%d committed without a 250), "+
		"%d duplicates (%d parked at the sink); n3 held %d leases at the kill (read %s after it); survivors delivered them again %s–%s after the kill "+
		"(queue.lease_timeout %s); deliveries by node address %v; %d events (%s), webhook: %d duplicate POSTs (%d deliveries leased at the kill), sent again within %s of the kill",
		ackedN, total, ackedAtKill, refused.Load(), len(got), extra, dups, len(parked), len(leased), sinceKill.Round(time.Millisecond),
		resumeFirst.Round(time.Millisecond), resumeLast.Round(time.Millisecond), clusterLeaseTimeout, perNode,
		len(eventIDs), eventTypes, hookDups, len(hooksLeased), hookResume.Round(time.Millisecond))
}

// clusterNode is one herald serve process of the kill test.
type clusterNode struct {
	id, ip, addr     string
	cfgPath, logPath string
	p                *proc
	killed           atomic.Bool
}

// newClusterNode writes the configuration of node id listening and
// sending on ip.
func newClusterNode(t *testing.T, id, ip, dsn, resolver string) *clusterNode {
	t.Helper()
	dir := t.TempDir()
	n := &clusterNode{id: id, ip: ip, addr: freePortOn(t, ip), cfgPath: filepath.Join(dir, "herald.toml"),
		logPath: filepath.Join(dir, "herald.log")}
	cfg := fmt.Sprintf(`[server]
hostname = "%[1]s.herald.test"
node_id = %[1]q
data_dir = %[2]q
shutdown_timeout = "2s"
[store]
url = %[3]q
[log]
level = "info"
[smtp]
listen = [%[4]q]
[submission]
listen = []
[submissions]
listen = []
[http]
listen = []
[relay]
allow = ["127.0.0.0/8"]
[limits]
pregreet_wait = "0"
[dns]
resolver = %[5]q
[queue]
lease_timeout = %[6]q
poll_interval = "250ms"
retry_initial = "200ms"
retry_max = "500ms"
[delivery]
port = 25
source_ipv4 = %[7]q
[platform]
webhook_allow_private = true
webhook_timeout = %[8]q
[alerts]
# Alert mail would join the traffic the test counts.
enabled = false
`, id, filepath.Join(dir, "data"), dsn, n.addr, resolver, clusterLeaseTimeout.String(), ip, clusterHookTimeout.String())
	must(t, os.WriteFile(n.cfgPath, []byte(cfg), 0o644))
	return n
}

func (n *clusterNode) start(t *testing.T, bin string) { n.p = startProc(t, bin, n.cfgPath, n.logPath) }

func (n *clusterNode) kill9() {
	n.killed.Store(true)
	n.p.kill9()
}

// stop ends a node that is still running with SIGTERM (it must exit 0).
func (n *clusterNode) stop(t *testing.T) {
	if n.killed.Swap(true) {
		return
	}
	n.p.term(t)
}

// freePortOn returns an address on ip whose port was free a moment ago.
func freePortOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// sinkDelivery is one recipient received by a clusterSink.
type sinkDelivery struct {
	from string // the delivering node's address
	at   time.Time
}

// clusterSink is a counting SMTP server on a fixed address: it records
// each recipient with the address of the client that delivered it at the
// end of DATA, before its reply, and can park the deliveries of one
// client address there (the reply never comes until release).
type clusterSink struct {
	ln     net.Listener
	mu     sync.Mutex
	got    map[string][]sinkDelivery
	holdIP string
	parked []string // recipients whose delivery is parked
	unpark chan struct{}
	conns  sync.WaitGroup
}

func startClusterSink(t *testing.T, addr string) *clusterSink {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &clusterSink{ln: ln, got: map[string][]sinkDelivery{}, unpark: make(chan struct{})}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			go func() {
				defer s.conns.Done()
				s.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		s.releaseOnce()
		s.conns.Wait()
	})
	return s
}

// hold parks, from now on, every delivery from ip after its DATA.
func (s *clusterSink) hold(ip string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.holdIP = ip
}

// release answers the parked deliveries and parks no more.
func (s *clusterSink) release() { s.releaseOnce() }

func (s *clusterSink) releaseOnce() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.holdIP != "-" {
		s.holdIP = "-"
		close(s.unpark)
	}
}

func (s *clusterSink) parkedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.parked)
}

// parkedRcpts returns the recipients whose deliveries were parked.
func (s *clusterSink) parkedRcpts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.parked)
}

// byRcpt returns the deliveries of each recipient.
func (s *clusterSink) byRcpt() map[string][]sinkDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]sinkDelivery, len(s.got))
	for r, ds := range s.got {
		out[r] = slices.Clone(ds)
	}
	return out
}

// serve speaks just enough SMTP for Herald's client.
func (s *clusterSink) serve(c net.Conn) {
	defer c.Close()
	from, _, _ := net.SplitHostPort(c.RemoteAddr().String())
	r := bufio.NewReaderSize(c, 64<<10)
	reply := func(line string) bool {
		c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		_, err := c.Write([]byte(line + "\r\n"))
		return err == nil
	}
	readLine := func() (string, bool) {
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		l, err := r.ReadString('\n')
		return strings.TrimRight(l, "\r\n"), err == nil
	}
	if !reply("220 sink.test ESMTP") {
		return
	}
	var rcpts []string
	for {
		line, ok := readLine()
		if !ok {
			return
		}
		verb := strings.ToUpper(line)
		switch {
		case strings.HasPrefix(verb, "EHLO"):
			ok = reply("250-sink.test\r\n250 8BITMIME")
		case strings.HasPrefix(verb, "HELO"), strings.HasPrefix(verb, "NOOP"):
			ok = reply("250 ok")
		case strings.HasPrefix(verb, "MAIL FROM:"), strings.HasPrefix(verb, "RSET"):
			rcpts = rcpts[:0]
			ok = reply("250 ok")
		case strings.HasPrefix(verb, "RCPT TO:"):
			a := strings.Trim(strings.TrimSpace(line[len("RCPT TO:"):]), "<>")
			if i := strings.IndexByte(a, ' '); i >= 0 { // parameters
				a = strings.TrimSuffix(a[:i], ">")
			}
			rcpts = append(rcpts, strings.ToLower(a))
			ok = reply("250 ok")
		case verb == "DATA":
			if !reply("354 go ahead") {
				return
			}
			for {
				l, ok := readLine()
				if !ok {
					return
				}
				if l == "." {
					break
				}
			}
			s.mu.Lock()
			now := time.Now()
			for _, a := range rcpts {
				s.got[a] = append(s.got[a], sinkDelivery{from: from, at: now})
			}
			park := s.holdIP == from
			if park {
				s.parked = append(s.parked, rcpts...)
			}
			wait := s.unpark
			s.mu.Unlock()
			if park {
				<-wait
			}
			rcpts = rcpts[:0]
			ok = reply("250 2.0.0 ok")
		case strings.HasPrefix(verb, "QUIT"):
			reply("221 bye")
			return
		default:
			ok = reply("502 5.5.2 not implemented")
		}
		if !ok {
			return
		}
	}
}

// eventCounter is a webhook receiver counting requests per event ID, with
// the time of each. It can park requests: they wait, counted, for unpark
// (or for the client to give up).
type eventCounter struct {
	url    string
	mu     sync.Mutex
	calls  map[int64][]time.Time
	hold   bool
	active int // requests parked now
	unpark chan struct{}
}

func startEventCounter(t *testing.T) *eventCounter {
	t.Helper()
	e := &eventCounter{calls: map[int64][]time.Time{}, unpark: make(chan struct{})}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := strconv.ParseInt(r.Header.Get(webhook.HeaderEventID), 10, 64)
		if err != nil {
			http.Error(w, "no event ID", http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		e.calls[id] = append(e.calls[id], time.Now())
		park, wait := e.hold, e.unpark
		if park {
			e.active++
		}
		e.mu.Unlock()
		if park {
			select {
			case <-wait:
			case <-r.Context().Done():
			}
			e.mu.Lock()
			e.active--
			e.mu.Unlock()
		}
	}))
	t.Cleanup(func() {
		e.release()
		srv.Close()
	})
	e.url = srv.URL
	return e
}

// park makes requests from now on wait until release.
func (e *eventCounter) park() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.hold = true
}

// parked returns how many requests are waiting now.
func (e *eventCounter) parked() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active
}

// release answers the parked requests and parks no more.
func (e *eventCounter) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.hold {
		e.hold = false
		close(e.unpark)
	}
}

// times returns the arrival times of each event's requests.
func (e *eventCounter) times() map[int64][]time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[int64][]time.Time, len(e.calls))
	for k, v := range e.calls {
		out[k] = slices.Clone(v)
	}
	return out
}
