// Package postgres is Herald's shared store: the queue, bodies, directory,
// DKIM keys and delivery-platform state of every node of a cluster in one
// PostgreSQL database, through github.com/jackc/pgx/v5 (pure Go).
//
// # Nodes
//
// A Store handle belongs to one node (Options.Node). Every node accepts and
// delivers: recipients are leased to a node under a random token with an
// expiry (lease_owner, lease_token, lease_until); work is claimed with
// SELECT ... FOR NO KEY UPDATE SKIP LOCKED, so two nodes never wait for
// each other nor lease a recipient twice; an outcome is written only with
// the lease's token, so a node whose expired lease was taken over cannot
// overwrite the new owner's result; ReleaseLeases clears only this node's
// leases. A dead node's recipients become due again when their leases
// expire, on any node.
//
// # Durability and group commit
//
// synchronous_commit stays on: Enqueue and Update return only after their
// transaction's commit record was flushed. Concurrent Enqueue and Update
// calls of a handle are committed together by one writer goroutine on a
// dedicated connection (one transaction, one WAL flush for the batch), as
// the SQLite store does. Everything else runs in its own transaction on a
// connection pool (PostgreSQL shares the WAL flushes of concurrent commits
// itself); leasing and lease renewal commit asynchronously, since losing
// one in a database crash only makes work due again (at-least-once).
//
// # Bodies
//
// No file system is shared: bodies up to Options.InlineMax bytes are stored
// in the message row; larger ones in body_chunks rows of Options.ChunkSize
// bytes, written as they stream in (asynchronously committed; the
// enqueue's synchronous commit flushes them with it, since WAL is flushed
// in order) and read back a chunk at a time, so a 25 MB message is never
// whole in memory on either side.
//
// # State every node shares
//
// Secrets (the VERP key), DMARC aggregate reports and TLS-RPT counts and
// claims are ordinary rows. The sending-rate windows of a key and the
// state of a delivery destination (back-off, connections held by each
// node until a time it renews, the ring of its minute window) are one row
// each, changed by one UPDATE whose check ("fits under the limit") is
// evaluated on the row it locks (the first use inserts it), so that nodes
// charging one account or opening connections to one destination never
// exceed its limits together; those statements commit asynchronously. A serving node holds
// a session advisory lock on its node name (LockNode), so that a second
// node under the same name is refused.
//
// # Wake-ups
//
// Each commit that makes work due (Enqueue without a lease, Retry,
// ReleaseLeases) sends a NOTIFY on a channel named after the schema; Wake
// returns a channel that receives a value whenever another handle (another
// node, or a command such as herald sendmail) did so, so that mail accepted
// on node A is delivered at once by whichever node is free.
package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

// Defaults of Options.
const (
	// DefaultInlineMax is the largest body stored in the message row.
	DefaultInlineMax = 64 << 10
	// DefaultChunkSize is the size of the body_chunks rows of larger bodies.
	DefaultChunkSize = 256 << 10
	// DefaultMaxBatch caps the operations the writer commits together.
	DefaultMaxBatch = 256
	// DefaultNode is the node name of a handle opened without one.
	DefaultNode = "local"
)

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("postgres store: closed")

// ErrUnavailable is wrapped by Open's error when the database cannot be
// reached or refuses the connection (down, wrong address, authentication,
// no such database).
var ErrUnavailable = errors.New("postgres store: database unavailable")

// ErrNoStore is returned by Open with Options.NoCreate when the schema
// holds no Herald store (no schema_version table).
var ErrNoStore = errors.New("postgres store: no herald store in this schema")

// ErrNoSchema is returned by Open when no schema of the search_path exists
// (the store is created in the first one, which must exist).
var ErrNoSchema = errors.New("postgres store: no schema of the search_path exists")

// SchemaTooNewError is returned by Open for a database whose schema was
// written by a newer Herald: this one must not touch it.
type SchemaTooNewError struct {
	Path      string // the database, as a URL without its password
	Version   int    // schema version of the database
	Supported int    // newest schema version this program knows
}

// Error says what to do: upgrade herald.
func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("store %s: schema version %d is newer than this herald (%d); upgrade herald", e.Path, e.Version, e.Supported)
}

// Options tune a Store. The zero value is valid.
type Options struct {
	// Node names the node this handle acts for: leases carry it, and
	// ReleaseLeases clears only its leases. Empty means DefaultNode.
	Node string
	// InlineMax is the largest body, in bytes, stored in the message row.
	// Zero means DefaultInlineMax; a negative value stores every body in
	// chunks.
	InlineMax int
	// ChunkSize is the size of the rows larger bodies are stored in. Zero
	// means DefaultChunkSize.
	ChunkSize int
	// MaxBatch caps the operations committed in one writer transaction.
	// Zero means DefaultMaxBatch.
	MaxBatch int
	// Logger receives warnings. Nil means slog.Default().
	Logger *slog.Logger
	// NoCreate makes Open fail with ErrNoStore instead of creating the
	// schema in a schema that holds none (a command that only reads or
	// changes what must exist, pointed at the wrong database).
	NoCreate bool
	// NoMigrate makes Open fail with a *SchemaTooOldError instead of
	// upgrading the schema of an existing store written by an older
	// Herald: the schema every node shares changes only when an
	// operator says so (herald store migrate). A new store is still
	// created (unless NoCreate).
	NoMigrate bool
}

// Store is the PostgreSQL implementation of store.Store. It is safe for
// concurrent use.
type Store struct {
	pool      *pgxpool.Pool
	connCfg   *pgx.ConnConfig // for the writer's, the listener's and the claim's own connections
	dsn       string
	where     string // the database, for messages (no password)
	node      string
	schema    string // the schema the store is in
	instance  string // this handle, in NOTIFY payloads
	channel   string // NOTIFY channel of this schema
	inlineMax int
	chunkSize int
	log       *slog.Logger

	w          *writer
	created    bool // Open created the schema
	schemaFrom int  // the schema version Open found (0: none)
	ownTx      bool // no group commit: each write in its own transaction (benchmark comparison)

	domains domainCache
	touches touchCache
	reads   readCaches
	handoff readcache.Handoff

	wake     wakeListener
	nodeLock nodeLock  // LockNode's session
	bodyPool sync.Pool // *[]byte chunk buffers

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*Store)(nil)

// Open connects to the database at url (postgres://user@host:port/db?...),
// creates or migrates the schema (in the schema search_path names first,
// "public" by default) and starts the writer. pgx's connection parameters
// apply, e.g. pool_max_conns (default 8) and connect_timeout.
//
// Open's errors can be told apart: a *SchemaTooNewError, ErrNoStore (with
// Options.NoCreate), an error wrapping ErrUnavailable when the database
// cannot be reached or refuses the connection (a *pgconn.PgError inside
// says why: 28P01 bad password, 3D000 no such database), and others (a
// *pgconn.PgError 42501 when the user may not create the tables).
func Open(ctx context.Context, dsn string, opts Options) (*Store, error) {
	where := Redact(dsn)
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w", where, err)
	}
	if !strings.Contains(dsn, "pool_max_conns") {
		cfg.MaxConns = 8
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = 10 * time.Second
	}
	cfg.ConnConfig.AfterConnect = durableSession
	if _, set := cfg.ConnConfig.RuntimeParams["application_name"]; !set {
		// Who is who in pg_stat_activity: "herald NODE" for the pool,
		// "herald NODE writer", "herald NODE listen" and "herald NODE
		// claim" (connFor).
		cfg.ConnConfig.RuntimeParams["application_name"] = appName(opts.Node, "")
	}
	if opts.Node == "" {
		opts.Node = DefaultNode
	}
	if opts.InlineMax == 0 {
		opts.InlineMax = DefaultInlineMax
	}
	if opts.InlineMax < 0 {
		opts.InlineMax = -1
	}
	if opts.ChunkSize <= 0 {
		opts.ChunkSize = DefaultChunkSize
	}
	if opts.InlineMax > opts.ChunkSize {
		opts.InlineMax = opts.ChunkSize
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}

	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		connCfg:   cfg.ConnConfig.Copy(),
		dsn:       dsn,
		where:     where,
		node:      opts.Node,
		instance:  randomToken(),
		inlineMax: opts.InlineMax,
		chunkSize: opts.ChunkSize,
		log:       opts.Logger.With("component", "store.postgres"),
	}
	s.pool, err = pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store %s: %w: %w", where, ErrUnavailable, err)
	}
	ok := false
	defer func() {
		if !ok {
			s.pool.Close()
		}
	}()
	conn, err := pgx.ConnectConfig(ctx, s.connFor("writer"))
	if err != nil {
		return nil, classifyConnect(where, err)
	}
	var schemaName *string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schemaName); err != nil || schemaName == nil {
		conn.Close(context.Background())
		if err == nil {
			err = ErrNoSchema
		}
		return nil, fmt.Errorf("postgres store %s: %w", where, err)
	}
	s.schema = *schemaName
	s.channel = "herald_wake_" + *schemaName
	if len(s.channel) > 63 { // NAMEDATALEN - 1
		s.channel = s.channel[:63]
	}
	if s.created, s.schemaFrom, err = migrate(ctx, conn, where, *schemaName, opts.NoCreate, opts.NoMigrate); err != nil {
		conn.Close(context.Background())
		return nil, err
	}
	s.w = newWriter(s, conn, opts.MaxBatch)
	go s.w.run()
	ok = true
	// Bodies whose upload was abandoned long ago (a node died mid-message).
	if err := s.collectBodies(ctx); err != nil {
		s.log.Warn("cannot collect abandoned bodies", "err", err)
	}
	return s, nil
}

// Close stops the writer after it has committed every operation already
// submitted, stops the wake-up listener and closes the connections.
// Operations started after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closeErr = s.w.close()
		s.wake.stop()
		s.unlockNode()
		s.pool.Close()
	})
	return s.closeErr
}

// appName is the application_name of a node's connections for role.
func appName(node, role string) string {
	if node == "" {
		node = DefaultNode
	}
	name := "herald " + node
	if role != "" {
		name += " " + role
	}
	if len(name) > 63 { // NAMEDATALEN - 1
		name = name[:63]
	}
	return name
}

// connFor returns the configuration of a dedicated connection for role
// ("writer", "listen", "claim"): the pool's, named after its role unless the URL
// names the application.
func (s *Store) connFor(role string) *pgx.ConnConfig {
	c := s.connCfg.Copy()
	if c.RuntimeParams["application_name"] == appName(s.node, "") {
		c.RuntimeParams["application_name"] = appName(s.node, role)
	}
	return c
}

// Created reports whether Open created the schema (an empty database).
func (s *Store) Created() bool { return s.created }

// Node returns the node this handle acts for.
func (s *Store) Node() string { return s.node }

// Redact returns dsn with its password replaced by "xxxxx", for messages.
// A key=value connection string is reduced to its host and dbname.
func Redact(dsn string) string {
	if u, err := url.Parse(dsn); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	var keep []string
	for _, f := range strings.Fields(dsn) {
		if k, _, ok := strings.Cut(f, "="); ok && (k == "host" || k == "port" || k == "dbname" || k == "user") {
			keep = append(keep, f)
		}
	}
	return strings.Join(keep, " ")
}

// durableSession turns synchronous_commit back on for a connection of a
// server (or role, or URL) configured with it off: a 250 must mean that
// the message is on stable storage. Other values (local, remote_write,
// remote_apply) are the operator's choice and are kept.
func durableSession(ctx context.Context, c *pgconn.PgConn) error {
	res, err := c.Exec(ctx, `SELECT current_setting('synchronous_commit')`).ReadAll()
	if err != nil {
		return err
	}
	if len(res) == 1 && len(res[0].Rows) == 1 && string(res[0].Rows[0][0]) == "off" {
		_, err = c.Exec(ctx, `SET synchronous_commit = on`).ReadAll()
	}
	return err
}

// classifyConnect marks a connection failure with ErrUnavailable.
func classifyConnect(where string, err error) error {
	return fmt.Errorf("postgres store %s: %w: %w", where, ErrUnavailable, err)
}

// randomToken returns 128 random bits in hex.
func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// isFull reports whether err means the database server's disk is full.
func isFull(err error) bool {
	return pgCode(err) == "53100" // disk_full
}

// mapErr wraps a full-disk error with store.ErrStorageFull.
func mapErr(err error) error {
	if err == nil || errors.Is(err, store.ErrStorageFull) || !isFull(err) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
}

// nanos converts t to the stored form: Unix nanoseconds, 0 for the zero
// time (as the SQLite store, so that the two copy into each other).
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// normAddr lower-cases an address or domain for the directory.
func normAddr(s string) string {
	return strings.ToLower(strings.TrimSpace(s))
}

// normDomain lower-cases a domain and drops a trailing dot.
func normDomain(d string) string {
	return strings.TrimSuffix(normAddr(d), ".")
}
