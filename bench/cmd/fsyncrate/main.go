// Command fsyncrate measures how many durable writes per second the disk
// under a directory sustains: it appends a block to a file and fdatasyncs it,
// in a loop, for a fixed time. This bounds any MTA that syncs each message
// (group commit lets several messages share one sync).
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	dir := flag.String("dir", os.TempDir(), "directory on the disk to measure")
	dur := flag.Duration("duration", 2*time.Second, "how long to measure")
	size := flag.Int("size", 4096, "bytes written before each sync")
	flag.Parse()
	n, err := measure(*dir, *dur, *size)
	if err != nil {
		fmt.Fprintln(os.Stderr, "fsyncrate:", err)
		os.Exit(1)
	}
	fmt.Printf("%.0f\n", n)
}

// measure returns write+fdatasync operations per second.
func measure(dir string, dur time.Duration, size int) (float64, error) {
	f, err := os.CreateTemp(dir, "fsyncrate-*")
	if err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	defer os.Remove(filepath.Clean(f.Name()))
	defer f.Close()
	buf := make([]byte, size)
	start := time.Now()
	n := 0
	for time.Since(start) < dur {
		if _, err := f.Write(buf); err != nil {
			return 0, fmt.Errorf("write: %w", err)
		}
		if err := syscall.Fdatasync(int(f.Fd())); err != nil {
			return 0, fmt.Errorf("fdatasync: %w", err)
		}
		n++
	}
	return float64(n) / time.Since(start).Seconds(), nil
}
