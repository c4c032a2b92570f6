package tmpl

import (
	"strings"
	"testing"
)

// FuzzRender parses any template as each kind and renders it with a value
// from the fuzzer: nothing panics, a value never adds a "<" to the HTML
// part, and never a line break to the subject.
func FuzzRender(f *testing.F) {
	for _, s := range []string{
		"Hi {{v}}", `<a href="{{v}}">{{#each a}}{{this}}{{/each}}</a>`, "{{#if o.v}}{{o.v}}{{else}}none{{/if}}",
		"<p title='{{v}}'>{{!c}}</p><!-- {{v}} -->", `<script>x</script>{{v}}`, `\{{v}} {{#unless v}}{{/unless}}`,
	} {
		f.Add(s, `<b onclick="x">&'`+"\r\n")
	}
	f.Fuzz(func(t *testing.T, src, val string) {
		data := func(v string) map[string]any {
			return map[string]any{"v": v, "a": []any{v, v}, "o": map[string]any{"v": v}}
		}
		plain := strings.NewReplacer("<", "", "\r", "", "\n", "", "\u0085", "", "\u2028", "", "\u2029", "").Replace(val)
		for _, k := range []Kind{Subject, Text, HTML} {
			tp, err := Parse(k, src)
			if err != nil {
				continue
			}
			out, err := tp.Render(data(val))
			if err != nil {
				continue
			}
			ref, err := tp.Render(data(plain))
			if err != nil {
				t.Fatalf("%s %q renders %q but not %q: %v", k, src, val, plain, err)
			}
			switch k {
			case HTML:
				if strings.Count(out, "<") != strings.Count(ref, "<") {
					t.Fatalf("html %q with %q: a value added a <: %q", src, val, out)
				}
			case Subject:
				if strings.Count(out, "\n")+strings.Count(out, "\r") != strings.Count(ref, "\n")+strings.Count(ref, "\r") {
					t.Fatalf("subject %q with %q: a value added a line break: %q", src, val, out)
				}
			}
		}
	})
}
