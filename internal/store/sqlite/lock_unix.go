//go:build unix

package sqlite

import (
	"errors"
	"os"
	"syscall"
)

// lockDir opens the lock file and takes an exclusive lock on it if no other
// process holds it (exclusive is then true: the caller may collect orphans
// and must call shareLock afterwards); otherwise it waits for a shared lock.
// Every open Store holds at least a shared lock until it is closed, so
// orphan collection never removes a blob another process is writing.
func lockDir(path string) (exclusive bool, f *os.File, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return false, nil, err
	}
	fd := int(f.Fd())
	err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return true, f, nil
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		f.Close()
		return false, nil, err
	}
	for {
		err = syscall.Flock(fd, syscall.LOCK_SH)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		f.Close()
		return false, nil, err
	}
	return false, f, nil
}

// shareLock converts the exclusive lock taken by lockDir to a shared one.
func shareLock(f *os.File) error {
	return syscall.Flock(int(f.Fd()), syscall.LOCK_SH)
}
