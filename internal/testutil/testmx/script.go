package testmx

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// ScriptConfig configures a Script server.
type ScriptConfig struct {
	// Pipelining advertises PIPELINING in the EHLO reply.
	Pipelining bool
	// Delay holds every reply until Delay after the command it answers
	// arrived (the greeting: after the connection was accepted), while
	// later commands are still read: a stand-in for the round trip to a
	// distant MX, for benchmarks. Zero replies at once.
	Delay time.Duration
	// MailReply answers MAIL (default "250 2.1.0 ok").
	MailReply string
	// RcptReplies answers RCPT for the given addresses (default
	// "250 2.1.5 ok"; after a refused MAIL "503 5.5.1 no MAIL").
	RcptReplies map[string]string
	// DataReply answers DATA when a RCPT was accepted (default
	// "354 go ahead"); with none accepted DATA gets "554 5.5.1 no valid
	// recipients" unless DataReplyNoRcpt is set.
	DataReply, DataReplyNoRcpt string
	// EndReply answers the final dot (default "250 2.0.0 queued").
	EndReply string
}

// ScriptCommand is one command line a Script server read.
type ScriptCommand struct {
	Line string
	// Burst numbers the Read call that completed the line (from 1, per
	// server): commands sent in one write share a burst.
	Burst int
	// Early says the command arrived while a reply to an earlier command
	// was still unsent: the client did not wait for it (pipelining).
	Early bool
}

// Script is a hand-written SMTP server whose replies are scripted and
// which records how commands arrived, to tell pipelined from lock-step
// clients. It understands EHLO, HELO, MAIL, RCPT, DATA (with the body up
// to the final dot), RSET, NOOP and QUIT.
type Script struct {
	ln  net.Listener
	cfg ScriptConfig
	wg  sync.WaitGroup

	mu     sync.Mutex
	cmds   []ScriptCommand
	bodies [][]byte
	bursts int
	conns  []net.Conn
	closed bool
}

// StartScript listens on addr and serves until the test ends.
func StartScript(t testing.TB, addr string, cfg ScriptConfig) *Script {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("testmx: listen %s: %v", addr, err)
	}
	def := func(s *string, v string) {
		if *s == "" {
			*s = v
		}
	}
	def(&cfg.MailReply, "250 2.1.0 ok")
	def(&cfg.DataReply, "354 go ahead")
	def(&cfg.DataReplyNoRcpt, "554 5.5.1 no valid recipients")
	def(&cfg.EndReply, "250 2.0.0 queued")
	s := &Script{ln: ln, cfg: cfg}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Addr returns the listening address.
func (s *Script) Addr() string { return s.ln.Addr().String() }

// Close stops the server and closes its connections.
func (s *Script) Close() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

// DropConnections closes the open connections without a reply (a remote
// that timed out an idle client); the server keeps listening.
func (s *Script) DropConnections() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = nil
}

// Commands returns the commands read so far, in order.
func (s *Script) Commands() []ScriptCommand {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]ScriptCommand(nil), s.cmds...)
}

// Bodies returns the message bodies received (dot-unstuffed, CRLF lines).
func (s *Script) Bodies() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.bodies...)
}

func (s *Script) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.serve(c)
		}()
	}
}

type scriptReply struct {
	due  time.Time
	text string
	quit bool
}

// Limits on what a client may make the server buffer.
const (
	scriptMaxLine = 4096
	scriptMaxBody = 16 << 20
	scriptQueue   = 4096
)

func (s *Script) serve(c net.Conn) {
	replies := make(chan scriptReply, scriptQueue)
	pending := 0 // replies queued and not yet being written, under s.mu
	writerDone := make(chan struct{})
	go func() { // the writer: each reply at its due time, in order
		defer close(writerDone)
		w := bufio.NewWriter(c)
		for r := range replies {
			if d := time.Until(r.due); d > 0 {
				time.Sleep(d)
			}
			s.mu.Lock()
			pending-- // before the write: a command read after it is not early
			s.mu.Unlock()
			w.WriteString(r.text + "\r\n") //nolint:errcheck // surfaces on Flush
			if len(replies) == 0 || r.quit {
				if w.Flush() != nil || r.quit {
					c.Close()
					for range replies {
						// drained, so the reader never blocks
					}
					return
				}
			}
		}
	}()
	defer func() { close(replies); <-writerDone }()

	queue := func(now time.Time, text string, quit bool) {
		s.mu.Lock()
		pending++
		s.mu.Unlock()
		replies <- scriptReply{due: now.Add(s.cfg.Delay), text: text, quit: quit}
	}
	queue(time.Now(), "220 script.test ESMTP", false)

	var (
		buf       []byte
		chunk     = make([]byte, 32<<10)
		inData    bool
		body      bytes.Buffer
		mailOK    bool
		inMail    bool
		accepted  int
		commands  int
		mailReply = s.cfg.MailReply
	)
	for {
		n, err := c.Read(chunk)
		if n == 0 && err != nil {
			return
		}
		now := time.Now()
		s.mu.Lock()
		s.bursts++
		burst := s.bursts
		// Early: replies were owed when the chunk arrived, or an earlier
		// command of the same chunk is unanswered.
		early := pending > 0
		s.mu.Unlock()
		buf = append(buf, chunk[:n]...)
		for {
			i := bytes.IndexByte(buf, '\n')
			if i < 0 {
				if len(buf) > scriptMaxLine {
					return
				}
				break
			}
			line := strings.TrimRight(string(buf[:i]), "\r")
			buf = buf[i+1:]
			if inData {
				if line == "." {
					inData = false
					s.mu.Lock()
					s.bodies = append(s.bodies, bytes.Clone(body.Bytes()))
					s.mu.Unlock()
					body.Reset()
					inMail, mailOK, accepted = false, false, 0
					queue(now, s.cfg.EndReply, false)
					early = true
					continue
				}
				if body.Len()+len(line) > scriptMaxBody {
					return
				}
				body.WriteString(strings.TrimPrefix(line, "."))
				body.WriteString("\r\n")
				continue
			}
			commands++
			if commands > 100000 {
				return
			}
			s.mu.Lock()
			s.cmds = append(s.cmds, ScriptCommand{Line: line, Burst: burst, Early: early})
			s.mu.Unlock()
			early = true
			verb, arg, _ := strings.Cut(line, " ")
			switch strings.ToUpper(verb) {
			case "EHLO":
				ext := "250-script.test\r\n250-8BITMIME\r\n250-SIZE 100000000\r\n"
				if s.cfg.Pipelining {
					ext += "250-PIPELINING\r\n"
				}
				queue(now, ext+"250 ENHANCEDSTATUSCODES", false)
			case "HELO", "NOOP":
				queue(now, "250 2.0.0 ok", false)
			case "RSET":
				inMail, mailOK, accepted = false, false, 0
				queue(now, "250 2.0.0 ok", false)
			case "MAIL":
				inMail, mailOK, accepted = true, strings.HasPrefix(mailReply, "2"), 0
				queue(now, mailReply, false)
			case "RCPT":
				if !inMail || !mailOK {
					queue(now, "503 5.5.1 no MAIL", false)
					continue
				}
				to, _ := strings.CutPrefix(arg, "TO:<")
				to, _, _ = strings.Cut(to, ">")
				r, ok := s.cfg.RcptReplies[to]
				if !ok {
					r = "250 2.1.5 ok"
				}
				if strings.HasPrefix(r, "2") {
					accepted++
				}
				queue(now, r, false)
			case "DATA":
				r := s.cfg.DataReply
				switch {
				case !inMail || !mailOK:
					r = "503 5.5.1 no MAIL"
				case accepted == 0:
					r = s.cfg.DataReplyNoRcpt
				}
				inData = strings.HasPrefix(r, "354")
				if !inData {
					inMail, mailOK, accepted = false, false, 0
				}
				queue(now, r, false)
			case "QUIT":
				queue(now, "221 2.0.0 bye", true)
				return
			default:
				queue(now, "502 5.5.2 not implemented", false)
			}
		}
		if err != nil {
			return
		}
	}
}
