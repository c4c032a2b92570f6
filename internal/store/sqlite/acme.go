package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// ACMECertificate returns the certificate stored for name (see
// store.ACMEStore).
func (s *Store) ACMECertificate(ctx context.Context, name string) (store.ACMECertificate, error) {
	c := store.ACMECertificate{Name: strings.ToLower(name)}
	var nb, na, up int64
	err := s.rdb.QueryRowContext(ctx, `SELECT cert_pem, key_pem, not_before, not_after, updated FROM acme_certs WHERE name = ?`, c.Name).
		Scan(&c.CertPEM, &c.KeyPEM, &nb, &na, &up)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return store.ACMECertificate{}, fmt.Errorf("sqlite store: ACME certificate of %s: %w", c.Name, err)
	}
	c.NotBefore, c.NotAfter, c.Updated = fromNanos(nb), fromNanos(na), fromNanos(up)
	return c, nil
}

// PutACMECertificate stores c, replacing name's certificate.
func (s *Store) PutACMECertificate(ctx context.Context, c store.ACMECertificate) error {
	name := strings.ToLower(c.Name)
	if name == "" || len(c.CertPEM) == 0 || len(c.KeyPEM) == 0 {
		return errors.New("sqlite store: put ACME certificate: name, certificate and key are required")
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		_, err := w.conn.ExecContext(context.Background(), `INSERT INTO acme_certs (name, cert_pem, key_pem, not_before, not_after, updated)
			VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET cert_pem = excluded.cert_pem, key_pem = excluded.key_pem,
				not_before = excluded.not_before, not_after = excluded.not_after, updated = excluded.updated`,
			name, c.CertPEM, c.KeyPEM, nanos(c.NotBefore), nanos(c.NotAfter), nanos(c.Updated))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: put ACME certificate of %s: %w", name, err)
	}
	return nil
}

// ClaimACMEOrder claims the ordering of name's certificate (see
// store.ACMEStore).
func (s *Store) ClaimACMEOrder(ctx context.Context, name string, now, until time.Time) (string, error) {
	token := newToken()
	claimed := false
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), `INSERT INTO acme_orders (name, token, until) VALUES (?, ?, ?)
			ON CONFLICT (name) DO UPDATE SET token = excluded.token, until = excluded.until WHERE until <= ?`,
			strings.ToLower(name), token, nanos(until), nanos(now))
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		claimed = n > 0
		return err
	})
	if err != nil {
		return "", fmt.Errorf("sqlite store: claim ACME order of %s: %w", name, err)
	}
	if !claimed {
		return "", nil
	}
	return token, nil
}

// ReleaseACMEOrder ends a claim made by ClaimACMEOrder.
func (s *Store) ReleaseACMEOrder(ctx context.Context, name, token string) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		_, err := w.conn.ExecContext(context.Background(), `DELETE FROM acme_orders WHERE name = ? AND token = ?`, strings.ToLower(name), token)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: release ACME order of %s: %w", name, err)
	}
	return nil
}

// PutACMEChallenge stores a challenge response until expires.
func (s *Store) PutACMEChallenge(ctx context.Context, key string, value []byte, expires time.Time) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		_, err := w.conn.ExecContext(context.Background(), `INSERT INTO acme_challenges (key, value, expires) VALUES (?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires = excluded.expires`, key, value, nanos(expires))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: put ACME challenge: %w", err)
	}
	return nil
}

// ACMEChallenge returns the unexpired challenge response under key.
func (s *Store) ACMEChallenge(ctx context.Context, key string, now time.Time) ([]byte, error) {
	var v []byte
	err := s.rdb.QueryRowContext(ctx, `SELECT value FROM acme_challenges WHERE key = ? AND expires > ?`, key, nanos(now)).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		err = store.ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite store: ACME challenge: %w", err)
	}
	return v, nil
}

// DeleteACMEChallenge deletes key's response and the expired ones.
func (s *Store) DeleteACMEChallenge(ctx context.Context, key string, now time.Time) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		_, err := w.conn.ExecContext(context.Background(), `DELETE FROM acme_challenges WHERE key = ? OR expires <= ?`, key, nanos(now))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: delete ACME challenge: %w", err)
	}
	return nil
}
