package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

const dkimCols = `domain, selector, algorithm, private_key, active, created`

// normSelector lower-cases a DKIM selector (a DNS label sequence).
func normSelector(s string) string {
	return strings.ToLower(strings.TrimSpace(s))
}

func dkimName(domain, selector string) string { return selector + "._domainkey." + domain }

// AddDKIMKey stores a new key; an existing domain and selector returns
// store.ErrExists. An active key deactivates the domain's other key of the
// same algorithm in the same transaction.
func (s *Store) AddDKIMKey(ctx context.Context, k store.DKIMKey) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(k.Domain), normSelector(k.Selector)
	if d == "" || sel == "" {
		return errors.New("sqlite store: add DKIM key: empty domain or selector")
	}
	if k.Algorithm != store.DKIMAlgorithmRSA && k.Algorithm != store.DKIMAlgorithmEd25519 {
		return fmt.Errorf("sqlite store: add DKIM key %s: unknown algorithm %q", dkimName(d, sel), k.Algorithm)
	}
	if len(k.PrivateKey) == 0 {
		return fmt.Errorf("sqlite store: add DKIM key %s: no private key", dkimName(d, sel))
	}
	created := k.Created
	if created.IsZero() {
		created = time.Now()
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		var one int
		err := w.conn.QueryRowContext(bg, `SELECT 1 FROM dkim_keys WHERE domain = ? AND selector = ?`, d, sel).Scan(&one)
		switch {
		case err == nil:
			return clean(store.ErrExists)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		if k.Active {
			if _, err := w.conn.ExecContext(bg, `UPDATE dkim_keys SET active = 0 WHERE domain = ? AND algorithm = ? AND active = 1`,
				d, k.Algorithm); err != nil {
				return err
			}
		}
		_, err = w.conn.ExecContext(bg, `INSERT INTO dkim_keys (`+dkimCols+`) VALUES (?, ?, ?, ?, ?, ?)`,
			d, sel, k.Algorithm, k.PrivateKey, k.Active, nanos(created))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add DKIM key %s: %w", dkimName(d, sel), err)
	}
	return nil
}

func scanDKIMKey(sc scanner) (store.DKIMKey, error) {
	var k store.DKIMKey
	var created int64
	if err := sc.Scan(&k.Domain, &k.Selector, &k.Algorithm, &k.PrivateKey, &k.Active, &created); err != nil {
		return store.DKIMKey{}, err
	}
	k.Created = fromNanos(created)
	return k, nil
}

func (s *Store) queryDKIMKeys(ctx context.Context, what, q string, args ...any) ([]store.DKIMKey, error) {
	rows, err := s.rdb.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	defer rows.Close()
	var out []store.DKIMKey
	for rows.Next() {
		k, err := scanDKIMKey(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlite store: %s: %w", what, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlite store: %s: %w", what, err)
	}
	return out, nil
}

// ListDKIMKeys returns the keys of domain ("" for all) ordered by domain
// and selector.
func (s *Store) ListDKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error) {
	if domain == "" {
		return s.queryDKIMKeys(ctx, "list DKIM keys", `SELECT `+dkimCols+` FROM dkim_keys ORDER BY domain, selector`)
	}
	d := normDomain(domain)
	return s.queryDKIMKeys(ctx, "list DKIM keys of "+d,
		`SELECT `+dkimCols+` FROM dkim_keys WHERE domain = ? ORDER BY selector`, d)
}

// GetDKIMKey returns one key or store.ErrNotFound.
func (s *Store) GetDKIMKey(ctx context.Context, domain, selector string) (store.DKIMKey, error) {
	d, sel := normDomain(domain), normSelector(selector)
	k, err := scanDKIMKey(s.rdb.QueryRowContext(ctx,
		`SELECT `+dkimCols+` FROM dkim_keys WHERE domain = ? AND selector = ?`, d, sel))
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.DKIMKey{}, fmt.Errorf("sqlite store: get DKIM key %s: %w", dkimName(d, sel), err)
	}
	return k, nil
}

// ActivateDKIMKey makes a key active, deactivating the domain's other key of
// the same algorithm in the same transaction.
func (s *Store) ActivateDKIMKey(ctx context.Context, domain, selector string) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(domain), normSelector(selector)
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		var algo string
		var active bool
		err := w.conn.QueryRowContext(bg, `SELECT algorithm, active FROM dkim_keys WHERE domain = ? AND selector = ?`,
			d, sel).Scan(&algo, &active)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return clean(store.ErrNotFound)
		case err != nil:
			return err
		case active:
			return nil
		}
		if _, err := w.conn.ExecContext(bg, `UPDATE dkim_keys SET active = 0 WHERE domain = ? AND algorithm = ? AND active = 1`,
			d, algo); err != nil {
			return err
		}
		_, err = w.conn.ExecContext(bg, `UPDATE dkim_keys SET active = 1 WHERE domain = ? AND selector = ?`, d, sel)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: activate DKIM key %s: %w", dkimName(d, sel), err)
	}
	return nil
}

// DeactivateDKIMKey stops a key from signing; store.ErrNotFound if unknown.
func (s *Store) DeactivateDKIMKey(ctx context.Context, domain, selector string) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(domain), normSelector(selector)
	return s.execOne(ctx, "deactivate DKIM key "+dkimName(d, sel), store.ErrNotFound,
		`UPDATE dkim_keys SET active = 0 WHERE domain = ? AND selector = ?`, d, sel)
}

// DeleteDKIMKey removes a key; store.ErrNotFound if unknown.
func (s *Store) DeleteDKIMKey(ctx context.Context, domain, selector string) error {
	defer s.reads.dkim.Forget()
	d, sel := normDomain(domain), normSelector(selector)
	return s.execOne(ctx, "delete DKIM key "+dkimName(d, sel), store.ErrNotFound,
		`DELETE FROM dkim_keys WHERE domain = ? AND selector = ?`, d, sel)
}

// ActiveDKIMKeys returns the active keys of domain ordered by algorithm.
func (s *Store) ActiveDKIMKeys(ctx context.Context, domain string) ([]store.DKIMKey, error) {
	d := normDomain(domain)
	keys, err := readcache.Read(&s.reads.dkim, d, func() ([]store.DKIMKey, error) {
		return s.queryDKIMKeys(ctx, "active DKIM keys of "+d,
			`SELECT `+dkimCols+` FROM dkim_keys WHERE domain = ? AND active = 1 ORDER BY algorithm`, d)
	})
	return readcache.CloneKeys(keys), err
}
