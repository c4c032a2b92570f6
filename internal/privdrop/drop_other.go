//go:build !unix

package privdrop

import (
	"errors"
	"io/fs"
)

// Drop is not available on this platform.
func Drop(a Account) error {
	return errors.New("switching users is not supported on this platform")
}

func owner(fs.FileInfo) (uid, gid int, ok bool) { return 0, 0, false }
