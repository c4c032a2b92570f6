package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// ACMECertificate returns the certificate stored for name (see
// store.ACMEStore).
func (s *Store) ACMECertificate(ctx context.Context, name string) (store.ACMECertificate, error) {
	c := store.ACMECertificate{Name: strings.ToLower(name)}
	var nb, na, up int64
	err := s.pool.QueryRow(ctx, `SELECT cert_pem, key_pem, not_before, not_after, updated FROM acme_certs WHERE name = $1`, c.Name).
		Scan(&c.CertPEM, &c.KeyPEM, &nb, &na, &up)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.ACMECertificate{}, mapErr(fmt.Errorf("postgres store: ACME certificate of %s: %w", c.Name, err))
	}
	c.NotBefore, c.NotAfter, c.Updated = fromNanos(nb), fromNanos(na), fromNanos(up)
	return c, nil
}

// PutACMECertificate stores c, replacing name's certificate.
func (s *Store) PutACMECertificate(ctx context.Context, c store.ACMECertificate) error {
	name := strings.ToLower(c.Name)
	if name == "" || len(c.CertPEM) == 0 || len(c.KeyPEM) == 0 {
		return errors.New("postgres store: put ACME certificate: name, certificate and key are required")
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO acme_certs (name, cert_pem, key_pem, not_before, not_after, updated)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem,
			not_before = excluded.not_before, not_after = excluded.not_after, updated = excluded.updated`,
		name, c.CertPEM, c.KeyPEM, nanos(c.NotBefore), nanos(c.NotAfter), nanos(c.Updated))
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: put ACME certificate of %s: %w", name, err))
	}
	return nil
}

// ClaimACMEOrder claims the ordering of name's certificate (see
// store.ACMEStore): one UPSERT, so two nodes racing get one claim.
func (s *Store) ClaimACMEOrder(ctx context.Context, name string, now, until time.Time) (string, error) {
	token := randomToken()
	tag, err := s.pool.Exec(ctx, `INSERT INTO acme_orders AS o (name, token, until) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET token = excluded.token, until = excluded.until WHERE o.until <= $4`,
		strings.ToLower(name), token, nanos(until), nanos(now))
	if err != nil {
		return "", mapErr(fmt.Errorf("postgres store: claim ACME order of %s: %w", name, err))
	}
	if tag.RowsAffected() == 0 {
		return "", nil
	}
	return token, nil
}

// ReleaseACMEOrder ends a claim made by ClaimACMEOrder.
func (s *Store) ReleaseACMEOrder(ctx context.Context, name, token string) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM acme_orders WHERE name = $1 AND token = $2`, strings.ToLower(name), token); err != nil {
		return mapErr(fmt.Errorf("postgres store: release ACME order of %s: %w", name, err))
	}
	return nil
}

// PutACMEChallenge stores a challenge response until expires.
func (s *Store) PutACMEChallenge(ctx context.Context, key string, value []byte, expires time.Time) error {
	_, err := s.pool.Exec(ctx, `INSERT INTO acme_challenges (key, value, expires) VALUES ($1, $2, $3)
		ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires`, key, value, nanos(expires))
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: put ACME challenge: %w", err))
	}
	return nil
}

// ACMEChallenge returns the unexpired challenge response under key.
func (s *Store) ACMEChallenge(ctx context.Context, key string, now time.Time) ([]byte, error) {
	var v []byte
	err := s.pool.QueryRow(ctx, `SELECT value FROM acme_challenges WHERE key = $1 AND expires > $2`, key, nanos(now)).Scan(&v)
	if errors.Is(err, pgx.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, mapErr(fmt.Errorf("postgres store: ACME challenge: %w", err))
	}
	return v, nil
}

// DeleteACMEChallenge deletes key's response and the expired ones.
func (s *Store) DeleteACMEChallenge(ctx context.Context, key string, now time.Time) error {
	if _, err := s.pool.Exec(ctx, `DELETE FROM acme_challenges WHERE key = $1 OR expires <= $2`, key, nanos(now)); err != nil {
		return mapErr(fmt.Errorf("postgres store: delete ACME challenge: %w", err))
	}
	return nil
}
