// Package sqlite is Herald's embedded store: the queue and directory in one
// SQLite database (modernc.org/sqlite, pure Go) in WAL mode with
// synchronous=FULL, and large message bodies in blob files beside it.
//
// All writes of one process go through a single writer goroutine that
// commits concurrent operations together (group commit): the callers of one
// batch share one transaction and one fsync, and each is answered only after
// that commit. Reads use a separate pool of read-only connections. Other
// processes (the CLI) may open the same data directory at the same time;
// SQLite's file locks with a busy timeout serialise their writes.
//
// The coordination state that lives as long as the server does (rate
// windows, destination connections and back-off) is kept in memory,
// shared by the handles of one database in the process (volatile.go): one
// server runs per data directory.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

// DefaultInlineMax is the default largest body stored inline in the queue row.
const DefaultInlineMax = 64 << 10

// DefaultMaxBatch is the default largest number of operations committed in one
// transaction by the writer.
const DefaultMaxBatch = 256

// DefaultBusyTimeout is how long a connection waits by default for a lock
// held by another connection or process before failing with SQLITE_BUSY.
const DefaultBusyTimeout = 10 * time.Second

// ErrClosed is returned by operations on a closed Store.
var ErrClosed = errors.New("sqlite store: closed")

// Options tune a Store. The zero value is valid.
type Options struct {
	// Node names the node this handle belongs to: the leases it takes are
	// recorded as this node's, and ReleaseLeases clears only those. ""
	// is a single node ("local"). The server passes server.node_id.
	Node string
	// InlineMax is the largest body, in bytes, stored inline in the queue
	// row (covered by the group-committed fsync). Larger bodies go to blob
	// files. Zero means DefaultInlineMax; a negative value stores every body
	// as a blob file.
	InlineMax int
	// MaxBatch caps the operations committed in one transaction. Zero means
	// DefaultMaxBatch.
	MaxBatch int
	// ReadConns is the size of the read-only connection pool. Zero means 4.
	ReadConns int
	// lazyWait overrides the writer's lazyWait (tests).
	lazyWait time.Duration
	// Logger receives warnings (failed blob removals, orphans collected).
	// Nil means slog.Default().
	Logger *slog.Logger
	// BusyTimeout is how long an operation waits for a lock another process
	// holds (another process migrating or writing) before failing with an
	// error that wraps ErrBusy. Zero means DefaultBusyTimeout.
	BusyTimeout time.Duration
}

// Errors Open wraps its failures with (errors.Is), so that a command can say
// what to do. Filesystem failures carry their errno in a *fs.PathError
// instead, and a database from a newer Herald is a *SchemaTooNewError.
var (
	// ErrBusy: another process held a lock for longer than BusyTimeout.
	ErrBusy = errors.New("sqlite store: database is locked by another process")
	// ErrReadOnly: SQLite could not open the database for writing
	// (read-only file, directory or file system, or no permission).
	ErrReadOnly = errors.New("sqlite store: cannot open the database for writing")
	// ErrNotDatabase: herald.db is not an SQLite database, or is damaged.
	ErrNotDatabase = errors.New("sqlite store: not a database or damaged")
)

// SchemaTooNewError is returned by Open for a database whose schema was
// written by a newer Herald: this one must not touch it.
type SchemaTooNewError struct {
	Path      string // the database file
	Version   int    // schema version of the database
	Supported int    // newest schema version this program knows
}

// Error says what to do: upgrade herald.
func (e *SchemaTooNewError) Error() string {
	return fmt.Sprintf("store %s: schema version %d is newer than this herald (%d); upgrade herald", e.Path, e.Version, e.Supported)
}

// SchemaVersion is the newest schema version this program writes.
func SchemaVersion() int { return len(schema) }

// Store is the SQLite implementation of store.Store. It is safe for
// concurrent use.
type Store struct {
	dir       string
	blobDir   string
	tmpDir    string
	inlineMax int
	node      string
	log       *slog.Logger

	wdb *sql.DB // one connection, owned by the writer goroutine
	rdb *readDB // read-only pool with a statement cache

	domains domainCache // local domains, reread every second
	reads   readCaches  // accounts and DKIM keys, reread every second
	handoff readcache.Handoff
	lock    *os.File

	w *writer

	bufPool sync.Pool // *[]byte body buffers
	// openBodies counts the bodies being written whose Enqueue has not
	// been submitted yet: the writer's cue that an acceptance is coming
	// (see writer.run).
	openBodies atomic.Int64

	touches touchCache // API key LastUsed values written

	volKey string    // the database, in the registry of volatile state
	vol    *volatile // rate windows and destinations, shared in this process
	closed atomic.Bool

	closeOnce sync.Once
	closeErr  error

	schemaFrom int // the schema version Open found (0: a new database)
}

var (
	_ store.Store    = (*Store)(nil)
	_ store.Platform = (*Store)(nil)
)

// Open opens (creating if needed) the store in data directory dir: the
// database is dir/herald.db and blob bodies live under dir/blobs. The schema
// is created or migrated. If no other process has the directory open, blob
// files without a committed message row and stale temporary files are
// removed.
//
// Open's errors can be told apart: a *fs.PathError (with its errno) for the
// directories and the lock file, a *SchemaTooNewError, and otherwise errors
// wrapping ErrBusy, ErrReadOnly, ErrNotDatabase or store.ErrStorageFull
// where SQLite says so.
func Open(dir string, opts Options) (*Store, error) {
	s, err := open(dir, opts)
	if err != nil {
		return nil, classify(err)
	}
	return s, nil
}

func open(dir string, opts Options) (*Store, error) {
	if opts.BusyTimeout <= 0 {
		opts.BusyTimeout = DefaultBusyTimeout
	}
	busyMS := max(opts.BusyTimeout.Milliseconds(), 1)
	if opts.InlineMax == 0 {
		opts.InlineMax = DefaultInlineMax
	}
	if opts.InlineMax < 0 {
		opts.InlineMax = -1
	}
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = DefaultMaxBatch
	}
	if opts.ReadConns <= 0 {
		opts.ReadConns = 4
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Store{
		dir:       dir,
		blobDir:   filepath.Join(dir, "blobs"),
		tmpDir:    filepath.Join(dir, "blobs", "tmp"),
		inlineMax: opts.InlineMax,
		node:      opts.Node,
		log:       opts.Logger.With("component", "store.sqlite"),
	}
	if err := s.makeDirs(); err != nil {
		return nil, err
	}
	exclusive, lock, err := lockDir(filepath.Join(dir, "herald.lock"))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: lock %s: %w", dir, err)
	}
	s.lock = lock
	ok := false
	defer func() {
		if !ok {
			s.closeDBs()
		}
	}()

	dbPath := filepath.Join(dir, "herald.db")
	wdsn := fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_pragma=synchronous(FULL)", dbPath, busyMS)
	s.wdb, err = sql.Open("sqlite", wdsn)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: open %s: %w", dbPath, err)
	}
	s.wdb.SetMaxOpenConns(1)
	s.wdb.SetMaxIdleConns(1)
	s.wdb.SetConnMaxLifetime(0)
	s.wdb.SetConnMaxIdleTime(0)
	ctx := context.Background()
	conn, err := s.wdb.Conn(ctx)
	if err != nil {
		return nil, mapErr(fmt.Errorf("sqlite store: open %s: %w", dbPath, err))
	}
	if s.schemaFrom, err = migrate(ctx, conn, dbPath); err != nil {
		conn.Close()
		return nil, err
	}
	// Make a newly created database file's directory entry durable.
	if err := syncDir(dir); err != nil {
		conn.Close()
		return nil, mapErr(fmt.Errorf("sqlite store: sync %s: %w", dir, err))
	}
	if exclusive {
		if err := s.collectOrphans(ctx, conn); err != nil {
			conn.Close()
			return nil, err
		}
		if err := shareLock(lock); err != nil {
			conn.Close()
			return nil, fmt.Errorf("sqlite store: lock %s: %w", dir, err)
		}
	}

	rdsn := fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_pragma=query_only(1)", dbPath, busyMS)
	rdb, err := sql.Open("sqlite", rdsn)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("sqlite store: open %s: %w", dbPath, err)
	}
	s.rdb = &readDB{DB: rdb}
	s.rdb.SetMaxOpenConns(opts.ReadConns)
	s.rdb.SetMaxIdleConns(opts.ReadConns)
	s.rdb.SetConnMaxLifetime(0)
	s.rdb.SetConnMaxIdleTime(0)

	s.w, err = newWriter(s, conn, opts.MaxBatch, opts.lazyWait)
	if err != nil {
		conn.Close()
		return nil, err
	}
	go s.w.run()
	s.volKey = volatileKey(dir)
	s.vol = openVolatile(s.volKey)
	ok = true
	return s, nil
}

// Close stops the writer after it has committed every operation already
// submitted, then closes the databases. Operations started after Close fail
// with ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.closeErr = s.w.close()
		closeVolatile(s.volKey)
		if err := s.closeDBs(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Store) closeDBs() error {
	var errs []error
	if s.rdb != nil {
		errs = append(errs, s.rdb.Close())
	}
	if s.wdb != nil {
		errs = append(errs, s.wdb.Close())
	}
	if s.lock != nil {
		errs = append(errs, s.lock.Close())
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlite store: close: %w", err)
	}
	return nil
}

func (s *Store) makeDirs() error {
	for _, d := range []string{s.dir, s.blobDir, s.tmpDir} {
		if _, err := os.Stat(d); err == nil {
			continue
		}
		if err := os.MkdirAll(d, 0o700); err != nil {
			return mapErr(fmt.Errorf("sqlite store: create %s: %w", d, err))
		}
		// Make the new directory entry durable.
		if err := syncDir(filepath.Dir(d)); err != nil {
			return mapErr(fmt.Errorf("sqlite store: create %s: %w", d, err))
		}
	}
	return nil
}

// schema is the list of migrations; schema_version holds how many were
// applied.
var schema = []string{
	// 1: queue and directory.
	`CREATE TABLE messages (
		id        TEXT PRIMARY KEY,
		sender    TEXT NOT NULL,
		received  INTEGER NOT NULL,
		size      INTEGER NOT NULL,
		ret       TEXT NOT NULL,
		envid     TEXT NOT NULL,
		client_ip TEXT NOT NULL,
		helo      TEXT NOT NULL,
		auth_user TEXT NOT NULL,
		source    TEXT NOT NULL,
		smtputf8  INTEGER NOT NULL,
		blob      INTEGER NOT NULL, -- 1: body is the file blobs/<id>
		body      BLOB              -- inline body when blob = 0 (last: overflow pages)
	);
	CREATE TABLE recipients (
		id           INTEGER PRIMARY KEY AUTOINCREMENT,
		message_id   TEXT NOT NULL,
		address      TEXT NOT NULL,
		notify       TEXT NOT NULL,
		orcpt        TEXT NOT NULL,
		status       TEXT NOT NULL,
		attempts     INTEGER NOT NULL,
		next_attempt INTEGER NOT NULL, -- unix ns
		lease_until  INTEGER NOT NULL, -- unix ns, 0 when not leased
		last_reply   TEXT NOT NULL,
		remote_mta   TEXT NOT NULL,
		delay_warned INTEGER NOT NULL,
		updated_at   INTEGER NOT NULL
	);
	CREATE INDEX recipients_message ON recipients(message_id);
	-- When a pending recipient can next be leased: due and not leased.
	CREATE INDEX recipients_ready ON recipients(max(next_attempt, lease_until + 1))
		WHERE status IN ('queued', 'deferred');
	CREATE TABLE domains (name TEXT PRIMARY KEY) WITHOUT ROWID;
	CREATE TABLE users (
		address       TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,
		send_as       TEXT NOT NULL, -- JSON array
		created       INTEGER NOT NULL
	);
	CREATE TABLE aliases (
		address TEXT PRIMARY KEY,
		targets TEXT NOT NULL -- JSON array
	);`,
	// 2: header fields Herald prepends to a stored body (DKIM-Signature,
	// Authentication-Results) without rewriting it.
	`ALTER TABLE messages ADD COLUMN headers BLOB NOT NULL DEFAULT x'';`,
	// 3: DKIM signing keys; at most one active key per domain and algorithm.
	`CREATE TABLE dkim_keys (
		domain      TEXT NOT NULL,
		selector    TEXT NOT NULL,
		algorithm   TEXT NOT NULL,
		private_key BLOB NOT NULL, -- PKCS#8 PEM
		active      INTEGER NOT NULL,
		created     INTEGER NOT NULL, -- unix ns
		PRIMARY KEY (domain, selector)
	) WITHOUT ROWID;
	CREATE UNIQUE INDEX dkim_keys_active ON dkim_keys(domain, algorithm) WHERE active = 1;`,
	// 4: accounts; domains, users and messages belong to one. The messages
	// table is rebuilt so that the new columns (read by Update for the
	// event log) and headers come before the inline body, whose overflow
	// pages would otherwise be walked to reach them.
	`CREATE TABLE accounts (
		id         TEXT PRIMARY KEY,
		name       TEXT NOT NULL,
		per_minute INTEGER NOT NULL,
		per_hour   INTEGER NOT NULL,
		per_day    INTEGER NOT NULL,
		created    INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;
	INSERT INTO accounts (id, name, per_minute, per_hour, per_day, created)
		VALUES ('default', 'Default', 0, 0, 0, CAST(unixepoch('subsec') * 1000 AS INTEGER) * 1000000);
	ALTER TABLE domains ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
	ALTER TABLE users ADD COLUMN account TEXT NOT NULL DEFAULT 'default';
	CREATE INDEX domains_account ON domains(account);
	CREATE INDEX users_account ON users(account);
	CREATE TABLE messages_v4 (
		id        TEXT PRIMARY KEY,
		sender    TEXT NOT NULL,
		received  INTEGER NOT NULL,
		size      INTEGER NOT NULL,
		ret       TEXT NOT NULL,
		envid     TEXT NOT NULL,
		client_ip TEXT NOT NULL,
		helo      TEXT NOT NULL,
		auth_user TEXT NOT NULL,
		source    TEXT NOT NULL,
		smtputf8  INTEGER NOT NULL,
		blob      INTEGER NOT NULL,             -- 1: body is the file blobs/<id>
		account   TEXT NOT NULL DEFAULT 'default',
		tags      TEXT NOT NULL DEFAULT '',     -- JSON array, '' when none
		metadata  TEXT NOT NULL DEFAULT '',     -- JSON object, '' when none
		headers   BLOB NOT NULL DEFAULT x'',
		body      BLOB                          -- inline body when blob = 0 (last: overflow pages)
	);
	INSERT INTO messages_v4 (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, blob, headers, body)
		SELECT id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, blob, headers, body FROM messages;
	DROP TABLE messages;
	ALTER TABLE messages_v4 RENAME TO messages;`,
	// 5: the event log, which is also the webhook outbox: every event
	// insert is followed, in its transaction, by an INSERT ... SELECT that
	// fans it out to the matching webhooks of its account (skipped for
	// accounts without webhooks). Empty text columns cost one header byte.
	// IDs are rowids, kept increasing because a prune never deletes the
	// newest event (cheaper than AUTOINCREMENT's sequence row).
	`CREATE TABLE events (
		id         INTEGER PRIMARY KEY,
		time       INTEGER NOT NULL,                  -- unix ns
		type       TEXT NOT NULL,
		account    TEXT NOT NULL,
		message_id TEXT NOT NULL DEFAULT '',
		recipient  TEXT NOT NULL DEFAULT '',
		sender     TEXT NOT NULL DEFAULT '',
		remote_mta TEXT NOT NULL DEFAULT '',
		reply      TEXT NOT NULL DEFAULT '',
		enhanced   TEXT NOT NULL DEFAULT '',
		tls        TEXT NOT NULL DEFAULT '',
		bounce     TEXT NOT NULL DEFAULT '',
		attempt    INTEGER NOT NULL DEFAULT 0,
		tags       TEXT NOT NULL DEFAULT '', -- JSON array, '' when none
		metadata   TEXT NOT NULL DEFAULT ''  -- JSON object, '' when none
	);
	CREATE INDEX events_account ON events(account, id);
	CREATE INDEX events_message ON events(message_id) WHERE message_id != '';
	CREATE INDEX events_recipient ON events(recipient COLLATE NOCASE) WHERE recipient != '';
	CREATE TABLE webhooks (
		id          TEXT PRIMARY KEY,
		account     TEXT NOT NULL,
		url         TEXT NOT NULL,
		secret      TEXT NOT NULL,
		event_types TEXT NOT NULL, -- ',type,type,' or '' for all
		created     INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX webhooks_account ON webhooks(account);
	CREATE TABLE webhook_deliveries (
		id           INTEGER PRIMARY KEY,
		webhook_id   TEXT NOT NULL,
		event_id     INTEGER NOT NULL,
		status       TEXT NOT NULL DEFAULT 'pending', -- pending, delivered, failed
		attempts     INTEGER NOT NULL DEFAULT 0,
		next_attempt INTEGER NOT NULL,                -- unix ns
		lease_until  INTEGER NOT NULL DEFAULT 0,      -- unix ns, 0 when not leased
		last_error   TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX webhook_deliveries_ready ON webhook_deliveries(max(next_attempt, lease_until + 1))
		WHERE status = 'pending';
	CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries(webhook_id, id);
	CREATE INDEX webhook_deliveries_event ON webhook_deliveries(event_id);
	CREATE TABLE webhook_attempts (
		delivery_id INTEGER NOT NULL,
		time        INTEGER NOT NULL, -- unix ns
		http_status INTEGER NOT NULL, -- 0 when no response
		error       TEXT NOT NULL
	);
	CREATE INDEX webhook_attempts_delivery ON webhook_attempts(delivery_id);`,
	// 6: API keys, suppressions, idempotency keys and inbound routes.
	`CREATE TABLE api_keys (
		id          TEXT PRIMARY KEY,
		account     TEXT NOT NULL,
		name        TEXT NOT NULL,
		scopes      TEXT NOT NULL, -- JSON array
		secret_hash BLOB NOT NULL,
		created     INTEGER NOT NULL,
		last_used   INTEGER NOT NULL -- unix ns, 0 if never
	) WITHOUT ROWID;
	CREATE INDEX api_keys_account ON api_keys(account);
	CREATE TABLE suppressions (
		account TEXT NOT NULL,
		address TEXT NOT NULL, -- lower-cased
		reason  TEXT NOT NULL,
		detail  TEXT NOT NULL,
		created INTEGER NOT NULL,
		PRIMARY KEY (account, address)
	) WITHOUT ROWID;
	CREATE TABLE idempotency (
		account    TEXT NOT NULL,
		key        TEXT NOT NULL,
		message_id TEXT NOT NULL,
		created    INTEGER NOT NULL,
		PRIMARY KEY (account, key)
	) WITHOUT ROWID;
	CREATE INDEX idempotency_created ON idempotency(created);
	CREATE TABLE routes (
		address TEXT PRIMARY KEY, -- lower-cased "user@domain" or "@domain"
		account TEXT NOT NULL,
		action  TEXT NOT NULL,
		url     TEXT NOT NULL,
		secret  TEXT NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX routes_account ON routes(account);`,
	// 7: per-domain inbound policy (DMARC action, SPF refusal), JSON.
	`ALTER TABLE domains ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';`,
	// 8: account deletion. A deleted account's events, queued messages,
	// suppressions and idempotency keys are deleted in short transactions
	// after its row; account_purges holds its ID meanwhile, so the ID
	// cannot be reused before every row is gone. The partial index finds
	// an account's queued messages without scanning the queue (the default
	// account, which carries the SMTP traffic and is never deleted, pays
	// nothing for it).
	`CREATE TABLE account_purges (
		id      TEXT PRIMARY KEY,
		started INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;
	CREATE INDEX messages_account ON messages(account) WHERE account != 'default';`,
	// 9: leases for several nodes: the node holding a recipient's lease and
	// the lease's random token, which Renew and Update must present. A
	// lease taken before this version has neither (it belongs to no node:
	// any node's ReleaseLeases clears it).
	`ALTER TABLE recipients ADD COLUMN lease_owner TEXT NOT NULL DEFAULT '';
	ALTER TABLE recipients ADD COLUMN lease_token TEXT NOT NULL DEFAULT '';`,
	// 10: state every node shares (issue 9): named secrets (the VERP key),
	// the DMARC aggregate reports received (one per domain, reporter,
	// report ID and period), the TLS-RPT session counters (one per day,
	// domain and outcome, keyed by a hash of the outcome) and the claims
	// that make one node send each day's report of a domain.
	`CREATE TABLE secrets (
		name    TEXT PRIMARY KEY,
		value   BLOB NOT NULL,
		created INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;
	CREATE TABLE dmarc_reports (
		id        INTEGER PRIMARY KEY,
		domain    TEXT NOT NULL,
		reporter  TEXT NOT NULL,
		report_id TEXT NOT NULL,
		begin_at  INTEGER NOT NULL, -- unix ns
		end_at    INTEGER NOT NULL,
		received  INTEGER NOT NULL,
		data      BLOB NOT NULL     -- the parsed report, JSON
	);
	CREATE UNIQUE INDEX dmarc_reports_key ON dmarc_reports(domain, reporter, report_id, begin_at, end_at);
	CREATE INDEX dmarc_reports_begin ON dmarc_reports(begin_at);
	CREATE TABLE tlsrpt_counts (
		day           INTEGER NOT NULL, -- unix ns of UTC midnight
		domain        TEXT NOT NULL,
		key           TEXT NOT NULL,    -- store.TLSCount.Key
		policy_type   TEXT NOT NULL,
		policy_string TEXT NOT NULL,    -- JSON array
		mx_patterns   TEXT NOT NULL,    -- JSON array
		result        TEXT NOT NULL,    -- '' for successful sessions
		sending_ip    TEXT NOT NULL,
		mx_host       TEXT NOT NULL,
		receiving_ip  TEXT NOT NULL,
		info          TEXT NOT NULL,
		count         INTEGER NOT NULL,
		PRIMARY KEY (day, domain, key)
	) WITHOUT ROWID;
	CREATE TABLE tlsrpt_claims (
		day    INTEGER NOT NULL,
		domain TEXT NOT NULL,
		token  TEXT NOT NULL,
		until  INTEGER NOT NULL, -- unix ns
		done   INTEGER NOT NULL, -- 1: sent (or given up)
		PRIMARY KEY (day, domain)
	) WITHOUT ROWID;`,
	// 11: the messages herald store copy brought into this store from
	// another, so that a copy run again never brings a message back once
	// it was delivered and removed here.
	`CREATE TABLE copied_messages (
		id     TEXT PRIMARY KEY,
		copied INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;`,
	// 12: alerts (issue 10): the state of every alert (the version is the
	// compare-and-set that makes one node notify a transition), the
	// history of transitions and the silences of rules.
	`CREATE TABLE alert_states (
		key     TEXT PRIMARY KEY,
		rule    TEXT NOT NULL,
		firing  INTEGER NOT NULL,
		version INTEGER NOT NULL,
		since   INTEGER NOT NULL, -- unix ns
		value   REAL NOT NULL,
		detail  TEXT NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE alert_history (
		id     INTEGER PRIMARY KEY,
		key    TEXT NOT NULL,
		rule   TEXT NOT NULL,
		firing INTEGER NOT NULL,
		time   INTEGER NOT NULL, -- unix ns
		value  REAL NOT NULL,
		detail TEXT NOT NULL,
		node   TEXT NOT NULL
	);
	CREATE INDEX alert_history_rule ON alert_history(rule, id);
	CREATE TABLE alert_silences (
		rule    TEXT PRIMARY KEY,
		until   INTEGER NOT NULL, -- unix ns
		reason  TEXT NOT NULL,
		created INTEGER NOT NULL
	) WITHOUT ROWID;`,
	// 13: the web console's operators and login sessions (issue 10),
	// shared by every node; a session is found by the SHA-256 of its ID.
	`CREATE TABLE operators (
		name          TEXT PRIMARY KEY,
		password_hash TEXT NOT NULL,
		created       INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;
	CREATE TABLE console_sessions (
		id_hash   BLOB PRIMARY KEY,
		kind      TEXT NOT NULL,
		subject   TEXT NOT NULL,
		account   TEXT NOT NULL,
		csrf      TEXT NOT NULL,
		created   INTEGER NOT NULL, -- unix ns
		last_seen INTEGER NOT NULL,
		expires   INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE INDEX console_sessions_subject ON console_sessions(kind, subject);
	CREATE INDEX console_sessions_expires ON console_sessions(expires);`,
	// 14: rollups of the event log (issue 10; store/rollups.go): event
	// counts, the accept-to-delivered latency histogram and delivery
	// attempts per receiving domain, per minute and per hour (res, the
	// bucket width in seconds), per account and for all accounts
	// (account ''). Filled once from the events already stored; from then
	// on the writer maintains them with the events. Indexes on the
	// queue's received time make the oldest pending message cheap to find.
	rollupsMigration + `
	CREATE INDEX messages_received ON messages(received);
	CREATE INDEX messages_account_received ON messages(account, received);`,
	// 15: ACME (issue 11): the certificates obtained for each host name, the
	// claims that make one node at a time order a host name's
	// certificate, and the challenge responses of orders in progress.
	// IF NOT EXISTS: the step stands alone, wherever the integrator numbers
	// it, and a test that rolls the schema back to an earlier version and
	// migrates again does not need to know these tables.
	`CREATE TABLE IF NOT EXISTS acme_certs (
		name       TEXT PRIMARY KEY,
		cert_pem   BLOB NOT NULL,
		key_pem    BLOB NOT NULL,
		not_before INTEGER NOT NULL, -- unix ns
		not_after  INTEGER NOT NULL,
		updated    INTEGER NOT NULL
	) WITHOUT ROWID;
	CREATE TABLE IF NOT EXISTS acme_orders (
		name  TEXT PRIMARY KEY,
		token TEXT NOT NULL,
		until INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;
	CREATE TABLE IF NOT EXISTS acme_challenges (
		key     TEXT PRIMARY KEY,
		value   BLOB NOT NULL,
		expires INTEGER NOT NULL -- unix ns
	) WITHOUT ROWID;`,
	// 16: one-click unsubscribe (issue 12): the accounts' unsubscribe
	// groups; suppressions gain a kind (bounce, complaint, unsubscribe,
	// manual: mapped from the reason) and a group ("" global), which
	// joins the primary key. SQLite cannot change a primary key in place:
	// the table is rebuilt. Written so that it can run again on a table
	// that has the new columns (a test rolling the schema back).
	`CREATE TABLE IF NOT EXISTS unsubscribe_groups (
		account     TEXT NOT NULL,
		id          TEXT NOT NULL,
		name        TEXT NOT NULL,
		description TEXT NOT NULL,
		created     INTEGER NOT NULL, -- unix ns
		PRIMARY KEY (account, id)
	) WITHOUT ROWID;
	CREATE TABLE suppressions_v16 (
		account TEXT NOT NULL,
		address TEXT NOT NULL, -- lower-cased
		grp     TEXT NOT NULL, -- unsubscribe group, '' global
		kind    TEXT NOT NULL,
		reason  TEXT NOT NULL,
		detail  TEXT NOT NULL,
		created INTEGER NOT NULL,
		PRIMARY KEY (account, address, grp)
	) WITHOUT ROWID;
	INSERT OR IGNORE INTO suppressions_v16 (account, address, grp, kind, reason, detail, created)
		SELECT account, address, '', CASE reason WHEN 'hard_bounce' THEN 'bounce' WHEN 'complaint' THEN 'complaint'
			WHEN 'unsubscribe' THEN 'unsubscribe' ELSE 'manual' END, reason, detail, created FROM suppressions;
	DROP TABLE suppressions;
	ALTER TABLE suppressions_v16 RENAME TO suppressions;`,
	// 17: open and click tracking (issue 12): each account's default,
	// off (store/tracking.go).
	`ALTER TABLE accounts ADD COLUMN track_opens INTEGER NOT NULL DEFAULT 0;
	ALTER TABLE accounts ADD COLUMN track_clicks INTEGER NOT NULL DEFAULT 0;`,
	// 18: batched webhooks and secret rotation (issue 12;
	// store/webhooks.go): a webhook's batch size and wait, the previous
	// secret of a rotation and when it stops signing, and an index of the
	// pending deliveries of one webhook (a batch's lease).
	`ALTER TABLE webhooks ADD COLUMN batch_max INTEGER NOT NULL DEFAULT 1;
	ALTER TABLE webhooks ADD COLUMN batch_wait INTEGER NOT NULL DEFAULT 0; -- ns
	ALTER TABLE webhooks ADD COLUMN prev_secret TEXT NOT NULL DEFAULT '';
	ALTER TABLE webhooks ADD COLUMN prev_expires INTEGER NOT NULL DEFAULT 0; -- unix ns
	ALTER TABLE webhooks ADD COLUMN secret_rotated INTEGER NOT NULL DEFAULT 0; -- unix ns
	CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries(webhook_id, event_id) WHERE status = 'pending';`,
	// 19: stored templates (issue 12): an account's templates and their
	// numbered versions. IF NOT EXISTS, as 15: the step stands alone.
	`CREATE TABLE IF NOT EXISTS templates (
		id        TEXT PRIMARY KEY,
		account   TEXT NOT NULL,
		name      TEXT NOT NULL,
		created   INTEGER NOT NULL, -- unix ns
		latest    INTEGER NOT NULL, -- the newest version's number
		activated INTEGER NOT NULL  -- the version activated, 0: the newest is active
	) WITHOUT ROWID;
	CREATE INDEX IF NOT EXISTS templates_account ON templates(account, id);
	CREATE TABLE IF NOT EXISTS template_versions (
		template_id TEXT NOT NULL,
		version     INTEGER NOT NULL,
		account     TEXT NOT NULL,
		subject     TEXT NOT NULL,
		text        TEXT NOT NULL,
		html        TEXT NOT NULL,
		created     INTEGER NOT NULL, -- unix ns
		PRIMARY KEY (template_id, version)
	);
	CREATE INDEX IF NOT EXISTS template_versions_account ON template_versions(account);`,
	// 20: scheduled send and batches (issue 12): the batch a message
	// belongs to and the time it was scheduled for. The messages table is
	// rebuilt (as in step 4) so that the new columns, read with every
	// lease, come before the inline body's overflow pages; its indexes
	// are made again. The writer prepares statements naming the columns.
	`CREATE TABLE messages_v16 (
		id        TEXT PRIMARY KEY,
		sender    TEXT NOT NULL,
		received  INTEGER NOT NULL,
		size      INTEGER NOT NULL,
		ret       TEXT NOT NULL,
		envid     TEXT NOT NULL,
		client_ip TEXT NOT NULL,
		helo      TEXT NOT NULL,
		auth_user TEXT NOT NULL,
		source    TEXT NOT NULL,
		smtputf8  INTEGER NOT NULL,
		blob      INTEGER NOT NULL,             -- 1: body is the file blobs/<id>
		account   TEXT NOT NULL DEFAULT 'default',
		tags      TEXT NOT NULL DEFAULT '',     -- JSON array, '' when none
		metadata  TEXT NOT NULL DEFAULT '',     -- JSON object, '' when none
		batch_id  TEXT NOT NULL DEFAULT '',     -- '' when none
		send_at   INTEGER NOT NULL DEFAULT 0,   -- unix ns, 0 when not scheduled
		headers   BLOB NOT NULL DEFAULT x'',
		body      BLOB                          -- inline body when blob = 0 (last: overflow pages)
	);
	INSERT INTO messages_v16 (id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, blob,
			account, tags, metadata, headers, body)
		SELECT id, sender, received, size, ret, envid, client_ip, helo, auth_user, source, smtputf8, blob,
			account, tags, metadata, headers, body FROM messages;
	DROP TABLE messages;
	ALTER TABLE messages_v16 RENAME TO messages;
	CREATE INDEX messages_account ON messages(account) WHERE account != 'default';
	CREATE INDEX messages_received ON messages(received);
	CREATE INDEX messages_account_received ON messages(account, received);
	CREATE INDEX messages_batch ON messages(batch_id) WHERE batch_id != '';
	CREATE INDEX messages_send_at ON messages(send_at) WHERE send_at != 0;`,
	// 21: batches (issue 12): an account's group of messages, paused,
	// resumed or cancelled together; the counts of what joined it and of
	// the recipients its cancellation removed. IF NOT EXISTS: the step
	// stands alone wherever the integrator numbers it.
	`CREATE TABLE IF NOT EXISTS batches (
		id         TEXT PRIMARY KEY,
		account    TEXT NOT NULL,
		state      TEXT NOT NULL,   -- active, paused, cancelled
		created    INTEGER NOT NULL, -- unix ns
		updated    INTEGER NOT NULL,
		messages   INTEGER NOT NULL DEFAULT 0,
		recipients INTEGER NOT NULL DEFAULT 0,
		cancelled  INTEGER NOT NULL DEFAULT 0
	) WITHOUT ROWID;
	CREATE INDEX IF NOT EXISTS batches_account ON batches(account);`,
}

// pageSize is the database page size, set when the database is created.
// 16 KiB pages were measured no faster for 4 KiB bodies with 32 writers and
// slower for a single writer (more bytes per commit).
const pageSize = 4096

// migrate creates or upgrades the schema and returns the version it found.
func migrate(ctx context.Context, conn *sql.Conn, dbPath string) (from int, err error) {
	// The page size only takes effect before the database has content, so
	// it must come before the switch to WAL (which writes the header).
	if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA page_size = %d", pageSize)); err != nil {
		return 0, mapErr(fmt.Errorf("sqlite store: set page size: %w", err))
	}
	var mode string
	if err := conn.QueryRowContext(ctx, "PRAGMA journal_mode = WAL").Scan(&mode); err != nil {
		return 0, mapErr(fmt.Errorf("sqlite store: set WAL mode: %w", err))
	}
	if mode != "wal" {
		return 0, fmt.Errorf("sqlite store: journal mode is %q, not wal", mode)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return 0, mapErr(fmt.Errorf("sqlite store: migrate: %w", err))
	}
	err = func() error {
		if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)`); err != nil {
			return err
		}
		var v int
		err := conn.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&v)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := conn.ExecContext(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		from = v
		if v > len(schema) {
			return &SchemaTooNewError{Path: dbPath, Version: v, Supported: len(schema)}
		}
		for ; v < len(schema); v++ {
			if _, err := conn.ExecContext(ctx, schema[v]); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
		}
		_, err = conn.ExecContext(ctx, `UPDATE schema_version SET version = ?`, v)
		return err
	}()
	if err != nil {
		conn.ExecContext(ctx, "ROLLBACK")
		var tooNew *SchemaTooNewError
		if errors.As(err, &tooNew) {
			return from, err
		}
		return from, mapErr(fmt.Errorf("sqlite store: migrate: %w", err))
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		conn.ExecContext(ctx, "ROLLBACK")
		return from, mapErr(fmt.Errorf("sqlite store: migrate: %w", err))
	}
	return from, nil
}

// sqliteCode returns the primary SQLite result code in err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code() & 0xff
	}
	return 0
}

// isFull reports whether err means the disk (or quota) is full.
func isFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || sqliteCode(err) == sqlite3.SQLITE_FULL
}

// kindError adds a kind (ErrBusy...) to an error without changing its text.
type kindError struct {
	kind, err error
}

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// classify marks an Open failure with the kind SQLite reported.
func classify(err error) error {
	var kind error
	switch sqliteCode(err) {
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		kind = ErrBusy
	case sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM:
		kind = ErrReadOnly
	case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
		kind = ErrNotDatabase
	default:
		return err
	}
	return &kindError{kind: kind, err: err}
}

// mapErr wraps a full-disk error with store.ErrStorageFull.
func mapErr(err error) error {
	if err == nil || errors.Is(err, store.ErrStorageFull) || !isFull(err) {
		return err
	}
	return fmt.Errorf("%w: %w", store.ErrStorageFull, err)
}
