// Package logfile is an append-only log file that can be reopened in place,
// so that logrotate can rename it and Herald starts a new one on SIGHUP
// without a restart and without losing a line.
package logfile

import (
	"fmt"
	"os"
	"sync"
)

// File is an io.Writer appending to a named file. It is safe for
// concurrent use; Reopen swaps the underlying file between two writes.
type File struct {
	path string
	mode os.FileMode

	mu sync.Mutex
	f  *os.File
}

// Open opens (creating with mode if needed) path for appending.
func Open(path string, mode os.FileMode) (*File, error) {
	f, err := openAppend(path, mode)
	if err != nil {
		return nil, err
	}
	return &File{path: path, mode: mode, f: f}, nil
}

func openAppend(path string, mode os.FileMode) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, mode)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// Write appends p to the current file.
func (l *File) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

// Reopen opens the path again and writes to the new file from then on;
// the old one is closed. After a rename by logrotate this creates a fresh
// file at the path. If the path cannot be opened, the old file is kept and
// the error returned: logging carries on where it was.
func (l *File) Reopen() error {
	nf, err := openAppend(l.path, l.mode)
	if err != nil {
		return err
	}
	l.mu.Lock()
	old := l.f
	l.f = nf
	l.mu.Unlock()
	return old.Close()
}

// Path is the file's name.
func (l *File) Path() string { return l.path }

// Close closes the current file.
func (l *File) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}
