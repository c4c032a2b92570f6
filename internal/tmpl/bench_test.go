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

// BenchmarkRenderTypical renders a typical transactional message: a
// subject, a 1 KiB text part and a 4 KiB HTML part with a dozen values and
// five order lines.
func BenchmarkRenderTypical(b *testing.B) {
	html := `<html><body><h1>Thanks, {{user.first}}!</h1><p>Order {{order.id}} of {{order.date}}</p><table>{{#each rows}}<tr><td>{{name}}</td><td><a href="{{url}}">view</a></td></tr>{{/each}}</table>` +
		strings.Repeat(`<p style="margin:0">Some fixed marketing text that does not change between messages.</p>`, 40) + `<p>{{user.last}}</p></body></html>`
	set := Set{}
	var err error
	if set.Subject, err = Parse(Subject, "Your order {{order.id}}, {{user.first}}"); err != nil {
		b.Fatal(err)
	}
	if set.Text, err = Parse(Text, strings.Repeat("Hello {{user.first}} {{user.last}}, order {{order.id}}.\n", 16)); err != nil {
		b.Fatal(err)
	}
	if set.HTML, err = Parse(HTML, html); err != nil {
		b.Fatal(err)
	}
	data := benchData()
	data["rows"] = data["rows"].([]any)[:5]
	data["order"].(map[string]any)["date"] = "2026-12-02"
	for b.Loop() {
		if _, err := set.Render(data); err != nil {
			b.Fatal(err)
		}
	}
}
