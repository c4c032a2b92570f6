// Package pidlock keeps a directory to one process: Acquire takes an
// exclusive lock on a file in it and writes the holder's process ID there,
// so that a second process is refused with a message naming the first.
//
// On Unix the lock is flock(2), which the kernel drops when the process
// ends however it ends: a crashed or killed holder never blocks a restart,
// and a stale PID in the file means nothing. The file is never removed (an
// unlink between another process's open and flock would let two processes
// lock two different files); Release empties it.
package pidlock

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
)

// Lock is a held lock. Release it when done.
type Lock struct {
	f    *os.File
	path string
}

// HeldError is returned by Acquire when another process holds the lock.
type HeldError struct {
	Path string // the lock file
	PID  int    // the holder's process ID; 0 if it had not written it yet
}

// Error names the lock file and the holder.
func (e *HeldError) Error() string {
	if e.PID == 0 {
		return fmt.Sprintf("pidlock: %s is locked by another process", e.Path)
	}
	return fmt.Sprintf("pidlock: %s is locked by process %d", e.Path, e.PID)
}

// Path returns the lock file's path.
func (l *Lock) Path() string { return l.path }

// Release empties the file and drops the lock. It is safe to call on a nil
// Lock and more than once.
func (l *Lock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	terr := l.f.Truncate(0)
	uerr := unlock(l.f)
	cerr := l.f.Close()
	l.f = nil
	if cerr != nil {
		return fmt.Errorf("pidlock: release %s: %w", l.path, cerr)
	}
	if terr != nil {
		return fmt.Errorf("pidlock: release %s: %w", l.path, terr)
	}
	if uerr != nil {
		return fmt.Errorf("pidlock: release %s: %w", l.path, uerr)
	}
	return nil
}

// writePID replaces the file's content with this process's ID.
func writePID(f *os.File) error {
	if err := f.Truncate(0); err != nil {
		return err
	}
	if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
		return err
	}
	return nil
}

// readPID returns the process ID written in f, or 0.
func readPID(f *os.File) int {
	var b [32]byte
	n, _ := f.ReadAt(b[:], 0)
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:n])))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}
