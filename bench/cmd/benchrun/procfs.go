package main

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/PID/stat (100 on Linux).
const clkTck = 100

// procStat holds the fields of /proc/PID/stat the harness uses.
type procStat struct {
	ppid           int
	utime, stime   uint64
	cutime, cstime uint64
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, false
	}
	// The command name is in parentheses and may contain spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0]=state f[1]=ppid ... f[11]=utime f[12]=stime f[13]=cutime f[14]=cstime
	if len(f) < 15 {
		return procStat{}, false
	}
	var s procStat
	s.ppid, _ = strconv.Atoi(f[1])
	s.utime, _ = strconv.ParseUint(f[11], 10, 64)
	s.stime, _ = strconv.ParseUint(f[12], 10, 64)
	s.cutime, _ = strconv.ParseUint(f[13], 10, 64)
	s.cstime, _ = strconv.ParseUint(f[14], 10, 64)
	return s, true
}

// children returns the PIDs whose parent is ppid.
func children(ppid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if s, ok := readStat(pid); ok && s.ppid == ppid {
			out = append(out, pid)
		}
	}
	return out
}

// treeCPU returns the CPU seconds used by root and its children: root's own
// time, the time of children it has reaped (cutime+cstime: Postfix daemons
// exit after max_use/max_idle), and the time of the children still alive.
func treeCPU(root int) float64 {
	s, ok := readStat(root)
	if !ok {
		return 0
	}
	t := s.utime + s.stime + s.cutime + s.cstime
	for _, c := range children(root) {
		if cs, ok := readStat(c); ok {
			t += cs.utime + cs.stime
		}
	}
	return float64(t) / clkTck
}

// cpuOf returns the CPU seconds of every process tree of m.
func cpuOf(m MTA) float64 {
	var t float64
	for _, p := range m.Pids() {
		t += treeCPU(p)
	}
	return t
}

// memOf returns the memory (PSS) of every process tree of m in bytes.
func memOf(m MTA) int64 {
	var t int64
	for _, p := range m.Pids() {
		t += treeMem(p)
	}
	return t
}

// cpuSample is the CPU seconds of a set of processes at one moment.
type cpuSample map[int]float64

// sampleCPU reads the CPU seconds of each of pids (its own, not its
// children's).
func sampleCPU(pids []int) cpuSample {
	out := cpuSample{}
	for _, p := range pids {
		if s, ok := readStat(p); ok {
			out[p] = float64(s.utime+s.stime) / clkTck
		}
	}
	return out
}

// since returns the CPU seconds the processes of s used after before (a
// process not in before counts from zero; one gone since is lost).
func (s cpuSample) since(before cpuSample) float64 {
	var t float64
	for p, v := range s {
		t += v - before[p]
	}
	return t
}

// pss returns the proportional set size of pid in bytes (Pss from
// smaps_rollup; it equals RSS for a single process and does not count shared
// library pages several times for a multi-process MTA), falling back to VmRSS.
func pss(pid int) int64 {
	if b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "smaps_rollup")); err == nil {
		if v, ok := kbField(b, "Pss:"); ok {
			return v
		}
	}
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0
	}
	v, _ := kbField(b, "VmRSS:")
	return v
}

func kbField(b []byte, name string) (int64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, name) {
			f := strings.Fields(l[len(name):])
			if len(f) == 0 {
				return 0, false
			}
			v, err := strconv.ParseInt(f[0], 10, 64)
			return v * 1024, err == nil
		}
	}
	return 0, false
}

// treeMem returns the memory (PSS) of root and its children in bytes.
func treeMem(root int) int64 {
	m := pss(root)
	for _, c := range children(root) {
		m += pss(c)
	}
	return m
}

// memSampler samples memOf every interval and keeps the peak.
type memSampler struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex
	peak int64
}

func sampleMem(mta MTA, every time.Duration) *memSampler {
	m := &memSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			if v := memOf(mta); v > 0 {
				m.mu.Lock()
				m.peak = max(m.peak, v)
				m.mu.Unlock()
			}
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
		}
	}()
	return m
}

// Stop ends sampling and returns the peak in bytes.
func (m *memSampler) Stop() int64 {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}
