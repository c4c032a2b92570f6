//go:build unix

package privdrop

import (
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// Drop switches the whole process (every thread, as Go does on Linux
// since 1.16) to a: supplementary groups, then group, then user. Root
// cannot be regained afterwards; Drop checks that.
func Drop(a Account) error {
	if err := syscall.Setgroups(a.Groups); err != nil {
		return fmt.Errorf("setting the groups of %s: %w", a.Name, err)
	}
	if err := syscall.Setgid(a.GID); err != nil {
		return fmt.Errorf("switching to group %d of %s: %w", a.GID, a.Name, err)
	}
	if err := syscall.Setuid(a.UID); err != nil {
		return fmt.Errorf("switching to user %s: %w", a.Name, err)
	}
	if syscall.Setuid(0) == nil {
		return fmt.Errorf("switching to user %s: root could be regained", a.Name)
	}
	if os.Geteuid() != a.UID || os.Getegid() != a.GID {
		return fmt.Errorf("switching to user %s: still uid %d gid %d", a.Name, os.Geteuid(), os.Getegid())
	}
	return nil
}

func owner(info fs.FileInfo) (uid, gid int, ok bool) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, 0, false
	}
	return int(st.Uid), int(st.Gid), true
}
