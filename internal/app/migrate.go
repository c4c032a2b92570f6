package app

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/startup"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// MigrateStore applies the pending schema migrations of the store cfg
// names (herald store migrate) and returns the schema version it found
// and the version now (equal when nothing was pending). It creates no
// store: a data directory or schema without one is an error. Unlike
// OpenStore it upgrades a PostgreSQL store, which every node shares; a
// schema newer than this program is refused by both backends. Its errors
// are one line with an exit status (internal/startup).
func MigrateStore(cfg *config.Config, log *slog.Logger) (from, to int, err error) {
	if cfg.Store.URL != "" {
		pg, err := postgres.Open(context.Background(), cfg.Store.URL, postgres.Options{
			Node: cfg.Server.NodeID, Logger: log, NoCreate: true})
		if err != nil {
			return 0, 0, startup.StoreURL(cfg.Store.URL, err)
		}
		from, to = pg.SchemaVersions()
		return from, to, pg.Close()
	}
	dir := cfg.Server.DataDir
	if _, err := os.Stat(filepath.Join(dir, "herald.db")); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 0, 0, startup.DataDir(dir, err)
		}
		return 0, 0, startup.NoStore(dir)
	}
	lite, err := sqlite.Open(dir, sqlite.Options{Logger: log, Node: cfg.Server.NodeID})
	if err != nil {
		return 0, 0, startup.Store(dir, err)
	}
	from, to = lite.SchemaVersions()
	return from, to, lite.Close()
}
