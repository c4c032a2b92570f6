package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
)

// schema is the list of migrations; schema_version holds how many were
// applied. Each runs in the transaction that records it (PostgreSQL's DDL
// is transactional), under an advisory lock, so that nodes starting
// together migrate once.
//
// Times are Unix nanoseconds (bigint, 0 for none) as in the SQLite store,
// so that a store copies into the other unchanged and the lease expression
// GREATEST(next_attempt, lease_until + 1) is immutable and indexable. Keys
// and ordered text use the "C" collation: byte order whatever the
// database's locale, as in SQLite.
var schema = []string{
	// 1: everything the SQLite store has at its version 8, plus chunked
	// bodies and lease owners and tokens.
	`CREATE TABLE messages (
		id        text COLLATE "C" PRIMARY KEY,
		sender    text NOT NULL,
		received  bigint NOT NULL,
		size      bigint NOT NULL,
		ret       text NOT NULL,
		envid     text NOT NULL,
		client_ip text NOT NULL,
		helo      text NOT NULL,
		auth_user text NOT NULL,
		source    text NOT NULL,
		smtputf8  boolean NOT NULL,
		account   text COLLATE "C" NOT NULL DEFAULT 'default',
		tags      text NOT NULL DEFAULT '',  -- JSON array, '' when none
		metadata  text NOT NULL DEFAULT '',  -- JSON object, '' when none
		headers   bytea NOT NULL DEFAULT '', -- prepended when the body is read
		body_id   bigint,                    -- body in body_chunks; NULL: inline
		body      bytea                      -- inline body
	);
	ALTER TABLE messages ALTER COLUMN body SET STORAGE EXTERNAL;
	CREATE INDEX messages_account ON messages (account) WHERE account <> 'default';
	-- Bodies larger than the inline maximum, in order.
	CREATE TABLE body_chunks (
		body_id bigint NOT NULL,
		seq     integer NOT NULL,
		data    bytea NOT NULL,
		PRIMARY KEY (body_id, seq)
	);
	ALTER TABLE body_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
	-- Bodies whose first chunks were written before their message was
	-- enqueued; the enqueue deletes the row. Rows left by a node that died
	-- mid-message are collected with their chunks after a day.
	CREATE TABLE pending_bodies (
		id      bigint PRIMARY KEY,
		created bigint NOT NULL
	);
	CREATE TABLE recipients (
		id           bigserial PRIMARY KEY,
		message_id   text COLLATE "C" NOT NULL,
		address      text NOT NULL,
		notify       text NOT NULL,
		orcpt        text NOT NULL,
		status       text NOT NULL,
		attempts     integer NOT NULL,
		next_attempt bigint NOT NULL,
		lease_until  bigint NOT NULL DEFAULT 0,  -- 0 when not leased
		lease_owner  text NOT NULL DEFAULT '',   -- node holding the lease
		lease_token  text NOT NULL DEFAULT '',   -- the lease's token
		last_reply   text NOT NULL DEFAULT '',
		remote_mta   text NOT NULL DEFAULT '',
		delay_warned boolean NOT NULL DEFAULT false,
		updated_at   bigint NOT NULL
	);
	CREATE INDEX recipients_message ON recipients (message_id);
	-- When a pending recipient can next be leased: due and not leased.
	CREATE INDEX recipients_ready ON recipients ((GREATEST(next_attempt, lease_until + 1)))
		WHERE status IN ('queued', 'deferred');
	CREATE TABLE domains (
		name    text COLLATE "C" PRIMARY KEY,
		account text COLLATE "C" NOT NULL DEFAULT 'default',
		policy  text NOT NULL DEFAULT '{}'
	);
	CREATE INDEX domains_account ON domains (account);
	CREATE TABLE users (
		address       text COLLATE "C" PRIMARY KEY,
		password_hash text NOT NULL,
		send_as       text NOT NULL, -- JSON array
		created       bigint NOT NULL,
		account       text COLLATE "C" NOT NULL DEFAULT 'default'
	);
	CREATE INDEX users_account ON users (account);
	CREATE TABLE aliases (
		address text COLLATE "C" PRIMARY KEY,
		targets text NOT NULL -- JSON array
	);
	CREATE TABLE dkim_keys (
		domain      text COLLATE "C" NOT NULL,
		selector    text COLLATE "C" NOT NULL,
		algorithm   text COLLATE "C" NOT NULL,
		private_key bytea NOT NULL, -- PKCS#8 PEM
		active      boolean NOT NULL,
		created     bigint NOT NULL,
		PRIMARY KEY (domain, selector)
	);
	CREATE UNIQUE INDEX dkim_keys_active ON dkim_keys (domain, algorithm) WHERE active;
	CREATE TABLE accounts (
		id         text COLLATE "C" PRIMARY KEY,
		name       text NOT NULL,
		per_minute integer NOT NULL,
		per_hour   integer NOT NULL,
		per_day    integer NOT NULL,
		created    bigint NOT NULL
	);
	INSERT INTO accounts (id, name, per_minute, per_hour, per_day, created)
		VALUES ('default', 'Default', 0, 0, 0, (extract(epoch FROM clock_timestamp()) * 1000)::bigint * 1000000);
	CREATE TABLE account_purges (
		id      text COLLATE "C" PRIMARY KEY,
		started bigint NOT NULL
	);
	-- The event log, which is also the webhook outbox: every event insert
	-- fans out, in its statement, to the matching webhooks of its account.
	CREATE TABLE events (
		id         bigserial PRIMARY KEY,
		time       bigint NOT NULL,
		type       text NOT NULL,
		account    text COLLATE "C" NOT NULL,
		message_id text COLLATE "C" NOT NULL DEFAULT '',
		recipient  text NOT NULL DEFAULT '',
		sender     text NOT NULL DEFAULT '',
		remote_mta text NOT NULL DEFAULT '',
		reply      text NOT NULL DEFAULT '',
		enhanced   text NOT NULL DEFAULT '',
		tls        text NOT NULL DEFAULT '',
		bounce     text NOT NULL DEFAULT '',
		attempt    integer NOT NULL DEFAULT 0,
		tags       text NOT NULL DEFAULT '',
		metadata   text NOT NULL DEFAULT ''
	);
	CREATE INDEX events_account ON events (account, id);
	CREATE INDEX events_message ON events (message_id) WHERE message_id <> '';
	CREATE INDEX events_recipient ON events (lower(recipient)) WHERE recipient <> '';
	CREATE TABLE webhooks (
		id          text COLLATE "C" PRIMARY KEY,
		account     text COLLATE "C" NOT NULL,
		url         text NOT NULL,
		secret      text NOT NULL,
		event_types text NOT NULL, -- ',type,type,' or '' for all
		created     bigint NOT NULL
	);
	CREATE INDEX webhooks_account ON webhooks (account);
	CREATE TABLE webhook_deliveries (
		id           bigserial PRIMARY KEY,
		webhook_id   text COLLATE "C" NOT NULL,
		event_id     bigint NOT NULL,
		status       text NOT NULL DEFAULT 'pending', -- pending, delivered, failed
		attempts     integer NOT NULL DEFAULT 0,
		next_attempt bigint NOT NULL,
		lease_until  bigint NOT NULL DEFAULT 0,
		last_error   text NOT NULL DEFAULT ''
	);
	CREATE INDEX webhook_deliveries_ready ON webhook_deliveries ((GREATEST(next_attempt, lease_until + 1)))
		WHERE status = 'pending';
	CREATE INDEX webhook_deliveries_webhook ON webhook_deliveries (webhook_id, id);
	CREATE INDEX webhook_deliveries_event ON webhook_deliveries (event_id);
	CREATE TABLE webhook_attempts (
		delivery_id bigint NOT NULL,
		time        bigint NOT NULL,
		http_status integer NOT NULL, -- 0 when no response
		error       text NOT NULL
	);
	CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id);
	CREATE TABLE api_keys (
		id          text COLLATE "C" PRIMARY KEY,
		account     text COLLATE "C" NOT NULL,
		name        text NOT NULL,
		scopes      text NOT NULL, -- JSON array
		secret_hash bytea NOT NULL,
		created     bigint NOT NULL,
		last_used   bigint NOT NULL
	);
	CREATE INDEX api_keys_account ON api_keys (account);
	CREATE TABLE suppressions (
		account text COLLATE "C" NOT NULL,
		address text COLLATE "C" NOT NULL, -- lower-cased
		reason  text NOT NULL,
		detail  text NOT NULL,
		created bigint NOT NULL,
		PRIMARY KEY (account, address)
	);
	CREATE TABLE idempotency (
		account    text COLLATE "C" NOT NULL,
		key        text COLLATE "C" NOT NULL,
		message_id text NOT NULL,
		created    bigint NOT NULL,
		PRIMARY KEY (account, key)
	);
	CREATE INDEX idempotency_created ON idempotency (created);
	CREATE TABLE routes (
		address text COLLATE "C" PRIMARY KEY, -- lower-cased "user@domain" or "@domain"
		account text COLLATE "C" NOT NULL,
		action  text NOT NULL,
		url     text NOT NULL,
		secret  text NOT NULL
	);
	CREATE INDEX routes_account ON routes (account);`,
	// 2: state every node shares (issue 9): named secrets (the VERP key),
	// DMARC aggregate reports (one per domain, reporter, report ID and
	// period; reporter and ID are hashed in the index, since a report may
	// carry any length), TLS-RPT counters and the claims that make one
	// node send each day's report of a domain, sliding-window rate slots
	// of accounts and users, and the delivery destinations' back-off,
	// connections and message rate.
	`CREATE TABLE secrets (
		name    text COLLATE "C" PRIMARY KEY,
		value   bytea NOT NULL,
		created bigint NOT NULL
	);
	CREATE TABLE dmarc_reports (
		id        bigserial PRIMARY KEY,
		domain    text COLLATE "C" NOT NULL,
		reporter  text NOT NULL,
		report_id text NOT NULL,
		begin_at  bigint NOT NULL,
		end_at    bigint NOT NULL,
		received  bigint NOT NULL,
		data      bytea NOT NULL -- the parsed report, JSON
	);
	CREATE UNIQUE INDEX dmarc_reports_key ON dmarc_reports (domain, begin_at, end_at, md5(reporter), md5(report_id));
	CREATE INDEX dmarc_reports_begin ON dmarc_reports (begin_at);
	CREATE TABLE tlsrpt_counts (
		day           bigint NOT NULL, -- UTC midnight
		domain        text COLLATE "C" NOT NULL,
		key           text COLLATE "C" NOT NULL, -- store.TLSCount.Key
		policy_type   text NOT NULL,
		policy_string text NOT NULL, -- JSON array
		mx_patterns   text NOT NULL, -- JSON array
		result        text NOT NULL, -- '' for successful sessions
		sending_ip    text NOT NULL,
		mx_host       text NOT NULL,
		receiving_ip  text NOT NULL,
		info          text NOT NULL,
		count         bigint NOT NULL,
		PRIMARY KEY (day, domain, key)
	);
	CREATE TABLE tlsrpt_claims (
		day    bigint NOT NULL,
		domain text COLLATE "C" NOT NULL,
		token  text NOT NULL,
		until  bigint NOT NULL,
		done   boolean NOT NULL,
		PRIMARY KEY (day, domain)
	);
	-- A key's sliding windows in one row: for each window (0 minute,
	-- 1 hour, 2 day) a ring of its slots' numbers (Unix ns / the slot
	-- width) and counts, so that a charge is one UPSERT whose check reads
	-- the row it locks.
	CREATE TABLE rate_windows (
		key     text COLLATE "C" PRIMARY KEY,
		e0      bigint[] NOT NULL,
		c0      bigint[] NOT NULL,
		e1      bigint[] NOT NULL,
		c1      bigint[] NOT NULL,
		e2      bigint[] NOT NULL,
		c2      bigint[] NOT NULL,
		touched bigint NOT NULL -- Unix ns of the last charge
	);
	CREATE INDEX rate_windows_touched ON rate_windows (touched);
	-- A delivery destination in one row: its back-off (version counts
	-- SetDestinationState's changes), the connections held (token, owner
	-- node, until, in step) and the ring of its minute window, so that a
	-- new session is one UPSERT.
	CREATE TABLE destinations (
		key          text COLLATE "C" PRIMARY KEY,
		factor       double precision NOT NULL DEFAULT 1,
		strikes      integer NOT NULL DEFAULT 0,
		paused_until bigint NOT NULL DEFAULT 0,
		last_change  bigint NOT NULL DEFAULT 0,
		version      bigint NOT NULL DEFAULT 0,
		conn_tokens  text[] NOT NULL DEFAULT '{}',
		conn_owners  text[] NOT NULL DEFAULT '{}',
		conn_until   bigint[] NOT NULL DEFAULT '{}',
		rate_e       bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[13]), -- ring of the minute window's 13 slots
		rate_c       bigint[] NOT NULL DEFAULT array_fill(0::bigint, ARRAY[13]),
		touched      bigint NOT NULL DEFAULT 0 -- Unix ns of the last session or change
	);
	CREATE INDEX destinations_touched ON destinations (touched);`,
	// 3: the messages herald store copy brought into this store from
	// another, so that a copy run again never brings a message back once
	// it was delivered and removed here.
	`CREATE TABLE copied_messages (
		id     text COLLATE "C" PRIMARY KEY,
		copied bigint NOT NULL
	);`,
	// 4: alerts (issue 10): the state of every alert (the version is the
	// compare-and-set that makes one node notify a transition), the
	// history of transitions and the silences of rules.
	`CREATE TABLE alert_states (
		key     text COLLATE "C" PRIMARY KEY,
		rule    text COLLATE "C" NOT NULL,
		firing  boolean NOT NULL,
		version bigint NOT NULL,
		since   bigint NOT NULL,
		value   double precision NOT NULL,
		detail  text NOT NULL
	);
	CREATE TABLE alert_history (
		id     bigserial PRIMARY KEY,
		key    text COLLATE "C" NOT NULL,
		rule   text COLLATE "C" NOT NULL,
		firing boolean NOT NULL,
		time   bigint NOT NULL,
		value  double precision NOT NULL,
		detail text NOT NULL,
		node   text NOT NULL
	);
	CREATE INDEX alert_history_rule ON alert_history (rule, id);
	CREATE INDEX alert_history_time ON alert_history (time);
	CREATE TABLE alert_silences (
		rule    text COLLATE "C" PRIMARY KEY,
		until   bigint NOT NULL,
		reason  text NOT NULL,
		created bigint NOT NULL
	);`,
	// 5: the web console's operators and login sessions (issue 10); a
	// session is found by the SHA-256 of its ID.
	`CREATE TABLE operators (
		name          text COLLATE "C" PRIMARY KEY,
		password_hash text NOT NULL,
		created       bigint NOT NULL
	);
	CREATE TABLE console_sessions (
		id_hash   bytea PRIMARY KEY,
		kind      text NOT NULL,
		subject   text COLLATE "C" NOT NULL,
		account   text NOT NULL,
		csrf      text NOT NULL,
		created   bigint NOT NULL,
		last_seen bigint NOT NULL,
		expires   bigint NOT NULL
	);
	CREATE INDEX console_sessions_subject ON console_sessions (kind, subject);
	CREATE INDEX console_sessions_expires ON console_sessions (expires);`,
	// 6: ACME (issue 11): the certificates obtained for each host name, the
	// claims that make one node at a time order a host name's
	// certificate, and the challenge responses of orders in progress.
	// IF NOT EXISTS: the step stands alone, wherever the integrator numbers
	// it, and a test that rolls the schema back to an earlier version and
	// migrates again does not need to know these tables.
	`CREATE TABLE IF NOT EXISTS acme_certs (
		name       text COLLATE "C" PRIMARY KEY,
		cert_pem   bytea NOT NULL,
		key_pem    bytea NOT NULL,
		not_before bigint NOT NULL, -- unix ns
		not_after  bigint NOT NULL,
		updated    bigint NOT NULL
	);
	CREATE TABLE IF NOT EXISTS acme_orders (
		name  text COLLATE "C" PRIMARY KEY,
		token text NOT NULL,
		until bigint NOT NULL -- unix ns
	);
	CREATE TABLE IF NOT EXISTS acme_challenges (
		key     text COLLATE "C" PRIMARY KEY,
		value   bytea NOT NULL,
		expires bigint NOT NULL -- unix ns
	);`,
	// 7: rollups of the event log (issue 10; store/rollups.go): event
	// counts, the accept-to-delivered latency histogram and delivery
	// attempts per receiving domain, per minute and per hour (res, the
	// bucket width in seconds), per account and for all accounts
	// (account ''), in shards (rollups.go). Filled once from the events
	// already stored; from then on every event insert maintains them.
	rollupsMigration,
	// 8: one-click unsubscribe (issue 12): the accounts' unsubscribe
	// groups; suppressions gain a kind (bounce, complaint, unsubscribe,
	// manual: mapped from the reason) and a group ('' global), which joins
	// the primary key. Written so that it can run again.
	`CREATE TABLE IF NOT EXISTS unsubscribe_groups (
		account     text COLLATE "C" NOT NULL,
		id          text COLLATE "C" NOT NULL,
		name        text NOT NULL,
		description text NOT NULL,
		created     bigint NOT NULL, -- unix ns
		PRIMARY KEY (account, id)
	);
	ALTER TABLE suppressions ADD COLUMN IF NOT EXISTS grp text COLLATE "C" NOT NULL DEFAULT '';
	ALTER TABLE suppressions ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT '';
	UPDATE suppressions SET kind = CASE reason WHEN 'hard_bounce' THEN 'bounce' WHEN 'complaint' THEN 'complaint'
		WHEN 'unsubscribe' THEN 'unsubscribe' ELSE 'manual' END WHERE kind = '';
	ALTER TABLE suppressions DROP CONSTRAINT IF EXISTS suppressions_pkey;
	ALTER TABLE suppressions ADD CONSTRAINT suppressions_pkey PRIMARY KEY (account, address, grp);`,
	// 9: open and click tracking (issue 12): each account's default, off
	// (store/tracking.go).
	`ALTER TABLE accounts ADD COLUMN IF NOT EXISTS track_opens boolean NOT NULL DEFAULT false;
	ALTER TABLE accounts ADD COLUMN IF NOT EXISTS track_clicks boolean NOT NULL DEFAULT false;`,
	// 10: batched webhooks and secret rotation (issue 12;
	// store/webhooks.go): a webhook's batch size and wait, the previous
	// secret of a rotation and when it stops signing, and an index of the
	// pending deliveries of one webhook (a batch's lease). IF NOT EXISTS:
	// the step stands alone, wherever the integrator numbers it.
	`ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS batch_max integer NOT NULL DEFAULT 1;
	ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS batch_wait bigint NOT NULL DEFAULT 0; -- ns
	ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS prev_secret text NOT NULL DEFAULT '';
	ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS prev_expires bigint NOT NULL DEFAULT 0; -- unix ns
	ALTER TABLE webhooks ADD COLUMN IF NOT EXISTS secret_rotated bigint NOT NULL DEFAULT 0; -- unix ns
	CREATE INDEX IF NOT EXISTS webhook_deliveries_pending ON webhook_deliveries (webhook_id, event_id) WHERE status = 'pending';`,
	// 11: stored templates (issue 12): an account's templates and their
	// numbered versions. IF NOT EXISTS, as 6: the step stands alone.
	`CREATE TABLE IF NOT EXISTS templates (
		id        text COLLATE "C" PRIMARY KEY,
		account   text COLLATE "C" NOT NULL,
		name      text NOT NULL,
		created   bigint NOT NULL, -- unix ns
		latest    bigint NOT NULL, -- the newest version's number
		activated bigint NOT NULL  -- the version activated, 0: the newest is active
	);
	CREATE INDEX IF NOT EXISTS templates_account ON templates (account, id);
	CREATE TABLE IF NOT EXISTS template_versions (
		template_id text COLLATE "C" NOT NULL,
		version     bigint NOT NULL,
		account     text COLLATE "C" NOT NULL,
		subject     text NOT NULL,
		text        text NOT NULL,
		html        text NOT NULL,
		created     bigint NOT NULL, -- unix ns
		PRIMARY KEY (template_id, version)
	);
	CREATE INDEX IF NOT EXISTS template_versions_account ON template_versions (account);`,
	// 12: scheduled send and batches (issue 12): the batch a message
	// belongs to and the time it was scheduled for; an account's batches
	// (paused, resumed or cancelled together) with the counts of what
	// joined them and of the recipients their cancellation removed. IF
	// NOT EXISTS: the step stands alone wherever the integrator numbers it.
	`ALTER TABLE messages ADD COLUMN IF NOT EXISTS batch_id text COLLATE "C" NOT NULL DEFAULT '';
	ALTER TABLE messages ADD COLUMN IF NOT EXISTS send_at bigint NOT NULL DEFAULT 0; -- unix ns, 0 when not scheduled
	CREATE INDEX IF NOT EXISTS messages_batch ON messages (batch_id) WHERE batch_id <> '';
	CREATE INDEX IF NOT EXISTS messages_send_at ON messages (send_at) WHERE send_at <> 0;
	CREATE TABLE IF NOT EXISTS batches (
		id         text COLLATE "C" PRIMARY KEY,
		account    text COLLATE "C" NOT NULL,
		state      text NOT NULL,   -- active, paused, cancelled
		created    bigint NOT NULL, -- unix ns
		updated    bigint NOT NULL,
		messages   bigint NOT NULL DEFAULT 0,
		recipients bigint NOT NULL DEFAULT 0,
		cancelled  bigint NOT NULL DEFAULT 0
	);
	CREATE INDEX IF NOT EXISTS batches_account ON batches (account);`,
}

// SchemaVersion is the newest schema version this program writes.
func SchemaVersion() int { return len(schema) }

// migrate creates or upgrades the schema in the current schema of conn,
// under a transaction-scoped advisory lock keyed by the schema's name. It
// reports whether it created the store and the version it found; with
// noCreate, a schema without a store is refused with ErrNoStore, and with
// noMigrate an existing store of an older version with a
// *SchemaTooOldError.
func migrate(ctx context.Context, conn *pgx.Conn, where, schemaName string, noCreate, noMigrate bool) (created bool, from int, err error) {
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('herald.migrate'), hashtext($1))`, schemaName); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT to_regclass(quote_ident(current_schema()) || '.schema_version') IS NOT NULL`).Scan(&exists); err != nil {
			return err
		}
		if !exists && noCreate {
			return ErrNoStore
		}
		created = !exists
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)`); err != nil {
			return err
		}
		var v int
		err := tx.QueryRow(ctx, `SELECT version FROM schema_version`).Scan(&v)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			if _, err := tx.Exec(ctx, `INSERT INTO schema_version (version) VALUES (0)`); err != nil {
				return err
			}
		case err != nil:
			return err
		}
		from = v
		if v > len(schema) {
			return &SchemaTooNewError{Path: where, Version: v, Supported: len(schema)}
		}
		if v == len(schema) {
			return nil
		}
		if exists && noMigrate {
			return &SchemaTooOldError{Path: where, Version: v, Supported: len(schema)}
		}
		for ; v < len(schema); v++ {
			if _, err := tx.Exec(ctx, schema[v]); err != nil {
				return fmt.Errorf("migration %d: %w", v+1, err)
			}
		}
		_, err = tx.Exec(ctx, `UPDATE schema_version SET version = $1`, v)
		return err
	})
	if err != nil {
		var tooNew *SchemaTooNewError
		var tooOld *SchemaTooOldError
		if errors.As(err, &tooNew) || errors.As(err, &tooOld) || errors.Is(err, ErrNoStore) {
			return false, from, err
		}
		return false, from, mapErr(fmt.Errorf("postgres store %s: migrate: %w", where, err))
	}
	return created, from, nil
}
