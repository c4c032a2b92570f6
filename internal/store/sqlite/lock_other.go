//go:build !unix

package sqlite

import "os"

// lockDir has no inter-process lock on this platform: orphan collection is
// skipped, since another process might be writing a blob.
func lockDir(path string) (exclusive bool, f *os.File, err error) {
	f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	return false, f, err
}

func shareLock(*os.File) error { return nil }
