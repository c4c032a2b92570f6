package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

// validAccountID reports whether id is a usable account ID: 1 to 64 of
// [a-z0-9-].
func validAccountID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// queryList runs a read query and scans each row with scan.
func queryList[T any](ctx context.Context, s *Store, what string, scan func(scanner) (T, error), q string, args ...any) ([]T, error) {
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite store: %s: %w", what, err)
		}
		out = append(out, v)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	return out, nil
}

// getOne reads one row with scan, mapping no row to store.ErrNotFound.
func getOne[T any](ctx context.Context, s *Store, what string, scan func(scanner) (T, error), q string, args ...any) (T, error) {
	v, err := scan(s.rdb.QueryRowContext(ctx, q, args...))
	if errNoRows(err) {
		err = store.ErrNotFound
	}
	if err != nil {
		var zero T
		return zero, fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	return v, nil
}

// accountExists reports, inside the writer, whether account id exists.
func (w *writer) accountExists(id string) (bool, error) {
	var one int
	err := w.conn.QueryRowContext(context.Background(), `SELECT 1 FROM accounts WHERE id = ?`, id).Scan(&one)
	if errNoRows(err) {
		return false, nil
	}
	return err == nil, err
}

// AddAccount creates an account; an existing ID, or the ID of a deleted
// account whose rows are still being purged, returns store.ErrExists. A
// zero Created is set to now.
func (s *Store) AddAccount(ctx context.Context, a store.Account) error {
	defer s.reads.accounts.Forget()
	if !validAccountID(a.ID) {
		return fmt.Errorf("sqlite store: add account: invalid ID %q (want 1-64 of [a-z0-9-])", a.ID)
	}
	created := a.Created
	if created.IsZero() {
		created = time.Now()
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		var purging int
		if err := w.conn.QueryRowContext(bg, `SELECT count(*) FROM account_purges WHERE id = ?`, a.ID).Scan(&purging); err != nil {
			return err
		}
		if purging > 0 {
			return clean(fmt.Errorf("a deleted account of that ID is still being purged: %w", store.ErrExists))
		}
		res, err := w.conn.ExecContext(bg,
			`INSERT INTO accounts (id, name, per_minute, per_hour, per_day, created, track_opens, track_clicks) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`,
			a.ID, a.Name, a.Limits.PerMinute, a.Limits.PerHour, a.Limits.PerDay, nanos(created), a.Tracking.Opens, a.Tracking.Clicks)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrExists)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add account %s: %w", a.ID, err)
	}
	return nil
}

const accountCols = `id, name, per_minute, per_hour, per_day, created, track_opens, track_clicks`

func scanAccount(sc scanner) (store.Account, error) {
	var a store.Account
	var created int64
	if err := sc.Scan(&a.ID, &a.Name, &a.Limits.PerMinute, &a.Limits.PerHour, &a.Limits.PerDay, &created,
		&a.Tracking.Opens, &a.Tracking.Clicks); err != nil {
		return store.Account{}, err
	}
	a.Created = fromNanos(created)
	return a, nil
}

// GetAccount returns an account or store.ErrNotFound.
func (s *Store) GetAccount(ctx context.Context, id string) (store.Account, error) {
	return readcache.Read(&s.reads.accounts, id, func() (store.Account, error) {
		return getOne(ctx, s, "get account "+id, scanAccount, `SELECT `+accountCols+` FROM accounts WHERE id = ?`, id)
	})
}

// ListAccounts returns every account ordered by ID.
func (s *Store) ListAccounts(ctx context.Context) ([]store.Account, error) {
	return queryList(ctx, s, "list accounts", scanAccount, `SELECT `+accountCols+` FROM accounts ORDER BY id`)
}

// UpdateAccountLimits replaces an account's limits; store.ErrNotFound if
// unknown.
func (s *Store) UpdateAccountLimits(ctx context.Context, id string, l store.AccountLimits) error {
	defer s.reads.accounts.Forget()
	return s.execOne(ctx, "update limits of account "+id, store.ErrNotFound,
		`UPDATE accounts SET per_minute = ?, per_hour = ?, per_day = ? WHERE id = ?`, l.PerMinute, l.PerHour, l.PerDay, id)
}

// setOwner assigns the row key of table to account: store.ErrNotFound if
// either is unknown.
func (s *Store) setOwner(ctx context.Context, what, table, keyCol, key, account string) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		ok, err := w.accountExists(account)
		if err != nil {
			return err
		}
		if !ok {
			return clean(fmt.Errorf("account %s: %w", account, store.ErrNotFound))
		}
		res, err := w.conn.ExecContext(context.Background(),
			`UPDATE `+table+` SET account = ? WHERE `+keyCol+` = ?`, account, key)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(fmt.Errorf("%s: %w", key, store.ErrNotFound))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	return nil
}

// SetDomainAccount assigns a domain to an account; an unknown domain or
// account returns store.ErrNotFound.
func (s *Store) SetDomainAccount(ctx context.Context, domain, account string) error {
	d := normDomain(domain)
	defer s.forgetDomains()
	return s.setOwner(ctx, "set account of domain "+d, "domains", "name", d, account)
}

func scanString(sc scanner) (string, error) {
	var v string
	err := sc.Scan(&v)
	return v, err
}

// DomainAccount returns the account owning domain, or store.ErrNotFound.
func (s *Store) DomainAccount(ctx context.Context, domain string) (string, error) {
	d := normDomain(domain)
	m, err := s.domainOwners(ctx)
	if err != nil {
		return "", fmt.Errorf("sqlite store: account of domain %s: %w", d, err)
	}
	a, ok := m[d]
	if !ok {
		return "", fmt.Errorf("sqlite store: account of domain %s: %w", d, store.ErrNotFound)
	}
	return a, nil
}

// ListAccountDomains returns the domains of account in order.
func (s *Store) ListAccountDomains(ctx context.Context, account string) ([]string, error) {
	return queryList(ctx, s, "list domains of account "+account, scanString,
		`SELECT name FROM domains WHERE account = ? ORDER BY name`, account)
}

// SetUserAccount assigns a user to an account; an unknown user or account
// returns store.ErrNotFound.
func (s *Store) SetUserAccount(ctx context.Context, address, account string) error {
	a := normAddr(address)
	return s.setOwner(ctx, "set account of user "+a, "users", "address", a, account)
}

// UserAccount returns the account of a user, or store.ErrNotFound.
func (s *Store) UserAccount(ctx context.Context, address string) (string, error) {
	a := normAddr(address)
	return getOne(ctx, s, "account of user "+a, scanString, `SELECT account FROM users WHERE address = ?`, a)
}

// AddAPIKey stores an API key; an existing ID returns store.ErrExists. An
// empty Account is store.DefaultAccount and a zero Created is now.
func (s *Store) AddAPIKey(ctx context.Context, k store.APIKey) error {
	if k.ID == "" || len(k.SecretHash) == 0 {
		return errors.New("sqlite store: add API key: empty ID or secret hash")
	}
	if k.Account == "" {
		k.Account = store.DefaultAccount
	}
	scopes, err := marshalList(k.Scopes)
	if err != nil {
		return fmt.Errorf("sqlite store: add API key %s: %w", k.ID, err)
	}
	created := k.Created
	if created.IsZero() {
		created = time.Now()
	}
	return s.execOne(ctx, "add API key "+k.ID, store.ErrExists,
		`INSERT INTO api_keys (id, account, name, scopes, secret_hash, created, last_used) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT DO NOTHING`,
		k.ID, k.Account, k.Name, scopes, k.SecretHash, nanos(created), nanos(k.LastUsed))
}

const apiKeyCols = `id, account, name, scopes, secret_hash, created, last_used`

func scanAPIKey(sc scanner) (store.APIKey, error) {
	var k store.APIKey
	var scopes string
	var created, used int64
	if err := sc.Scan(&k.ID, &k.Account, &k.Name, &scopes, &k.SecretHash, &created, &used); err != nil {
		return store.APIKey{}, err
	}
	var err error
	if k.Scopes, err = unmarshalList(scopes); err != nil {
		return store.APIKey{}, fmt.Errorf("API key %s: scopes: %w", k.ID, err)
	}
	k.Created, k.LastUsed = fromNanos(created), fromNanos(used)
	return k, nil
}

// GetAPIKey returns an API key by ID (whatever its account), or
// store.ErrNotFound.
func (s *Store) GetAPIKey(ctx context.Context, id string) (store.APIKey, error) {
	return getOne(ctx, s, "get API key "+id, scanAPIKey, `SELECT `+apiKeyCols+` FROM api_keys WHERE id = ?`, id)
}

// ListAPIKeys returns the keys of account ordered by creation, then ID.
func (s *Store) ListAPIKeys(ctx context.Context, account string) ([]store.APIKey, error) {
	return queryList(ctx, s, "list API keys", scanAPIKey,
		`SELECT `+apiKeyCols+` FROM api_keys WHERE account = ? ORDER BY created, id`, account)
}

// DeleteAPIKey removes a key of account; a key that does not exist or
// belongs to another account returns store.ErrNotFound.
func (s *Store) DeleteAPIKey(ctx context.Context, account, id string) error {
	err := s.execOne(ctx, "delete API key "+id, store.ErrNotFound,
		`DELETE FROM api_keys WHERE id = ? AND account = ?`, id, account)
	if err == nil {
		s.touches.forget(id)
	}
	return err
}

// touchGranularity is the precision of APIKey.LastUsed: a touch less than
// this after the last one written by this process is not written, so a
// busy key costs one write a minute, not one per request.
const touchGranularity = time.Minute

// touchCache remembers the LastUsed values this process wrote.
type touchCache struct {
	mu      sync.Mutex
	written map[string]time.Time // key ID -> LastUsed last written
}

func (c *touchCache) due(id string, t time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	last, ok := c.written[id]
	return !ok || t.Sub(last) >= touchGranularity
}

func (c *touchCache) set(id string, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.written == nil {
		c.written = make(map[string]time.Time)
	}
	c.written[id] = t
}

func (c *touchCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.written, id)
}

// reset forgets every touch (after an account's keys were deleted).
func (c *touchCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	clear(c.written)
}

// TouchAPIKey records that key id was used at t. LastUsed only moves
// forward and has a granularity of a minute: touches closer than that to
// the last one this process wrote are dropped without a write. An unknown
// key returns store.ErrNotFound when a write is made.
func (s *Store) TouchAPIKey(ctx context.Context, id string, t time.Time) error {
	if !s.touches.due(id, t) {
		return nil
	}
	err := s.execOne(ctx, "touch API key "+id, store.ErrNotFound,
		`UPDATE api_keys SET last_used = max(last_used, ?) WHERE id = ?`, nanos(t), id)
	if err == nil {
		s.touches.set(id, t)
	}
	return err
}

// AddSuppression adds or replaces the suppression of s.Address (lower-
// cased) for s.Account (DefaultAccount if empty). A zero Created is now.
func (s *Store) AddSuppression(ctx context.Context, sp store.Suppression) error {
	addr := normAddr(sp.Address)
	if addr == "" {
		return errors.New("sqlite store: add suppression: empty address")
	}
	if sp.Account == "" {
		sp.Account = store.DefaultAccount
	}
	created := sp.Created
	if created.IsZero() {
		created = time.Now()
	}
	if sp.Kind == "" {
		sp.Kind = store.SuppressionKind(sp.Reason)
	}
	return s.execOne(ctx, "add suppression "+addr, nil,
		`INSERT INTO suppressions (account, address, grp, kind, reason, detail, created) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (account, address, grp) DO UPDATE SET kind = excluded.kind, reason = excluded.reason, detail = excluded.detail, created = excluded.created`,
		sp.Account, addr, sp.Group, sp.Kind, sp.Reason, sp.Detail, nanos(created))
}

// DeleteSuppression removes an address from account's global list;
// store.ErrNotFound if it is not on it.
func (s *Store) DeleteSuppression(ctx context.Context, account, address string) error {
	return s.RemoveSuppression(ctx, account, address, "")
}

// IsSuppressed reports whether address (case-insensitive) is on account's
// global suppression list.
func (s *Store) IsSuppressed(ctx context.Context, account, address string) (bool, error) {
	var one int
	err := s.rdb.QueryRowContext(ctx, `SELECT 1 FROM suppressions WHERE account = ? AND address = ? AND grp = ''`,
		account, normAddr(address)).Scan(&one)
	if errNoRows(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("sqlite store: is suppressed: %w", err)
	}
	return true, nil
}

func scanSuppression(sc scanner) (store.Suppression, error) {
	var sp store.Suppression
	var created int64
	if err := sc.Scan(&sp.Account, &sp.Address, &sp.Group, &sp.Kind, &sp.Reason, &sp.Detail, &created); err != nil {
		return store.Suppression{}, err
	}
	sp.Created = fromNanos(created)
	return sp, nil
}

// ListSuppressions returns up to limit (default 100, at most 1000) global
// suppressions of account ordered by address, after the address after.
func (s *Store) ListSuppressions(ctx context.Context, account string, after string, limit int) ([]store.Suppression, error) {
	return queryList(ctx, s, "list suppressions", scanSuppression,
		`SELECT `+suppressionCols+` FROM suppressions WHERE account = ? AND grp = '' AND address > ?
			ORDER BY address LIMIT ?`, account, normAddr(after), listLimit(limit))
}

// PutIdempotency stores key -> messageID for account at t. If the key
// exists (and is less than a day older than t) it returns the stored
// message ID and an error wrapping store.ErrExists; an expired key is
// replaced.
func (s *Store) PutIdempotency(ctx context.Context, account, key, messageID string, t time.Time) (string, error) {
	if key == "" {
		return "", errors.New("sqlite store: put idempotency key: empty key")
	}
	if account == "" {
		account = store.DefaultAccount
	}
	tn := nanos(t)
	if tn == 0 {
		tn = time.Now().UnixNano()
	}
	expired := tn - int64(idempotencyTTL)
	var existing string
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		existing = ""
		var created int64
		err := w.conn.QueryRowContext(bg, `SELECT message_id, created FROM idempotency WHERE account = ? AND key = ?`,
			account, key).Scan(&existing, &created)
		switch {
		case err == nil && created >= expired:
			return clean(store.ErrExists)
		case err != nil && !errNoRows(err):
			return err
		}
		existing = ""
		_, err = w.conn.ExecContext(bg, `INSERT INTO idempotency (account, key, message_id, created) VALUES (?, ?, ?, ?)
			ON CONFLICT (account, key) DO UPDATE SET message_id = excluded.message_id, created = excluded.created`,
			account, key, messageID, tn)
		return err
	})
	if err != nil {
		if errors.Is(err, store.ErrExists) {
			return existing, fmt.Errorf("sqlite store: idempotency key %q: %w", key, err)
		}
		return "", fmt.Errorf("sqlite store: put idempotency key: %w", err)
	}
	return "", nil
}

// Route actions.
const (
	routeHTTP    = "http"
	routeMaildir = "maildir"
)

// AddRoute adds or replaces the route of r.Address (lower-cased) for
// r.Account (DefaultAccount if empty). An address routed by another
// account returns store.ErrExists.
func (s *Store) AddRoute(ctx context.Context, r store.Route) error {
	addr := normAddr(r.Address)
	if addr == "" || !strings.Contains(addr, "@") || strings.HasSuffix(addr, "@") {
		return fmt.Errorf("sqlite store: add route: invalid address %q", r.Address)
	}
	if r.Action != routeHTTP && r.Action != routeMaildir {
		return fmt.Errorf("sqlite store: add route %s: invalid action %q", addr, r.Action)
	}
	if r.Account == "" {
		r.Account = store.DefaultAccount
	}
	return s.execOne(ctx, "add route "+addr, store.ErrExists,
		`INSERT INTO routes (address, account, action, url, secret) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (address) DO UPDATE SET action = excluded.action, url = excluded.url, secret = excluded.secret
			WHERE routes.account = excluded.account`,
		addr, r.Account, r.Action, r.URL, r.Secret)
}

const routeCols = `address, account, action, url, secret`

func scanRoute(sc scanner) (store.Route, error) {
	var r store.Route
	err := sc.Scan(&r.Address, &r.Account, &r.Action, &r.URL, &r.Secret)
	return r, err
}

// GetRoute returns the route of address: its own, else its domain's
// ("@domain"), else store.ErrNotFound.
func (s *Store) GetRoute(ctx context.Context, address string) (store.Route, error) {
	addr := normAddr(address)
	dom := addr
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		dom = addr[i:]
	}
	return getOne(ctx, s, "get route "+addr, scanRoute,
		`SELECT `+routeCols+` FROM routes WHERE address IN (?, ?) ORDER BY length(address) DESC LIMIT 1`, addr, dom)
}

// ListRoutes returns the routes of account ordered by address.
func (s *Store) ListRoutes(ctx context.Context, account string) ([]store.Route, error) {
	return queryList(ctx, s, "list routes", scanRoute,
		`SELECT `+routeCols+` FROM routes WHERE account = ? ORDER BY address`, account)
}

// DeleteRoute removes a route of account; one that does not exist or
// belongs to another account returns store.ErrNotFound.
func (s *Store) DeleteRoute(ctx context.Context, account, address string) error {
	addr := normAddr(address)
	return s.execOne(ctx, "delete route "+addr, store.ErrNotFound,
		`DELETE FROM routes WHERE address = ? AND account = ?`, addr, account)
}
