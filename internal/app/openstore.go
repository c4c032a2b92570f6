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
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// OpenStore opens the store cfg names, as node server.node_id: the
// embedded SQLite store in server.data_dir when store.url is "", else the
// PostgreSQL database of store.url. It is the one place that chooses the
// backend; the server (New) and every command use it. With create false, a
// store that does not exist yet is an error instead of being created (a
// command that reads, or changes what must exist, pointed at the wrong
// place). It reports whether it created the store. The embedded store is
// migrated to this program's schema; a PostgreSQL store of an older schema
// is refused (herald store migrate upgrades it: see MigrateStore). Its
// errors are one line with an exit status (internal/startup). log nil
// means slog.Default().
func OpenStore(cfg *config.Config, log *slog.Logger, create bool) (st store.Store, created bool, err error) {
	if cfg.Store.URL != "" {
		if create {
			// Node-local files (the VERP key, TLS certificates, Maildir)
			// still live there.
			if err := os.MkdirAll(cfg.Server.DataDir, 0o750); err != nil {
				return nil, false, startup.DataDir(cfg.Server.DataDir, err)
			}
		}
		// The shared schema is migrated only by herald store migrate
		// (MigrateStore): nodes of the older version may still run on it.
		pg, err := postgres.Open(context.Background(), cfg.Store.URL, postgres.Options{
			Node: cfg.Server.NodeID, Logger: log, NoCreate: !create, NoMigrate: true})
		if err != nil {
			return nil, false, startup.StoreURL(cfg.Store.URL, err)
		}
		return pg, pg.Created(), nil
	}
	dir := cfg.Server.DataDir
	_, statErr := os.Stat(filepath.Join(dir, "herald.db"))
	missing := errors.Is(statErr, fs.ErrNotExist)
	if missing && !create {
		if _, err := os.Stat(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, false, startup.DataDir(dir, err)
		}
		return nil, false, startup.NoStore(dir)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, false, startup.DataDir(dir, err)
	}
	lite, err := sqlite.Open(dir, sqlite.Options{Logger: log, Node: cfg.Server.NodeID})
	if err != nil {
		return nil, false, startup.Store(dir, err)
	}
	return lite, missing, nil
}

// nodeLocker is a store that refuses a second running node with the same
// node name (postgres.Store.LockNode). The embedded store needs none: the
// data directory's lock (herald.pid) already refuses a second server.
type nodeLocker interface {
	LockNode(ctx context.Context) error
}

// lockNode takes the store's lock on server.node_id for the serving node's
// lifetime: two nodes with one name would release each other's leases.
func lockNode(cfg *config.Config, st store.Store) error {
	if l, ok := st.(nodeLocker); ok {
		if err := l.LockNode(context.Background()); err != nil {
			return startup.NodeID(cfg.Server.NodeID, cfg.Store.URL, err)
		}
	}
	return nil
}

// storeError describes a failure of the opened store during start-up.
func storeError(cfg *config.Config, err error) error {
	if cfg.Store.URL != "" {
		return startup.StoreURL(cfg.Store.URL, err)
	}
	return startup.Store(cfg.Server.DataDir, err)
}

// waker is a store that tells when another node (or a command) made work
// due (postgres.Store.Wake); the embedded store has no other nodes.
type waker interface {
	Wake() <-chan struct{}
}

// forwardWakes makes the scheduler look for due work whenever the store
// says another node enqueued some, until ctx ends.
func (a *App) forwardWakes(ctx context.Context) {
	w, ok := a.store.(waker)
	if !ok {
		return
	}
	ch := w.Wake()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
			a.sched.Wake()
		}
	}
}
