package privdrop

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestPlan(t *testing.T) {
	if a, warn, err := Plan(1000, ""); a != nil || warn != "" || err != nil {
		t.Errorf("not root: Plan = %v, %q, %v; want nothing to do", a, warn, err)
	}
	if a, warn, err := Plan(1000, "nobody"); a != nil || warn != "" || err != nil {
		t.Errorf("not root, user set: Plan = %v, %q, %v; want nothing to do", a, warn, err)
	}
	if a, warn, err := Plan(0, "root"); a != nil || warn != "" || err != nil {
		t.Errorf("root kept on purpose: Plan = %v, %q, %v", a, warn, err)
	}
	b, _, err := Plan(0, "nobody")
	if err != nil || b == nil || b.Name != "nobody" || b.UID == 0 {
		t.Fatalf("Plan(root, nobody) = %+v, %v", b, err)
	}
	if _, _, err := Plan(0, "no-such-herald-user"); !errors.Is(err, ErrNoUser) {
		t.Errorf("a configured user that does not exist: err = %v, want ErrNoUser", err)
	}
	// The default user: switched to where it exists, a warning where not.
	a, warn, err := Plan(0, "")
	if _, lerr := Lookup(DefaultUser); errors.Is(lerr, ErrNoUser) {
		if a != nil || err != nil || warn == "" {
			t.Errorf("no %s user: Plan = %v, %q, %v; want a warning", DefaultUser, a, warn, err)
		}
	} else if a == nil || a.Name != DefaultUser || err != nil {
		t.Errorf("%s user exists: Plan = %v, %q, %v", DefaultUser, a, warn, err)
	}
}

// Chown hands over the tree, including what root created, but follows no
// symbolic link out of it.
func TestChown(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to change owners")
	}
	nobody, err := Lookup("nobody")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "outside")
	must(t, os.WriteFile(outside, []byte("x"), 0o600))
	must(t, os.MkdirAll(filepath.Join(dir, "mail", "example.com", "new"), 0o750))
	must(t, os.WriteFile(filepath.Join(dir, "herald.db"), nil, 0o640))
	must(t, os.WriteFile(filepath.Join(dir, "mail", "example.com", "new", "1"), nil, 0o640))
	must(t, os.Symlink(outside, filepath.Join(dir, "link")))
	// A directory nobody owns already is not descended into.
	owned := filepath.Join(dir, "owned")
	must(t, os.Mkdir(owned, 0o750))
	must(t, os.WriteFile(filepath.Join(owned, "inside"), nil, 0o640))
	must(t, os.Chown(owned, nobody.UID, nobody.GID))
	if err := Chown(dir, nobody); err != nil {
		t.Fatal(err)
	}
	var in syscall.Stat_t
	must(t, syscall.Lstat(filepath.Join(owned, "inside"), &in))
	if in.Uid != 0 {
		t.Errorf("a directory the user owns was descended into")
	}
	for _, p := range []string{"", "herald.db", "mail", "mail/example.com/new", "mail/example.com/new/1", "link"} {
		var st syscall.Stat_t
		must(t, syscall.Lstat(filepath.Join(dir, p), &st))
		if int(st.Uid) != nobody.UID || int(st.Gid) != nobody.GID {
			t.Errorf("%s: owner %d:%d, want %d:%d", p, st.Uid, st.Gid, nobody.UID, nobody.GID)
		}
	}
	var st syscall.Stat_t
	must(t, syscall.Stat(outside, &st))
	if st.Uid != 0 {
		t.Errorf("the symbolic link's target outside the tree was handed over too")
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
