package e2e

import (
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
)

// authOnce opens an implicit-TLS submission session from local (a loopback
// address; nil for any), says EHLO and AUTH PLAIN once, and returns the
// AUTH reply. It reports errors instead of failing, so goroutines may use it.
func authOnce(addr string, local net.IP, user, pass string) (int, string, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		d.LocalAddr = &net.TCPAddr{IP: local}
	}
	conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return 0, "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return 0, "", fmt.Errorf("greeting: %w", err)
	}
	if err := tp.PrintfLine("EHLO client.test"); err != nil {
		return 0, "", err
	}
	if _, _, err := tp.ReadResponse(250); err != nil {
		return 0, "", fmt.Errorf("EHLO: %w", err)
	}
	if err := tp.PrintfLine("AUTH PLAIN %s", base64.StdEncoding.EncodeToString([]byte("\x00"+user+"\x00"+pass))); err != nil {
		return 0, "", err
	}
	code, msg, err := tp.ReadResponse(0)
	if code == 0 {
		return 0, "", fmt.Errorf("AUTH: %w", err)
	}
	tp.PrintfLine("QUIT")
	return code, msg, nil
}

// The security review's finding: 19 simultaneous connections from one
// address got 19 real password checks before the lockout applied. Now 20
// parallel AUTH attempts with wrong passwords get exactly max_failures
// 535 replies; the others are refused with 454 4.7.0 without a check. The
// account's owner, from another address, still gets in.
func TestAuthParallelGuessesLockout(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.Auth.AccountDelay = 10 * time.Millisecond
		c.Auth.AccountMaxDelay = 50 * time.Millisecond
	})
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")
	addr := h.addr("submissions")
	const n = 20
	type result struct {
		code int
		msg  string
		err  error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, msg, err := authOnce(addr, nil, "alice@example.com", fmt.Sprintf("guess-%d", i))
			results[i] = result{code, msg, err}
		}()
	}
	wg.Wait()
	rejected, locked := 0, 0
	for i, r := range results {
		switch {
		case r.err != nil:
			t.Errorf("connection %d: %v", i, r.err)
		case r.code == 535 && strings.HasPrefix(r.msg, "5.7.8 "):
			rejected++
		case r.code == 454 && strings.HasPrefix(r.msg, "4.7.0 "):
			locked++
		default:
			t.Errorf("connection %d: AUTH answered %d %s", i, r.code, r.msg)
		}
	}
	if max := h.cfg.Auth.MaxFailures; rejected != max || locked != n-max {
		t.Errorf("%d answered 535 5.7.8 and %d 454 4.7.0; want %d and %d", rejected, locked, max, n-max)
	}
	// The right password from the locked-out address is refused too.
	if code, msg, err := authOnce(addr, nil, "alice@example.com", pw); err != nil || code != 454 {
		t.Errorf("owner from the locked-out address: %d %s %v, want 454", code, msg, err)
	}
	// From another address the owner is slowed down, not locked out.
	if code, msg, err := authOnce(addr, net.IPv4(127, 0, 0, 2), "alice@example.com", pw); err != nil || code != 235 {
		t.Errorf("owner from a fresh address: %d %s %v, want 235", code, msg, err)
	}
}
