// Package diskguard refuses new mail while the data directory's disk is
// nearly full, and keeps a reserve so that the queue can always record
// deliveries and delete delivered mail.
package diskguard

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
)

// Guard refuses new mail while the data directory's filesystem has
// less than min bytes free (Postfix's queue_minfree). Without it a full
// disk would also block what frees space: SQLite needs room in its WAL to
// record outcomes and delete delivered messages.
//
// As a last resort it keeps a reserve file of min/2 (at most 32 MiB) in
// the data directory: if the disk fills anyway (several large messages at
// once), the queue releases it so outcomes can be recorded and delivered
// mail deleted, and the guard writes it again once space has returned.
type Guard struct {
	dir string
	min int64
	log *slog.Logger

	reserving atomic.Bool // a goroutine is writing the reserve file

	mu      sync.Mutex
	free    int64
	checked time.Time
}

// reservePath is the reserve file.
func (g *Guard) reservePath() string { return filepath.Join(g.dir, "reserve.space") }

func (g *Guard) reserveSize() int64 { return min(g.min/2, 32<<20) }

// EnsureReserve writes the reserve file if it is missing and there is room.
func (g *Guard) EnsureReserve() {
	if g == nil || g.min <= 0 {
		return
	}
	if !g.reserving.CompareAndSwap(false, true) {
		return
	}
	defer g.reserving.Store(false)
	p := g.reservePath()
	if fi, err := os.Stat(p); err == nil && fi.Size() == g.reserveSize() {
		return
	}
	f, err := os.Create(p)
	if err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	for n := int64(0); n < g.reserveSize(); n += int64(len(buf)) {
		if _, err := f.Write(buf[:min(int64(len(buf)), g.reserveSize()-n)]); err != nil {
			f.Close()
			os.Remove(p)
			return
		}
	}
	f.Sync()
	f.Close()
}

// Release deletes the reserve file so the store can write again.
func (g *Guard) Release() {
	if g == nil {
		return
	}
	if err := os.Remove(g.reservePath()); err == nil && g.log != nil {
		g.log.Error("disk full: released the reserve space so the queue can record deliveries; free space on " + g.dir)
	}
	g.mu.Lock()
	g.checked = time.Time{}
	g.mu.Unlock()
}

// Check returns 452 4.3.1 when accepting size more bytes would leave less
// than the minimum free. The free space is read at most every 20 ms.
func (g *Guard) Check(size int64) error {
	if g == nil || g.min <= 0 {
		return nil
	}
	g.mu.Lock()
	if time.Since(g.checked) > 20*time.Millisecond {
		var st syscall.Statfs_t
		if err := syscall.Statfs(g.dir, &st); err == nil {
			g.free = int64(st.Bavail) * int64(st.Bsize)
		} else {
			g.free = -1 // unknown: do not refuse
		}
		g.checked = time.Now()
		if g.free > 2*g.min {
			go g.EnsureReserve() // space is back: restore the reserve
		}
	}
	free := g.free
	g.mu.Unlock()
	if free >= 0 && free-size < g.min {
		e := smtp.ErrStorageFull
		return &e
	}
	return nil
}

// New returns a guard for the filesystem of dir refusing mail below min
// free bytes (0 disables it).
func New(dir string, min int64, log *slog.Logger) *Guard {
	return &Guard{dir: dir, min: min, log: log}
}

// Space returns the bytes available to unprivileged users and the total
// size of the filesystem holding dir (the alert rule disk_free and
// /metrics read it).
func Space(dir string) (free, total int64, err error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, 0, fmt.Errorf("diskguard: statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}
