package metrics

import (
	"strings"
	"testing"
)

func TestGaugeVecSetDelete(t *testing.T) {
	r := NewRegistry()
	g := r.NewGaugeVec("herald_blocklist_listed", "Listed.", "target", "list")
	g.Set(1, "192.0.2.1", "zen.spamhaus.org")
	g.Set(1, "example.com", "dbl.spamhaus.org")
	g.Delete("example.com", "dbl.spamhaus.org")
	var b strings.Builder
	r.Write(&b)
	out := b.String()
	if !strings.Contains(out, `herald_blocklist_listed{target="192.0.2.1",list="zen.spamhaus.org"} 1`) {
		t.Errorf("missing the listed series in:\n%s", out)
	}
	if strings.Contains(out, "example.com") {
		t.Errorf("a deleted series is still written:\n%s", out)
	}
	if v, ok := g.Value("192.0.2.1", "zen.spamhaus.org"); !ok || v != 1 {
		t.Errorf("Value = %v, %v; want 1, true", v, ok)
	}
}
