//go:build unix

package pidlock

import (
	"errors"
	"io/fs"
	"os"
	"syscall"
)

// Acquire opens (creating it with mode 0644) the file at path and locks it
// exclusively without waiting. If another process holds it, the error is a
// *HeldError naming that process. Filesystem errors are *fs.PathError
// values carrying the errno (permission denied, read-only file system...).
// A symbolic link at path is refused (ELOOP): the file is truncated, and a
// link planted in the directory must not make a root process truncate
// another file.
func Acquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if errors.Is(err, syscall.EWOULDBLOCK) {
		pid := readPID(f)
		f.Close()
		return nil, &HeldError{Path: path, PID: pid}
	}
	if err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "flock", Path: path, Err: err}
	}
	if err := writePID(f); err != nil {
		f.Close()
		return nil, &fs.PathError{Op: "write", Path: path, Err: unwrapPath(err)}
	}
	return &Lock{f: f, path: path}, nil
}

// unwrapPath returns the errno inside a *fs.PathError, so that the error
// returned names the lock file once.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// unlock drops the flock explicitly. Closing the file is not enough while
// a child process forked at that moment (os/exec, before its exec closes
// the inherited descriptors) still shares the open file description.
func unlock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
}
