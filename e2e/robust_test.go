package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// A remote that misbehaves (drops mid-DATA, never answers, answers
// garbage, sends 421 mid-session) is retried, and Herald never reports
// delivered for what the remote did not acknowledge.
func TestRemoteMisbehaviour(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		stage testmx.Stage
		fault testmx.Fault
	}{
		{"drop mid-DATA", testmx.StageData, testmx.FaultDrop},
		{"never answers", testmx.StageGreeting, testmx.FaultHang},
		{"garbage", testmx.StageEHLO, testmx.FaultGarbage},
		{"421 at RCPT", testmx.StageRcpt, testmx.Fault421},
		{"421 after DATA", testmx.StageData, testmx.Fault421},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := startHerald(t, func(c *config.Config) {
				c.Delivery.CommandTimeout = 300 * time.Millisecond
				c.Delivery.ConnectTimeout = 300 * time.Millisecond
			})
			h.addDomain("example.com")
			pw := h.addUser("alice@example.com")
			mx := h.remoteMX("remote.test", testmx.Config{})
			mx.SetFault(tc.stage, tc.fault)

			id := h.submit("alice@example.com", pw, "alice@example.com", []string{"bob@remote.test"}, testBody("misbehave"))
			mx.WaitConnections(t, 2, 10*time.Second) // at least one retry happened
			m, err := h.app.Store().Get(t.Context(), id)
			if err != nil {
				t.Fatalf("message gone while the remote never acknowledged it: %v", err)
			}
			r := m.Recipients[0]
			if r.Status.Final() || r.Attempts == 0 || !strings.HasPrefix(r.LastReply, "4") {
				t.Fatalf("recipient %+v: want deferred with a 4xx reply after at least one attempt", r)
			}
			if n := len(mx.Messages()); n != 0 {
				t.Fatalf("remote recorded %d messages during the fault", n)
			}
			mx.SetFault(tc.stage, testmx.FaultNone)
			got := mx.WaitMessages(t, 1, 10*time.Second)
			if got[0].Rcpts[0] != "bob@remote.test" {
				t.Fatalf("delivered to %v", got[0].Rcpts)
			}
			h.waitQueueEmpty()
		})
	}
}

// Slow clients and a connection flood from one address do not stop a
// legitimate client on another address: the per-address cap answers 421.
func TestSlowlorisAndFlood(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.Limits.MaxConnectionsPerIP = 20
		c.Limits.MaxConnections = 200
		c.Limits.IdleTimeout = 2 * time.Second
	})
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	addr := h.addr("smtp")

	// 1,000 slow clients from 127.0.0.1: each sends half a command and
	// stalls (slowloris).
	var refused, held atomic.Int32
	var conns []net.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range 1000 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				refused.Add(1)
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 512)
			n, _ := c.Read(buf)
			if strings.HasPrefix(string(buf[:n]), "421") {
				refused.Add(1)
				return
			}
			held.Add(1)
			fmt.Fprintf(c, "EHLO slow%d", i) // no CRLF: a command that never ends
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if held.Load() > 20 {
		t.Errorf("%d slow connections from one address got a greeting; the cap is 20", held.Load())
	}
	if refused.Load() < 900 {
		t.Errorf("only %d of 1000 flood connections were refused", refused.Load())
	}

	// A legitimate client from another loopback address still gets through.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := wrapClient(t, conn)
	c.ok(250, "EHLO legit.test")
	if code, msg := c.send("x@legit.test", []string{"alice@example.com"}, testBody("legit")); code != 250 {
		t.Fatalf("legitimate client refused during the flood: %d %s", code, msg)
	}
	h.waitMaildir("alice@example.com", 1)
}

// A 24 MB message is streamed to disk, never held whole in memory.
func TestLargeMessageStreamed(t *testing.T) {
	h := startHerald(t, nil)
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	line := strings.Repeat("x", 998) + "\r\n"
	chunk := strings.Repeat(line, 1024) // 1 MB
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)
	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
		}
	}()
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO big.test")
	c.ok(250, "MAIL FROM:<x@big.test> SIZE=25000000")
	c.ok(250, "RCPT TO:<alice@example.com>")
	c.ok(354, "DATA")
	c.raw("Subject: big\r\n\r\n")
	for range 24 {
		c.raw(chunk)
	}
	c.raw(".\r\n")
	c.expect(250)
	close(stop)
	<-sampled
	h.waitMaildir("alice@example.com", 1)
	grown := int64(peak.Load()) - int64(base.HeapInuse)
	t.Logf("heap in use grew by %.1f MB while a 24 MB message streamed through", float64(grown)/1e6)
	if grown > 12<<20 {
		t.Errorf("heap grew by %d bytes for a 24 MB message: the body is being held in memory", grown)
	}
}

// wrapClient turns an established connection into a test client.
func wrapClient(t *testing.T, conn net.Conn) *client {
	t.Helper()
	c := &client{t: t, conn: conn}
	c.tp = newTextproto(conn)
	t.Cleanup(func() { conn.Close() })
	c.expect(220)
	return c
}

// A client that talks before the greeting is refused on the MX listener
// (554 5.5.1, counted in the protocol rejections), and the submission
// listeners do not make clients wait: with a 30 s pregreet wait the early
// talker is refused at once and a submission client is greeted well within
// the client's 10 s read deadline.
func TestPregreetThroughApp(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) { c.Limits.PregreetWait = 30 * time.Second })
	h.addDomain("example.com")
	conn, err := net.DialTimeout("tcp", h.addr("smtp"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := &client{t: t, conn: conn, tp: newTextproto(conn)}
	t.Cleanup(func() { conn.Close() })
	c.raw("EHLO bot.test\r\nMAIL FROM:<spam@bot.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
	if code, msg := c.reply(); code != 554 || msg != "5.5.1 Protocol error: talked before greeting" {
		t.Fatalf("got %d %s, want 554 5.5.1", code, msg)
	}
	if code, _, err := c.tp.ReadResponse(0); err == nil || code != 0 {
		t.Fatalf("connection still open after the refusal (%d, %v)", code, err)
	}

	sub := dial(t, h.addr("submission")) // expects the 220
	sub.ok(250, "EHLO client.test")
	subs := dialTLS(t, h.addr("submissions"))
	subs.ok(250, "EHLO client.test")

	resp, err := http.Get("http://" + h.addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if want := `herald_smtp_protocol_rejections_total{reason="pregreet"} 1`; !strings.Contains(string(b), want) {
		t.Fatalf("/metrics lacks %q:\n%s", want, b)
	}
}
