package tracking

import (
	"fmt"
	"strings"
	"testing"
)

// newsletter is a 50-odd KB HTML document with 100 links.
func newsletter() string {
	var b strings.Builder
	b.WriteString(`<!DOCTYPE html><html><head><style>p{margin:0}</style></head><body><table>`)
	for i := range 100 {
		fmt.Fprintf(&b, `<tr><td class="item"><p>Item %d: %s</p><a href="https://shop.example.com/products/%d?utm_source=mail&amp;utm_campaign=winter" style="color:#06c">See item %d</a></td></tr>`,
			i, strings.Repeat("lorem ipsum dolor sit amet ", 12), i, i)
	}
	b.WriteString(`</table></body></html>`)
	return b.String()
}

func BenchmarkRewriteNewsletter(b *testing.B) {
	tr, err := New(Config{BaseURL: base}, testKey, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	doc := newsletter()
	tg := Target{Account: "acme", MessageID: "01JH7Q3ZB6Y8W2X4C5V6N7M8K9", Recipient: "someone@example.org", Opens: true, Clicks: true}
	b.SetBytes(int64(len(doc)))
	var out string
	var res Result
	for b.Loop() {
		out, res = tr.Rewrite(doc, tg)
	}
	b.ReportMetric(float64(len(doc)), "in-bytes")
	b.ReportMetric(float64(len(out)), "out-bytes")
	b.ReportMetric(float64(res.Links), "links")
}
