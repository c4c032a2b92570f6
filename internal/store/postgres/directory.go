package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// AddDomain adds a local domain; an existing one returns store.ErrExists.
func (s *Store) AddDomain(ctx context.Context, domain string) error {
	d := normDomain(domain)
	if d == "" {
		return errors.New("postgres store: add domain: empty domain")
	}
	defer s.forgetDomains()
	return s.execOne(ctx, "add domain "+d, store.ErrExists,
		`INSERT INTO domains (name) VALUES ($1) ON CONFLICT DO NOTHING`, d)
}

// DeleteDomain removes a local domain; an unknown one returns
// store.ErrNotFound. Its users and aliases are kept.
func (s *Store) DeleteDomain(ctx context.Context, domain string) error {
	d := normDomain(domain)
	defer s.forgetDomains()
	return s.execOne(ctx, "delete domain "+d, store.ErrNotFound, `DELETE FROM domains WHERE name = $1`, d)
}

// ListDomains returns the local domains in order.
func (s *Store) ListDomains(ctx context.Context) ([]string, error) {
	return queryList(ctx, s, "list domains", scanString, `SELECT name FROM domains ORDER BY name`)
}

// domainCacheTTL is how long the local domains and their owners are reused
// before they are read again. IsLocalDomain runs several times per message
// and DomainAccount for every sender check; both change rarely, and a
// change made on another node (or by a command) is seen within this time.
// This handle's own changes are seen at once.
const domainCacheTTL = time.Second

// domainCache holds the local domains and their accounts read at loaded.
type domainCache struct {
	mu      sync.Mutex
	owner   map[string]string // domain -> account
	loaded  time.Time
	version uint64 // bumped by this handle's own changes
}

// domainOwners returns the domain -> account map, from the cache when it is
// fresh.
func (s *Store) domainOwners(ctx context.Context) (map[string]string, error) {
	c := &s.domains
	c.mu.Lock()
	if c.owner != nil && time.Since(c.loaded) < domainCacheTTL {
		m := c.owner
		c.mu.Unlock()
		return m, nil
	}
	version := c.version
	c.mu.Unlock()
	rows, err := s.pool.Query(ctx, `SELECT name, account FROM domains`)
	if err != nil {
		return nil, err
	}
	m := make(map[string]string)
	var name, account string
	_, err = pgx.ForEachRow(rows, []any{&name, &account}, func() error {
		m[name] = account
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.version == version { // no change of ours raced the read
		c.owner, c.loaded = m, time.Now()
	}
	c.mu.Unlock()
	return m, nil
}

// IsLocalDomain reports whether domain is a local domain (case-insensitive).
func (s *Store) IsLocalDomain(ctx context.Context, domain string) (bool, error) {
	m, err := s.domainOwners(ctx)
	if err != nil {
		return false, fmt.Errorf("postgres store: is local domain: %w", err)
	}
	_, ok := m[normDomain(domain)]
	return ok, nil
}

// forgetDomains drops the cached domain set after a change.
func (s *Store) forgetDomains() {
	s.domains.mu.Lock()
	s.domains.owner = nil
	s.domains.version++
	s.domains.mu.Unlock()
}

// AddUser creates a user; an existing address returns store.ErrExists. A
// zero Created is set to now.
func (s *Store) AddUser(ctx context.Context, u store.User) error {
	addr := normAddr(u.Address)
	if addr == "" {
		return errors.New("postgres store: add user: empty address")
	}
	sendAs, err := marshalList(u.SendAs)
	if err != nil {
		return fmt.Errorf("postgres store: add user %s: %w", addr, err)
	}
	created := u.Created
	if created.IsZero() {
		created = time.Now()
	}
	return s.execOne(ctx, "add user "+addr, store.ErrExists,
		`INSERT INTO users (address, password_hash, send_as, created) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING`,
		addr, u.PasswordHash, sendAs, nanos(created))
}

// DeleteUser removes a user; an unknown one returns store.ErrNotFound.
func (s *Store) DeleteUser(ctx context.Context, address string) error {
	a := normAddr(address)
	return s.execOne(ctx, "delete user "+a, store.ErrNotFound, `DELETE FROM users WHERE address = $1`, a)
}

// SetPassword replaces a user's password hash; an unknown user returns
// store.ErrNotFound.
func (s *Store) SetPassword(ctx context.Context, address, hash string) error {
	a := normAddr(address)
	return s.execOne(ctx, "set password of "+a, store.ErrNotFound,
		`UPDATE users SET password_hash = $1 WHERE address = $2`, hash, a)
}

// SetSendAs replaces a user's SendAs grants; an unknown user returns
// store.ErrNotFound.
func (s *Store) SetSendAs(ctx context.Context, address string, sendAs []string) error {
	a := normAddr(address)
	list, err := marshalList(sendAs)
	if err != nil {
		return fmt.Errorf("postgres store: send-as of %s: %w", a, err)
	}
	return s.execOne(ctx, "set send-as of "+a, store.ErrNotFound,
		`UPDATE users SET send_as = $1 WHERE address = $2`, list, a)
}

const userCols = `address, password_hash, send_as, created`

func scanUser(sc pgx.Row) (store.User, error) {
	var u store.User
	var sendAs string
	var created int64
	if err := sc.Scan(&u.Address, &u.PasswordHash, &sendAs, &created); err != nil {
		return store.User{}, err
	}
	var err error
	if u.SendAs, err = unmarshalList(sendAs); err != nil {
		return store.User{}, fmt.Errorf("user %s: send_as: %w", u.Address, err)
	}
	u.Created = fromNanos(created)
	return u, nil
}

// GetUser returns a user by address (case-insensitive).
func (s *Store) GetUser(ctx context.Context, address string) (store.User, error) {
	a := normAddr(address)
	return getOne(ctx, s, "get user "+a, scanUser, `SELECT `+userCols+` FROM users WHERE address = $1`, a)
}

// ListUsers returns every user ordered by address.
func (s *Store) ListUsers(ctx context.Context) ([]store.User, error) {
	return queryList(ctx, s, "list users", scanUser, `SELECT `+userCols+` FROM users ORDER BY address`)
}

// AddAlias creates or replaces the alias of a.Address.
func (s *Store) AddAlias(ctx context.Context, a store.Alias) error {
	addr := normAddr(a.Address)
	if addr == "" {
		return errors.New("postgres store: add alias: empty address")
	}
	targets, err := marshalList(a.Targets)
	if err != nil {
		return fmt.Errorf("postgres store: add alias %s: %w", addr, err)
	}
	return s.execOne(ctx, "add alias "+addr, nil,
		`INSERT INTO aliases (address, targets) VALUES ($1, $2) ON CONFLICT (address) DO UPDATE SET targets = excluded.targets`,
		addr, targets)
}

// DeleteAlias removes an alias; an unknown one returns store.ErrNotFound.
func (s *Store) DeleteAlias(ctx context.Context, address string) error {
	a := normAddr(address)
	return s.execOne(ctx, "delete alias "+a, store.ErrNotFound, `DELETE FROM aliases WHERE address = $1`, a)
}

func scanAlias(sc pgx.Row) (store.Alias, error) {
	var a store.Alias
	var targets string
	if err := sc.Scan(&a.Address, &targets); err != nil {
		return store.Alias{}, err
	}
	var err error
	if a.Targets, err = unmarshalList(targets); err != nil {
		return store.Alias{}, fmt.Errorf("alias %s: targets: %w", a.Address, err)
	}
	return a, nil
}

// GetAlias returns the alias of address (case-insensitive).
func (s *Store) GetAlias(ctx context.Context, address string) (store.Alias, error) {
	addr := normAddr(address)
	return getOne(ctx, s, "get alias "+addr, scanAlias, `SELECT address, targets FROM aliases WHERE address = $1`, addr)
}

// ListAliases returns every alias ordered by address.
func (s *Store) ListAliases(ctx context.Context) ([]store.Alias, error) {
	return queryList(ctx, s, "list aliases", scanAlias, `SELECT address, targets FROM aliases ORDER BY address`)
}

// SetDomainPolicy stores a local domain's inbound policy.
func (s *Store) SetDomainPolicy(ctx context.Context, domain string, p store.DomainPolicy) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	d := normDomain(domain)
	return s.execOne(ctx, "set policy of domain "+d, store.ErrNotFound, `UPDATE domains SET policy = $1 WHERE name = $2`, string(b), d)
}

// GetDomainPolicy returns a local domain's inbound policy.
func (s *Store) GetDomainPolicy(ctx context.Context, domain string) (store.DomainPolicy, error) {
	d := normDomain(domain)
	raw, err := getOne(ctx, s, "policy of domain "+d, scanString, `SELECT policy FROM domains WHERE name = $1`, d)
	if err != nil {
		return store.DomainPolicy{}, err
	}
	var p store.DomainPolicy
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return store.DomainPolicy{}, fmt.Errorf("postgres store: policy of domain %s: %w", d, err)
	}
	return p, nil
}
