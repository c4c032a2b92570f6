package tmpl

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
)

func data(t *testing.T, js string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(js))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

func mustParse(t *testing.T, k Kind, src string) *Template {
	t.Helper()
	tp, err := Parse(k, src)
	if err != nil {
		t.Fatalf("Parse(%s, %q): %v", k, src, err)
	}
	return tp
}

func render(t *testing.T, k Kind, src, js string) string {
	t.Helper()
	out, err := mustParse(t, k, src).Render(data(t, js))
	if err != nil {
		t.Fatalf("Render(%q): %v", src, err)
	}
	return out
}

func TestVariables(t *testing.T) {
	t.Parallel()
	js := `{"name":"Ann","user":{"first":"Bo","age":41,"vip":true,"score":1.5,"none":null},"items":[{"sku":"a","n":1},{"sku":"b","n":2}],"tags":["x","y"]}`
	cases := []struct{ src, want string }{
		{"Hello {{name}}!", "Hello Ann!"},
		{"{{ user.first }} is {{user.age}} ({{user.vip}}, {{user.score}}, [{{user.none}}])", "Bo is 41 (true, 1.5, [])"},
		{"{{this.name}}", "Ann"},
		{"no tags at all", "no tags at all"},
		{`\{{name}} is literal`, "{{name}} is literal"},
		{"{{! a comment }}x{{!-- a {{longer}} one --}}y", "xy"},
		{"{{#if user.vip}}VIP{{else}}regular{{/if}}", "VIP"},
		{"{{#if user.missing}}yes{{else}}no{{/if}}", "no"},
		{"{{#unless user.missing}}none{{/unless}}", "none"},
		{"{{#if user.none}}a{{else}}b{{/if}}", "b"},
		{"{{#each items}}{{@index}}:{{sku}}x{{n}} for {{name}};{{/each}}", "0:ax1 for Ann;1:bx2 for Ann;"},
		{"{{#each tags}}[{{this}}]{{/each}}", "[x][y]"},
		{"{{#each user.none}}x{{else}}empty{{/each}}", "empty"},
		{"{{#each items}}{{#each ../tags}}{{/each}}{{/each}}", ""},
	}
	for _, c := range cases {
		if c.src == "{{#each items}}{{#each ../tags}}{{/each}}{{/each}}" {
			if _, err := Parse(Text, c.src); err == nil {
				t.Errorf("../ paths should be refused")
			}
			continue
		}
		if got := render(t, Text, c.src, js); got != c.want {
			t.Errorf("%q: got %q, want %q", c.src, got, c.want)
		}
	}
}

// The HTML part escapes every value; the characters that matter in
// content and attribute values all become references.
func TestHTMLEscaping(t *testing.T) {
	t.Parallel()
	js := `{"v":"<script>alert(\"x\")</script> & 'q'","url":"https://example.org/?a=1&b=<2>","rel":"/path:x"}`
	got := render(t, HTML, `<p title="{{v}}" class='{{v}}'>{{v}}</p><a href="{{url}}">x</a><a href="{{rel}}">r</a><!-- {{v}} -->`, js)
	esc := "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &#39;q&#39;"
	want := `<p title="` + esc + `" class='` + esc + `'>` + esc + `</p><a href="https://example.org/?a=1&amp;b=&lt;2&gt;">x</a><a href="/path:x">r</a><!-- ` + esc + ` -->`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	// The text part takes values as they are; the subject too when they
	// are single-line.
	if got := render(t, Text, "{{v}}", js); got != `<script>alert("x")</script> & 'q'` {
		t.Errorf("text part: %q", got)
	}
	if got := render(t, Subject, "Re: {{v}}", js); got != `Re: <script>alert("x")</script> & 'q'` {
		t.Errorf("subject: %q", got)
	}
}

// Values in places no escaping makes safe are refused when the template
// is parsed, with their position.
func TestHTMLUnsafeContexts(t *testing.T) {
	t.Parallel()
	cases := []struct{ src, want string }{
		{`<script>var x = "{{v}}";</script>`, "inside <script>"},
		{`<STYLE>p { color: {{v}} }</STYLE>`, "inside <style>"},
		{`<a href={{v}}>x</a>`, "unquoted attribute value"},
		{`<a href=x{{v}}>x</a>`, "unquoted attribute value"},
		{`<a {{v}}="1">x</a>`, "inside a tag"},
		{`<{{v}}>`, "inside a tag"},
		{`<img src="x" onerror="{{v}}">`, "event handler"},
		{`<p style="color: {{v}}">`, "style attribute"},
		{`<p>{{{v}}}</p>`, "raw output"},
		{`<p>{{&v}}</p>`, "raw output"},
	}
	for _, c := range cases {
		_, err := Parse(HTML, c.src)
		var se *SyntaxError
		if !errors.As(err, &se) || !strings.Contains(se.Msg, c.want) {
			t.Errorf("%q: %v, want a syntax error with %q", c.src, err, c.want)
		}
	}
	// After </script> values are content again.
	if got := render(t, HTML, `<script>if (a</b) {}</script><p>{{v}}</p>`, `{"v":"<"}`); got != `<script>if (a</b) {}</script><p>&lt;</p>` {
		t.Errorf("after script: %q", got)
	}
	// The text part has no HTML contexts.
	if _, err := Parse(Text, `<script>{{v}}</script>`); err != nil {
		t.Errorf("text part: %v", err)
	}
}

// A value starting a URL attribute must be relative or of a safe scheme.
func TestHTMLURLs(t *testing.T) {
	t.Parallel()
	tp := mustParse(t, HTML, `<a href=" {{u}}">x</a><img src="https://cdn.example/{{u}}">`)
	for u, ok := range map[string]bool{
		"https://example.org/x": true, "http://e.org": true, "mailto:a@b.c": true, "tel:+1": true,
		"/relative": true, "page?x=a:b": true, "#top": true,
		"javascript:alert(1)": false, "JavaScript:alert(1)": false, "java\tscript:alert(1)": false,
		" javascript:x": false, "data:text/html,<b>": false, "vbscript:x": false,
	} {
		b, _ := json.Marshal(map[string]string{"u": u})
		_, err := tp.Render(data(t, string(b)))
		if ok != (err == nil) {
			t.Errorf("href %q: %v", u, err)
		}
	}
}

// Every missing variable of every part is named at once, by its path in
// the data; conditions on missing values are false, not errors.
func TestMissingNamed(t *testing.T) {
	t.Parallel()
	set := Set{
		Subject: mustParse(t, Subject, "Order {{order.id}} for {{name}}"),
		Text:    mustParse(t, Text, "Hi {{name}}, {{#if coupon}}{{coupon.code}}{{/if}}{{#each items}}{{sku}} {{qty}}{{/each}} {{order.total}}"),
		HTML:    mustParse(t, HTML, "<p>{{greeting}} {{name}}</p>{{#each missing_list}}x{{/each}}"),
	}
	_, err := set.Render(data(t, `{"order":{"id":7},"items":[{"sku":"a","qty":1},{"sku":"b"}]}`))
	var re *RenderError
	if !errors.As(err, &re) {
		t.Fatalf("Render: %v", err)
	}
	want := []string{"data.name", "data.items[1].qty", "data.order.total", "data.greeting", "data.missing_list"}
	if got := re.Missing(); !slices.Equal(got, want) {
		t.Errorf("missing %v, want %v", got, want)
	}
	if !strings.Contains(re.Error(), "{{name}} (line 1, column 24 of the subject)") {
		t.Errorf("error text: %s", re.Error())
	}
	out, err := set.Render(data(t, `{"order":{"id":7,"total":"9.50"},"name":"Ann","greeting":"Hello","items":[],"missing_list":null}`))
	if err != nil || out.Subject != "Order 7 for Ann" || out.Text != "Hi Ann,  9.50" || out.HTML != "<p>Hello Ann</p>" {
		t.Errorf("complete data: %+v, %v", out, err)
	}
}

// A value with a line break or a control character never reaches the
// subject; lists and objects are not values.
func TestSubjectHeaderSafe(t *testing.T) {
	t.Parallel()
	tp := mustParse(t, Subject, "Hello {{name}}")
	for _, v := range []string{"Ann\r\nBcc: victim@example.org", "Ann\nX", "Ann\rX", "A\x00", "A\u2028B", "A\u0085B"} {
		b, _ := json.Marshal(map[string]string{"name": v})
		_, err := tp.Render(data(t, string(b)))
		var re *RenderError
		if !errors.As(err, &re) || re.Problems[0].Field != "data.name" || !strings.Contains(re.Problems[0].Message, "line break") {
			t.Errorf("%q: %v", v, err)
		}
	}
	if got := render(t, Subject, "Hello {{name}}", `{"name":"Ann\tB"}`); got != "Hello Ann\tB" {
		t.Errorf("tab: %q", got)
	}
	_, err := tp.Render(data(t, `{"name":{"first":"x"}}`))
	if err == nil || !strings.Contains(err.Error(), "data.name: {{name}} needs a string") {
		t.Errorf("an object as a value: %v", err)
	}
}

// Syntax errors say where.
func TestSyntaxErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		src       string
		line, col int
		want      string
	}{
		{"Hi {{name", 1, 4, "without a closing"},
		{"a\nbc {{#if x}}y", 2, 4, "never closed"},
		{"{{#if x}}y{{/each}}", 1, 11, "closes {{#if}}"},
		{"{{/if}}", 1, 1, "closes no block"},
		{"{{else}}", 1, 1, "outside a block"},
		{"{{#with x}}{{/with}}", 1, 1, "unknown block"},
		{"{{#if}}{{/if}}", 1, 1, "needs a variable"},
		{"{{upper name}}", 1, 1, "helpers"},
		{"{{> partial}}", 1, 1, "partials"},
		{"{{a..b}}", 1, 1, "not a valid variable name"},
		{"{{@index}}", 1, 1, "outside {{#each}}"},
		{"ü {{}}", 1, 3, "empty"},
		{"{{#if a}}{{else}}{{else}}{{/if}}", 1, 18, "a second {{else}}"},
		{strings.Repeat("{{#if a}}", MaxDepth+1), 1, 1 + 9*MaxDepth, "nested deeper"},
	}
	for _, c := range cases {
		_, err := Parse(Text, c.src)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Line != c.line || se.Column != c.col || !strings.Contains(se.Msg, c.want) {
			t.Errorf("%q: %v, want line %d column %d with %q", c.src, err, c.line, c.col, c.want)
		}
	}
}

// Loops cannot blow the output up without bound.
func TestLimits(t *testing.T) {
	t.Parallel()
	list := make([]any, 1000)
	for i := range list {
		list[i] = strings.Repeat("x", 100)
	}
	tp := mustParse(t, Text, "{{#each a}}{{#each a}}{{this}}{{/each}}{{/each}}")
	_, err := tp.Render(map[string]any{"a": list})
	var re *RenderError
	if !errors.As(err, &re) || re.Problems[0].Field != "template.text" {
		t.Fatalf("a 100 MB rendering: %v", err)
	}
	tp = mustParse(t, Text, "{{#each a}}{{#each a}}{{/each}}{{/each}}")
	_, err = tp.Render(map[string]any{"a": list})
	if !errors.As(err, &re) || !strings.Contains(re.Problems[0].Message, "iterations") {
		t.Fatalf("a million iterations: %v", err)
	}
}
