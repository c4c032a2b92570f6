package e2e

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/testutil/testdns"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// heraldBinary builds cmd/herald once per test run.
func heraldBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "herald-e2e-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "herald")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/herald").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a herald serve process.
type proc struct {
	cmd *exec.Cmd
	log *os.File
}

func startProc(t *testing.T, bin, cfgPath, logPath string) *proc {
	t.Helper()
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "serve", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return &proc{cmd: cmd, log: lf}
}

func (p *proc) kill9() {
	p.cmd.Process.Signal(syscall.SIGKILL)
	p.cmd.Wait()
	p.log.Close()
}

func (p *proc) term(t *testing.T) {
	p.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("herald exited after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		t.Error("herald did not stop within 20s of SIGTERM")
	}
	p.log.Close()
}

// waitListening waits until addr accepts connections.
func waitListening(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var tokenRe = regexp.MustCompile(`X-Token: (\S+)`)

// Kill -9 while clients submit, restart, repeat: every message that got a
// 250 is delivered at least once; duplicates are reported.
func TestCrashKill9LosesNothing(t *testing.T) {
	t.Parallel()
	bin := heraldBinary(t)
	dns := testdns.Start(t)
	ip := nextMXIP()
	sink := testmx.Start(t, ip+":25", testmx.Config{})
	dns.AddMX("remote.test", "mx.remote.test", 10)
	dns.AddA("mx.remote.test", ip)

	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := filepath.Join(dir, "herald.toml")
	cfg := fmt.Sprintf(`[server]
hostname = "crash.herald.test"
data_dir = %q
shutdown_timeout = "2s"
[smtp]
listen = [%q]
[submission]
listen = []
[submissions]
listen = []
[http]
listen = []
[relay]
allow = ["127.0.0.0/8"]
[limits]
# The kill lands 50-300 ms after the start: no pregreet wait.
pregreet_wait = "0"
[dns]
resolver = %q
[queue]
retry_initial = "100ms"
retry_max = "200ms"
poll_interval = "20ms"
[delivery]
port = 25
[alerts]
# Alert mail would join the messages the test counts.
enabled = false
`, filepath.Join(dir, "data"), smtpAddr, dns.Addr())
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	logPath := filepath.Join(dir, "herald.log")

	var (
		mu    sync.Mutex
		acked = map[string]bool{}
	)
	cycles := 20
	if v, err := strconv.Atoi(os.Getenv("HERALD_CRASH_CYCLES")); err == nil && v > 0 {
		cycles = v
	}
	for cycle := range cycles {
		p := startProc(t, bin, cfgPath, logPath)
		waitListening(t, smtpAddr)
		stop := make(chan struct{})
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conn, err := net.DialTimeout("tcp", smtpAddr, 2*time.Second)
				if err != nil {
					return
				}
				defer conn.Close()
				sc := newRawSession(conn)
				if !sc.expect(220) || !sc.cmd("EHLO load.test", 250) {
					return
				}
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					tok := fmt.Sprintf("c%d-w%d-m%d", cycle, w, i)
					if !sc.cmd("MAIL FROM:<load@load.test>", 250) || !sc.cmd("RCPT TO:<sink@remote.test>", 250) || !sc.cmd("DATA", 354) {
						return
					}
					if !sc.cmd("Subject: crash\r\nX-Token: "+tok+"\r\n\r\nbody\r\n.", 250) {
						return // killed before the 250: not acknowledged
					}
					mu.Lock()
					acked[tok] = true
					mu.Unlock()
				}
			}()
		}
		time.Sleep(time.Duration(50+rand.IntN(250)) * time.Millisecond) // the kill lands at a random moment
		p.kill9()
		close(stop)
		wg.Wait()
	}
	// Final start: everything acknowledged must come out.
	p := startProc(t, bin, cfgPath, logPath)
	defer p.term(t)
	// The listener is bound before the SIGTERM handler is installed; a
	// greeting means Run is going, so the final SIGTERM is handled.
	waitGreeting(t, smtpAddr)
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	if want == 0 {
		t.Fatal("no message was acknowledged: the load did not run")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		got := map[string]int{}
		for _, m := range sink.Messages() {
			if mm := tokenRe.FindSubmatch(m.Body); mm != nil {
				got[string(mm[1])]++
			}
		}
		missing := 0
		for tok := range acked {
			if got[tok] == 0 {
				missing++
			}
		}
		if missing == 0 {
			dups := 0
			for _, n := range got {
				if n > 1 {
					dups += n - 1
				}
			}
			t.Logf("%d cycles: %d messages acknowledged, all delivered; %d duplicates (in flight at a kill)", cycles, want, dups)
			return
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logPath)
			t.Fatalf("%d of %d acknowledged messages never delivered\nlog tail:\n%s", missing, want, tail(string(b), 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitGreeting waits until a session on addr gets its 220.
func waitGreeting(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			ok := newRawSession(c).expect(220)
			c.Close()
			if ok {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not greet", addr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// rawSession is a tolerant client for load loops: any error just ends it.
type rawSession struct {
	conn net.Conn
	buf  []byte
}

func newRawSession(c net.Conn) *rawSession { return &rawSession{conn: c} }

func (s *rawSession) cmd(line string, want int) bool {
	s.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := s.conn.Write([]byte(line + "\r\n")); err != nil {
		return false
	}
	return s.expect(want)
}

// expect reads one reply (multi-line aware) and checks its code.
func (s *rawSession) expect(want int) bool {
	s.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	tmp := make([]byte, 4096)
	for {
		// A complete reply ends with a line "NNN text\r\n" (space after code).
		for {
			i := strings.Index(string(s.buf), "\r\n")
			if i < 0 {
				break
			}
			line := string(s.buf[:i])
			s.buf = s.buf[i+2:]
			if len(line) >= 4 && line[3] == '-' {
				continue
			}
			return len(line) >= 3 && line[:3] == fmt.Sprint(want)
		}
		n, err := s.conn.Read(tmp)
		if err != nil {
			return false
		}
		s.buf = append(s.buf, tmp[:n]...)
	}
}
