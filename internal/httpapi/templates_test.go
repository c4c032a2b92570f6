package httpapi

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

// apiErrors returns the errors[] of an error response.
func (r resp) apiErrors(t *testing.T) []FieldError {
	t.Helper()
	var b struct {
		Error struct {
			Code   string       `json:"code"`
			Field  string       `json:"field"`
			Errors []FieldError `json:"errors"`
		} `json:"error"`
	}
	r.json(t, &b)
	return b.Error.Errors
}

func fields(errs []FieldError) []string {
	out := make([]string, len(errs))
	for i, e := range errs {
		out[i] = e.Field
	}
	return out
}

// exerciseTemplates calls every template route for a success and an
// error, for TestOpenAPIResponses (which validates each response against
// the document).
func exerciseTemplates(t *testing.T, e *env, adm, rd, snd string) {
	t.Helper()
	status := func(r resp, code int) resp {
		t.Helper()
		want(t, r, code)
		return r
	}
	r := status(e.post("/v1/templates", adm, map[string]string{"name": "welcome", "subject": "Hi {{name}}", "html": "<p>{{name}}</p>"}), 201)
	var tv templateView
	r.json(t, &tv)
	id := tv.ID
	status(e.post("/v1/templates", adm, map[string]string{"name": "bad", "html": "<p>{{name</p>", "text": "{{#if x}}"}), 400)
	status(e.post("/v1/templates", rd, map[string]string{"name": "x", "text": "x"}), 403)
	status(e.post("/v1/templates", adm, map[string]string{"name": "x", "text": strings.Repeat("x", 9000)}), 413)
	status(e.do("POST", "/v1/templates", adm, "text/plain", strings.NewReader("x")), 415)
	status(e.get("/v1/templates", rd), 200)
	status(e.get("/v1/templates", snd), 403)
	status(e.get("/v1/templates/"+id, rd), 200)
	status(e.get("/v1/templates/tpl_none", rd), 404)
	status(e.post("/v1/templates/"+id+"/versions", adm, map[string]any{"subject": "v2 {{name}}", "text": "{{name}}", "activate": false}), 201)
	status(e.post("/v1/templates/"+id+"/versions", adm, map[string]any{"text": "{{{name}}}"}), 400)
	status(e.post("/v1/templates/tpl_none/versions", adm, map[string]any{"text": "x"}), 404)
	status(e.get("/v1/templates/"+id+"/versions/2", rd), 200)
	status(e.get("/v1/templates/"+id+"/versions/9", rd), 404)
	status(e.get("/v1/templates/"+id+"/versions/zero", rd), 400)
	status(e.post("/v1/templates/"+id+"/versions/1/activate", adm, nil), 200)
	status(e.post("/v1/templates/"+id+"/versions/9/activate", adm, nil), 404)
	status(e.post("/v1/templates/"+id+"/render", rd, map[string]any{"data": map[string]any{"name": "<b>"}}), 200)
	status(e.post("/v1/templates/"+id+"/render", rd, map[string]any{"version": 2, "data": map[string]any{}}), 400)
	status(e.post("/v1/templates/tpl_none/render", rd, map[string]any{}), 404)
	// A send with the template: rendered, and refused with missing data.
	status(e.post("/v1/messages", snd, map[string]any{"from": "a@acme.example", "to": []string{"b@example.org"}, "template_id": id, "data": map[string]any{"name": "Ann"}}), 202)
	status(e.post("/v1/messages", snd, map[string]any{"from": "a@acme.example", "to": []string{"b@example.org"}, "template_id": id}), 400)
	status(e.del("/v1/templates/"+id, adm), 204)
	status(e.del("/v1/templates/"+id, adm), 404)
}

// Templates and versions through the API: numbering, the active version,
// the checks at save time with every problem at once, the limits.
func TestTemplatesAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxTemplates: 2, MaxTemplateVersions: 3})
	adm := e.key("acme", store.ScopeAdmin)
	rd := e.key("acme", store.ScopeRead)

	r := e.post("/v1/templates", adm, map[string]string{"name": "receipt", "subject": "Order {{order.id}}", "text": "Total {{order.total}}", "html": "<p>Total {{order.total}}</p>"})
	want(t, r, http.StatusCreated)
	var tv templateView
	r.json(t, &tv)
	if !strings.HasPrefix(tv.ID, "tpl_") || tv.ActiveVersion != 1 || tv.LatestVersion != 1 || len(tv.Versions) != 1 || r.header.Get("Location") != "/v1/templates/"+tv.ID {
		t.Fatalf("created %s (Location %q)", r.body, r.header.Get("Location"))
	}
	id := tv.ID

	// Every syntax problem of every part, with its position.
	r = e.post("/v1/templates/"+id+"/versions", adm, map[string]string{
		"subject": "Hi\r\n{{name}}", "text": "a\n  {{#each items}}x", "html": `<a href={{url}}>x</a><p>{{{raw}}}</p>`})
	want(t, r, http.StatusBadRequest)
	errs := r.apiErrors(t)
	if got := fields(errs); !slices.Equal(got, []string{"subject", "text", "html"}) {
		t.Fatalf("fields %v: %s", got, r.body)
	}
	if !strings.Contains(errs[1].Message, "line 2, column 3") || !strings.Contains(errs[2].Message, "unquoted attribute") {
		t.Errorf("messages %s", r.body)
	}

	// Version 2 becomes active (none was activated); version 3 does not
	// once 1 is activated; activate: true does.
	addVersion := func(body map[string]any) templateVersionView {
		t.Helper()
		r := e.post("/v1/templates/"+id+"/versions", adm, body)
		want(t, r, http.StatusCreated)
		var v templateVersionView
		r.json(t, &v)
		return v
	}
	if v := addVersion(map[string]any{"subject": "v2", "text": "two"}); v.Version != 2 || !v.Active || v.Text == nil || *v.Text != "two" {
		t.Fatalf("version 2: %+v", v)
	}
	want(t, e.post("/v1/templates/"+id+"/versions/1/activate", adm, nil), http.StatusOK)
	if v := addVersion(map[string]any{"subject": "v3", "text": "three"}); v.Version != 3 || v.Active {
		t.Fatalf("version 3 after activating 1: %+v", v)
	}
	r = e.post("/v1/templates/"+id+"/versions", adm, map[string]any{"text": "four", "activate": true})
	if code, _ := r.apiErr(t); r.status != http.StatusConflict || code != "limit_reached" {
		t.Fatalf("a fourth version with a limit of 3: %d %s", r.status, r.body)
	}
	r = e.get("/v1/templates/"+id, rd)
	want(t, r, http.StatusOK)
	r.json(t, &tv)
	if tv.ActiveVersion != 1 || tv.LatestVersion != 3 || len(tv.Versions) != 3 || tv.Versions[0].Version != 3 || !tv.Versions[2].Active || tv.Versions[0].Text != nil {
		t.Fatalf("template %s", r.body)
	}
	r = e.post("/v1/templates/"+id+"/render", rd, `{"data":{"order":{"id":12345678901234567890,"total":"9.50"}}}`)
	want(t, r, http.StatusOK)
	var out renderView
	r.json(t, &out)
	if out.Version != 1 || out.Subject != "Order 12345678901234567890" || out.Text != "Total 9.50" {
		t.Errorf("rendered %s", r.body)
	}

	want(t, e.post("/v1/templates", adm, map[string]string{"name": "second", "text": "x"}), http.StatusCreated)
	r = e.post("/v1/templates", adm, map[string]string{"name": "third", "text": "x"})
	if code, _ := r.apiErr(t); r.status != http.StatusConflict || code != "limit_reached" {
		t.Fatalf("a third template with a limit of 2: %d %s", r.status, r.body)
	}
	for _, bad := range []map[string]string{{"name": "", "text": "x"}, {"name": "n"}, {"name": "a\nb", "text": "x"}} {
		if r := e.post("/v1/templates", adm, bad); r.status != http.StatusBadRequest {
			t.Errorf("%v: %d %s", bad, r.status, r.body)
		}
	}

	// Another account sees none of it.
	other := e.key("other", store.ScopeAdmin)
	for _, r := range []resp{
		e.get("/v1/templates/"+id, other),
		e.get("/v1/templates/"+id+"/versions/1", other),
		e.post("/v1/templates/"+id+"/versions", other, map[string]string{"text": "mine"}),
		e.post("/v1/templates/"+id+"/versions/2/activate", other, nil),
		e.post("/v1/templates/"+id+"/render", other, map[string]any{}),
		e.del("/v1/templates/"+id, other),
	} {
		if r.status != http.StatusNotFound {
			t.Errorf("another account: %d %s", r.status, r.body)
		}
	}
	r = e.post("/v1/messages", other, map[string]any{"from": "a@other.example", "to": []string{"b@example.org"}, "template_id": id, "data": map[string]any{}})
	if _, field := r.apiErr(t); r.status != http.StatusBadRequest || field != "template_id" {
		t.Errorf("a send with another account's template: %d %s", r.status, r.body)
	}
	var list struct{ Templates []templateView }
	e.get("/v1/templates", other).json(t, &list)
	if len(list.Templates) != 0 {
		t.Errorf("another account lists %+v", list)
	}
	if tp, _ := e.st.GetTemplate(context.Background(), "acme", id); tp.Latest != 3 || tp.Activated != 1 {
		t.Errorf("the template changed: %+v", tp)
	}
}

// A send naming a template: values HTML-escaped in the HTML part, as
// they are in the text part, the subject from the template; missing
// variables all named; a subject value with a line break refused; a part
// given twice refused.
func TestTemplateSend(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	adm := e.key("acme", store.ScopeAdmin)
	snd := e.key("acme", store.ScopeSend)
	r := e.post("/v1/templates", adm, map[string]string{"name": "welcome",
		"subject": "Welcome, {{user.first}}",
		"text":    "Hello {{user.first}}: {{note}}",
		"html":    `<p title="{{note}}">Hello {{user.first}}</p><a href="{{link}}">go</a><ul>{{#each items}}<li>{{@index}} {{name}}</li>{{/each}}</ul>`})
	want(t, r, http.StatusCreated)
	var tv templateView
	r.json(t, &tv)
	send := func(extra map[string]any) resp {
		t.Helper()
		body := map[string]any{"from": "app@acme.example", "to": []string{"b@example.org"}, "template_id": tv.ID}
		for k, v := range extra {
			body[k] = v
		}
		return e.post("/v1/messages", snd, body)
	}
	note := `<script>alert("x")</script> & 'y'`
	data := map[string]any{"user": map[string]any{"first": "Zoë"}, "note": note, "link": "https://example.org/?a=1&b=2",
		"items": []any{map[string]any{"name": "<i>one</i>"}, map[string]any{"name": "two"}}}
	want(t, send(map[string]any{"data": data, "tags": []string{"welcome"}}), http.StatusAccepted)
	sub := e.sub.last()
	m := parseMessage(t, sub.Raw)
	if s, _ := m.header.Subject(); s != "Welcome, Zoë" {
		t.Errorf("subject %q", s)
	}
	if len(m.parts) != 2 {
		t.Fatalf("%d parts", len(m.parts))
	}
	text, html := string(m.parts[0].body), string(m.parts[1].body)
	if text != "Hello Zoë: "+note {
		t.Errorf("text part %q", text)
	}
	esc := `&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;y&#39;`
	if html != `<p title="`+esc+`">Hello Zoë</p><a href="https://example.org/?a=1&amp;b=2">go</a><ul><li>0 &lt;i&gt;one&lt;/i&gt;</li><li>1 two</li></ul>` {
		t.Errorf("html part %q", html)
	}
	if strings.Contains(html, "<script") || strings.Contains(html, "<i>") {
		t.Errorf("a value arrived unescaped in the HTML part: %s", html)
	}

	// Every missing variable at once, named by its path.
	n := e.sub.count()
	r = send(map[string]any{"data": map[string]any{"items": []any{map[string]any{}}}})
	want(t, r, http.StatusBadRequest)
	if got := fields(r.apiErrors(t)); !slices.Equal(got, []string{"data.user.first", "data.note", "data.link", "data.items[0].name"}) {
		t.Errorf("missing %v: %s", got, r.body)
	}
	// A line break in a subject value never becomes a header field.
	bad := map[string]any{"user": map[string]any{"first": "Ann\r\nBcc: victim@example.org"}, "note": "", "link": "/", "items": []any{}}
	r = send(map[string]any{"data": bad})
	if _, field := r.apiErr(t); r.status != http.StatusBadRequest || field != "data.user.first" {
		t.Errorf("CRLF in the subject: %d %s", r.status, r.body)
	}
	// A javascript: URL is not a link.
	data["link"] = "javascript:alert(1)"
	r = send(map[string]any{"data": data})
	if _, field := r.apiErr(t); r.status != http.StatusBadRequest || field != "data.link" {
		t.Errorf("javascript: URL: %d %s", r.status, r.body)
	}
	data["link"] = "/ok"
	// A part the template defines may not be given too.
	r = send(map[string]any{"data": data, "subject": "mine", "html": "<p>mine</p>"})
	if got := fields(r.apiErrors(t)); r.status != http.StatusBadRequest || !slices.Equal(got, []string{"subject", "html"}) {
		t.Errorf("parts given twice: %d %s", r.status, r.body)
	}
	// template_version and data need template_id; unknown templates and
	// versions are named.
	for _, c := range []struct {
		body  map[string]any
		field string
	}{
		{map[string]any{"template_id": "", "template_version": 1, "text": "x"}, "template_version"},
		{map[string]any{"template_id": "", "data": map[string]any{}, "text": "x"}, "data"},
		{map[string]any{"template_id": "tpl_none"}, "template_id"},
		{map[string]any{"template_version": 7, "data": data}, "template_version"},
	} {
		r := send(c.body)
		if _, field := r.apiErr(t); r.status != http.StatusBadRequest || field != c.field {
			t.Errorf("%v: %d %s", c.body, r.status, r.body)
		}
	}
	if e.sub.count() != n {
		t.Errorf("refused sends were submitted")
	}

	// A template without a subject takes the request's.
	r = e.post("/v1/templates", adm, map[string]string{"name": "bodyonly", "text": "Hi {{n}}"})
	want(t, r, http.StatusCreated)
	var t2 templateView
	r.json(t, &t2)
	r = e.post("/v1/messages", snd, map[string]any{"from": "app@acme.example", "to": []string{"b@example.org"}, "template_id": t2.ID,
		"subject": "from the request", "data": map[string]any{"n": 42}})
	want(t, r, http.StatusAccepted)
	m = parseMessage(t, e.sub.last().Raw)
	if s, _ := m.header.Subject(); s != "from the request" || fmt.Sprint(len(m.parts)) != "1" || string(m.parts[0].body) != "Hi 42" {
		t.Errorf("subject %q, parts %+v", s, m.parts)
	}
}

// TestBatchTemplate renders a stored template once per personalization
// with its own data merged over the top level's, and lists every missing
// variable of every personalization under its path before anything is
// sent.
func TestBatchTemplate(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	adm := e.key("acme", store.ScopeAdmin)
	snd := e.key("acme", store.ScopeSend)
	r := e.post("/v1/templates", adm, map[string]string{"name": "order",
		"subject": "{{shop}}: order {{order}}", "html": "<p>Hi {{name}}</p>"})
	want(t, r, http.StatusCreated)
	var tv templateView
	r.json(t, &tv)
	body := map[string]any{"from": "app@acme.example", "template_id": tv.ID, "data": map[string]any{"shop": "Acme", "name": "friend"},
		"personalizations": []map[string]any{
			{"to": []string{"ann@example.org"}, "data": map[string]any{"order": 1, "name": "<Ann>"}},
			{"to": []string{"bob@example.org"}, "data": map[string]any{"order": 2}},
		}}
	want(t, e.post("/v1/messages", snd, body), http.StatusAccepted)
	subs := e.sub.byRecipient()
	ann, bob := parseMessage(t, subs["ann@example.org"].Raw), parseMessage(t, subs["bob@example.org"].Raw)
	if s, _ := ann.header.Subject(); s != "Acme: order 1" {
		t.Errorf("ann's subject %q", s)
	}
	if s, _ := bob.header.Subject(); s != "Acme: order 2" {
		t.Errorf("bob's subject %q", s)
	}
	if got := string(ann.parts[0].body); got != "<p>Hi &lt;Ann&gt;</p>" {
		t.Errorf("ann's html %q", got)
	}
	if got := string(bob.parts[0].body); got != "<p>Hi friend</p>" {
		t.Errorf("bob's html %q (the top-level data)", got)
	}

	n := e.sub.count()
	body["personalizations"] = []map[string]any{
		{"to": []string{"ann@example.org"}, "data": map[string]any{"order": 1}},
		{"to": []string{"bob@example.org"}},
		{"to": []string{"not an address"}, "data": map[string]any{"order": 3}},
	}
	r = e.post("/v1/messages", snd, body)
	want(t, r, http.StatusBadRequest)
	if got := fields(r.apiErrors(t)); !slices.Equal(got, []string{"personalizations[1].data.order", "personalizations[2].to[0]"}) {
		t.Errorf("errors %v: %s", got, r.body)
	}
	if e.sub.count() != n {
		t.Errorf("a refused batch queued %d messages", e.sub.count()-n)
	}
}
