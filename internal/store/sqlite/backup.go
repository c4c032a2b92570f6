package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// Snapshot is a consistent copy of a data directory's database, taken
// while the server may be writing to it (see TakeSnapshot). It keeps a
// connection open on the live database, which it only reads, to tell a message that
// finished after the snapshot from a damaged store.
type Snapshot struct {
	path   string
	schema int
	db     *sql.DB // the copy
	live   *sql.DB // the data directory's database, read-only
}

// TakeSnapshot copies the database of data directory dir into the new file
// dest with VACUUM INTO: one read transaction, so the copy is the database
// as of one instant, while the server goes on committing (WAL mode lets a
// reader and the writer run together). dest must not exist. The copy's
// schema version must not be newer than this program's (a
// *SchemaTooNewError otherwise). Close the Snapshot when done; Close
// fsyncs the copy.
func TakeSnapshot(ctx context.Context, dir, dest string) (*Snapshot, error) {
	src := filepath.Join(dir, "herald.db")
	if _, err := os.Stat(src); err != nil {
		return nil, fmt.Errorf("sqlite store: snapshot: %w", err)
	}
	// Created empty first, mode 0600 (the database holds keys and password
	// hashes): VACUUM INTO writes into an empty file.
	f, err := os.OpenFile(dest, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: snapshot: %w", err)
	}
	f.Close()
	busyMS := DefaultBusyTimeout.Milliseconds()
	// Not query_only: that pragma refuses VACUUM INTO. This connection
	// only reads the live database.
	live, err := sql.Open("sqlite", fmt.Sprintf("%s?_pragma=busy_timeout(%d)", src, busyMS))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: snapshot: open %s: %w", src, err)
	}
	live.SetMaxOpenConns(1)
	ok := false
	defer func() {
		if !ok {
			live.Close()
		}
	}()
	if _, err := live.ExecContext(ctx, `VACUUM INTO ?`, dest); err != nil {
		os.Remove(dest)
		return nil, mapErr(fmt.Errorf("sqlite store: snapshot %s into %s: %w", src, dest, err))
	}
	db, err := sql.Open("sqlite", fmt.Sprintf("%s?_pragma=busy_timeout(%d)&_pragma=synchronous(FULL)", dest, busyMS))
	if err != nil {
		return nil, fmt.Errorf("sqlite store: snapshot: open %s: %w", dest, err)
	}
	db.SetMaxOpenConns(1)
	s := &Snapshot{path: dest, db: db, live: live}
	if err := db.QueryRowContext(ctx, `SELECT version FROM schema_version`).Scan(&s.schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite store: snapshot %s: schema version: %w", dest, err)
	}
	if s.schema > SchemaVersion() {
		db.Close()
		return nil, &SchemaTooNewError{Path: src, Version: s.schema, Supported: SchemaVersion()}
	}
	if s.schema < 4 {
		db.Close()
		return nil, fmt.Errorf("sqlite store: snapshot %s: schema version %d is too old to back up; run herald store migrate first", src, s.schema)
	}
	ok = true
	return s, nil
}

// Schema is the schema version of the snapshot.
func (s *Snapshot) Schema() int { return s.schema }

// BlobMessages returns the IDs of the snapshot's messages whose body is a
// blob file (DATA_DIR/blobs/<id>).
func (s *Snapshot) BlobMessages(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id FROM messages WHERE blob = 1 ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: snapshot blobs: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("sqlite store: snapshot blobs: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: snapshot blobs: %w", err)
	}
	return ids, nil
}

// Counts returns the number of messages in the snapshot's queue and of
// their recipients still to deliver (queued or deferred).
func (s *Snapshot) Counts(ctx context.Context) (messages, pending int, err error) {
	err = s.db.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM messages),
		(SELECT count(*) FROM recipients WHERE status IN ('queued', 'deferred'))`).Scan(&messages, &pending)
	if err != nil {
		return 0, 0, fmt.Errorf("sqlite store: snapshot counts: %w", err)
	}
	return messages, pending, nil
}

// LiveHas reports whether message id is still in the live database (read
// now, not as of the snapshot).
func (s *Snapshot) LiveHas(ctx context.Context, id string) (bool, error) {
	var one int
	err := s.live.QueryRowContext(ctx, `SELECT 1 FROM messages WHERE id = ?`, id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sqlite store: look up message %s: %w", id, err)
	}
	return true, nil
}

// Drop removes messages (and their recipients) from the snapshot, in one
// transaction.
func (s *Snapshot) Drop(ctx context.Context, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return mapErr(fmt.Errorf("sqlite store: snapshot drop: %w", err))
	}
	defer tx.Rollback()
	for _, id := range ids {
		if _, err := tx.ExecContext(ctx, `DELETE FROM recipients WHERE message_id = ?`, id); err != nil {
			return mapErr(fmt.Errorf("sqlite store: snapshot drop %s: %w", id, err))
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE id = ?`, id); err != nil {
			return mapErr(fmt.Errorf("sqlite store: snapshot drop %s: %w", id, err))
		}
	}
	if err := tx.Commit(); err != nil {
		return mapErr(fmt.Errorf("sqlite store: snapshot drop: %w", err))
	}
	return nil
}

// Close closes the connections and makes the copy durable (fsync of the
// file and of its directory).
func (s *Snapshot) Close() error {
	errs := []error{s.db.Close(), s.live.Close()}
	if f, err := os.OpenFile(s.path, os.O_RDWR, 0); err != nil {
		errs = append(errs, err)
	} else {
		errs = append(errs, f.Sync(), f.Close())
	}
	errs = append(errs, syncDir(filepath.Dir(s.path)))
	if err := errors.Join(errs...); err != nil {
		return mapErr(fmt.Errorf("sqlite store: snapshot %s: %w", s.path, err))
	}
	return nil
}

// ReleaseAllLeases prepares a restored database in data directory dir for
// its first server: it clears every recipient lease, whichever node took
// it (the holds of paused batches are taken again when the scheduler
// checks the batch), and makes every pending recipient due at now (a
// deferred recipient's back-off was counted on the old machine), but for
// scheduled messages not yet attempted, so that the next server
// delivers the restored queue at once. It returns how many leases it
// cleared. It opens (and migrates) the store, so it must run with no
// server on dir: restore calls it holding the data directory's lock.
func ReleaseAllLeases(ctx context.Context, dir string, now time.Time) (int64, error) {
	s, err := Open(dir, Options{})
	if err != nil {
		return 0, err
	}
	var n int64
	err = s.w.do(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), `UPDATE recipients
			SET lease_until = 0, lease_owner = '', lease_token = ''
			WHERE lease_until != 0`)
		if err != nil {
			return err
		}
		if n, err = res.RowsAffected(); err != nil {
			return err
		}
		// A scheduled message not yet attempted keeps its send time.
		_, err = w.conn.ExecContext(context.Background(), `UPDATE recipients SET next_attempt = ?1
			WHERE status IN ('queued', 'deferred') AND next_attempt > ?1
				AND NOT (attempts = 0 AND next_attempt = (SELECT send_at FROM messages m WHERE m.id = recipients.message_id))`,
			now.UnixNano())
		return err
	})
	cerr := s.Close()
	if err != nil {
		return 0, fmt.Errorf("sqlite store: release leases: %w", err)
	}
	return n, cerr
}
