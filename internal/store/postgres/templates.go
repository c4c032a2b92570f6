package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldmail/herald/internal/store"
)

// AddTemplate stores a template with its first version (see
// store.Templates). Count and insert run under an advisory lock of the
// account, so concurrent calls on any nodes cannot exceed max together.
func (s *Store) AddTemplate(ctx context.Context, t store.Template, v store.TemplateVersion, max int) error {
	if t.ID == "" || t.Account == "" {
		return errors.New("postgres store: add template: empty ID or account")
	}
	created := t.Created
	if created.IsZero() {
		created = time.Now()
	}
	vcreated := v.Created
	if vcreated.IsZero() {
		vcreated = created
	}
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if max > 0 {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(hashtext('herald.templates'), hashtext($1))`, t.Account); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM templates WHERE account = $1`, t.Account).Scan(&n); err != nil {
				return err
			}
			if n >= max {
				return fmt.Errorf("account %q has %d templates (limit %d): %w", t.Account, n, max, store.ErrLimit)
			}
		}
		tag, err := tx.Exec(ctx, `INSERT INTO templates (id, account, name, created, latest, activated)
			VALUES ($1, $2, $3, $4, 1, 0) ON CONFLICT DO NOTHING`, t.ID, t.Account, t.Name, nanos(created))
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrExists
		}
		_, err = tx.Exec(ctx, `INSERT INTO template_versions (template_id, version, account, subject, text, html, created)
			VALUES ($1, 1, $2, $3, $4, $5, $6)`, t.ID, t.Account, v.Subject, v.Text, v.HTML, nanos(vcreated))
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: add template %s: %w", t.ID, err))
	}
	return nil
}

const templateColumns = `id, account, name, created, latest, activated`

func scanTemplate(sc pgx.Row) (store.Template, error) {
	var t store.Template
	var created, latest, activated int64
	err := sc.Scan(&t.ID, &t.Account, &t.Name, &created, &latest, &activated)
	t.Created, t.Latest, t.Activated = fromNanos(created), int(latest), int(activated)
	return t, err
}

// GetTemplate returns one template of account (see store.Templates).
func (s *Store) GetTemplate(ctx context.Context, account, id string) (store.Template, error) {
	t, err := scanTemplate(s.pool.QueryRow(ctx, `SELECT `+templateColumns+` FROM templates WHERE account = $1 AND id = $2`, account, id))
	if errNoRows(err) {
		return store.Template{}, fmt.Errorf("postgres store: template %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Template{}, mapErr(fmt.Errorf("postgres store: template %s: %w", id, err))
	}
	return t, nil
}

// ListTemplates returns account's templates by ID (see store.Templates).
func (s *Store) ListTemplates(ctx context.Context, account string) ([]store.Template, error) {
	return queryList(ctx, s, "list templates", scanTemplate,
		`SELECT `+templateColumns+` FROM templates WHERE account = $1 ORDER BY id`, account)
}

// DeleteTemplate deletes a template and its versions (see store.Templates).
func (s *Store) DeleteTemplate(ctx context.Context, account, id string) error {
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `DELETE FROM templates WHERE account = $1 AND id = $2`, account, id)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		_, err = tx.Exec(ctx, `DELETE FROM template_versions WHERE template_id = $1`, id)
		return err
	})
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: delete template %s: %w", id, err))
	}
	return nil
}

// AddTemplateVersion appends a version to a template (see store.Templates).
// The template's row is locked while the number is chosen, so concurrent
// calls on any nodes number their versions one after the other.
func (s *Store) AddTemplateVersion(ctx context.Context, account, id string, v store.TemplateVersion, activate bool, max int) (store.TemplateVersion, error) {
	created := v.Created
	if created.IsZero() {
		created = time.Now()
	}
	var out store.TemplateVersion
	err := pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		var latest int64
		err := tx.QueryRow(ctx, `SELECT latest FROM templates WHERE account = $1 AND id = $2 FOR UPDATE`, account, id).Scan(&latest)
		if errNoRows(err) {
			return store.ErrNotFound
		}
		if err != nil {
			return err
		}
		if max > 0 && latest >= int64(max) {
			return fmt.Errorf("template %s has %d versions (limit %d): %w", id, latest, max, store.ErrLimit)
		}
		n := latest + 1
		if _, err := tx.Exec(ctx, `INSERT INTO template_versions (template_id, version, account, subject, text, html, created)
			VALUES ($1, $2, $3, $4, $5, $6, $7)`, id, n, account, v.Subject, v.Text, v.HTML, nanos(created)); err != nil {
			return err
		}
		q := `UPDATE templates SET latest = $1 WHERE id = $2`
		if activate {
			q = `UPDATE templates SET latest = $1, activated = $1 WHERE id = $2`
		}
		if _, err := tx.Exec(ctx, q, n, id); err != nil {
			return err
		}
		out = v
		out.TemplateID, out.Version, out.Created = id, int(n), fromNanos(nanos(created))
		return nil
	})
	if err != nil {
		return store.TemplateVersion{}, mapErr(fmt.Errorf("postgres store: add version of template %s: %w", id, err))
	}
	return out, nil
}

// GetTemplateVersion returns one version, 0 the active one (see
// store.Templates).
func (s *Store) GetTemplateVersion(ctx context.Context, account, id string, n int) (store.TemplateVersion, error) {
	v := store.TemplateVersion{TemplateID: id}
	var version, created int64
	err := s.pool.QueryRow(ctx, `SELECT v.version, v.subject, v.text, v.html, v.created
		FROM templates t JOIN template_versions v ON v.template_id = t.id
		WHERE t.account = $1 AND t.id = $2
		AND v.version = CASE WHEN $3::bigint > 0 THEN $3::bigint WHEN t.activated > 0 THEN t.activated ELSE t.latest END`,
		account, id, int64(n)).Scan(&version, &v.Subject, &v.Text, &v.HTML, &created)
	if errNoRows(err) {
		return store.TemplateVersion{}, fmt.Errorf("postgres store: template %s version %d: %w", id, n, store.ErrNotFound)
	}
	if err != nil {
		return store.TemplateVersion{}, mapErr(fmt.Errorf("postgres store: template %s version %d: %w", id, n, err))
	}
	v.Version, v.Created = int(version), fromNanos(created)
	return v, nil
}

// ListTemplateVersions returns a template's versions without their parts
// (see store.Templates).
func (s *Store) ListTemplateVersions(ctx context.Context, account, id string) ([]store.TemplateVersion, error) {
	if _, err := s.GetTemplate(ctx, account, id); err != nil {
		return nil, err
	}
	return queryList(ctx, s, "list template versions", func(sc pgx.Row) (store.TemplateVersion, error) {
		v := store.TemplateVersion{TemplateID: id}
		var version, created int64
		err := sc.Scan(&version, &v.Subject, &created)
		v.Version, v.Created = int(version), fromNanos(created)
		return v, err
	}, `SELECT version, subject, created FROM template_versions WHERE template_id = $1 AND account = $2 ORDER BY version DESC`, id, account)
}

// ActivateTemplateVersion makes version n active (see store.Templates).
func (s *Store) ActivateTemplateVersion(ctx context.Context, account, id string, n int) error {
	tag, err := s.pool.Exec(ctx, `UPDATE templates SET activated = $3
		WHERE account = $1 AND id = $2 AND EXISTS (SELECT 1 FROM template_versions WHERE template_id = $2 AND version = $3)`,
		account, id, int64(n))
	if err != nil {
		return mapErr(fmt.Errorf("postgres store: activate template %s version %d: %w", id, n, err))
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("postgres store: activate template %s version %d: %w", id, n, store.ErrNotFound)
	}
	return nil
}
