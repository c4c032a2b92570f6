package tmpl

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
)

// Problem is one reason a rendering failed: Field is the data's path
// ("data.user.first", "data.items[2].name") or the part
// ("template.subject").
type Problem struct {
	Field   string
	Message string
}

// RenderError lists every problem of a rendering, in the order found,
// each field once.
type RenderError struct {
	Problems []Problem
}

// Error implements error.
func (e *RenderError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.Field + ": " + p.Message)
	}
	return b.String()
}

// Missing returns the fields of the missing variables among the problems.
func (e *RenderError) Missing() []string {
	var out []string
	for _, p := range e.Problems {
		if strings.HasPrefix(p.Message, msgMissing) {
			out = append(out, p.Field)
		}
	}
	return out
}

const msgMissing = "missing"

// Set is the templates of a message's parts; a nil part is absent.
type Set struct {
	Subject, Text, HTML *Template
}

// Output is a rendered Set; absent parts are "".
type Output struct {
	Subject, Text, HTML string
}

// Render renders every part of s with data (JSON values as encoding/json
// decodes them: map[string]any, []any, string, json.Number or float64,
// bool, nil). Its error is a *RenderError naming every problem of every
// part.
func (s Set) Render(data map[string]any) (Output, error) {
	r := &renderer{seen: map[string]bool{}}
	var out Output
	for _, p := range []struct {
		t   *Template
		dst *string
	}{{s.Subject, &out.Subject}, {s.Text, &out.Text}, {s.HTML, &out.HTML}} {
		if p.t != nil {
			*p.dst = r.render(p.t, data)
		}
	}
	if len(r.problems) > 0 {
		return Output{}, &RenderError{Problems: r.problems}
	}
	return out, nil
}

// Render renders t alone (see Set.Render).
func (t *Template) Render(data map[string]any) (string, error) {
	r := &renderer{seen: map[string]bool{}}
	s := r.render(t, data)
	if len(r.problems) > 0 {
		return "", &RenderError{Problems: r.problems}
	}
	return s, nil
}

type renderer struct {
	kind       Kind
	out        strings.Builder
	problems   []Problem
	seen       map[string]bool
	iterations int
	stop       bool // a limit was reached: the part's output is abandoned
}

// scope is the data a block sees: the whole data, or an #each element.
type scope struct {
	value  any
	path   string // the value's path after "data": "", ".items[2]"
	index  int
	inEach bool
}

func (r *renderer) problem(field, format string, args ...any) {
	if r.seen[field] {
		return
	}
	r.seen[field] = true
	r.problems = append(r.problems, Problem{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (r *renderer) render(t *Template, data map[string]any) string {
	r.kind = t.kind
	r.out.Reset()
	r.stop = false
	var root any = data
	if data == nil {
		root = map[string]any{}
	}
	r.nodes(t.nodes, []scope{{value: root}})
	if r.stop {
		return ""
	}
	return r.out.String()
}

func (r *renderer) write(s string) {
	if r.stop {
		return
	}
	if r.out.Len()+len(s) > MaxOutput {
		r.problem("template."+r.kind.String(), "the rendered %s would be larger than %d bytes", r.kind, MaxOutput)
		r.stop = true
		return
	}
	r.out.WriteString(s)
}

func (r *renderer) nodes(ns []node, scopes []scope) {
	for _, n := range ns {
		if r.stop {
			return
		}
		switch n := n.(type) {
		case textNode:
			r.write(string(n))
		case *varNode:
			r.value(n, scopes)
		case *ifNode:
			v, _, ok := lookup(n.path, scopes)
			if truthy(v, ok) != n.negate {
				r.nodes(n.then, scopes)
			} else {
				r.nodes(n.els, scopes)
			}
		case *eachNode:
			r.each(n, scopes)
		}
	}
}

func (r *renderer) each(n *eachNode, scopes []scope) {
	v, field, ok := lookup(n.path, scopes)
	if !ok {
		r.problem(field, "%s: the template lists {{#each %s}}, the data has no such value", msgMissing, n.name)
		return
	}
	var list []any
	switch v := v.(type) {
	case nil:
	case []any:
		list = v
	default:
		r.problem(field, "{{#each %s}} needs a list, the data has %s", n.name, describe(v))
		return
	}
	if len(list) == 0 {
		r.nodes(n.els, scopes)
		return
	}
	base := strings.TrimPrefix(field, "data")
	for i, item := range list {
		if r.iterations++; r.iterations > MaxIterations {
			r.problem("template."+r.kind.String(), "more than %d #each iterations", MaxIterations)
			r.stop = true
			return
		}
		r.nodes(n.body, append(scopes, scope{value: item, path: base + "[" + strconv.Itoa(i) + "]", index: i, inEach: true}))
		if r.stop {
			return
		}
	}
}

func (r *renderer) value(n *varNode, scopes []scope) {
	v, field, ok := lookup(n.path, scopes)
	if !ok {
		r.problem(field, "%s: the template uses {{%s}} (line %d, column %d of the %s), the data has no such value", msgMissing, n.name, n.line, n.column, r.kind)
		return
	}
	s, ok := format(v)
	if !ok {
		r.problem(field, "{{%s}} needs a string, number or boolean, the data has %s", n.name, describe(v))
		return
	}
	switch r.kind {
	case Subject:
		if hasControl(s) {
			r.problem(field, "contains a line break or control character, which a subject cannot hold")
			return
		}
	case HTML:
		if n.ctx == ctxURLStart && !safeURL(s) {
			r.problem(field, "starts a URL attribute but is not a relative URL or an http, https, mailto or tel URL")
			return
		}
		s = escapeHTML(s)
	}
	r.write(s)
}

// lookup finds path in scopes: "@index" and "this…" in the innermost scope;
// a name in the innermost scope holding it, then outwards. It returns the
// value, its field ("data.user.first") and whether it was found.
func lookup(path []string, scopes []scope) (any, string, bool) {
	in := scopes[len(scopes)-1]
	if path[0] == "@index" {
		for i := len(scopes) - 1; i >= 0; i-- {
			if scopes[i].inEach {
				return json.Number(strconv.Itoa(scopes[i].index)), "data" + scopes[i].path, true
			}
		}
		return nil, "data.@index", false
	}
	start, base, rest := in.value, in.path, path
	if path[0] == "this" {
		rest = path[1:]
	} else {
		found := false
		for i := len(scopes) - 1; i >= 0; i-- {
			if m, ok := scopes[i].value.(map[string]any); ok {
				if _, ok := m[path[0]]; ok {
					start, base, found = m, scopes[i].path, true
					break
				}
			}
		}
		if !found {
			return nil, "data" + in.path + "." + strings.Join(path, "."), false
		}
	}
	field := "data" + base
	cur := start
	for _, seg := range rest {
		field += "." + seg
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, "data" + base + "." + strings.Join(rest, "."), false
		}
		if cur, ok = m[seg]; !ok {
			return nil, "data" + base + "." + strings.Join(rest, "."), false
		}
	}
	return cur, field, true
}

// truthy is the condition of #if: found, and not null, false, 0, "", an
// empty list or an empty object.
func truthy(v any, found bool) bool {
	if !found {
		return false
	}
	switch v := v.(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case json.Number:
		f, err := v.Float64()
		return err != nil || f != 0
	case float64:
		return v != 0
	case []any:
		return len(v) > 0
	case map[string]any:
		return len(v) > 0
	}
	return true
}

// format turns a scalar into text; lists and objects are not values.
func format(v any) (string, bool) {
	switch v := v.(type) {
	case nil:
		return "", true
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64), true
	case int:
		return strconv.Itoa(v), true
	case int64:
		return strconv.FormatInt(v, 10), true
	case bool:
		return strconv.FormatBool(v), true
	}
	return "", false
}

func describe(v any) string {
	switch v.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "a list"
	case nil:
		return "null"
	}
	return "a value"
}

// hasControl reports line breaks and control characters (tab excepted),
// and the Unicode line and paragraph separators.
func hasControl(s string) bool {
	for _, r := range s {
		if (r < 0x20 && r != '\t') || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return true
		}
	}
	return false
}
