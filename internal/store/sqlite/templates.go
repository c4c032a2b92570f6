package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// AddTemplate stores a template with its first version (see
// store.Templates). Count and insert are one writer operation, so
// concurrent calls cannot exceed max together.
func (s *Store) AddTemplate(ctx context.Context, t store.Template, v store.TemplateVersion, max int) error {
	if t.ID == "" || t.Account == "" {
		return errors.New("sqlite store: add template: empty ID or account")
	}
	created := t.Created
	if created.IsZero() {
		created = time.Now()
	}
	vcreated := v.Created
	if vcreated.IsZero() {
		vcreated = created
	}
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		if max > 0 {
			var n int
			if err := w.conn.QueryRowContext(bg, `SELECT count(*) FROM templates WHERE account = ?`, t.Account).Scan(&n); err != nil {
				return clean(err)
			}
			if n >= max {
				return clean(fmt.Errorf("account %q has %d templates (limit %d): %w", t.Account, n, max, store.ErrLimit))
			}
		}
		res, err := w.conn.ExecContext(bg, `INSERT INTO templates (id, account, name, created, latest, activated)
			VALUES (?, ?, ?, ?, 1, 0) ON CONFLICT DO NOTHING`, t.ID, t.Account, t.Name, nanos(created))
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrExists)
		}
		_, err = w.conn.ExecContext(bg, `INSERT INTO template_versions (template_id, version, account, subject, text, html, created)
			VALUES (?, 1, ?, ?, ?, ?, ?)`, t.ID, t.Account, v.Subject, v.Text, v.HTML, nanos(vcreated))
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: add template %s: %w", t.ID, err)
	}
	return nil
}

const templateColumns = `id, account, name, created, latest, activated`

func scanTemplate(sc scanner) (store.Template, error) {
	var t store.Template
	var created int64
	err := sc.Scan(&t.ID, &t.Account, &t.Name, &created, &t.Latest, &t.Activated)
	t.Created = fromNanos(created)
	return t, err
}

// GetTemplate returns one template of account (see store.Templates).
func (s *Store) GetTemplate(ctx context.Context, account, id string) (store.Template, error) {
	t, err := scanTemplate(s.rdb.QueryRowContext(ctx, `SELECT `+templateColumns+` FROM templates WHERE account = ? AND id = ?`, account, id))
	if errors.Is(err, sql.ErrNoRows) {
		return store.Template{}, fmt.Errorf("sqlite store: template %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return store.Template{}, fmt.Errorf("sqlite store: template %s: %w", id, err)
	}
	return t, nil
}

// ListTemplates returns account's templates by ID (see store.Templates).
func (s *Store) ListTemplates(ctx context.Context, account string) ([]store.Template, error) {
	return queryList(ctx, s, "list templates", scanTemplate,
		`SELECT `+templateColumns+` FROM templates WHERE account = ? ORDER BY id`, account)
}

// DeleteTemplate deletes a template and its versions (see store.Templates).
func (s *Store) DeleteTemplate(ctx context.Context, account, id string) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		res, err := w.conn.ExecContext(bg, `DELETE FROM templates WHERE account = ? AND id = ?`, account, id)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil {
			return err
		} else if n == 0 {
			return clean(store.ErrNotFound)
		}
		_, err = w.conn.ExecContext(bg, `DELETE FROM template_versions WHERE template_id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("sqlite store: delete template %s: %w", id, err)
	}
	return nil
}

// AddTemplateVersion appends a version to a template (see store.Templates).
func (s *Store) AddTemplateVersion(ctx context.Context, account, id string, v store.TemplateVersion, activate bool, max int) (store.TemplateVersion, error) {
	created := v.Created
	if created.IsZero() {
		created = time.Now()
	}
	var out store.TemplateVersion
	err := s.w.do(ctx, false, func(w *writer) error {
		bg := context.Background()
		var latest int
		err := w.conn.QueryRowContext(bg, `SELECT latest FROM templates WHERE account = ? AND id = ?`, account, id).Scan(&latest)
		if errors.Is(err, sql.ErrNoRows) {
			return clean(store.ErrNotFound)
		}
		if err != nil {
			return clean(err)
		}
		if max > 0 && latest >= max {
			return clean(fmt.Errorf("template %s has %d versions (limit %d): %w", id, latest, max, store.ErrLimit))
		}
		n := latest + 1
		if _, err := w.conn.ExecContext(bg, `INSERT INTO template_versions (template_id, version, account, subject, text, html, created)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, id, n, account, v.Subject, v.Text, v.HTML, nanos(created)); err != nil {
			return err
		}
		q := `UPDATE templates SET latest = ? WHERE id = ?`
		if activate {
			q = `UPDATE templates SET latest = ?1, activated = ?1 WHERE id = ?2`
		}
		if _, err := w.conn.ExecContext(bg, q, n, id); err != nil {
			return err
		}
		out = v
		out.TemplateID, out.Version, out.Created = id, n, fromNanos(nanos(created))
		return nil
	})
	if err != nil {
		return store.TemplateVersion{}, fmt.Errorf("sqlite store: add version of template %s: %w", id, err)
	}
	return out, nil
}

// GetTemplateVersion returns one version, 0 the active one (see
// store.Templates).
func (s *Store) GetTemplateVersion(ctx context.Context, account, id string, n int) (store.TemplateVersion, error) {
	v := store.TemplateVersion{TemplateID: id}
	var created int64
	err := s.rdb.QueryRowContext(ctx, `SELECT v.version, v.subject, v.text, v.html, v.created
		FROM templates t JOIN template_versions v ON v.template_id = t.id
		WHERE t.account = ? AND t.id = ?
		AND v.version = CASE WHEN ? > 0 THEN ? WHEN t.activated > 0 THEN t.activated ELSE t.latest END`,
		account, id, n, n).Scan(&v.Version, &v.Subject, &v.Text, &v.HTML, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return store.TemplateVersion{}, fmt.Errorf("sqlite store: template %s version %d: %w", id, n, store.ErrNotFound)
	}
	if err != nil {
		return store.TemplateVersion{}, fmt.Errorf("sqlite store: template %s version %d: %w", id, n, err)
	}
	v.Created = fromNanos(created)
	return v, nil
}

// ListTemplateVersions returns a template's versions without their parts
// (see store.Templates).
func (s *Store) ListTemplateVersions(ctx context.Context, account, id string) ([]store.TemplateVersion, error) {
	if _, err := s.GetTemplate(ctx, account, id); err != nil {
		return nil, err
	}
	return queryList(ctx, s, "list template versions", func(sc scanner) (store.TemplateVersion, error) {
		v := store.TemplateVersion{TemplateID: id}
		var created int64
		err := sc.Scan(&v.Version, &v.Subject, &created)
		v.Created = fromNanos(created)
		return v, err
	}, `SELECT version, subject, created FROM template_versions WHERE template_id = ? AND account = ? ORDER BY version DESC`, id, account)
}

// ActivateTemplateVersion makes version n active (see store.Templates).
func (s *Store) ActivateTemplateVersion(ctx context.Context, account, id string, n int) error {
	err := s.w.do(ctx, false, func(w *writer) error {
		res, err := w.conn.ExecContext(context.Background(), `UPDATE templates SET activated = ?
			WHERE account = ? AND id = ? AND EXISTS (SELECT 1 FROM template_versions WHERE template_id = ? AND version = ?)`,
			n, account, id, id, n)
		if err != nil {
			return err
		}
		if c, err := res.RowsAffected(); err != nil {
			return err
		} else if c == 0 {
			return clean(store.ErrNotFound)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("sqlite store: activate template %s version %d: %w", id, n, err)
	}
	return nil
}
