package main

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// probeHeader marks a message whose arrival time the sink records: its value
// is the probe's identifier.
const probeHeader = "X-Bench-Probe: "

// sideProbePrefix starts the identifiers of the probe client that runs
// alongside smtp-source; the sink does not count those messages as load.
const sideProbePrefix = "side-"

// Sink is a minimal, fast SMTP server that accepts everything and counts what
// arrives: messages, recipients, and the arrival time of each probe message.
// It can be taken down (listeners closed: connections are refused) and brought
// back up on the same addresses.
type Sink struct {
	addrs []string

	mu     sync.Mutex
	lns    []net.Listener
	conns  map[net.Conn]struct{}
	probes map[string]time.Time

	msgs  atomic.Int64 // non-probe transactions delivered
	rcpts atomic.Int64 // non-probe recipients delivered
	first atomic.Int64 // unix nanoseconds of the first non-probe arrival
	last  atomic.Int64 // unix nanoseconds of the latest non-probe arrival
	wg    sync.WaitGroup
}

// NewSink returns a sink that will listen on addrs (all with the same port).
func NewSink(addrs []string) *Sink {
	return &Sink{addrs: addrs, conns: map[net.Conn]struct{}{}, probes: map[string]time.Time{}}
}

// Up binds the listeners and serves connections.
func (s *Sink) Up() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.lns) > 0 {
		return nil
	}
	for _, a := range s.addrs {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			for _, l := range s.lns {
				l.Close()
			}
			s.lns = nil
			return err
		}
		s.lns = append(s.lns, ln)
		s.wg.Add(1)
		go s.accept(ln)
	}
	return nil
}

// Down closes the listeners and every open connection.
func (s *Sink) Down() {
	s.mu.Lock()
	for _, l := range s.lns {
		l.Close()
	}
	s.lns = nil
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// Reset zeroes the counters and forgets the probes.
func (s *Sink) Reset() {
	s.msgs.Store(0)
	s.rcpts.Store(0)
	s.first.Store(0)
	s.last.Store(0)
	s.mu.Lock()
	s.probes = map[string]time.Time{}
	s.mu.Unlock()
}

// Counts returns the non-probe messages and recipients delivered so far.
func (s *Sink) Counts() (msgs, rcpts int64) { return s.msgs.Load(), s.rcpts.Load() }

// Arrivals returns the first and latest non-probe arrival times (zero if none).
func (s *Sink) Arrivals() (first, last time.Time) {
	f, l := s.first.Load(), s.last.Load()
	if f != 0 {
		first = time.Unix(0, f)
	}
	if l != 0 {
		last = time.Unix(0, l)
	}
	return first, last
}

// Probe returns the arrival time of probe id.
func (s *Sink) Probe(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.probes[id]
	return t, ok
}

func (s *Sink) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serve(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
	}
}

// serve speaks just enough ESMTP (with PIPELINING) to take mail.
func (s *Sink) serve(c net.Conn) {
	r := bufio.NewReaderSize(c, 64<<10)
	w := bufio.NewWriterSize(c, 4<<10)
	w.WriteString("220 sink.test ESMTP bench sink\r\n")
	w.Flush()
	txRcpts := 0
	for {
		if r.Buffered() == 0 {
			if w.Flush() != nil {
				return
			}
		}
		c.SetReadDeadline(time.Now().Add(10 * time.Minute))
		line, err := r.ReadSlice('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(string(bytes.TrimSpace(firstWord(line))))
		switch verb {
		case "EHLO":
			w.WriteString("250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n250-ENHANCEDSTATUSCODES\r\n250 SIZE 1000000000\r\n")
		case "HELO":
			w.WriteString("250 sink.test\r\n")
		case "MAIL":
			txRcpts = 0
			w.WriteString("250 2.1.0 Ok\r\n")
		case "RCPT":
			txRcpts++
			w.WriteString("250 2.1.5 Ok\r\n")
		case "DATA":
			w.WriteString("354 End data with <CR><LF>.<CR><LF>\r\n")
			if w.Flush() != nil {
				return
			}
			probe, err := readData(r)
			if err != nil {
				return
			}
			now := time.Now()
			if probe != "" {
				s.mu.Lock()
				s.probes[probe] = now
				s.mu.Unlock()
			}
			// Messages of the side probe client are not part of the load.
			if !strings.HasPrefix(probe, sideProbePrefix) && txRcpts > 0 {
				s.first.CompareAndSwap(0, now.UnixNano())
				s.last.Store(now.UnixNano())
				s.rcpts.Add(int64(txRcpts))
				s.msgs.Add(1)
			}
			txRcpts = 0
			w.WriteString("250 2.0.0 Ok: queued\r\n")
		case "RSET":
			txRcpts = 0
			w.WriteString("250 2.0.0 Ok\r\n")
		case "NOOP":
			w.WriteString("250 2.0.0 Ok\r\n")
		case "QUIT":
			w.WriteString("221 2.0.0 Bye\r\n")
			w.Flush()
			return
		default:
			w.WriteString("502 5.5.2 Error: command not recognized\r\n")
		}
	}
}

func firstWord(line []byte) []byte {
	if i := bytes.IndexAny(line, " \r\n"); i >= 0 {
		return line[:i]
	}
	return line
}

// readData consumes a DATA body up to the lone dot and returns the probe
// identifier found in its header, if any.
func readData(r *bufio.Reader) (probe string, err error) {
	inHeader, atStart := true, true
	for {
		line, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			atStart = false
			continue
		}
		if err != nil {
			return "", err
		}
		if atStart {
			if len(line) == 3 && line[0] == '.' && line[1] == '\r' {
				return probe, nil
			}
			if inHeader {
				if len(line) <= 2 {
					inHeader = false
				} else if len(line) > len(probeHeader) && strings.EqualFold(string(line[:len(probeHeader)]), probeHeader) {
					probe = string(bytes.TrimSpace(line[len(probeHeader):]))
				}
			}
		}
		atStart = true
	}
}

// Close stops the sink for good.
func (s *Sink) Close() {
	s.Down()
}
