package tmpl

import (
	"errors"
	"html"
	"strings"
)

// htmlScanner follows the HTML of a template's text, in source order, far
// enough to know the context of each value: element content, a quoted
// attribute value (of which attribute, and whether anything came before
// the value in it), or a place escaping cannot make safe. The text of all
// the branches of #if and #each is scanned in the order it is written, as
// if every branch were taken; a template whose branches open and close
// tags differently may be judged on that reading.
type htmlScanner struct {
	state   hstate
	tag     strings.Builder // the current tag's name, lower-case
	attr    strings.Builder // the current attribute's name, lower-case
	closing bool            // the tag is an end tag
	quote   byte            // the quote of the current attribute value
	empty   bool            // the current attribute value is only white space so far
	raw     string          // inside <script> or <style>: that element's name
	rawEnd  string          // the text seen of a possible "</script"
	dashes  int             // in a comment: "-" just seen
}

type hstate int

const (
	hText        hstate = iota
	hTagOpen            // after "<"
	hTagName            // in the tag name
	hInTag              // between attributes
	hAttrName           // in an attribute name
	hAfterAttr          // after an attribute name: "=" or another attribute
	hBeforeValue        // after "="
	hValueQuoted        // in a quoted value
	hValueBare          // in an unquoted value
	hComment            // in <!-- -->
	hDecl               // in <!…> or <?…>
	hMarkup             // after "<!": a comment or a declaration
	hRaw                // in the content of <script> or <style>
)

// feed advances the scanner over text.
func (h *htmlScanner) feed(s string) {
	for i := 0; i < len(s); i++ {
		h.step(s[i])
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' }

func lower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func (h *htmlScanner) step(c byte) {
	switch h.state {
	case hText:
		if c == '<' {
			h.state = hTagOpen
		}
	case hTagOpen:
		h.tag.Reset()
		h.closing = false
		switch {
		case c == '!':
			h.state, h.dashes = hMarkup, 0
		case c == '?':
			h.state = hDecl
		case c == '/':
			h.closing = true
			h.state = hTagName
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z':
			h.tag.WriteByte(lower(c))
			h.state = hTagName
		default:
			h.state = hText // "<" as text
		}
	case hMarkup:
		if c == '-' {
			h.dashes++
			if h.dashes == 2 {
				h.state, h.dashes = hComment, 0
			}
			return
		}
		h.state = hDecl
		h.step(c)
	case hComment:
		switch {
		case c == '-':
			h.dashes++
		case c == '>' && h.dashes >= 2:
			h.state = hText
			h.dashes = 0
		default:
			h.dashes = 0
		}
	case hDecl:
		if c == '>' {
			h.state = hText
		}
	case hTagName:
		switch {
		case isSpace(c):
			h.state = hInTag
		case c == '/':
			h.state = hInTag
		case c == '>':
			h.endTag()
		default:
			h.tag.WriteByte(lower(c))
		}
	case hInTag:
		switch {
		case isSpace(c) || c == '/':
		case c == '>':
			h.endTag()
		default:
			h.attr.Reset()
			h.attr.WriteByte(lower(c))
			h.state = hAttrName
		}
	case hAttrName:
		switch {
		case isSpace(c):
			h.state = hAfterAttr
		case c == '=':
			h.state = hBeforeValue
		case c == '>':
			h.endTag()
		case c == '/':
			h.state = hInTag
		default:
			h.attr.WriteByte(lower(c))
		}
	case hAfterAttr:
		switch {
		case isSpace(c):
		case c == '=':
			h.state = hBeforeValue
		case c == '>':
			h.endTag()
		case c == '/':
			h.state = hInTag
		default:
			h.attr.Reset()
			h.attr.WriteByte(lower(c))
			h.state = hAttrName
		}
	case hBeforeValue:
		switch {
		case isSpace(c):
		case c == '"' || c == '\'':
			h.quote, h.empty = c, true
			h.state = hValueQuoted
		case c == '>':
			h.endTag()
		default:
			h.state = hValueBare
		}
	case hValueQuoted:
		if c == h.quote {
			h.state = hInTag
		} else if !isSpace(c) {
			h.empty = false
		}
	case hValueBare:
		switch {
		case isSpace(c):
			h.state = hInTag
		case c == '>':
			h.endTag()
		}
	case hRaw:
		// Looking for "</script" or "</style" (any case).
		want := "</" + h.raw
		if h.rawEnd == "" && c != '<' {
			return
		}
		h.rawEnd += string(lower(c))
		if !strings.HasPrefix(want, h.rawEnd) {
			h.rawEnd = ""
			if c == '<' {
				h.rawEnd = "<"
			}
			return
		}
		if h.rawEnd == want {
			h.rawEnd = ""
			h.raw = ""
			h.closing = true
			h.tag.Reset()
			h.tag.WriteString(want[2:])
			h.state = hTagName
		}
	}
}

// endTag ends a tag at its ">": the content of script and style is raw
// text, where no escaping helps.
func (h *htmlScanner) endTag() {
	h.state = hText
	if name := h.tag.String(); !h.closing && (name == "script" || name == "style") {
		h.raw = name
		h.state = hRaw
	}
}

// urlAttrs are attributes whose value is a URL.
var urlAttrs = map[string]bool{
	"href": true, "src": true, "action": true, "formaction": true, "background": true, "poster": true,
	"cite": true, "longdesc": true, "usemap": true, "codebase": true, "data": true, "manifest": true,
	"ping": true, "xlink:href": true, "lowsrc": true, "dynsrc": true, "icon": true, "profile": true,
}

// context returns the context of a value at the scanner's position, or
// why no escaping can make a value safe there.
func (h *htmlScanner) context() (ctx, error) {
	switch h.state {
	case hText, hComment:
		return ctxHTML, nil
	case hValueQuoted:
		a := h.attr.String()
		switch {
		case strings.HasPrefix(a, "on"):
			return 0, errors.New("is inside an event handler attribute (" + a + "): a value cannot be made safe there")
		case a == "style" || a == "srcdoc" || a == "srcset":
			return 0, errors.New("is inside a " + a + " attribute: a value cannot be made safe there")
		case urlAttrs[a] && h.empty:
			return ctxURLStart, nil
		}
		return ctxHTML, nil
	case hBeforeValue, hValueBare:
		return 0, errors.New("is an unquoted attribute value: put the attribute's value in double quotes")
	case hRaw:
		return 0, errors.New("is inside <" + h.raw + ">: a value cannot be made safe there")
	case hDecl, hMarkup:
		return 0, errors.New("is inside a markup declaration")
	}
	return 0, errors.New("is inside a tag, where an attribute or a tag name is expected: values go in element content or quoted attribute values")
}

// escapeHTML escapes a value for element content and quoted attribute
// values: & < > " ' become character references.
func escapeHTML(s string) string { return html.EscapeString(s) }

// safeURL reports whether s, starting a URL attribute, is relative or
// uses an allowed scheme. Browsers drop ASCII white space and control
// characters in a URL's scheme, so they are dropped before looking.
func safeURL(s string) bool {
	s = strings.Map(func(r rune) rune {
		if r <= ' ' || r == 0x7f {
			return -1
		}
		return r
	}, s)
	colon := strings.IndexByte(s, ':')
	if colon < 0 {
		return true
	}
	if i := strings.IndexAny(s, "/?#"); i >= 0 && i < colon {
		return true // the colon is in a path, query or fragment: relative
	}
	switch strings.ToLower(s[:colon]) {
	case "http", "https", "mailto", "tel":
		return true
	}
	return false
}
