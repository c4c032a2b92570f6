// Package privdrop lets a server started as root give up root once its
// privileged ports are bound: it looks up the unprivileged account, hands
// it the data directory, and switches every thread of the process to it.
package privdrop

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// DefaultUser is the account Herald switches to when started as root and
// server.user is not set; the Debian package creates it.
const DefaultUser = "herald"

// Account is the unprivileged user the process runs as after Drop.
type Account struct {
	Name   string
	UID    int
	GID    int
	Groups []int // supplementary groups
}

// ErrNoUser reports that the named account does not exist.
var ErrNoUser = errors.New("no such user")

// Lookup finds the account called name in the system's user database.
func Lookup(name string) (Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		var unknown user.UnknownUserError
		if errors.As(err, &unknown) {
			return Account{}, fmt.Errorf("user %q: %w", name, ErrNoUser)
		}
		return Account{}, fmt.Errorf("user %q: %w", name, err)
	}
	a := Account{Name: name}
	if a.UID, err = strconv.Atoi(u.Uid); err != nil {
		return Account{}, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	if a.GID, err = strconv.Atoi(u.Gid); err != nil {
		return Account{}, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	gids, err := u.GroupIds()
	if err == nil {
		for _, g := range gids {
			if n, err := strconv.Atoi(g); err == nil && n != a.GID {
				a.Groups = append(a.Groups, n)
			}
		}
	}
	return a, nil
}

// Plan decides whom a process running with effective user euid should
// become. configured is server.user ("" when not set). It returns nil
// when nothing is to change: the process is not root, or it is root, the
// user is not configured and DefaultUser does not exist (warn is then a
// sentence for the log); or an error when a configured user is missing.
// Setting server.user = "root" keeps root deliberately.
func Plan(euid int, configured string) (acct *Account, warn string, err error) {
	if euid != 0 || configured == "root" {
		return nil, "", nil
	}
	name := configured
	if name == "" {
		name = DefaultUser
	}
	a, err := Lookup(name)
	if err != nil {
		if configured == "" && errors.Is(err, ErrNoUser) {
			return nil, "running as root: there is no user " + DefaultUser +
				" to switch to once the ports are bound (create it: useradd --system --home-dir /var/lib/herald herald; or set server.user)", nil
		}
		return nil, "", err
	}
	if a.UID == 0 {
		return nil, "", fmt.Errorf("user %q has uid 0: server.user must be an unprivileged user (or \"root\" to stay root)", name)
	}
	return &a, "", nil
}

// Chown gives a what root created in dir, without following symbolic
// links, so that after Drop it can write the store, the spool and the
// mailboxes: dir itself and every entry directly in it, and the whole of
// any subdirectory a does not own. A subdirectory a already owns is not
// descended into (what is inside was written by a), so that a data
// directory with millions of delivered messages costs a few stats.
func Chown(dir string, a Account) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile
			}
			return err
		}
		if uid, gid, ok := owner(info); ok && uid == a.UID && gid == a.GID {
			if d.IsDir() && path != dir {
				return fs.SkipDir
			}
			return nil
		}
		if err := os.Lchown(path, a.UID, a.GID); err != nil {
			return fmt.Errorf("handing %s to %s: %w", path, a.Name, err)
		}
		return nil
	})
}
