package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LoadSpec describes a run of the Go load generator (used where smtp-source
// cannot express the scenario: several domains, STARTTLS+AUTH, a fixed rate).
type LoadSpec struct {
	Addr       string        // MTA address
	Sessions   int           // concurrent sessions
	Messages   int           // messages in total
	Size       int           // approximate message size in bytes
	From       string        // envelope sender
	Rcpts      []string      // recipients of every message
	PerSession int           // messages per connection (>= 1)
	StartTLS   bool          // STARTTLS after the first EHLO
	User, Pass string        // AUTH PLAIN credentials ("" = no AUTH)
	Rate       float64       // messages per second over all sessions; 0 = as fast as possible
	Probe      bool          // tag every message as a probe (its 250 time is recorded)
	Deadline   time.Duration // the whole run is cut after this long
}

// LoadResult is what a load run measured on the client side.
type LoadResult struct {
	Accepted int
	Failed   int
	Elapsed  time.Duration
	Acks     map[string]time.Time // probe id -> time of the 250 after DATA
	FirstErr string
}

// RunLoad drives the MTA as spec says.
func RunLoad(ctx context.Context, spec LoadSpec, tag string) LoadResult {
	if spec.PerSession < 1 {
		spec.PerSession = 1
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Deadline)
	defer cancel()
	var (
		next     atomic.Int64
		accepted atomic.Int64
		failed   atomic.Int64
		mu       sync.Mutex
		acks     = map[string]time.Time{}
		firstErr string
		wg       sync.WaitGroup
	)
	body := filler(spec.Size)
	start := time.Now()
	fail := func(err error) {
		failed.Add(1)
		mu.Lock()
		if firstErr == "" {
			firstErr = err.Error()
		}
		mu.Unlock()
	}
	for range spec.Sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				if next.Load() >= int64(spec.Messages) {
					return
				}
				c, err := dialSession(ctx, spec)
				if err != nil {
					fail(err)
					select {
					case <-ctx.Done():
					case <-time.After(50 * time.Millisecond):
					}
					continue
				}
				for range spec.PerSession {
					i := next.Add(1) - 1
					if i >= int64(spec.Messages) {
						break
					}
					if spec.Rate > 0 {
						due := start.Add(time.Duration(float64(i) / spec.Rate * float64(time.Second)))
						if d := time.Until(due); d > 0 {
							select {
							case <-ctx.Done():
								c.close()
								return
							case <-time.After(d):
							}
						}
					}
					id := fmt.Sprintf("%s-%d", tag, i)
					if err := c.send(spec, id, body); err != nil {
						fail(err)
						break
					}
					accepted.Add(1)
					if spec.Probe {
						mu.Lock()
						acks[id] = time.Now()
						mu.Unlock()
					}
				}
				c.close()
			}
		}()
	}
	wg.Wait()
	return LoadResult{Accepted: int(accepted.Load()), Failed: int(failed.Load()), Elapsed: time.Since(start), Acks: acks, FirstErr: firstErr}
}

// filler returns body lines totalling about size bytes.
func filler(size int) string {
	var b strings.Builder
	line := strings.Repeat("x", 76) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	return b.String()
}

type session struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

func dialSession(ctx context.Context, spec LoadSpec) (*session, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", spec.Addr)
	if err != nil {
		return nil, err
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	s := &session{conn: conn, r: bufio.NewReader(conn), w: bufio.NewWriter(conn)}
	if err := s.expect(220); err != nil {
		conn.Close()
		return nil, err
	}
	if err := s.cmd("EHLO load.test", 250); err != nil {
		conn.Close()
		return nil, err
	}
	if spec.StartTLS {
		if err := s.cmd("STARTTLS", 220); err != nil {
			conn.Close()
			return nil, err
		}
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, ServerName: "localhost"})
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("tls handshake: %w", err)
		}
		s.conn, s.r, s.w = tc, bufio.NewReader(tc), bufio.NewWriter(tc)
		if err := s.cmd("EHLO load.test", 250); err != nil {
			s.close()
			return nil, err
		}
	}
	if spec.User != "" {
		cred := base64.StdEncoding.EncodeToString([]byte("\x00" + spec.User + "\x00" + spec.Pass))
		if err := s.cmd("AUTH PLAIN "+cred, 235); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

func (s *session) send(spec LoadSpec, id, body string) error {
	s.conn.SetDeadline(time.Now().Add(2 * time.Minute))
	if err := s.cmd("MAIL FROM:<"+spec.From+">", 250); err != nil {
		return err
	}
	for _, r := range spec.Rcpts {
		if err := s.cmd("RCPT TO:<"+r+">", 250); err != nil {
			return err
		}
	}
	if err := s.cmd("DATA", 354); err != nil {
		return err
	}
	fmt.Fprintf(s.w, "From: <%s>\r\nTo: <%s>\r\nSubject: bench %s\r\nMessage-ID: <%s@load.test>\r\n", spec.From, spec.Rcpts[0], id, id)
	if spec.Probe {
		s.w.WriteString(probeHeader + id + "\r\n")
	}
	s.w.WriteString("\r\n")
	s.w.WriteString(body)
	return s.cmd(".", 250)
}

func (s *session) cmd(line string, want int) error {
	s.w.WriteString(line + "\r\n")
	if err := s.w.Flush(); err != nil {
		return err
	}
	if err := s.expect(want); err != nil {
		if len(line) > 20 {
			line = line[:20]
		}
		return fmt.Errorf("%q: %w", line, err)
	}
	return nil
}

func (s *session) expect(want int) error {
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return err
		}
		if len(l) < 4 {
			return fmt.Errorf("short reply %q", l)
		}
		code, err := strconv.Atoi(l[:3])
		if err != nil {
			return fmt.Errorf("bad reply %q", l)
		}
		if l[3] == '-' {
			continue
		}
		if code != want {
			return fmt.Errorf("reply %q, want %d", strings.TrimSpace(l), want)
		}
		return nil
	}
}

func (s *session) close() {
	s.conn.SetDeadline(time.Now().Add(2 * time.Second))
	s.w.WriteString("QUIT\r\n")
	s.w.Flush()
	s.expect(221)
	s.conn.Close()
}

// Probe sends one tagged message every 1/rate seconds on a fresh connection
// until ctx ends, alongside the main load, and returns the 250 times.
func Probe(ctx context.Context, addr string, rate float64, tag string) map[string]time.Time {
	acks := map[string]time.Time{}
	spec := LoadSpec{Addr: addr, Sessions: 1, Size: 1024, From: "probe@load.test", Rcpts: []string{"probe@sink.test"}, Probe: true}
	body := filler(spec.Size)
	t := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return acks
		case <-t.C:
		}
		s, err := dialSession(ctx, spec)
		if err != nil {
			continue
		}
		id := fmt.Sprintf("%s-p%d", tag, i)
		if err := s.send(spec, id, body); err == nil {
			acks[id] = time.Now()
		}
		s.close()
	}
}
