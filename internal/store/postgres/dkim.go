package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

const dkimCols = `domain, selector, algorithm, private_key, active, created`

// normSelector lower-cases a DKIM selector (a DNS label sequence).
func normSelector(s string) string {
	return strings.ToLower(strings.TrimSpace(s))
}

func dkimName(domain, selector string) string { return selector + "._domainkey." + domain }

// lockDKIMDomain serialises the changes of a domain's active keys on every
// node until tx ends, so that concurrent activations leave one active key
// per algorithm instead of failing on the unique index.
func lockDKIMDomain(ctx context.Context, tx pgx.Tx, domain string) error {
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('herald.dkim'), hashtext($1))`, domain)
	return err
}

// AddDKIMKey stores a new key; an existing domain and selector returns
// store.ErrExists. An active key deactivates the domain's other key of the
// same algorithm in the same transaction.
func (s *Store) AddDKIMKey(ctx context.Context, k store.DKIMKey) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(k.Domain), normSelector(k.Selector)
	if d == "" || sel == "" {
		return errors.New("postgres store: add DKIM key: empty domain or selector")
	}
	if k.Algorithm != store.DKIMAlgorithmRSA && k.Algorithm != store.DKIMAlgorithmEd25519 {
		return fmt.Errorf("postgres store: add DKIM key %s: unknown algorithm %q", dkimName(d, sel), k.Algorithm)
	}
	if len(k.PrivateKey) == 0 {
		return fmt.Errorf("postgres store: add DKIM key %s: no private key", dkimName(d, sel))
	}
	created := k.Created
	if created.IsZero() {
		created = time.Now()
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockDKIMDomain(ctx, tx, d); err != nil {
			return err
		}
		var exists bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM dkim_keys WHERE domain = $1 AND selector = $2)`, d, sel).Scan(&exists); err != nil {
			return err
		}
		if exists {
			return store.ErrExists
		}
		if k.Active {
			if _, err := tx.Exec(ctx, `UPDATE dkim_keys SET active = false WHERE domain = $1 AND algorithm = $2 AND active`,
				d, k.Algorithm); err != nil {
				return err
			}
		}
		_, err := tx.Exec(ctx, `INSERT INTO dkim_keys (`+dkimCols+`) VALUES ($1, $2, $3, $4, $5, $6)`,
			d, sel, k.Algorithm, k.PrivateKey, k.Active, nanos(created))
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: add DKIM key %s: %w", dkimName(d, sel), err))
	}
	return nil
}

func scanDKIMKey(sc pgx.Row) (store.DKIMKey, error) {
	var k store.DKIMKey
	var created int64
	if err := sc.Scan(&k.Domain, &k.Selector, &k.Algorithm, &k.PrivateKey, &k.Active, &created); err != nil {
		return store.DKIMKey{}, err
	}
	k.Created = fromNanos(created)
	return k, nil
}

// ListDKIMKeys returns the keys of domain ("" for all) ordered by domain
// and selector.
func (s *Store) ListDKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error) {
	if domain == "" {
		return queryList(ctx, s, "list DKIM keys", scanDKIMKey, `SELECT `+dkimCols+` FROM dkim_keys ORDER BY domain, selector`)
	}
	d := normDomain(domain)
	return queryList(ctx, s, "list DKIM keys of "+d, scanDKIMKey,
		`SELECT `+dkimCols+` FROM dkim_keys WHERE domain = $1 ORDER BY selector`, d)
}

// GetDKIMKey returns one key or store.ErrNotFound.
func (s *Store) GetDKIMKey(ctx context.Context, domain, selector string) (store.DKIMKey, error) {
	d, sel := normDomain(domain), normSelector(selector)
	return getOne(ctx, s, "get DKIM key "+dkimName(d, sel), scanDKIMKey,
		`SELECT `+dkimCols+` FROM dkim_keys WHERE domain = $1 AND selector = $2`, d, sel)
}

// ActivateDKIMKey makes a key active, deactivating the domain's other key of
// the same algorithm in the same transaction.
func (s *Store) ActivateDKIMKey(ctx context.Context, domain, selector string) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(domain), normSelector(selector)
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if err := lockDKIMDomain(ctx, tx, d); err != nil {
			return err
		}
		var algo string
		var active bool
		err := tx.QueryRow(ctx, `SELECT algorithm, active FROM dkim_keys WHERE domain = $1 AND selector = $2`,
			d, sel).Scan(&algo, &active)
		switch {
		case errNoRows(err):
			return store.ErrNotFound
		case err != nil:
			return err
		case active:
			return nil
		}
		if _, err := tx.Exec(ctx, `UPDATE dkim_keys SET active = false WHERE domain = $1 AND algorithm = $2 AND active`,
			d, algo); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE dkim_keys SET active = true WHERE domain = $1 AND selector = $2`, d, sel)
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: activate DKIM key %s: %w", dkimName(d, sel), err))
	}
	return nil
}

// DeactivateDKIMKey stops a key from signing; store.ErrNotFound if unknown.
func (s *Store) DeactivateDKIMKey(ctx context.Context, domain, selector string) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(domain), normSelector(selector)
	return s.execOne(ctx, "deactivate DKIM key "+dkimName(d, sel), store.ErrNotFound,
		`UPDATE dkim_keys SET active = false WHERE domain = $1 AND selector = $2`, d, sel)
}

// DeleteDKIMKey removes a key; store.ErrNotFound if unknown.
func (s *Store) DeleteDKIMKey(ctx context.Context, domain, selector string) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(domain), normSelector(selector)
	return s.execOne(ctx, "delete DKIM key "+dkimName(d, sel), store.ErrNotFound,
		`DELETE FROM dkim_keys WHERE domain = $1 AND selector = $2`, d, sel)
}

// ActiveDKIMKeys returns the active keys of domain ordered by algorithm.
func (s *Store) ActiveDKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error) {
	d := normDomain(domain)
	keys, err := readcache.Read(&s.reads.dkim, d, func() ([]store.DKIMKey, error) {
		return queryList(ctx, s, "active DKIM keys of "+d, scanDKIMKey,
			`SELECT `+dkimCols+` FROM dkim_keys WHERE domain = $1 AND active ORDER BY algorithm`, d)
	})
	return readcache.CloneKeys(keys), err
}
