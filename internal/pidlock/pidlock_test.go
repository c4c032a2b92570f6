//go:build unix

package pidlock

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestMain lets the test binary act as a lock holder in a child process.
func TestMain(m *testing.M) {
	if path := os.Getenv("PIDLOCK_TEST_HOLD"); path != "" {
		l, err := Acquire(path)
		if err != nil {
			fmt.Println("error:", err)
			os.Exit(1)
		}
		fmt.Println("locked")
		// Hold until killed (or stdin closes).
		bufio.NewReader(os.Stdin).ReadString('\n')
		l.Release()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestAcquireRefusesSecondHolderAndNamesIt(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "herald.pid")
	l, err := Acquire(path)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("lock file holds %q, want our pid %d", b, os.Getpid())
	}
	// flock locks belong to the open file, so a second open in this
	// process is refused like another process would be.
	_, err = Acquire(path)
	var he *HeldError
	if !errors.As(err, &he) || he.PID != os.Getpid() || he.Path != path {
		t.Fatalf("second Acquire: %v, want HeldError naming pid %d", err, os.Getpid())
	}
	if err := l.Release(); err != nil {
		t.Fatal(err)
	}
	if err := l.Release(); err != nil {
		t.Errorf("second Release: %v", err)
	}
	if b, _ := os.ReadFile(path); len(b) != 0 {
		t.Errorf("released lock file still holds %q", b)
	}
	l2, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after Release: %v", err)
	}
	l2.Release()
}

// A holder killed with SIGKILL never blocks the next one: the kernel drops
// the flock, whatever stale pid the file still holds.
func TestKilledHolderDoesNotBlock(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "herald.pid")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "PIDLOCK_TEST_HOLD="+path)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "locked" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper said %q", line)
	}
	_, err = Acquire(path)
	var he *HeldError
	if !errors.As(err, &he) || he.PID != cmd.Process.Pid {
		t.Errorf("Acquire while the helper holds it: %v, want HeldError naming pid %d", err, cmd.Process.Pid)
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	l, err := Acquire(path)
	if err != nil {
		t.Fatalf("Acquire after the holder was killed: %v", err)
	}
	l.Release()
}

func TestAcquireReportsFilesystemErrors(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	// A path under a regular file fails even for root.
	_, err := Acquire(filepath.Join(file, "herald.pid"))
	var pe *fs.PathError
	if !errors.As(err, &pe) || !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("Acquire under a file: %v, want a PathError with ENOTDIR", err)
	}
}

// A symbolic link planted as the lock file is not followed: the target is
// never truncated.
func TestAcquireRefusesSymlink(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, "herald.pid")); err != nil {
		t.Fatal(err)
	}
	if _, err := Acquire(filepath.Join(dir, "herald.pid")); !errors.Is(err, syscall.ELOOP) {
		t.Errorf("Acquire through a symlink: %v, want ELOOP", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Errorf("symlink target now holds %q", b)
	}
}
