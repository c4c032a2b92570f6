package store

import (
	"context"
	"time"
)

// This file declares stored message templates (issue 12): an account's
// templates, each with numbered versions of a subject, a text and an HTML
// part. The store keeps the sources; parsing and rendering are
// internal/tmpl's, and the HTTP API checks a version before storing it.

// Template is an account's named template. Its versions are numbered from
// 1; the active one, used by sends that name no version, is the newest
// unless a version was activated.
type Template struct {
	ID      string // "tpl_…", unique in the store
	Account string
	Name    string
	Created time.Time
	// Latest is the newest version's number.
	Latest int
	// Activated is the version activated explicitly, 0 when none was:
	// the newest is active then.
	Activated int
}

// ActiveVersion returns the number of the version a send uses when it
// names none.
func (t Template) ActiveVersion() int {
	if t.Activated > 0 {
		return t.Activated
	}
	return t.Latest
}

// TemplateVersion is one version of a template.
type TemplateVersion struct {
	TemplateID string
	Version    int // from 1; assigned by the store
	Subject    string
	Text       string
	HTML       string
	Created    time.Time
}

// Templates keeps stored templates. Every method takes the account: a
// template of another account is not found (ErrNotFound), never changed.
type Templates interface {
	// AddTemplate stores t with its first version v (numbered 1; v's
	// TemplateID and Version are ignored). It refuses (ErrLimit, adding
	// nothing) when t's account already has max templates or more (max <
	// 1: no limit), atomically with the insert; ErrExists if t.ID is
	// taken.
	AddTemplate(ctx context.Context, t Template, v TemplateVersion, max int) error
	// GetTemplate returns one template of account.
	GetTemplate(ctx context.Context, account, id string) (Template, error)
	// ListTemplates returns account's templates ordered by ID.
	ListTemplates(ctx context.Context, account string) ([]Template, error)
	// DeleteTemplate deletes a template with all its versions.
	DeleteTemplate(ctx context.Context, account, id string) error
	// AddTemplateVersion appends v to template id as its newest version
	// and returns it numbered. With activate, it becomes the activated
	// version; without, the active version changes only for a template
	// with none activated (the newest is active). It refuses with
	// ErrLimit when the template has max versions (max < 1: no limit).
	AddTemplateVersion(ctx context.Context, account, id string, v TemplateVersion, activate bool, max int) (TemplateVersion, error)
	// GetTemplateVersion returns version n of template id; n 0 is the
	// active version.
	GetTemplateVersion(ctx context.Context, account, id string, n int) (TemplateVersion, error)
	// ListTemplateVersions returns the versions of template id, newest
	// first, with their subjects and creation times but without their
	// text and HTML parts.
	ListTemplateVersions(ctx context.Context, account, id string) ([]TemplateVersion, error)
	// ActivateTemplateVersion makes version n of template id the active
	// one (ErrNotFound if there is no such version).
	ActivateTemplateVersion(ctx context.Context, account, id string, n int) error
}
