package smtpserver

import (
	"crypto/tls"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
)

// The pregreet test (Postfix postscreen's): a client must wait for the
// greeting before it says anything (RFC 5321 §3.1, §4.3.1). Spambots that
// send their commands without reading replies talk at once; they are
// answered 554 5.5.1 and disconnected before any command runs.
//
// Before the 220 the server waits Config.PregreetWait (counted from the
// connection, or from the end of the TLS handshake on implicit TLS, so the
// wait overlaps Backend.Connect's own checks) and returns as soon as the
// client sends anything. Postfix waits 6 s but remembers a client that
// passed for a day (postscreen_greet_ttl), so that regular senders do not
// wait on every connection; Herald does the same with a shorter wait
// (default 1 s on the MX listener, none on submission) and a 24-hour
// memory per IPv4 address or IPv6 /64. Whatever the wait, input already
// received when the greeting is about to be written (in the socket or,
// on TLS, in the TLS layer) is refused the same way.

const (
	// greetCacheMax bounds the remembered clients (about 100 bytes each).
	// When it is full and nothing has expired, new clients simply wait.
	greetCacheMax = 65536
	// lingerTimeout and lingerMax bound how long and how much a refused
	// early talker is read after the reply (see lingerClose).
	lingerTimeout = 2 * time.Second
	lingerMax     = 64 << 10
)

// greetCache remembers the clients that waited for the greeting.
type greetCache struct {
	ttl   time.Duration
	clock clock.Clock

	mu    sync.Mutex
	m     map[netip.Prefix]time.Time // client -> expiry
	swept time.Time                  // last sweep of expired entries when full
}

func newGreetCache(ttl time.Duration, c clock.Clock) *greetCache {
	return &greetCache{ttl: ttl, clock: c, m: make(map[netip.Prefix]time.Time)}
}

// greetKey is the client's IPv4 address or IPv6 /64 (one host usually
// owns a /64; a client that rotates addresses in it passes once).
func greetKey(a netip.Addr) (netip.Prefix, bool) {
	if !a.IsValid() {
		return netip.Prefix{}, false
	}
	a = a.Unmap()
	bits := 32
	if a.Is6() {
		bits = 64
	}
	p, err := a.Prefix(bits)
	return p, err == nil
}

// passed reports whether a's client waited for a greeting within the TTL.
func (g *greetCache) passed(a netip.Addr) bool {
	k, ok := greetKey(a)
	if !ok {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	exp, ok := g.m[k]
	if ok && !g.clock.Now().Before(exp) {
		delete(g.m, k)
		return false
	}
	return ok
}

// add records that a's client waited for the greeting.
func (g *greetCache) add(a netip.Addr) {
	k, ok := greetKey(a)
	if !ok {
		return
	}
	now := g.clock.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, known := g.m[k]; !known && len(g.m) >= greetCacheMax {
		// Sweep at most once a minute, so that a flood of new clients does
		// not make every connection walk the whole map.
		if now.Sub(g.swept) < time.Minute {
			return
		}
		g.swept = now
		for k, exp := range g.m {
			if !now.Before(exp) {
				delete(g.m, k)
			}
		}
		if len(g.m) >= greetCacheMax {
			return
		}
	}
	g.m[k] = now.Add(g.ttl)
}

// pregreet runs the pregreet test just before the greeting: if wait, it
// waits until greetAt for the client to talk first, then it checks for
// input received anyway. An early talker is answered 554 5.5.1 and the
// connection closed. It reports whether the greeting may follow.
func (s *session) pregreet(greetAt time.Time, wait bool) bool {
	talked := false
	if wait && time.Now().Before(greetAt) {
		s.dc.until = greetAt
		_, err := s.br.Peek(1) // returns as soon as the client sends a byte
		s.dc.until = time.Time{}
		switch {
		case err == nil:
			talked = true
		case isTimeout(err): // silent for the whole wait: good
		default:
			s.connFailed(err, "waiting before the greeting")
			return false
		}
	}
	if !talked && !s.pendingInput() {
		if wait {
			s.srv.greeted.add(s.c.RemoteAddr.Addr())
		}
		return true
	}
	s.srv.reject(RejectPregreet)
	start, _ := s.br.Peek(min(s.br.Buffered(), 64))
	s.log.Info("client talked before the greeting", "waited", wait, "input", strconv.Quote(string(start)))
	s.reply(554, smtp.EnhancedCode{5, 5, 1}, "Protocol error: talked before greeting")
	s.closing = true
	s.lingerClose()
	return false
}

// pendingInput reports, without waiting, whether the client has sent
// anything not read yet: buffered here, in the socket, or (TLS) decrypted
// or whole records held by the TLS layer.
func (s *session) pendingInput() bool {
	if s.br.Buffered() > 0 || kernelPending(s.raw) {
		return true
	}
	if s.c.TLS == nil {
		return false
	}
	s.dc.until = time.Now() // past: the raw connection is not read
	_, err := s.br.Peek(1)
	s.dc.until = time.Time{}
	return err == nil
}

// lingerClose ends a session refused while the client has unread input.
// Closing a socket with unread input sends a TCP reset, which can make the
// client drop the reply before reading it; so the reply is flushed, the
// sending side closed, and what the client still sends is read and
// discarded for a moment (bounded in time and bytes).
func (s *session) lingerClose() {
	_ = s.bw.Flush()
	if tc, ok := s.conn.(*tls.Conn); ok {
		_ = tc.CloseWrite() // close_notify
	}
	if cw, ok := s.raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	s.dc.until = time.Now().Add(lingerTimeout)
	_, _ = io.CopyN(io.Discard, s.dc, lingerMax)
	s.dc.until = time.Time{}
}
