// Package tmpl parses and renders Herald's stored message templates: a
// Handlebars-like language for a subject, a text part and an HTML part.
//
// The language is small on purpose:
//
//	{{name}}  {{user.first}}        a value from the data (dotted path)
//	{{#if x}}…{{else}}…{{/if}}      x present and not false, 0, "", null, [] or {}... see Truthy
//	{{#unless x}}…{{/unless}}       the opposite
//	{{#each list}}…{{else}}…{{/each}} once per element; inside, {{this}}, {{this.f}},
//	                                 {{f}} (the element's field first, then outer data)
//	                                 and {{@index}}
//	{{! comment }}  {{!-- comment --}}
//	\{{                             a literal "{{"
//
// There are no helpers and no triple-stash ({{{raw}}}): every value is
// escaped for where it lands, and a template that asks for raw output is
// refused when it is parsed. Values are escaped by the part's Kind: the HTML
// part escapes them for their HTML context (text, quoted attribute value,
// URL attribute), and a template placing a value where escaping cannot make
// it safe (inside <script> or <style>, an unquoted attribute value, a tag
// or attribute name, an event-handler or style attribute) is refused when
// parsed; a value starting a URL attribute must be a relative URL or use
// http, https, mailto or tel. The subject refuses values with line breaks
// or control characters. The text part takes values as they are.
//
// Rendering reports every missing variable at once, by its path in the
// data ("data.user.first"), so the caller can name them all.
package tmpl

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Kind is the part of a message a template makes; it decides how values
// are escaped.
type Kind int

// Template kinds.
const (
	Subject Kind = iota // a header field: values may not hold line breaks or control characters
	Text                // a text/plain part: values as they are
	HTML                // a text/html part: values escaped for their HTML context
)

// String names the kind as the API's fields do.
func (k Kind) String() string {
	switch k {
	case Subject:
		return "subject"
	case Text:
		return "text"
	case HTML:
		return "html"
	}
	return "unknown"
}

// Limits of parsing and rendering.
const (
	MaxDepth      = 16      // nested blocks
	MaxPathParts  = 16      // segments of a dotted path
	MaxOutput     = 2 << 20 // bytes one rendered part may reach
	MaxIterations = 100_000 // #each iterations of one rendering, all loops together
)

// SyntaxError is a template that cannot be parsed, with the position of
// the problem (1-based line and column, in characters).
type SyntaxError struct {
	Line, Column int
	Msg          string
}

// Error implements error.
func (e *SyntaxError) Error() string {
	return fmt.Sprintf("line %d, column %d: %s", e.Line, e.Column, e.Msg)
}

// Template is a parsed template of one Kind.
type Template struct {
	kind  Kind
	nodes []node
}

// Kind returns the template's kind.
func (t *Template) Kind() Kind { return t.kind }

// node is one piece of a parsed template.
type node interface{}

type textNode string

// ctx is the HTML context of a value.
type ctx int

const (
	ctxNone     ctx = iota // subject or text: no HTML escaping
	ctxHTML                // element content, comment, quoted attribute value
	ctxURLStart            // the start of a quoted URL attribute value
)

type varNode struct {
	path   []string // "this" first for this-relative paths; "@index" alone
	name   string   // as written
	line   int
	column int
	ctx    ctx
}

type ifNode struct {
	path   []string
	name   string
	negate bool // unless
	then   []node
	els    []node
}

type eachNode struct {
	path []string
	name string
	body []node
	els  []node
}

// Parse parses src as a template of kind k. The error is a *SyntaxError.
func Parse(k Kind, src string) (*Template, error) {
	if !utf8.ValidString(src) {
		return nil, &SyntaxError{Line: 1, Column: 1, Msg: "the template is not valid UTF-8"}
	}
	p := &parser{src: src, kind: k, posLine: 1, posCol: 1}
	if k == HTML {
		p.html = &htmlScanner{}
	}
	nodes, err := p.parse()
	if err != nil {
		return nil, err
	}
	return &Template{kind: k, nodes: nodes}, nil
}

// frame is an open block while parsing.
type frame struct {
	keyword string // "if", "unless", "each"
	node    node
	line    int
	column  int
	inElse  bool
	nodes   []node // the nodes of the current branch
}

type parser struct {
	src   string
	kind  Kind
	html  *htmlScanner
	stack []*frame
	each  int // open #each blocks

	posOff, posLine, posCol int // the last position computed (see pos)
}

// pos returns the 1-based line and column of byte offset off. The parser
// asks in increasing order, so it counts on from the last answer.
func (p *parser) pos(off int) (int, int) {
	if off < p.posOff {
		p.posOff, p.posLine, p.posCol = 0, 1, 1
	}
	for _, r := range p.src[p.posOff:off] {
		if r == '\n' {
			p.posLine, p.posCol = p.posLine+1, 1
		} else {
			p.posCol++
		}
	}
	p.posOff = off
	return p.posLine, p.posCol
}

func (p *parser) errAt(off int, format string, args ...any) error {
	line, col := p.pos(off)
	return &SyntaxError{Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

func (p *parser) parse() ([]node, error) {
	root := &frame{}
	p.stack = []*frame{root}
	emit := func(n node) {
		top := p.stack[len(p.stack)-1]
		top.nodes = append(top.nodes, n)
	}
	text := func(s string) {
		if s == "" {
			return
		}
		if p.html != nil {
			p.html.feed(s)
		}
		emit(textNode(s))
	}
	i := 0
	for i < len(p.src) {
		j := strings.Index(p.src[i:], "{{")
		if j < 0 {
			text(p.src[i:])
			break
		}
		open := i + j
		if open > 0 && p.src[open-1] == '\\' {
			text(p.src[i:open-1] + "{{")
			i = open + 2
			continue
		}
		text(p.src[i:open])
		if strings.HasPrefix(p.src[open:], "{{{") {
			return nil, p.errAt(open, "{{{ }}} (raw output) is not supported: every value is escaped; use {{name}}")
		}
		body := open + 2
		end := "}}"
		if strings.HasPrefix(p.src[body:], "!--") {
			end = "--}}"
		}
		k := strings.Index(p.src[body:], end)
		if k < 0 {
			return nil, p.errAt(open, "%s without a closing %s", "{{", end)
		}
		inner := p.src[body : body+k]
		i = body + k + len(end)
		if err := p.tag(open, inner, emit); err != nil {
			return nil, err
		}
	}
	if len(p.stack) > 1 {
		f := p.stack[len(p.stack)-1]
		return nil, &SyntaxError{Line: f.line, Column: f.column, Msg: fmt.Sprintf("{{#%s}} is never closed with {{/%s}}", f.keyword, f.keyword)}
	}
	return root.nodes, nil
}

// tag handles one {{…}} whose content is inner, at byte offset off.
func (p *parser) tag(off int, inner string, emit func(node)) error {
	if strings.HasPrefix(inner, "!") {
		return nil // a comment
	}
	s := strings.TrimSpace(inner)
	if strings.ContainsAny(s, "{}") {
		return p.errAt(off, "unexpected brace in {{%s}}", s)
	}
	switch {
	case s == "":
		return p.errAt(off, "empty {{}}")
	case strings.HasPrefix(s, "#"):
		kw, arg, _ := strings.Cut(s[1:], " ")
		arg = strings.TrimSpace(arg)
		if kw != "if" && kw != "unless" && kw != "each" {
			return p.errAt(off, "unknown block {{#%s}}: only #if, #unless and #each are supported", kw)
		}
		if arg == "" {
			return p.errAt(off, "{{#%s}} needs a variable, as in {{#%s name}}", kw, kw)
		}
		path, err := p.path(off, arg)
		if err != nil {
			return err
		}
		if len(p.stack) > MaxDepth {
			return p.errAt(off, "blocks nested deeper than %d", MaxDepth)
		}
		line, col := p.pos(off)
		f := &frame{keyword: kw, line: line, column: col}
		switch kw {
		case "each":
			if path[0] == "@index" {
				return p.errAt(off, "{{#each @index}}: @index is a number, not a list")
			}
			f.node = &eachNode{path: path, name: arg}
			p.each++
		default:
			f.node = &ifNode{path: path, name: arg, negate: kw == "unless"}
		}
		p.stack = append(p.stack, f)
		return nil
	case s == "else":
		if len(p.stack) == 1 {
			return p.errAt(off, "{{else}} outside a block")
		}
		f := p.stack[len(p.stack)-1]
		if f.inElse {
			return p.errAt(off, "a second {{else}} in {{#%s}}", f.keyword)
		}
		p.closeBranch(f)
		f.inElse = true
		return nil
	case strings.HasPrefix(s, "/"):
		kw := strings.TrimSpace(s[1:])
		if len(p.stack) == 1 {
			return p.errAt(off, "{{/%s}} closes no block", kw)
		}
		f := p.stack[len(p.stack)-1]
		if kw != f.keyword {
			return p.errAt(off, "{{/%s}} closes {{#%s}} of line %d, column %d", kw, f.keyword, f.line, f.column)
		}
		p.closeBranch(f)
		p.stack = p.stack[:len(p.stack)-1]
		if f.keyword == "each" {
			p.each--
		}
		emit(f.node)
		return nil
	case strings.HasPrefix(s, "else ") || s == "^":
		return p.errAt(off, "{{%s}} is not supported: use {{else}}", s)
	case strings.HasPrefix(s, ">"):
		return p.errAt(off, "partials ({{> name}}) are not supported")
	case strings.HasPrefix(s, "&"):
		return p.errAt(off, "{{&name}} (raw output) is not supported: every value is escaped; use {{name}}")
	}
	path, err := p.path(off, s)
	if err != nil {
		return err
	}
	line, col := p.pos(off)
	v := &varNode{path: path, name: s, line: line, column: col}
	switch p.kind {
	case HTML:
		c, err := p.html.context()
		if err != nil {
			return p.errAt(off, "{{%s}} %s", s, err.Error())
		}
		v.ctx = c
		p.html.feed("x") // the value is text where it lands
	default:
		v.ctx = ctxNone
	}
	emit(v)
	return nil
}

// closeBranch stores the nodes collected for f's current branch.
func (p *parser) closeBranch(f *frame) {
	switch n := f.node.(type) {
	case *ifNode:
		if f.inElse {
			n.els = f.nodes
		} else {
			n.then = f.nodes
		}
	case *eachNode:
		if f.inElse {
			n.els = f.nodes
		} else {
			n.body = f.nodes
		}
	}
	f.nodes = nil
}

// path checks and splits a variable reference.
func (p *parser) path(off int, s string) ([]string, error) {
	if strings.ContainsAny(s, " \t\r\n") {
		return nil, p.errAt(off, "{{%s}}: helpers and arguments are not supported; write a variable such as {{user.name}}", s)
	}
	if s == "@index" {
		if p.each == 0 {
			return nil, p.errAt(off, "{{@index}} outside {{#each}}")
		}
		return []string{"@index"}, nil
	}
	parts := strings.Split(s, ".")
	if len(parts) > MaxPathParts {
		return nil, p.errAt(off, "{{%s}}: more than %d parts", s, MaxPathParts)
	}
	for i, part := range parts {
		if part == "this" && i == 0 {
			continue
		}
		if !validName(part) {
			return nil, p.errAt(off, "{{%s}}: %q is not a valid variable name (letters, digits, _ and -)", s, part)
		}
	}
	if parts[0] == "this" && p.each == 0 && len(parts) == 1 {
		// {{this}} at the top is the whole data object: never a value.
		return nil, p.errAt(off, "{{this}} outside {{#each}}")
	}
	return parts, nil
}

func validName(s string) bool {
	if s == "" || len(s) > 128 || s == "this" {
		return false
	}
	for _, r := range s {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-') {
			return false
		}
	}
	return true
}
