// Package backup takes a consistent copy of a Herald data directory while
// the server runs (herald backup), and brings one back (herald restore).
//
// A backup is a directory: herald.db, a snapshot of the SQLite database
// taken in one read transaction (VACUUM INTO); blobs/, the body file of
// every queued message of the snapshot whose body is not inline; every
// other file of the data directory (the Maildir mailboxes in mail/, the
// self-signed certificate in tls/, files of earlier versions); and
// manifest.json, written last, listing each file with its size and
// SHA-256, the schema version and the queue counts.
//
// The files are copied after the snapshot. A message that finishes
// (delivered, bounced or deleted) between the two loses its body file
// before it can be copied; such a message is dropped from the backup's
// database, since it was done with. Every other message of the snapshot
// is in the backup with its body, including ones that finish while the
// copy runs: those are delivered again after a restore (at least once,
// never lost). The same holds for local deliveries, which are copied
// after the snapshot.
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store/sqlite"
)

// FormatVersion is the version of the backup layout this package writes;
// Restore refuses a newer one.
const FormatVersion = 1

// ManifestName is the manifest's file name in a backup.
const ManifestName = "manifest.json"

// maxManifest bounds the manifest Restore reads (a backup may come from
// anywhere).
const maxManifest = 256 << 20

// ErrNotEmpty is wrapped by the errors for a backup destination, or a
// data directory to restore into, that is not empty.
var ErrNotEmpty = errors.New("directory is not empty")

// ErrDamaged is wrapped by the errors for a backup that fails its
// manifest's checks.
var ErrDamaged = errors.New("backup is damaged or incomplete")

// Manifest describes a backup.
type Manifest struct {
	Format  int       `json:"format"`         // FormatVersion of the writer
	Herald  string    `json:"herald_version"` // version of the herald that wrote it
	Created time.Time `json:"created"`        // when the snapshot was taken
	DataDir string    `json:"data_dir"`       // the data directory backed up
	Schema  int       `json:"schema_version"` // store schema version of herald.db

	Messages int `json:"messages"`           // queued messages in the backup
	Pending  int `json:"pending_recipients"` // their recipients still to deliver
	Blobs    int `json:"blobs"`              // body files in blobs/
	// Finished lists the messages of the snapshot that finished before
	// their body file was copied, dropped from the backup.
	Finished []string `json:"finished_during_backup,omitempty"`

	Dirs  []string `json:"dirs"`  // directories, slash-separated, relative
	Files []File   `json:"files"` // every file but the manifest
	Bytes int64    `json:"bytes"` // total size of Files
}

// File is one file of a backup.
type File struct {
	Path   string      `json:"path"` // slash-separated, relative to the backup
	Size   int64       `json:"size"`
	Mode   fs.FileMode `json:"mode"` // permission bits
	SHA256 string      `json:"sha256"`
}

// Options tune Backup.
type Options struct {
	// Version is the herald version recorded in the manifest.
	Version string
	// Logger receives a line per dropped message. Nil: slog.Default().
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	afterSnapshot func() // test hook: runs between the snapshot and the copies
}

// skipTop are the entries of a data directory that Backup does not copy
// as files: the database (snapshotted), its WAL and lock files, the
// server's pidlock, the blobs (copied per message of the snapshot), and
// the disk-full reserve file, which the server writes again at start.
var skipTop = map[string]bool{
	"herald.db": true, "herald.db-wal": true, "herald.db-shm": true, "herald.db-journal": true,
	"herald.lock": true, "herald.pid": true, "blobs": true, "reserve.space": true,
}

// Backup copies data directory dataDir into dest, a new or empty
// directory, and returns the manifest it wrote. It works while a server
// runs on dataDir (see the package comment for what a backup holds).
func Backup(ctx context.Context, dataDir, dest string, opts Options) (*Manifest, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	absData, err := filepath.Abs(dataDir)
	if err != nil {
		return nil, err
	}
	absDest, err := filepath.Abs(dest)
	if err != nil {
		return nil, err
	}
	if rel, err := filepath.Rel(absData, absDest); err == nil && filepath.IsLocal(rel) || absData == absDest {
		return nil, fmt.Errorf("backup: %s is inside the data directory %s", dest, dataDir)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "herald.db")); err != nil {
		return nil, fmt.Errorf("backup: no store in %s: %w", dataDir, err)
	}
	if err := newDir(dest); err != nil {
		return nil, err
	}
	m := &Manifest{Format: FormatVersion, Herald: opts.Version, DataDir: absData, Created: opts.Now().UTC()}
	w := &writer{root: dest}

	snap, err := sqlite.TakeSnapshot(ctx, dataDir, filepath.Join(dest, "herald.db"))
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := copyBlobs(ctx, snap, dataDir, w, m, opts); err != nil {
		snap.Close()
		return nil, err
	}
	if m.Messages, m.Pending, err = snap.Counts(ctx); err != nil {
		snap.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	m.Schema = snap.Schema()
	if err := snap.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := w.record("herald.db"); err != nil {
		return nil, err
	}
	if err := copyTree(ctx, dataDir, w); err != nil {
		return nil, err
	}
	m.Dirs, m.Files = w.dirs, w.files
	for _, f := range m.Files {
		m.Bytes += f.Size
	}
	if err := w.syncDirs(); err != nil {
		return nil, err
	}
	if err := writeManifest(dest, m); err != nil {
		return nil, err
	}
	return m, nil
}

// copyBlobs copies the body file of every blob message of the snapshot. A
// missing file whose message is gone from the live store belongs to a
// message that finished after the snapshot: it is dropped from the
// backup. A missing file of a message still queued is an error.
func copyBlobs(ctx context.Context, snap *sqlite.Snapshot, dataDir string, w *writer, m *Manifest, opts Options) error {
	if opts.afterSnapshot != nil {
		opts.afterSnapshot()
	}
	ids, err := snap.BlobMessages(ctx)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := w.mkdir("blobs", 0o700); err != nil {
		return err
	}
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := w.copyFile(filepath.Join(dataDir, "blobs", id), "blobs/"+id)
		if err == nil {
			m.Blobs++
			continue
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		live, lerr := snap.LiveHas(ctx, id)
		if lerr != nil {
			return fmt.Errorf("backup: %w", lerr)
		}
		if live {
			return fmt.Errorf("backup: message %s is queued but its body file %s is missing: the store is damaged", id, filepath.Join(dataDir, "blobs", id))
		}
		opts.Logger.Info("message finished during the backup, left out", "message", id)
		m.Finished = append(m.Finished, id)
	}
	if err := snap.Drop(ctx, m.Finished); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// copyTree copies every file of the data directory but those of skipTop,
// and the directories. Files that vanish during the walk are skipped; the
// contents of a Maildir's tmp/ (deliveries in progress) are left out.
func copyTree(ctx context.Context, dataDir string, w *writer) error {
	return filepath.WalkDir(dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return fmt.Errorf("backup: %w", err)
		}
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		rel, err := filepath.Rel(dataDir, path)
		if err != nil {
			return err
		}
		if rel == "." {
			return nil
		}
		rel = filepath.ToSlash(rel)
		top, _, nested := strings.Cut(rel, "/")
		if skipTop[top] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		info, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		switch {
		case d.IsDir():
			if err := w.mkdir(rel, info.Mode().Perm()); err != nil {
				return err
			}
			if top == "mail" && nested && d.Name() == "tmp" {
				return filepath.SkipDir
			}
			return nil
		case info.Mode().IsRegular():
			err := w.copyFile(path, rel)
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		return nil // sockets, symbolic links: not Herald's
	})
}

// writer writes the files of a backup, recording them for the manifest.
type writer struct {
	root  string
	dirs  []string
	files []File
}

// mkdir creates directory rel of the backup.
func (w *writer) mkdir(rel string, perm fs.FileMode) error {
	if err := os.Mkdir(filepath.Join(w.root, filepath.FromSlash(rel)), perm|0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	w.dirs = append(w.dirs, rel)
	return nil
}

// copyFile copies src to rel in the backup, fsynced, and records it. An
// src that does not exist gives an error wrapping fs.ErrNotExist and
// creates nothing.
func (w *writer) copyFile(src, rel string) error {
	in, err := os.Open(src)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return fmt.Errorf("backup: %w", err)
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f, err := writeFile(filepath.Join(w.root, filepath.FromSlash(rel)), info.Mode().Perm(), in)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f.Path = rel
	w.files = append(w.files, f)
	return nil
}

// record adds rel, already written, to the files.
func (w *writer) record(rel string) error {
	p := filepath.Join(w.root, filepath.FromSlash(rel))
	in, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer in.Close()
	info, err := in.Stat()
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(h, in)
	if err != nil {
		return fmt.Errorf("backup: read %s: %w", p, err)
	}
	w.files = append(w.files, File{Path: rel, Size: n, Mode: info.Mode().Perm(), SHA256: hex.EncodeToString(h.Sum(nil))})
	return nil
}

// syncDirs fsyncs every directory of the backup, deepest first, and the
// backup itself.
func (w *writer) syncDirs() error {
	dirs := slices.Clone(w.dirs)
	slices.Reverse(dirs)
	for _, d := range append(dirs, ".") {
		if err := syncDir(filepath.Join(w.root, filepath.FromSlash(d))); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
	}
	return nil
}

// writeFile creates path (which must not exist) with the bytes of r,
// fsynced, and returns its size, mode and checksum.
func writeFile(path string, perm fs.FileMode, r io.Reader) (File, error) {
	out, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return File{}, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), r)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return File{}, fmt.Errorf("write %s: %w", path, err)
	}
	return File{Size: n, Mode: perm, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

// writeManifest writes the manifest last, atomically: a backup without
// one is incomplete.
func writeManifest(dest string, m *Manifest) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("backup: manifest: %w", err)
	}
	tmp := filepath.Join(dest, ManifestName+".tmp")
	if _, err := writeFile(tmp, 0o600, strings.NewReader(string(b)+"\n")); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dest, ManifestName)); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := syncDir(dest); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}

// newDir makes dir if it does not exist, and refuses one that is not
// empty.
func newDir(dir string) error {
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		return syncDir(filepath.Dir(dir))
	case err != nil:
		return fmt.Errorf("backup: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("backup: %s: %w; back up into a new directory", dir, ErrNotEmpty)
	}
	return nil
}

// syncDir fsyncs a directory so that the entries made in it are durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
