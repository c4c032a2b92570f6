package diskguard_test

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/diskguard"
	"github.com/heraldmail/herald/internal/smtp"
)

// reserveFile is the reserve file's name in the data directory.
const reserveFile = "reserve.space"

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// mountTmpfs mounts a tmpfs of the given size ("8m") on a temporary
// directory, so that free space is exact and the test's own, or skips
// the test when that is not possible (not root).
//
// Tests using it do not run in parallel: running mount forks the test
// process, and a child forked while another test's reserve file is open
// holds that file's space after Release until it execs, so the space
// returns a moment later than Release (Herald itself never forks).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

// free returns the bytes available to unprivileged users on dir's filesystem.
func free(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * int64(st.Bsize)
}

// reserveSize returns the size of the reserve file in dir, -1 if missing.
func reserveSize(t *testing.T, dir string) int64 {
	t.Helper()
	fi, err := os.Stat(filepath.Join(dir, reserveFile))
	if os.IsNotExist(err) {
		return -1
	}
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// waitReserve waits (polling, bounded) until the reserve file has size.
func waitReserve(t *testing.T, dir string, size int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for reserveSize(t, dir) != size {
		if time.Now().After(deadline) {
			t.Fatalf("reserve file is %d bytes, want %d", reserveSize(t, dir), size)
		}
		time.Sleep(time.Millisecond)
	}
}

func wantFull(t *testing.T, err error) {
	t.Helper()
	e, ok := smtp.AsError(err)
	if !ok || e.Code != 452 || e.Enhanced != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("got %v, want 452 4.3.1", err)
	}
}

// A minimum of 0 disables the guard: nothing is refused and no reserve
// is written. A nil guard does nothing either.
func TestDisabled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g := diskguard.New(dir, 0, discard())
	if err := g.Check(1 << 62); err != nil {
		t.Errorf("disabled guard refused: %v", err)
	}
	g.EnsureReserve()
	if n := reserveSize(t, dir); n != -1 {
		t.Errorf("disabled guard wrote a %d-byte reserve", n)
	}
	var none *diskguard.Guard
	if err := none.Check(1 << 62); err != nil {
		t.Errorf("nil guard refused: %v", err)
	}
	none.EnsureReserve()
	none.Release()
}

// On an ordinary disk (free space read with statfs, with margins wide
// enough for other writers): mail fitting above the minimum passes, a
// minimum above the free space or a size beyond it is refused.
func TestCheckOrdinaryDisk(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	avail := free(t, dir)
	if avail < 64<<20 {
		t.Skipf("only %d bytes free", avail)
	}
	// A minimum of 60 % of the free space leaves room for 1 MiB, and
	// keeps the guard from writing its reserve in the background (it does
	// above twice the minimum), which would race with the clean-up.
	g := diskguard.New(dir, avail/5*3, discard())
	if err := g.Check(1 << 20); err != nil {
		t.Errorf("1 MiB with %d MiB free and a %d MiB minimum: %v", avail>>20, avail/5*3>>20, err)
	}
	wantFull(t, g.Check(avail+1<<30))
	wantFull(t, diskguard.New(dir, avail+1<<30, discard()).Check(0))
	if n := reserveSize(t, dir); n != -1 {
		t.Errorf("Check wrote a %d-byte reserve with less than twice the minimum free", n)
	}
}

// The boundary, on a filesystem of the test's own: accepting size is
// refused exactly when free space minus size would fall below the minimum.
func TestCheckBoundary(t *testing.T) {
	// 8 MiB with a 4 MiB minimum: 6 MiB free beside the 2 MiB reserve, not
	// enough for Check to (re)write the reserve in the background.
	dir := mountTmpfs(t, "8m")
	const min = 4 << 20
	g := diskguard.New(dir, min, discard())
	g.EnsureReserve()
	if n := reserveSize(t, dir); n != min/2 {
		t.Fatalf("reserve file of %d bytes, want %d (min/2)", n, min/2)
	}
	avail := free(t, dir)
	if err := g.Check(avail - min); err != nil {
		t.Errorf("leaving exactly the minimum free refused: %v", err)
	}
	wantFull(t, g.Check(avail-min+1))
	if err := g.Check(0); err != nil {
		t.Errorf("an empty message refused with %d bytes free: %v", avail, err)
	}
}

// Release deletes the reserve and takes effect at once: the space it
// held counts for the next Check. Once more than twice the minimum is
// free, the guard writes the reserve again by itself.
func TestReleaseAndRestore(t *testing.T) {
	// 9 MiB with a 4 MiB minimum: 7 MiB free beside the 2 MiB reserve, so
	// Check does not start restoring it (that needs more than 8 MiB) until
	// it was released.
	dir := mountTmpfs(t, "9m")
	const min = 4 << 20
	g := diskguard.New(dir, min, discard())
	g.EnsureReserve()
	if n := reserveSize(t, dir); n != min/2 {
		t.Fatalf("reserve file of %d bytes, want %d", n, min/2)
	}
	size := free(t, dir) - min + 1 // one byte too many with the reserve in place
	wantFull(t, g.Check(size))
	g.Release()
	if n := reserveSize(t, dir); n != -1 {
		t.Fatalf("reserve still there after Release (%d bytes)", n)
	}
	if err := g.Check(size); err != nil {
		t.Errorf("the released reserve did not count: %v", err)
	}
	// That Check saw 9 MiB free: the reserve comes back.
	waitReserve(t, dir, min/2)
}

// The reserve is min/2, at most 32 MiB, and a file of another size (an
// older minimum) is rewritten.
func TestReserveSize(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, reserveFile), []byte("left over"), 0o600); err != nil {
		t.Fatal(err)
	}
	diskguard.New(dir, 3<<20, discard()).EnsureReserve()
	if n := reserveSize(t, dir); n != 3<<19 {
		t.Errorf("reserve of %d bytes for a 3 MiB minimum, want %d", n, 3<<19)
	}

	big := mountTmpfs(t, "40m")
	g := diskguard.New(big, 1<<40, discard())
	g.EnsureReserve()
	if n := reserveSize(t, big); n != 32<<20 {
		t.Errorf("reserve of %d bytes for a 1 TiB minimum, want the 32 MiB cap", n)
	}
	wantFull(t, g.Check(0))
}

// On a full disk new mail is refused, a reserve that does not fit leaves
// no partial file behind, and mail is accepted again, with the reserve
// restored, once space returns.
func TestFullDisk(t *testing.T) {
	dir := mountTmpfs(t, "8m")
	const min = 2 << 20
	filler := filepath.Join(dir, "filler")
	if err := os.WriteFile(filler, make([]byte, 7<<20+512<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	if avail := free(t, dir); avail >= min/2 {
		t.Fatalf("%d bytes still free: the filler did not fill the disk", avail)
	}
	g := diskguard.New(dir, min, discard())
	g.EnsureReserve()
	if n := reserveSize(t, dir); n != -1 {
		t.Errorf("a reserve that cannot fit left a %d-byte file", n)
	}
	wantFull(t, g.Check(0))

	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.Check(1<<20) != nil { // the free space is re-read at most every 20 ms
		if time.Now().After(deadline) {
			t.Fatalf("still refused with %d bytes free: %v", free(t, dir), g.Check(1<<20))
		}
		time.Sleep(time.Millisecond)
	}
	waitReserve(t, dir, min/2)
}

func TestSpace(t *testing.T) {
	free, total, err := diskguard.Space(t.TempDir())
	if err != nil || total <= 0 || free < 0 || free > total {
		t.Fatalf("Space = %d, %d, %v", free, total, err)
	}
	if _, _, err := diskguard.Space(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Space of a missing directory succeeded")
	}
}
