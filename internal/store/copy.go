package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// This file declares how everything a store holds is copied into another
// store (herald store copy: a single SQLite node moving into a PostgreSQL
// cluster, issue 9). Both backends keep the same tables with the same
// columns (times as Unix nanoseconds, lists as JSON text), so the copy is
// driven by a list of tables (CopyTables): a backend exports and imports
// rows of any table in the list generically, and a new kind of state is
// copied by adding its table to the list. The queue is the exception:
// messages are copied one at a time with their recipients and their body,
// which is streamed (see Copy).

// ColumnType is the type of a copied column's values, the same in every
// backend: Text is a string, Int an int64, Bool a bool (an integer in
// SQLite) and Bytes a []byte.
type ColumnType int

// Column types.
const (
	Text ColumnType = iota
	Int
	Bool
	Bytes
)

// Column is one copied column.
type Column struct {
	Name string
	Type ColumnType
	// Reset, when not nil, is written instead of the source's value: a
	// lease or claim is never copied as held.
	Reset any
}

// Table is one kind of state copied row by row.
type Table struct {
	// Kind names the state in the copy's summary ("dkim keys").
	Kind string
	// Name is the table, the same in every backend.
	Name string
	// Key lists the columns that identify a row: rows are exported in
	// their order, and a row whose key the destination has already is
	// not inserted again (a copy can be rerun).
	Key []string
	// Columns are every copied column, the key's included. A column of
	// the table not listed (a surrogate ID the destination assigns) is
	// left to its default.
	Columns []Column
	// Guarded marks state whose different value in the destination is a
	// conflict that stops the copy (before anything is written) unless
	// the source's is to replace it: a different VERP key would make
	// every bounce of the mail the source sent unrecognisable.
	Guarded bool
	// Serial is the column (the key) whose database sequence must be
	// moved past the copied values, "" if none.
	Serial string
}

// Column returns the index of column name in t.Columns, or -1.
func (t *Table) Column(name string) int {
	for i, c := range t.Columns {
		if c.Name == name {
			return i
		}
	}
	return -1
}

// KeyOf returns the key values of row r of t.
func (t *Table) KeyOf(r Row) Row {
	k := make(Row, len(t.Key))
	for i, name := range t.Key {
		k[i] = r[t.Column(name)]
	}
	return k
}

// Row is one row of a Table: a value per column, in the order of Columns,
// of the column's type.
type Row []any

func cols(spec string) []Column {
	var cs []Column
	for _, f := range strings.Fields(spec) {
		name, typ, _ := strings.Cut(f, ":")
		c := Column{Name: name}
		switch typ {
		case "", "t":
			c.Type = Text
		case "i":
			c.Type = Int
		case "b":
			c.Type = Bool
		case "x":
			c.Type = Bytes
		default:
			panic("store: bad column spec " + f)
		}
		cs = append(cs, c)
	}
	return cs
}

// reset returns cs with column name's value replaced by v on copy.
func reset(cs []Column, name string, v any) []Column {
	for i := range cs {
		if cs[i].Name == name {
			cs[i].Reset = v
			return cs
		}
	}
	panic("store: no column " + name)
}

// CopyTables are the tables Copy copies, in order (an account before what
// it owns). A backend's table that is neither here nor in MessageTable or
// RecipientTable must be named, with the reason, in its list of tables
// not copied (the backends' tests check both lists against the schema).
var CopyTables = []*Table{
	{Kind: "accounts", Name: "accounts", Key: []string{"id"},
		Columns: cols("id name per_minute:i per_hour:i per_day:i created:i track_opens:b track_clicks:b")},
	{Kind: "account deletions", Name: "account_purges", Key: []string{"id"},
		Columns: cols("id started:i")},
	{Kind: "domains", Name: "domains", Key: []string{"name"},
		Columns: cols("name account policy")},
	{Kind: "users", Name: "users", Key: []string{"address"},
		Columns: cols("address password_hash send_as created:i account")},
	{Kind: "aliases", Name: "aliases", Key: []string{"address"},
		Columns: cols("address targets")},
	{Kind: "dkim keys", Name: "dkim_keys", Key: []string{"domain", "selector"}, Guarded: true,
		Columns: cols("domain selector algorithm private_key:x active:b created:i")},
	{Kind: "api keys", Name: "api_keys", Key: []string{"id"},
		Columns: cols("id account name scopes secret_hash:x created:i last_used:i")},
	{Kind: "unsubscribe groups", Name: "unsubscribe_groups", Key: []string{"account", "id"},
		Columns: cols("account id name description created:i")},
	{Kind: "suppressions", Name: "suppressions", Key: []string{"account", "address", "grp"},
		Columns: cols("account address grp kind reason detail created:i")},
	{Kind: "idempotency keys", Name: "idempotency", Key: []string{"account", "key"},
		Columns: cols("account key message_id created:i")},
	{Kind: "routes", Name: "routes", Key: []string{"address"},
		Columns: cols("address account action url secret")},
	{Kind: "webhooks", Name: "webhooks", Key: []string{"id"},
		Columns: cols("id account url secret event_types created:i batch_max:i batch_wait:i prev_secret prev_expires:i secret_rotated:i")},
	{Kind: "secrets", Name: "secrets", Key: []string{"name"}, Guarded: true,
		Columns: cols("name value:x created:i")},
	{Kind: "dmarc reports", Name: "dmarc_reports", Key: []string{"domain", "reporter", "report_id", "begin_at", "end_at"},
		Columns: cols("domain reporter report_id begin_at:i end_at:i received:i data:x")},
	{Kind: "tls-rpt counts", Name: "tlsrpt_counts", Key: []string{"day", "domain", "key"},
		Columns: cols("day:i domain key policy_type policy_string mx_patterns result sending_ip mx_host receiving_ip info count:i")},
	{Kind: "tls-rpt claims", Name: "tlsrpt_claims", Key: []string{"day", "domain"},
		Columns: reset(cols("day:i domain token until:i done:b"), "until", int64(0))},
	// Events keep their IDs (the webhook deliveries and the API's cursors
	// refer to them); an ID the destination uses for another event is a
	// conflict, not a skip, so that no event is lost silently.
	{Kind: "events", Name: "events", Key: []string{"id"}, Guarded: true, Serial: "id",
		Columns: cols("id:i time:i type account message_id recipient sender remote_mta reply enhanced tls bounce attempt:i tags metadata")},
	{Kind: "webhook deliveries", Name: "webhook_deliveries", Key: []string{"id"}, Serial: "id",
		Columns: reset(cols("id:i webhook_id event_id:i status attempts:i next_attempt:i lease_until:i last_error"), "lease_until", int64(0))},
	{Kind: "webhook attempts", Name: "webhook_attempts", Key: []string{"delivery_id", "time"},
		Columns: cols("delivery_id:i time:i http_status:i error")},
	// An operator's silences are decisions to keep; alert states are
	// measured again by the cluster within a minute.
	{Kind: "alert silences", Name: "alert_silences", Key: []string{"rule"},
		Columns: cols("rule until:i reason created:i")},
	{Kind: "console operators", Name: "operators", Key: []string{"name"},
		Columns: cols("name password_hash created:i")},
	// Certificates keep serving on the destination's nodes from their
	// first handshake (the ACME account key is among the secrets).
	{Kind: "acme certificates", Name: "acme_certs", Key: []string{"name"},
		Columns: cols("name cert_pem:x key_pem:x not_before:i not_after:i updated:i")},
	// Stored templates (issue 12), each before its versions.
	{Kind: "templates", Name: "templates", Key: []string{"id"},
		Columns: cols("id account name created:i latest:i activated:i")},
	{Kind: "template versions", Name: "template_versions", Key: []string{"template_id", "version"},
		Columns: cols("template_id version:i account subject text html created:i")},
	// Batches keep their state: the holds of a paused batch's recipients
	// are leases, not copied, and are taken again when the destination's
	// scheduler checks the batch (Batches.CheckBatch).
	{Kind: "batches", Name: "batches", Key: []string{"id"},
		Columns: cols("id account state created:i updated:i messages:i recipients:i cancelled:i")},
}

// MessageTable is the queue's message rows (the body, stored apart, is
// streamed by Copy).
var MessageTable = &Table{Kind: "messages", Name: "messages", Key: []string{"id"},
	Columns: cols("id sender received:i size:i ret envid client_ip helo auth_user source smtputf8:b account tags metadata headers:x batch_id send_at:i")}

// RecipientTable is the recipient rows of a message, with their delivery
// state; the destination assigns their IDs, and leases are not copied.
var RecipientTable = func() *Table {
	c := cols("message_id address notify orcpt status attempts:i next_attempt:i lease_until:i lease_owner lease_token last_reply remote_mta delay_warned:b updated_at:i")
	c = reset(c, "lease_until", int64(0))
	c = reset(c, "lease_owner", "")
	c = reset(c, "lease_token", "")
	return &Table{Kind: "recipients", Name: "recipients", Key: []string{"message_id"}, Columns: c}
}()

// Exporter reads a store's rows for Copy. Values are of their column's
// type (Bytes never nil), with Column.Reset applied.
type Exporter interface {
	// ExportRows returns up to limit rows of t in the order of t.Key,
	// after the row whose key values are after (nil: from the first).
	ExportRows(ctx context.Context, t *Table, after Row, limit int) ([]Row, error)
	// ExportRecipients returns the RecipientTable rows of message id.
	ExportRecipients(ctx context.Context, id string) ([]Row, error)
	// OpenBody returns a message's body with the stored header prefix
	// (Queue.OpenBody).
	OpenBody(ctx context.Context, id string) (io.ReadCloser, error)
}

// Importer writes rows copied from another store.
type Importer interface {
	// LookupRows returns, for each of keys (key values of t), the row of t
	// the store has under it, or nil.
	LookupRows(ctx context.Context, t *Table, keys []Row) ([]Row, error)
	// ImportRows inserts, in one transaction, the rows whose key the
	// store does not have yet and, with replace, replaces those it has;
	// it returns how many it inserted and replaced. It keeps t.Serial's
	// sequence past the values inserted.
	ImportRows(ctx context.Context, t *Table, rows []Row, replace bool) (inserted, replaced int, err error)
	// ImportMessage stores a message (a MessageTable row), its
	// recipients (RecipientTable rows) and its body (without the header
	// prefix, read from body as it is stored), atomically, and remembers
	// that it was copied. A message the store has, or was copied before
	// (even if it was delivered and removed since), is not stored again:
	// copied is false and body is not read.
	ImportMessage(ctx context.Context, msg Row, rcpts []Row, body io.Reader) (copied bool, err error)
	// FinishImport makes every import before it durable (a backend may
	// commit ImportMessage without waiting for stable storage) and tells
	// the nodes using the store that work may be due.
	FinishImport(ctx context.Context) error
}

// CopyOptions tune Copy.
type CopyOptions struct {
	// Replace makes the source's rows replace the destination's where a
	// guarded kind differs, instead of stopping the copy.
	Replace bool
	// Batch is the number of rows exported and imported at a time; 0
	// means 500.
	Batch int
	// Progress, if not nil, is called after each batch with the kind and
	// the rows (messages) seen so far of it.
	Progress func(kind string, seen int)
	// Workers is the number of messages copied at once; 0 means 4.
	Workers int
}

// CopyCount is what Copy did with one kind of state.
type CopyCount struct {
	Kind     string
	Seen     int // rows (messages) in the source
	Copied   int // inserted into the destination
	Present  int // already there (a previous run, or the destination's own), left as they were
	Replaced int // guarded rows that differed, replaced (CopyOptions.Replace)
}

// Conflict is a guarded row whose value differs in the destination.
type Conflict struct {
	Kind string
	Key  string // the key values, "a/b"
}

// ConflictError is Copy's error when guarded rows differ in the
// destination: nothing was written.
type ConflictError struct {
	Conflicts []Conflict // at most maxConflicts
	More      int        // conflicts beyond those listed
}

// maxConflicts bounds the conflicts a ConflictError lists.
const maxConflicts = 10

// Error lists the conflicts on one line.
func (e *ConflictError) Error() string {
	var b strings.Builder
	b.WriteString("the destination already holds different ")
	for i, c := range e.Conflicts {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %q", strings.TrimSuffix(c.Kind, "s"), c.Key)
	}
	if e.More > 0 {
		fmt.Fprintf(&b, " and %d more", e.More)
	}
	return b.String()
}

// Copy copies everything in src into dst: the rows of every table of
// CopyTables, then each message of the queue with its recipients (their
// state: attempts, next attempt, last reply; not their leases) and its
// body, streamed from src to dst (opts.Workers messages at a time, each
// with at most a chunk of its body in memory). It is meant for a source
// nothing writes to meanwhile (the node is stopped).
//
// First the guarded tables are compared: if a guarded row differs in dst,
// nothing is written and the error is a *ConflictError (unless
// opts.Replace). Rows and messages dst has already are left alone, so a
// copy cut short can be run again and copies only what is missing; a
// message copied before is never copied again, even once delivered and
// removed from dst. Copy returns the counts per kind, in order, also when
// it fails midway.
func Copy(ctx context.Context, src Exporter, dst Importer, opts CopyOptions) ([]CopyCount, error) {
	if opts.Batch <= 0 {
		opts.Batch = 500
	}
	var conflict ConflictError
	for _, t := range CopyTables {
		if !t.Guarded {
			continue
		}
		err := eachBatch(ctx, src, t, opts.Batch, func(rows []Row) error {
			have, err := lookup(ctx, dst, t, rows)
			if err != nil {
				return err
			}
			for i, r := range rows {
				if have[i] != nil && !EqualRows(have[i], r) {
					if len(conflict.Conflicts) < maxConflicts {
						conflict.Conflicts = append(conflict.Conflicts, Conflict{Kind: t.Kind, Key: keyString(t.KeyOf(r))})
					} else {
						conflict.More++
					}
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("compare %s: %w", t.Kind, err)
		}
	}
	if len(conflict.Conflicts) > 0 && !opts.Replace {
		return nil, &conflict
	}

	var counts []CopyCount
	for _, t := range CopyTables {
		c := CopyCount{Kind: t.Kind}
		err := eachBatch(ctx, src, t, opts.Batch, func(rows []Row) error {
			ins, rep, err := dst.ImportRows(ctx, t, rows, opts.Replace && t.Guarded)
			if err != nil {
				return err
			}
			c.Seen += len(rows)
			c.Copied += ins
			c.Replaced += rep
			c.Present += len(rows) - ins - rep
			if opts.Progress != nil {
				opts.Progress(t.Kind, c.Seen)
			}
			return nil
		})
		counts = append(counts, c)
		if err != nil {
			return counts, fmt.Errorf("copy %s: %w", t.Kind, err)
		}
	}
	c, err := copyMessages(ctx, src, dst, opts)
	counts = append(counts, c)
	if ferr := dst.FinishImport(ctx); err == nil && ferr != nil {
		err = ferr
	}
	if err != nil {
		return counts, fmt.Errorf("copy messages: %w", err)
	}
	return counts, nil
}

// copyMessages copies the queue, opts.Workers messages at a time (each
// holds at most a chunk of its body in memory).
func copyMessages(ctx context.Context, src Exporter, dst Importer, opts CopyOptions) (CopyCount, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu sync.Mutex
		c  = CopyCount{Kind: MessageTable.Kind}
		wg sync.WaitGroup
	)
	work := make(chan Row)
	for range opts.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for m := range work {
				copied, err := copyMessage(ctx, src, dst, m)
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				c.Seen++
				if copied {
					c.Copied++
				} else {
					c.Present++
				}
				mu.Unlock()
			}
		}()
	}
	err := eachBatch(ctx, src, MessageTable, opts.Batch, func(rows []Row) error {
		for _, m := range rows {
			select {
			case work <- m:
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		if opts.Progress != nil {
			mu.Lock()
			seen := c.Seen
			mu.Unlock()
			opts.Progress(c.Kind, seen)
		}
		return nil
	})
	close(work)
	wg.Wait()
	if cause := context.Cause(ctx); err == nil && cause != nil {
		err = cause
	}
	return c, err
}

// copyMessage copies one message with its recipients and body.
func copyMessage(ctx context.Context, src Exporter, dst Importer, m Row) (bool, error) {
	id := m[MessageTable.Column("id")].(string)
	headers := m[MessageTable.Column("headers")].([]byte)
	rcpts, err := src.ExportRecipients(ctx, id)
	if err != nil {
		return false, err
	}
	rc, err := src.OpenBody(ctx, id)
	if err != nil {
		return false, fmt.Errorf("message %s: %w", id, err)
	}
	defer rc.Close()
	// The stored body follows the header prefix OpenBody puts in front.
	if n, err := io.CopyN(io.Discard, rc, int64(len(headers))); err != nil {
		return false, fmt.Errorf("message %s: read body (%d of %d header bytes): %w", id, n, len(headers), err)
	}
	copied, err := dst.ImportMessage(ctx, m, rcpts, rc)
	if err != nil {
		return false, fmt.Errorf("message %s: %w", id, err)
	}
	return copied, nil
}

// eachBatch calls f with the rows of t in src, a batch at a time.
func eachBatch(ctx context.Context, src Exporter, t *Table, batch int, f func([]Row) error) error {
	var after Row
	for {
		rows, err := src.ExportRows(ctx, t, after, batch)
		if err != nil {
			return err
		}
		if len(rows) == 0 {
			return nil
		}
		if err := f(rows); err != nil {
			return err
		}
		if len(rows) < batch {
			return nil
		}
		after = t.KeyOf(rows[len(rows)-1])
	}
}

// lookup asks dst for the rows under the keys of rows.
func lookup(ctx context.Context, dst Importer, t *Table, rows []Row) ([]Row, error) {
	keys := make([]Row, len(rows))
	for i, r := range rows {
		keys[i] = t.KeyOf(r)
	}
	have, err := dst.LookupRows(ctx, t, keys)
	if err == nil && len(have) != len(keys) {
		err = errors.New("store: LookupRows returned a wrong number of rows")
	}
	return have, err
}

// EqualRows reports whether two rows hold the same values.
func EqualRows(a, b Row) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if x, ok := a[i].([]byte); ok {
			y, ok := b[i].([]byte)
			if !ok || !bytes.Equal(x, y) {
				return false
			}
			continue
		}
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// keyString shows key values as "a/b".
func keyString(k Row) string {
	parts := make([]string, len(k))
	for i, v := range k {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, "/")
}
