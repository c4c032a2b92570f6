package smtpserver

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
)

var loopback = netip.MustParseAddr("127.0.0.1")

// A client that sends commands before the greeting is refused with 554
// 5.5.1 and disconnected; none of its commands runs. The wait is an hour:
// the early bytes end it, the test never waits it out.
func TestPregreetRefused(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{PregreetWait: time.Hour}, b)
	c := dial(t, addr)
	c.send("EHLO early.test\r\nMAIL FROM:<spam@example.com>\r\nRCPT TO:<victim@example.org>\r\n")
	r := c.reply()
	if r != "554 5.5.1 Protocol error: talked before greeting" {
		t.Fatalf("first reply %q, want the pregreet refusal and no greeting", r)
	}
	c.expectClosed()
	c.conn.Close() // ends the server's lingering read
	waitFor(t, "session end", func() bool { return srv.Stats().SessionsActive == 0 })
	if _, _, mails := b.snapshot(); len(mails) != 0 {
		t.Fatalf("commands sent before the greeting ran: %+v", mails)
	}
	st := srv.Stats()
	if st.Rejections[RejectPregreet] != 1 {
		t.Fatalf("stats %+v", st)
	}
	if srv.greeted.passed(loopback) {
		t.Fatal("an early talker was remembered as having waited")
	}
}

// A client that waits gets the greeting after the wait, works normally and
// is remembered: its next connection is greeted without waiting.
func TestPregreetPassIsRemembered(t *testing.T) {
	t.Parallel()
	b := newBackend()
	srv, addr := startServer(t, Config{PregreetWait: 50 * time.Millisecond}, b)
	c := dial(t, addr)
	c.expect("220 mx.test ESMTP Herald")
	c.cmd("EHLO client.test", "250")
	c.cmd("MAIL FROM:<a@example.com>", "250")
	if !srv.greeted.passed(loopback) {
		t.Fatal("client that waited is not remembered")
	}
	if n := srv.Stats().Rejections[RejectPregreet]; n != 0 {
		t.Fatalf("%d pregreet rejections", n)
	}

	// With a wait of an hour, only the memory can let this client in.
	fake := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	srv, addr = startServer(t, Config{PregreetWait: time.Hour, Clock: fake}, newBackend())
	srv.greeted.add(loopback)
	c = dial(t, addr)
	c.expect("220 mx.test ESMTP Herald")
	c.cmd("QUIT", "221")

	// After the TTL (24 hours by default) the client waits again, and an
	// early talker is caught by the wait.
	fake.Advance(24*time.Hour + time.Second)
	c = dial(t, addr)
	c.send("EHLO early.test\r\n")
	c.expect("554 5.5.1")
	c.expectClosed()
	if srv.greeted.passed(loopback) {
		t.Fatal("memory did not expire")
	}
}

// Without a wait (submission), input that is already there when the
// greeting is about to be written is refused the same way; on implicit TLS
// the test runs after the handshake. Backend.Connect holds the session
// until the client's bytes are written (on loopback a write is in the
// receiver's socket when it returns).
func TestPregreetWithoutWait(t *testing.T) {
	t.Parallel()
	srvTLS, cliTLS := testTLS(t)
	for _, tc := range []struct {
		name string
		cfg  Config
		tls  bool
	}{
		{"MX no wait", Config{}, false},
		{"submission no wait", Config{Mode: ModeSubmission, TLSConfig: srvTLS}, false},
		{"submissions no wait", Config{Mode: ModeSubmissions, TLSConfig: srvTLS}, true},
		{"submissions wait", Config{Mode: ModeSubmissions, TLSConfig: srvTLS, PregreetWait: time.Hour}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := newBackend()
			written := make(chan struct{})
			b.onConnect = func() { <-written }
			srv, addr := startServer(t, tc.cfg, b)
			var c *client
			if tc.tls {
				c = dialTLS(t, addr, cliTLS) // handshake done
			} else {
				c = dial(t, addr)
			}
			c.send("EHLO early.test\r\n")
			close(written)
			c.expect("554 5.5.1 Protocol error: talked before greeting")
			c.expectClosed()
			if n := srv.Stats().Rejections[RejectPregreet]; n != 1 {
				t.Fatalf("%d pregreet rejections", n)
			}
			if tc.cfg.PregreetWait > 0 {
				return
			}
			// A client that waits for the greeting is served (Connect
			// no longer holds: written is closed).
			if tc.tls {
				c = dialTLS(t, addr, cliTLS)
			} else {
				c = dial(t, addr)
			}
			c.expect("220 ")
			c.cmd("EHLO client.test", "250")
		})
	}
}

// A session still in the pregreet wait is closed with 421 by Shutdown.
func TestPregreetShutdown(t *testing.T) {
	t.Parallel()
	srv, addr := startServer(t, Config{PregreetWait: time.Hour}, newBackend())
	c := dial(t, addr)
	waitFor(t, "session start", func() bool { return srv.Stats().SessionsActive == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	c.expect("421 4.3.2")
	c.expectClosed()
}

func TestGreetCache(t *testing.T) {
	t.Parallel()
	fake := clock.NewFake(time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC))
	g := newGreetCache(time.Hour, fake)
	a4 := netip.MustParseAddr("192.0.2.7")
	g.add(a4)
	g.add(netip.MustParseAddr("2001:db8::1"))
	g.add(netip.Addr{}) // no address (net.Pipe): ignored
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"192.0.2.7", true},
		{"::ffff:192.0.2.7", true},
		{"192.0.2.8", false},
		{"2001:db8::ffff", true}, // same /64
		{"2001:db8:0:1::1", false},
	} {
		if got := g.passed(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("passed(%s) = %v, want %v", tc.addr, got, tc.want)
		}
	}
	fake.Advance(time.Hour)
	if g.passed(a4) {
		t.Error("entry outlived its TTL")
	}

	// Bounded: when full of live entries, new clients are not added; once
	// they expired, a sweep makes room.
	g = newGreetCache(time.Hour, fake)
	for i := range greetCacheMax {
		g.add(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	extra := netip.MustParseAddr("198.51.100.1")
	g.add(extra)
	if g.passed(extra) || len(g.m) != greetCacheMax {
		t.Fatalf("cache grew past its bound: %d entries", len(g.m))
	}
	fake.Advance(time.Hour + time.Minute)
	g.add(extra)
	if !g.passed(extra) || len(g.m) != 1 {
		t.Fatalf("expired entries not swept: %d entries", len(g.m))
	}
}
