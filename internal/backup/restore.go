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
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// RestoreOptions tune Restore.
type RestoreOptions struct {
	// Force empties a data directory that is not empty first.
	Force bool
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Restored is what Restore did.
type Restored struct {
	Manifest *Manifest
	Released int64 // recipient leases cleared
	Removed  int   // entries of the data directory removed (Force)
}

// keepTop are the entries of a data directory that Restore leaves: the
// lock files, which it holds.
var keepTop = map[string]bool{"herald.pid": true, "herald.lock": true}

// Verify reads the manifest of the backup in src and checks every file it
// lists: present, of its size and checksum. It refuses a backup of a newer
// format or store schema than this program's.
func Verify(src string) (*Manifest, error) {
	m, err := readManifest(src)
	if err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if err := checkFile(filepath.Join(src, filepath.FromSlash(f.Path)), f); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// readManifest reads and checks the manifest of src: version, schema and
// paths (all local, herald.db among them).
func readManifest(src string) (*Manifest, error) {
	f, err := os.Open(filepath.Join(src, ManifestName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("restore: %s has no %s: %w (not a backup, or one that did not finish)", src, ManifestName, ErrDamaged)
	}
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer f.Close()
	var m Manifest
	dec := json.NewDecoder(io.LimitReader(f, maxManifest))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("restore: %s: %w: %w", ManifestName, ErrDamaged, err)
	}
	if m.Format < 1 || m.Format > FormatVersion {
		return nil, fmt.Errorf("restore: backup format %d is not one this herald reads (%d); restore it with the herald that wrote it (%s) or a newer one", m.Format, FormatVersion, m.Herald)
	}
	if m.Schema > sqlite.SchemaVersion() {
		return nil, fmt.Errorf("restore: the backup's store has schema version %d, newer than this herald's (%d); restore it with herald %s or newer", m.Schema, sqlite.SchemaVersion(), m.Herald)
	}
	for _, d := range m.Dirs {
		if !localPath(d) {
			return nil, fmt.Errorf("restore: %s: directory %q: %w", ManifestName, d, ErrDamaged)
		}
	}
	db := false
	seen := make(map[string]bool, len(m.Files))
	for _, f := range m.Files {
		if !localPath(f.Path) || f.Path == ManifestName || seen[f.Path] || len(f.SHA256) != sha256.Size*2 || f.Size < 0 {
			return nil, fmt.Errorf("restore: %s: file %q: %w", ManifestName, f.Path, ErrDamaged)
		}
		if dir := path.Dir(f.Path); dir != "." && !slices.Contains(m.Dirs, dir) {
			return nil, fmt.Errorf("restore: %s: file %q outside the listed directories: %w", ManifestName, f.Path, ErrDamaged)
		}
		seen[f.Path] = true
		db = db || f.Path == "herald.db"
	}
	if !db {
		return nil, fmt.Errorf("restore: %s lists no herald.db: %w", ManifestName, ErrDamaged)
	}
	return &m, nil
}

// localPath reports whether p is a clean, slash-separated path inside the
// backup, naming none of the lock files.
func localPath(p string) bool {
	top, _, _ := strings.Cut(p, "/")
	return p != "" && path.Clean(p) == p && filepath.IsLocal(filepath.FromSlash(p)) && !strings.Contains(p, `\`) && !keepTop[top]
}

// checkFile checks that path has f's size and checksum.
func checkFile(p string, f File) error {
	in, err := os.Open(p)
	if err != nil {
		return fmt.Errorf("restore: %w: %w", ErrDamaged, err)
	}
	defer in.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(in, f.Size+1))
	if err != nil {
		return fmt.Errorf("restore: read %s: %w", p, err)
	}
	if n != f.Size || hex.EncodeToString(h.Sum(nil)) != f.SHA256 {
		return fmt.Errorf("restore: %s does not match the manifest (size or SHA-256): %w", p, ErrDamaged)
	}
	return nil
}

// Restore brings the backup in src back into data directory dataDir. It
// verifies the backup before touching dataDir; it refuses while a server
// holds dataDir (a *pidlock.HeldError), and refuses a dataDir that is not
// empty unless opts.Force. The restored queue's leases are released and
// its recipients made due, so that the next server delivers them.
func Restore(ctx context.Context, src, dataDir string, opts RestoreOptions) (*Restored, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := apart(src, dataDir); err != nil {
		return nil, err
	}
	m, err := Verify(src)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o750); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	lock, err := pidlock.Acquire(filepath.Join(dataDir, "herald.pid"))
	if err != nil {
		var held *pidlock.HeldError
		if errors.As(err, &held) {
			return nil, fmt.Errorf("restore: a server runs on %s: stop it first: %w", dataDir, err)
		}
		return nil, fmt.Errorf("restore: lock %s: %w", dataDir, err)
	}
	defer lock.Release()
	res := &Restored{Manifest: m}
	entries, err := os.ReadDir(dataDir)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	var present []string
	for _, e := range entries {
		if !keepTop[e.Name()] {
			present = append(present, e.Name())
		}
	}
	if len(present) > 0 && !opts.Force {
		return nil, fmt.Errorf("restore: %s: %w (it holds %s); restore into an empty one, or pass --force to replace its contents", dataDir, ErrNotEmpty, strings.Join(present, ", "))
	}
	for _, name := range present {
		if err := os.RemoveAll(filepath.Join(dataDir, name)); err != nil {
			return nil, fmt.Errorf("restore: empty %s: %w", dataDir, err)
		}
		res.Removed++
	}
	for _, d := range m.Dirs {
		if err := os.MkdirAll(filepath.Join(dataDir, filepath.FromSlash(d)), 0o700); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	// herald.db last: until it is there, the data directory holds no
	// store that a server could start on.
	files := slices.Clone(m.Files)
	slices.SortStableFunc(files, func(a, b File) int {
		switch {
		case a.Path == "herald.db":
			return 1
		case b.Path == "herald.db":
			return -1
		}
		return 0
	})
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := restoreFile(src, dataDir, f); err != nil {
			return nil, err
		}
	}
	dirs := slices.Clone(m.Dirs)
	slices.Reverse(dirs)
	for _, d := range append(dirs, ".") {
		if err := syncDir(filepath.Join(dataDir, filepath.FromSlash(d))); err != nil {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	if res.Released, err = sqlite.ReleaseAllLeases(ctx, dataDir, opts.Now()); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := lock.Release(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return res, nil
}

// apart refuses a backup inside the data directory or the other way
// round: emptying the data directory would delete the backup.
func apart(src, dataDir string) error {
	absSrc, err := filepath.Abs(src)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	absData, err := filepath.Abs(dataDir)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	for _, p := range [][2]string{{absData, absSrc}, {absSrc, absData}} {
		if rel, err := filepath.Rel(p[0], p[1]); err == nil && (rel == "." || filepath.IsLocal(rel)) {
			return fmt.Errorf("restore: the backup %s and the data directory %s overlap; move the backup out of the data directory first", src, dataDir)
		}
	}
	return nil
}

// restoreFile copies file f of the backup in src into dataDir, checking
// its checksum on the way (the backup may change after Verify).
func restoreFile(src, dataDir string, f File) error {
	in, err := os.Open(filepath.Join(src, filepath.FromSlash(f.Path)))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	dst := filepath.Join(dataDir, filepath.FromSlash(f.Path))
	got, err := writeFile(dst, f.Mode.Perm()&0o750|0o600, io.LimitReader(in, f.Size+1))
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if got.Size != f.Size || got.SHA256 != f.SHA256 {
		os.Remove(dst)
		return fmt.Errorf("restore: %s changed since it was verified: %w", f.Path, ErrDamaged)
	}
	return nil
}
