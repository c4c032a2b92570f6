//go:build !unix

package pidlock

import (
	"errors"
	"io/fs"
	"os"
)

// Acquire writes this process's ID to the file at path. This platform has
// no flock: the file is informational and a second process is not refused.
func Acquire(path string) (*Lock, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := writePID(f); err != nil {
		f.Close()
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, &fs.PathError{Op: "write", Path: path, Err: err}
	}
	return &Lock{f: f, path: path}, nil
}

// unlock has nothing to drop on this platform.
func unlock(*os.File) error { return nil }
