package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// This file is a small JSON Schema checker for the OpenAPI document (the
// subset the document uses), so that tests can validate what the server
// really sends against what the document says.
//
// It is stricter than JSON Schema in one way: an object schema without
// additionalProperties allows no property it does not declare. The
// document leaves additionalProperties out of response schemas so that
// clients may accept properties added later, but the server must never
// send one the document does not describe. A keyword the checker does
// not know fails the check rather than being ignored.

// apiDoc is the parsed OpenAPI document.
type apiDoc struct {
	root map[string]any
}

var (
	docOnce   sync.Once
	parsedDoc *apiDoc
	docErr    error
)

// loadAPIDoc parses the embedded document once.
func loadAPIDoc() (*apiDoc, error) {
	docOnce.Do(func() {
		dec := json.NewDecoder(bytes.NewReader(openAPIDoc))
		dec.UseNumber()
		var root map[string]any
		if docErr = dec.Decode(&root); docErr == nil {
			parsedDoc = &apiDoc{root: root}
		}
	})
	return parsedDoc, docErr
}

// pointer returns the node at a JSON pointer ("#/components/schemas/X").
func (d *apiDoc) pointer(ref string) (any, error) {
	p, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("unsupported $ref %q", ref)
	}
	var cur any = d.root
	for _, tok := range strings.Split(p, "/") {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: %q is not in an object", ref, tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("$ref %q: no %q", ref, tok)
		}
	}
	return cur, nil
}

// deref follows $ref chains of an object node.
func (d *apiDoc) deref(node map[string]any) (map[string]any, error) {
	for range 10 {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node, nil
		}
		n, err := d.pointer(ref)
		if err != nil {
			return nil, err
		}
		if node, ok = n.(map[string]any); !ok {
			return nil, fmt.Errorf("$ref %q is not an object", ref)
		}
	}
	return nil, fmt.Errorf("$ref chain too long")
}

// annotations are keywords that do not constrain instances.
var annotations = map[string]bool{
	"description": true, "examples": true, "default": true, "title": true, "deprecated": true,
	"contentMediaType": true, "contentEncoding": true,
}

// validate checks the JSON value v (decoded with UseNumber) against schema
// and returns the problems, each naming its JSON path.
func (d *apiDoc) validate(schema any, v any, path string) []string {
	var errs []string
	d.check(schema, v, path, &errs)
	return errs
}

func (d *apiDoc) check(schemaNode any, v any, path string, errs *[]string) {
	fail := func(format string, args ...any) {
		*errs = append(*errs, path+": "+fmt.Sprintf(format, args...))
	}
	s, ok := schemaNode.(map[string]any)
	if !ok {
		fail("schema is not an object: %v", schemaNode)
		return
	}
	s, err := d.deref(s)
	if err != nil {
		fail("%v", err)
		return
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range s {
			if !yield(k) {
				return
			}
		}
	})
	for _, k := range keys {
		kv := s[k]
		switch k {
		case "type":
			d.checkType(kv, v, fail)
		case "enum":
			list, _ := kv.([]any)
			if !slices.ContainsFunc(list, func(e any) bool { return jsonEqual(e, v) }) {
				fail("%s is not one of %v", show(v), list)
			}
		case "const":
			if !jsonEqual(kv, v) {
				fail("%s is not %v", show(v), kv)
			}
		case "format":
			d.checkFormat(kv.(string), v, fail)
		case "pattern":
			if str, ok := v.(string); ok {
				re, err := regexp.Compile(kv.(string))
				if err != nil {
					fail("bad pattern %q: %v", kv, err)
				} else if !re.MatchString(str) {
					fail("%q does not match %s", str, kv)
				}
			}
		case "minLength", "maxLength":
			if str, ok := v.(string); ok {
				n := utf8.RuneCountInString(str)
				lim := num(kv)
				if (k == "minLength" && float64(n) < lim) || (k == "maxLength" && float64(n) > lim) {
					fail("length %d violates %s %v", n, k, kv)
				}
			}
		case "minimum", "maximum":
			if n, ok := v.(json.Number); ok {
				f, _ := n.Float64()
				lim := num(kv)
				if (k == "minimum" && f < lim) || (k == "maximum" && f > lim) {
					fail("%v violates %s %v", n, k, kv)
				}
			}
		case "minItems", "maxItems":
			if a, ok := v.([]any); ok {
				lim := num(kv)
				if (k == "minItems" && float64(len(a)) < lim) || (k == "maxItems" && float64(len(a)) > lim) {
					fail("%d items violates %s %v", len(a), k, kv)
				}
			}
		case "maxProperties":
			if o, ok := v.(map[string]any); ok && float64(len(o)) > num(kv) {
				fail("%d properties violates maxProperties %v", len(o), kv)
			}
		case "items":
			if a, ok := v.([]any); ok {
				for i, e := range a {
					d.check(kv, e, fmt.Sprintf("%s[%d]", path, i), errs)
				}
			}
		case "required":
			if o, ok := v.(map[string]any); ok {
				for _, r := range kv.([]any) {
					if _, ok := o[r.(string)]; !ok {
						fail("required property %q is missing", r)
					}
				}
			}
		case "properties", "additionalProperties":
			// Checked together below.
		case "allOf", "anyOf", "oneOf":
			n := 0
			var sub []string
			for _, alt := range kv.([]any) {
				var e []string
				d.check(alt, v, path, &e)
				if len(e) == 0 {
					n++
				}
				sub = append(sub, e...)
			}
			switch {
			case k == "allOf" && len(sub) > 0:
				*errs = append(*errs, sub...)
			case k == "anyOf" && n == 0:
				fail("matches none of anyOf: %v", sub)
			case k == "oneOf" && n != 1:
				fail("matches %d of oneOf, want 1: %v", n, sub)
			}
		default:
			if !annotations[k] && !strings.HasPrefix(k, "x-") {
				fail("the checker does not know the keyword %q", k)
			}
		}
	}
	if o, ok := v.(map[string]any); ok {
		props, _ := s["properties"].(map[string]any)
		for _, name := range slices.Sorted(func(yield func(string) bool) {
			for k := range o {
				if !yield(k) {
					return
				}
			}
		}) {
			val := o[name]
			if ps, ok := props[name]; ok {
				d.check(ps, val, path+"."+name, errs)
				continue
			}
			switch ap := s["additionalProperties"].(type) {
			case nil:
				if props != nil {
					fail("property %q is not in the document", name)
				}
			case bool:
				if !ap {
					fail("property %q is not allowed", name)
				}
			default:
				d.check(ap, val, path+"."+name, errs)
			}
		}
	}
}

func (d *apiDoc) checkType(kv any, v any, fail func(string, ...any)) {
	var types []string
	switch t := kv.(type) {
	case string:
		types = []string{t}
	case []any:
		for _, e := range t {
			types = append(types, e.(string))
		}
	}
	for _, t := range types {
		if jsonType(v, t) {
			return
		}
	}
	fail("%s is not of type %s", show(v), strings.Join(types, "|"))
}

// jsonType reports whether v has JSON Schema type t.
func jsonType(v any, t string) bool {
	switch t {
	case "null":
		return v == nil
	case "boolean":
		_, ok := v.(bool)
		return ok
	case "string":
		_, ok := v.(string)
		return ok
	case "number":
		_, ok := v.(json.Number)
		return ok
	case "integer":
		n, ok := v.(json.Number)
		if !ok {
			return false
		}
		if _, err := n.Int64(); err == nil {
			return true
		}
		f, err := n.Float64()
		return err == nil && f == math.Trunc(f)
	case "array":
		_, ok := v.([]any)
		return ok
	case "object":
		_, ok := v.(map[string]any)
		return ok
	}
	return false
}

func (d *apiDoc) checkFormat(f string, v any, fail func(string, ...any)) {
	switch f {
	case "date-time":
		if s, ok := v.(string); ok {
			if _, err := time.Parse(time.RFC3339Nano, s); err != nil {
				fail("%q is not an RFC 3339 date-time", s)
			}
		}
	case "uri":
		if s, ok := v.(string); ok {
			if u, err := url.Parse(s); err != nil || !u.IsAbs() {
				fail("%q is not an absolute URI", s)
			}
		}
	case "int64":
		if n, ok := v.(json.Number); ok {
			if _, err := n.Int64(); err != nil {
				fail("%v is not an int64", n)
			}
		}
	default:
		fail("the checker does not know the format %q", f)
	}
}

func num(v any) float64 {
	if n, ok := v.(json.Number); ok {
		f, _ := n.Float64()
		return f
	}
	return math.NaN()
}

func jsonEqual(a, b any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return bytes.Equal(x, y)
}

func show(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 80 {
		return string(b[:77]) + "..."
	}
	return string(b)
}

// decodeJSONValue decodes b keeping numbers exact.
func decodeJSONValue(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	if dec.More() {
		return nil, fmt.Errorf("data after the JSON value")
	}
	return v, nil
}

// operation finds the document's operation for a request: the path
// template matching path segment by segment, and the method.
func (d *apiDoc) operation(method, path string) (op map[string]any, template string, ok bool) {
	paths, _ := d.root["paths"].(map[string]any)
	segs := strings.Split(path, "/")
	var templates []string
	for tpl := range paths {
		templates = append(templates, tpl)
	}
	sort.Strings(templates) // literal segments sort before "{"
	for _, tpl := range templates {
		ts := strings.Split(tpl, "/")
		if len(ts) != len(segs) {
			continue
		}
		match := true
		for i := range ts {
			if !(strings.HasPrefix(ts[i], "{") && segs[i] != "") && ts[i] != segs[i] {
				match = false
				break
			}
		}
		if !match {
			continue
		}
		item, _ := paths[tpl].(map[string]any)
		if o, ok := item[strings.ToLower(method)].(map[string]any); ok {
			return o, tpl, true
		}
	}
	return nil, "", false
}

// checkResponse validates a real response against the operation serving
// method and path: its status must be documented (exactly, as nXX or
// default), its body must be JSON of the documented schema (or empty when
// the document gives no content). It returns the operation's template and
// the problems; ok is false when the document has no such operation (e.g.
// requests to unknown paths, which the tests check separately).
func (d *apiDoc) checkResponse(method, path string, status int, header http.Header, body []byte) (template string, problems []string, ok bool) {
	op, tpl, ok := d.operation(method, path)
	if !ok {
		return "", nil, false
	}
	where := fmt.Sprintf("%s %s %d", method, tpl, status)
	responses, _ := op["responses"].(map[string]any)
	code := strconv.Itoa(status)
	r, found := responses[code]
	if !found {
		r, found = responses[code[:1]+"XX"]
	}
	if !found {
		r, found = responses["default"]
	}
	if !found {
		return tpl, []string{where + ": status not documented"}, true
	}
	resp, err := d.deref(r.(map[string]any))
	if err != nil {
		return tpl, []string{where + ": " + err.Error()}, true
	}
	content, _ := resp["content"].(map[string]any)
	if len(content) == 0 {
		if len(body) != 0 {
			problems = append(problems, fmt.Sprintf("%s: documented without a body, got %q", where, body))
		}
		return tpl, problems, true
	}
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	if err != nil {
		return tpl, []string{where + ": no valid Content-Type"}, true
	}
	media, ok := content[mt].(map[string]any)
	if !ok {
		return tpl, []string{fmt.Sprintf("%s: Content-Type %s not documented", where, mt)}, true
	}
	v, err := decodeJSONValue(body)
	if err != nil {
		return tpl, []string{fmt.Sprintf("%s: body is not JSON: %v", where, err)}, true
	}
	for _, p := range d.validate(media["schema"], v, "body") {
		problems = append(problems, where+": "+p)
	}
	return tpl, problems, true
}
