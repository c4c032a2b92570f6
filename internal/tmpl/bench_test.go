package tmpl

import (
	"strings"
	"testing"
)

// benchSource is a 64 KiB HTML template (the API's limit per part) with
// about 2,000 values and an #each over 50 rows.
func benchSource() string {
	var b strings.Builder
	b.WriteString(`<table>{{#each rows}}<tr><td title="{{name}}">{{@index}}</td><td><a href="{{url}}">{{name}}</a></td></tr>{{/each}}</table>`)
	for b.Len() < 64<<10-100 {
		b.WriteString(`<p class="x">Dear {{user.first}} {{user.last}}, order {{order.id}}</p>`)
	}
	return b.String()
}

func benchData() map[string]any {
	rows := make([]any, 50)
	for i := range rows {
		rows[i] = map[string]any{"name": "<item> & co", "url": "https://example.org/p?i=1&j=2"}
	}
	return map[string]any{"rows": rows, "user": map[string]any{"first": "Zoë", "last": `O'Brien`}, "order": map[string]any{"id": "A-1234"}}
}

func BenchmarkParse64KiB(b *testing.B) {
	src := benchSource()
	b.SetBytes(int64(len(src)))
	for b.Loop() {
		if _, err := Parse(HTML, src); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRender64KiB(b *testing.B) {
	tp, err := Parse(HTML, benchSource())
	if err != nil {
		b.Fatal(err)
	}
	data := benchData()
	for b.Loop() {
		if _, err := tp.Render(data); err != nil {
			b.Fatal(err)
		}
	}
}
