package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// document is a decoded TOML file with the line of every key.
type document struct {
	values map[string]any
	lines  map[string]int // key path joined by "\x00" -> 1-based line
}

func pathKey(parts ...string) string { return strings.Join(parts, "\x00") }

// line returns the line where the key path was first defined, or 0.
func (d *document) line(parts ...string) int { return d.lines[pathKey(parts...)] }

// defined reports whether the key path appears in the file.
func (d *document) defined(parts ...string) bool {
	_, ok := d.lines[pathKey(parts...)]
	return ok
}

// decode parses data as TOML. go-toml's decoder checks syntax and TOML's
// semantic rules (duplicate keys, redefined tables) and reports positions;
// its parser is then walked once more to learn the line of every key, which
// the decoded map does not carry.
func decode(name string, data []byte) (*document, error) {
	doc := &document{values: map[string]any{}, lines: map[string]int{}}
	if err := toml.Unmarshal(data, &doc.values); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			line, _ := de.Position()
			return nil, &Error{File: name, Line: line, Msg: "syntax error: " + strings.TrimPrefix(de.Error(), "toml: ")}
		}
		return nil, &Error{File: name, Msg: "syntax error: " + strings.TrimPrefix(err.Error(), "toml: ")}
	}

	lines := newLineIndex(data)
	var p unstable.Parser
	p.Reset(data)
	var table []string // current [table] or [[array]] header
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = doc.record(&p, lines, nil, e.Key())
		case unstable.KeyValue:
			doc.keyValue(&p, lines, table, e)
		}
	}
	if err := p.Error(); err != nil { // cannot happen after Unmarshal succeeded
		return nil, &Error{File: name, Msg: "syntax error: " + err.Error()}
	}
	return doc, nil
}

// record notes the line of every prefix of base+key not seen before and
// returns the full path.
func (d *document) record(p *unstable.Parser, lines lineIndex, base []string, key unstable.Iterator) []string {
	path := slices.Clone(base)
	for key.Next() {
		k := key.Node()
		path = append(path, string(k.Data))
		pk := pathKey(path...)
		if _, ok := d.lines[pk]; !ok {
			d.lines[pk] = lines.line(p.Raw(k.Raw), p.Data())
		}
	}
	return path
}

// keyValue records a key = value expression, descending into inline tables.
func (d *document) keyValue(p *unstable.Parser, lines lineIndex, base []string, kv *unstable.Node) {
	path := d.record(p, lines, base, kv.Key())
	v := kv.Value()
	if v.Kind != unstable.InlineTable {
		return
	}
	it := v.Children()
	for it.Next() {
		if n := it.Node(); n.Kind == unstable.KeyValue {
			d.keyValue(p, lines, path, n)
		}
	}
}

// lineIndex maps byte offsets to line numbers.
type lineIndex []int // offsets of line starts

func newLineIndex(data []byte) lineIndex {
	idx := lineIndex{0}
	for i, c := range data {
		if c == '\n' {
			idx = append(idx, i+1)
		}
	}
	return idx
}

// line returns the 1-based line of sub, a subslice of data.
func (l lineIndex) line(sub, data []byte) int {
	off := cap(data) - cap(sub)
	return sort.Search(len(l), func(i int) bool { return l[i] > off })
}

// applyDoc stores every value of doc through idx and reports unknown keys
// and bad values with their lines.
func applyDoc(name string, doc *document, idx *index) errList {
	var errs errList
	at := func(parts ...string) source { return source{file: name, line: doc.line(parts...)} }
	byLine := func(m map[string]any, base ...string) []string {
		keys := slices.Sorted(maps.Keys(m))
		sort.SliceStable(keys, func(i, j int) bool {
			return doc.line(append(base, keys[i])...) < doc.line(append(base, keys[j])...)
		})
		return keys
	}
	for _, sec := range byLine(doc.values) {
		v := doc.values[sec]
		tbl, isTable := v.(map[string]any)
		if !idx.sections[sec] {
			what := "key"
			if isTable {
				what = "section"
			}
			errs = append(errs, at(sec).err("unknown %s %q", what, sec))
			continue
		}
		if !isTable {
			errs = append(errs, at(sec).err("%s: expected a table [%s], got %s", sec, sec, describe(v)))
			continue
		}
		for _, key := range byLine(tbl, sec) {
			full := sec + "." + key
			src := at(sec, key)
			f := idx.fields[full]
			if f == nil {
				if msg, ok := renamedKeys[full]; ok {
					errs = append(errs, src.err("%s", msg))
					continue
				}
				errs = append(errs, src.err("unknown key %q", full))
				continue
			}
			if f.kind == kTable {
				if err := setTable(f, tbl[key], doc, sec, key, name); err != nil {
					errs = append(errs, err)
					continue
				}
			} else if err := f.set(tbl[key]); err != nil {
				errs = append(errs, src.err("%s: %v", full, err))
				continue
			}
			idx.src[full] = src
		}
	}
	return errs
}

// setTable sets a table-valued field; an error names the line of the entry
// at fault when it can tell which one.
func setTable(f *field, v any, doc *document, sec, key, name string) *Error {
	line := doc.line(sec, key)
	if m, ok := v.(map[string]any); ok {
		// Validate entry by entry, in line order, so the error has its line.
		keys := slices.Sorted(maps.Keys(m))
		sort.SliceStable(keys, func(i, j int) bool { return doc.line(sec, key, keys[i]) < doc.line(sec, key, keys[j]) })
		for _, k := range keys {
			if err := f.set(map[string]any{k: m[k]}); err != nil {
				line := doc.line(sec, key, k)
				var ke *keyError
				if errors.As(err, &ke) && doc.line(sec, key, k, ke.key) > 0 {
					line = doc.line(sec, key, k, ke.key) // the key at fault inside the entry
				}
				return &Error{File: name, Line: line, Msg: fmt.Sprintf("%s: %v", f.name, err)}
			}
		}
	}
	if err := f.set(v); err != nil {
		return &Error{File: name, Line: line, Msg: fmt.Sprintf("%s: %v", f.name, err)}
	}
	return nil
}

// applyEnv applies HERALD_<SECTION>_<KEY> variables. A variable whose
// section is known but whose key is not is an error (a typo would otherwise
// be ignored silently); other HERALD_ variables are left alone. It reports
// whether delivery.helo_name was set.
func applyEnv(environ []string, idx *index) (errs errList, helo bool) {
	vars := map[string]string{}
	for _, kv := range environ {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(k, EnvPrefix) {
			continue
		}
		vars[k] = v
	}
	for _, name := range slices.Sorted(maps.Keys(vars)) {
		src := source{env: name}
		f := idx.env[name]
		if f == nil {
			if msg, ok := renamedEnv(name); ok {
				errs = append(errs, src.err("%s", msg))
				continue
			}
			rest := strings.TrimPrefix(name, EnvPrefix)
			for sec := range idx.sections {
				if strings.HasPrefix(rest, strings.ToUpper(sec)+"_") {
					errs = append(errs, src.err("unknown configuration variable (no key %q)", sec+"."+strings.ToLower(strings.TrimPrefix(rest, strings.ToUpper(sec)+"_"))))
					break
				}
			}
			continue
		}
		v, err := envValue(f.kind, vars[name])
		if err == nil {
			err = f.set(v)
		}
		if err != nil {
			errs = append(errs, src.err("%s: %v", f.name, err))
			continue
		}
		idx.src[f.name] = src
		if f.name == "delivery.helo_name" {
			helo = true
		}
	}
	return errs, helo
}

// renamedEnv returns the message of a renamed key for its environment
// variable.
func renamedEnv(name string) (string, bool) {
	for k, msg := range renamedKeys {
		if EnvName(k) == name {
			return msg, true
		}
	}
	return "", false
}

// envValue converts an environment string to the TOML value type a field of
// kind k expects.
func envValue(k kind, s string) (any, error) {
	switch k {
	case kList:
		out := []any{}
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
		return out, nil
	case kInt:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", s)
		}
		return n, nil
	case kFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", s)
		}
		return f, nil
	case kBool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("%q is not true or false", s)
		}
		return b, nil
	case kTable:
		out := map[string]any{}
		for _, part := range strings.Split(s, ",") {
			if part = strings.TrimSpace(part); part == "" {
				continue
			}
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				return nil, fmt.Errorf("%q is not key=value", part)
			}
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
		return out, nil
	default: // strings, durations, sizes
		return s, nil
	}
}
