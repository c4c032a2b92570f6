package app

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/feedback"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/startup"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// CopyResult is what CopyStore did.
type CopyResult struct {
	From, To    string            // the stores, for messages (no password)
	Created     bool              // the destination store was created
	Counts      []store.CopyCount // per kind, in copy order
	Interrupted bool              // Counts are of a copy that failed midway
	Notes       []string          // what else was done or left, for the operator
}

// IsPostgresURL reports whether dest names a PostgreSQL database (a
// postgres:// or postgresql:// URL) rather than a data directory.
func IsPostgresURL(dest string) bool {
	return strings.HasPrefix(dest, "postgres://") || strings.HasPrefix(dest, "postgresql://")
}

// CopyStore copies everything the store of cfg holds (normally the
// embedded SQLite store of server.data_dir) into the store dest: a
// PostgreSQL URL, created there if the schema is empty, or a data
// directory (store.Copy says what is copied, and how a second run copies
// only what is missing).
//
// The source must be still: CopyStore takes the data directory's lock
// (herald.pid), so it refuses while herald serve runs there, and keeps a
// server from starting until it is done; for a PostgreSQL source it also
// takes the lock of server.node_id. A VERP key file of an earlier Herald
// (DATA_DIR/verp.key) is brought into the source store first, as the
// server would at start-up, so that it is copied, and so are DMARC report
// files of an earlier Herald (DATA_DIR/dmarc-reports). Its errors are one line
// with an exit status; a *store.ConflictError (the destination holds
// another VERP key, DKIM key or event under the same name) says what to do.
func CopyStore(ctx context.Context, cfg *config.Config, dest string, opts store.CopyOptions, log *slog.Logger) (CopyResult, error) {
	if log == nil {
		log = slog.Default()
	}
	var res CopyResult
	dir := cfg.Server.DataDir
	if cfg.Store.URL == "" {
		res.From = filepath.Join(dir, "herald.db")
		if _, err := os.Stat(res.From); errors.Is(err, fs.ErrNotExist) {
			return res, startup.NoStore(dir)
		}
	} else {
		res.From = postgres.Redact(cfg.Store.URL)
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return res, startup.DataDir(dir, err)
		}
	}
	lock, err := pidlock.Acquire(filepath.Join(dir, "herald.pid"))
	if err != nil {
		return res, serving(dir, "copying its store", err)
	}
	defer lock.Release()
	src, _, err := OpenStore(cfg, log, false)
	if err != nil {
		return res, err
	}
	defer src.Close()
	if err := lockNode(cfg, src); err != nil {
		return res, err
	}
	if _, err := os.Stat(filepath.Join(dir, "verp.key")); err == nil {
		if _, err := loadVERPKey(cfg, src, log); err != nil {
			return res, err
		}
	}
	// DMARC report files of an earlier Herald, as the server would at
	// start-up.
	if n, err := inbound.ImportReportDir(ctx, DMARCReportDir(cfg), src, clock.Real{}); err != nil {
		res.Notes = append(res.Notes, fmt.Sprintf("DMARC report files in %s not brought into the store (so not copied): %v", DMARCReportDir(cfg), err))
	} else if n > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d DMARC report files of an earlier herald brought into the store first", n))
	}
	ex, ok := src.(store.Exporter)
	if !ok {
		return res, exitcode.New(exitcode.Software, fmt.Sprintf("store %s cannot be copied", res.From), nil)
	}

	var dst store.Store
	if IsPostgresURL(dest) {
		res.To = postgres.Redact(dest)
		if dest == cfg.Store.URL {
			return res, exitcode.New(exitcode.Usage, "--to names the store being copied (store.url)", nil)
		}
		pg, err := postgres.Open(ctx, dest, postgres.Options{Node: "herald-store-copy", Logger: log, NoMigrate: true})
		if err != nil {
			return res, startup.StoreURL(dest, err)
		}
		res.Created = pg.Created()
		dst = pg
	} else {
		abs, err := filepath.Abs(dest)
		if err != nil {
			return res, exitcode.New(exitcode.Usage, "--to "+dest+": "+err.Error(), err)
		}
		res.To = filepath.Join(abs, "herald.db")
		if srcAbs, _ := filepath.Abs(dir); cfg.Store.URL == "" && srcAbs == abs {
			return res, exitcode.New(exitcode.Usage, "--to names the data directory being copied (server.data_dir)", nil)
		}
		if err := os.MkdirAll(abs, 0o750); err != nil {
			return res, startup.DataDir(abs, err)
		}
		dlock, err := pidlock.Acquire(filepath.Join(abs, "herald.pid"))
		if err != nil {
			return res, serving(abs, "copying into it", err)
		}
		defer dlock.Release()
		_, statErr := os.Stat(res.To)
		lite, err := sqlite.Open(abs, sqlite.Options{Logger: log, Node: "herald-store-copy"})
		if err != nil {
			return res, startup.Store(abs, err)
		}
		res.Created = errors.Is(statErr, fs.ErrNotExist)
		dst = lite
	}
	defer dst.Close()
	im, ok := dst.(store.Importer)
	if !ok {
		return res, exitcode.New(exitcode.Software, fmt.Sprintf("store %s cannot be copied into", res.To), nil)
	}
	res.Counts, err = store.Copy(ctx, ex, im, opts)
	var conflict *store.ConflictError
	switch {
	case errors.As(err, &conflict):
		return res, conflictError(res.To, conflict)
	case err != nil:
		res.Interrupted = len(res.Counts) > 0
		return res, exitcode.New(exitcode.TempFail, fmt.Sprintf("copy %s to %s: %v (nothing copied is lost: run the same command again to copy the rest)", res.From, res.To, err), err)
	}
	return res, nil
}

// serving describes a failure to take a data directory's lock for a copy:
// herald serve runs there.
func serving(dir, doing string, err error) error {
	var held *pidlock.HeldError
	if !errors.As(err, &held) {
		return startup.DataDir(dir, err)
	}
	who := "herald serve"
	if held.PID > 0 {
		who += " (pid " + strconv.Itoa(held.PID) + ")"
	}
	return exitcode.New(exitcode.Unavailable, fmt.Sprintf("data directory %s is in use by %s: stop it before %s, so that nothing changes meanwhile", dir, who, doing), err)
}

// conflictError explains a refused copy.
func conflictError(to string, c *store.ConflictError) error {
	hint := "the destination is not a copy of this store: copy into an empty schema, or one this store was copied into before"
	for _, x := range c.Conflicts {
		if x.Kind == "secrets" && x.Key == feedback.KeySecret {
			hint = "a node already ran on the destination and made its own VERP key: with it, bounces to the mail this store's node sent are no longer recognised; copy before starting a node there"
			break
		}
	}
	return exitcode.New(exitcode.DataErr, fmt.Sprintf("store %s: %v; nothing was copied (%s, or pass --replace to overwrite the destination's with this store's)", to, c, hint), c)
}
