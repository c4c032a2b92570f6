package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/tmpl"
)

// Stored templates (issue 12): /v1/templates manages an account's
// templates and their versions, POST /v1/templates/{id}/render previews
// one, and a send naming template_id is rendered by applyTemplate before
// its MIME message is built.
//
// A send with a template takes each part (subject, text, html) from the
// template when the template defines it; a request giving a part the
// template also defines is refused (400, the field named), so a value is
// never silently dropped. Parts the template leaves empty may come from
// the request.

// Template limits.
const (
	maxTemplatePart    = 64 << 10 // bytes of a text or HTML part's source
	maxTemplateNameLen = 100
)

// TemplateData is the data of a template: a JSON object whose numbers
// keep their exact text (json.Number), so an order number of 20 digits
// arrives as written.
type TemplateData map[string]any

// UnmarshalJSON decodes an object, numbers as json.Number.
func (d *TemplateData) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*d = m
	return nil
}

// templateView is a template; Versions only in GET /v1/templates/{id}.
type templateView struct {
	ID            string                `json:"id"`
	Name          string                `json:"name"`
	ActiveVersion int                   `json:"active_version"`
	LatestVersion int                   `json:"latest_version"`
	Created       *time.Time            `json:"created,omitempty"`
	Versions      []templateVersionView `json:"versions,omitempty"`
}

// templateVersionView is a version; Text and HTML are left out of
// version lists.
type templateVersionView struct {
	Version int        `json:"version"`
	Active  bool       `json:"active"`
	Subject string     `json:"subject"`
	Text    *string    `json:"text,omitempty"`
	HTML    *string    `json:"html,omitempty"`
	Created *time.Time `json:"created,omitempty"`
}

func toTemplateView(t store.Template) templateView {
	return templateView{ID: t.ID, Name: t.Name, ActiveVersion: t.ActiveVersion(), LatestVersion: t.Latest, Created: ts(t.Created)}
}

func toVersionView(v store.TemplateVersion, active int, parts bool) templateVersionView {
	out := templateVersionView{Version: v.Version, Active: v.Version == active, Subject: v.Subject, Created: ts(v.Created)}
	if parts {
		out.Text, out.HTML = &v.Text, &v.HTML
	}
	return out
}

// templateVersionRequest is a version's parts.
type templateVersionRequest struct {
	Subject  string `json:"subject"`
	Text     string `json:"text"`
	HTML     string `json:"html"`
	Activate bool   `json:"activate"` // POST …/versions only
}

type templateRequest struct {
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
}

// parseParts parses a version's parts; its error lists every problem of
// every part (prefix: the JSON path of the parts' object, "" or
// "template.").
func parseParts(subject, text, html string) (tmpl.Set, []FieldError) {
	var set tmpl.Set
	var errs []FieldError
	if subject == "" && text == "" && html == "" {
		return set, []FieldError{{Field: "text", Message: "a template needs a subject, text or html"}}
	}
	if err := checkText("subject", subject, maxSubjectLen); err != nil {
		var ae *Error
		errors.As(err, &ae)
		errs = append(errs, FieldError{Field: "subject", Message: ae.Message})
	}
	for _, p := range []struct {
		field string
		kind  tmpl.Kind
		src   string
		dst   **tmpl.Template
	}{{"subject", tmpl.Subject, subject, &set.Subject}, {"text", tmpl.Text, text, &set.Text}, {"html", tmpl.HTML, html, &set.HTML}} {
		if p.src == "" {
			continue
		}
		if len(p.src) > maxTemplatePart {
			errs = append(errs, FieldError{Field: p.field, Message: fmt.Sprintf("longer than %d bytes", maxTemplatePart)})
			continue
		}
		t, err := tmpl.Parse(p.kind, p.src)
		if err != nil {
			errs = append(errs, FieldError{Field: p.field, Message: err.Error()})
			continue
		}
		*p.dst = t
	}
	return set, errs
}

// fieldErrors is a 400 listing every problem.
func multiError(msg string, errs []FieldError) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "validation_failed", Field: errs[0].Field,
		Message: msg + ": " + errs[0].Field + ": " + errs[0].Message, Errors: errs}
}

func (a *api) templateStore() (store.Templates, error) {
	if a.tpl == nil {
		return nil, errNotFound("templates are not available on this server")
	}
	return a.tpl, nil
}

func (a *api) listTemplates(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, err := a.templateStore()
	if err != nil {
		return err
	}
	list, err := st.ListTemplates(r.Context(), c.account())
	if err != nil {
		return err
	}
	out := struct {
		Templates []templateView `json:"templates"`
	}{make([]templateView, 0, len(list))}
	for _, t := range list {
		out.Templates = append(out.Templates, toTemplateView(t))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (a *api) addTemplate(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, err := a.templateStore()
	if err != nil {
		return err
	}
	var req templateRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if strings.TrimSpace(req.Name) == "" {
		return errInvalid("name", "a template needs a name")
	}
	if err := checkText("name", req.Name, maxTemplateNameLen); err != nil {
		return err
	}
	if _, errs := parseParts(req.Subject, req.Text, req.HTML); len(errs) > 0 {
		return multiError("the template cannot be used", errs)
	}
	now := a.clock.Now()
	t := store.Template{ID: "tpl_" + randomID(16), Account: c.account(), Name: req.Name, Created: now, Latest: 1}
	err = st.AddTemplate(r.Context(), t, store.TemplateVersion{Subject: req.Subject, Text: req.Text, HTML: req.HTML, Created: now}, a.cfg.MaxTemplates)
	if errors.Is(err, store.ErrLimit) {
		return &Error{Status: http.StatusConflict, Code: "limit_reached",
			Message: fmt.Sprintf("this account already has the maximum of %d templates; delete one first", a.cfg.MaxTemplates)}
	}
	if err != nil {
		return err
	}
	v := toTemplateView(t)
	v.Versions = []templateVersionView{{Version: 1, Active: true, Subject: req.Subject, Created: ts(now)}}
	w.Header().Set("Location", "/v1/templates/"+t.ID)
	writeJSON(w, http.StatusCreated, v)
	return nil
}

// template returns the caller's template {id}, or a 404.
func (a *api) template(r *http.Request, c *caller) (store.Templates, store.Template, error) {
	st, err := a.templateStore()
	if err != nil {
		return nil, store.Template{}, err
	}
	t, err := st.GetTemplate(r.Context(), c.account(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, store.Template{}, errNotFound("no such template")
	}
	return st, t, err
}

func (a *api) getTemplate(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, t, err := a.template(r, c)
	if err != nil {
		return err
	}
	vs, err := st.ListTemplateVersions(r.Context(), c.account(), t.ID)
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("no such template")
	}
	if err != nil {
		return err
	}
	v := toTemplateView(t)
	v.Versions = make([]templateVersionView, 0, len(vs))
	for _, tv := range vs {
		v.Versions = append(v.Versions, toVersionView(tv, t.ActiveVersion(), false))
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (a *api) deleteTemplate(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, err := a.templateStore()
	if err != nil {
		return err
	}
	if err := st.DeleteTemplate(r.Context(), c.account(), r.PathValue("id")); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such template")
		}
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *api) addTemplateVersion(w http.ResponseWriter, r *http.Request, c *caller) error {
	st, err := a.templateStore()
	if err != nil {
		return err
	}
	var req templateVersionRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if _, errs := parseParts(req.Subject, req.Text, req.HTML); len(errs) > 0 {
		return multiError("the template cannot be used", errs)
	}
	id := r.PathValue("id")
	v, err := st.AddTemplateVersion(r.Context(), c.account(), id,
		store.TemplateVersion{Subject: req.Subject, Text: req.Text, HTML: req.HTML, Created: a.clock.Now()}, req.Activate, a.cfg.MaxTemplateVersions)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound("no such template")
	case errors.Is(err, store.ErrLimit):
		return &Error{Status: http.StatusConflict, Code: "limit_reached",
			Message: fmt.Sprintf("this template already has the maximum of %d versions; create a new template", a.cfg.MaxTemplateVersions)}
	case err != nil:
		return err
	}
	t, err := st.GetTemplate(r.Context(), c.account(), id)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/templates/"+id+"/versions/"+strconv.Itoa(v.Version))
	writeJSON(w, http.StatusCreated, toVersionView(v, t.ActiveVersion(), true))
	return nil
}

// versionParam parses the {version} of the path.
func versionParam(r *http.Request) (int, error) {
	n, err := strconv.Atoi(r.PathValue("version"))
	if err != nil || n < 1 {
		return 0, errInvalid("version", "a version is a number from 1")
	}
	return n, nil
}

func (a *api) getTemplateVersion(w http.ResponseWriter, r *http.Request, c *caller) error {
	n, err := versionParam(r)
	if err != nil {
		return err
	}
	st, t, err := a.template(r, c)
	if err != nil {
		return err
	}
	v, err := st.GetTemplateVersion(r.Context(), c.account(), t.ID, n)
	if errors.Is(err, store.ErrNotFound) {
		return errNotFound("no such version")
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toVersionView(v, t.ActiveVersion(), true))
	return nil
}

func (a *api) activateTemplateVersion(w http.ResponseWriter, r *http.Request, c *caller) error {
	n, err := versionParam(r)
	if err != nil {
		return err
	}
	st, err := a.templateStore()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := st.ActivateTemplateVersion(r.Context(), c.account(), id, n); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such template or version")
		}
		return err
	}
	_, t, err := a.template(r, c)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, toTemplateView(t))
	return nil
}

// renderRequest is the body of POST /v1/templates/{id}/render.
type renderRequest struct {
	Version int          `json:"version"` // 0: the active version
	Data    TemplateData `json:"data"`
}

type renderView struct {
	Version int    `json:"version"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
}

func (a *api) renderTemplate(w http.ResponseWriter, r *http.Request, c *caller) error {
	var req renderRequest
	if err := decodeJSON(w, r, a.cfg.MaxRequestBytes, &req); err != nil {
		return err
	}
	if req.Version < 0 {
		return errInvalid("version", "a version is a number from 1, or 0 for the active version")
	}
	v, out, err := a.renderStored(r.Context(), c.account(), r.PathValue("id"), req.Version, req.Data)
	if err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return errNotFound("no such template or version")
		}
		return err
	}
	writeJSON(w, http.StatusOK, renderView{Version: v.Version, Subject: out.Subject, Text: out.Text, HTML: out.HTML})
	return nil
}

// renderStored renders version n (0: the active one) of the account's
// template id with data. A missing template or version is an error
// wrapping store.ErrNotFound; problems of the data are a 400 listing them
// all.
func (a *api) renderStored(ctx context.Context, account, id string, n int, data map[string]any) (store.TemplateVersion, tmpl.Output, error) {
	st, err := a.templateStore()
	if err != nil {
		return store.TemplateVersion{}, tmpl.Output{}, err
	}
	v, err := st.GetTemplateVersion(ctx, account, id, n)
	if err != nil {
		return v, tmpl.Output{}, err
	}
	key := account + "\x00" + id + "\x00" + strconv.Itoa(v.Version) + "\x00" + strconv.FormatInt(v.Created.UnixNano(), 10)
	set, ok := a.parsed.get(key)
	if !ok {
		var errs []FieldError
		set, errs = parseParts(v.Subject, v.Text, v.HTML)
		if len(errs) > 0 {
			// Checked when stored; a version stored by another release of
			// Herald may parse differently.
			return v, tmpl.Output{}, multiError("the stored template cannot be used", errs)
		}
		a.parsed.put(key, set)
	}
	out, err := set.Render(data)
	var re *tmpl.RenderError
	if errors.As(err, &re) {
		fe := make([]FieldError, len(re.Problems))
		for i, p := range re.Problems {
			fe[i] = FieldError{Field: p.Field, Message: p.Message}
		}
		return v, tmpl.Output{}, multiError("the template cannot be rendered with this data", fe)
	}
	return v, out, err
}

// applyTemplate renders the template a send names into req's subject,
// text and html (see the rules at the top of this file). A request
// without template_id is left alone.
func (a *api) applyTemplate(ctx context.Context, account string, req *MessageRequest) error {
	if req.TemplateID == "" {
		if req.TemplateVersion != 0 {
			return errInvalid("template_version", "template_version needs template_id")
		}
		if req.Data != nil {
			return errInvalid("data", "data is for templates: it needs template_id")
		}
		return nil
	}
	if req.TemplateVersion < 0 {
		return errInvalid("template_version", "a version is a number from 1, or 0 for the active version")
	}
	v, out, err := a.renderStored(ctx, account, req.TemplateID, req.TemplateVersion, req.Data)
	if errors.Is(err, store.ErrNotFound) {
		if req.TemplateVersion != 0 {
			return errInvalid("template_version", "no such template or version")
		}
		return errInvalid("template_id", "no such template")
	}
	if err != nil {
		return err
	}
	var conflicts []FieldError
	for _, p := range []struct {
		field    string
		req      *string
		source   string
		rendered string
	}{{"subject", &req.Subject, v.Subject, out.Subject}, {"text", &req.Text, v.Text, out.Text}, {"html", &req.HTML, v.HTML, out.HTML}} {
		if p.source == "" {
			continue // the template leaves this part to the request
		}
		if *p.req != "" {
			conflicts = append(conflicts, FieldError{Field: p.field, Message: "the template defines the " + p.field + "; leave it out of the request (pass values in data)"})
			continue
		}
		*p.req = p.rendered
	}
	if len(conflicts) > 0 {
		return multiError("the request and its template both give a part", conflicts)
	}
	return nil
}

// parsedCacheSize bounds the parsed template versions kept in memory.
const parsedCacheSize = 256

// parsedCache keeps parsed template versions, so that the sends of a
// batch parse their template once. Versions never change once stored, and
// the key holds the version's creation time besides its number, so an
// entry can only be stale for a template deleted and stored again under
// the same ID at the same nanosecond.
type parsedCache struct {
	mu sync.Mutex
	m  map[string]tmpl.Set
}

func (c *parsedCache) get(key string) (tmpl.Set, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.m[key]
	return s, ok
}

func (c *parsedCache) put(key string, s tmpl.Set) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || len(c.m) >= parsedCacheSize {
		c.m = make(map[string]tmpl.Set) // start over: simpler than LRU, and rare
	}
	c.m[key] = s
}
