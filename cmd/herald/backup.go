package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/heraldmail/herald/internal/backup"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/pidlock"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// backupCmd runs herald backup DEST: a consistent copy of the data
// directory, taken while the server runs.
func (e *cmdEnv) backupCmd(args []string) error {
	cfg, pos, err := e.flags("backup", args, nil)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: herald backup DEST (a new directory)", errUsage)
	}
	if cfg.Store.URL != "" {
		url := postgres.Redact(cfg.Store.URL)
		dump := filepath.Join(pos[0], "herald.dump")
		return exitcode.New(exitcode.Unavailable, fmt.Sprintf(
			"the store is PostgreSQL (store.url), which herald backup does not copy: back it up with mkdir -p %s && pg_dump --format=custom --file=%s '%s' (the password from PGPASSWORD or ~/.pgpass; restore with pg_restore --clean --if-exists --dbname='%s' %s), and the data directory %s (Maildir, TLS files) with a file copy",
			pos[0], dump, url, url, dump, cfg.Server.DataDir), nil)
	}
	if err := becomeServerUser(cfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	start := time.Now()
	m, err := backup.Backup(ctx, cfg.Server.DataDir, pos[0], backup.Options{Version: version, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		var tooNew *sqlite.SchemaTooNewError
		switch {
		case errors.Is(err, backup.ErrNotEmpty):
			return exitcode.With(exitcode.CantCreat, err)
		case errors.As(err, &tooNew):
			return exitcode.With(exitcode.Config, err)
		}
		return err
	}
	fmt.Fprintf(e.stdout, "backed up %s to %s in %s: schema version %d, %d queued messages (%d recipients pending, %d body files), %d files, %d bytes\n",
		cfg.Server.DataDir, pos[0], time.Since(start).Round(time.Millisecond), m.Schema, m.Messages, m.Pending, m.Blobs, len(m.Files), m.Bytes)
	if len(m.Finished) > 0 {
		fmt.Fprintf(e.stdout, "%d messages finished while the backup ran and are not in it\n", len(m.Finished))
	}
	return nil
}

// restoreCmd runs herald restore SRC [--force]: the backup in SRC back
// into the data directory, with the server stopped.
func (e *cmdEnv) restoreCmd(args []string) error {
	var force bool
	cfg, pos, err := e.flags("restore", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&force, "force", false, "replace the contents of a data directory that is not empty")
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: herald restore SRC [--force]", errUsage)
	}
	if cfg.Store.URL != "" {
		return exitcode.New(exitcode.Unavailable, fmt.Sprintf(
			"the store is PostgreSQL (store.url), which herald restore does not write: restore a pg_dump with pg_restore --clean --if-exists --dbname='%s' DEST/herald.dump", postgres.Redact(cfg.Store.URL)), nil)
	}
	if err := becomeServerUser(cfg); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	res, err := backup.Restore(ctx, pos[0], cfg.Server.DataDir, backup.RestoreOptions{Force: force})
	if err != nil {
		var held *pidlock.HeldError
		switch {
		case errors.As(err, &held):
			return exitcode.With(exitcode.Unavailable, err)
		case errors.Is(err, backup.ErrNotEmpty):
			return exitcode.With(exitcode.CantCreat, err)
		case errors.Is(err, backup.ErrDamaged):
			return exitcode.With(exitcode.DataErr, err)
		}
		return err
	}
	m := res.Manifest
	fmt.Fprintf(e.stdout, "restored %s (taken %s by herald %s) into %s: schema version %d, %d queued messages (%d recipients pending), %d files, %d leases released\n",
		pos[0], m.Created.Format(time.RFC3339), m.Herald, cfg.Server.DataDir, m.Schema, m.Messages, m.Pending, len(m.Files), res.Released)
	return nil
}
