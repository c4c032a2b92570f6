package config

import (
	"strings"
	"testing"
)

func TestPublicURL(t *testing.T) {
	t.Parallel()
	c, err := Parse("herald.toml", []byte("[server]\nhostname = \"mx.example.org\"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.PublicBaseURL(); got != "https://mx.example.org" {
		t.Errorf("default public URL %q", got)
	}
	for _, ok := range []string{"https://links.example.org", "https://links.example.org/", "http://127.0.0.1:8025", "https://[::1]:8443"} {
		c, err := Parse("herald.toml", []byte("[platform]\npublic_url = \""+ok+"\"\n"), nil)
		if err != nil {
			t.Errorf("%s refused: %v", ok, err)
			continue
		}
		if got := c.PublicBaseURL(); got != strings.TrimSuffix(ok, "/") {
			t.Errorf("%s: PublicBaseURL %q", ok, got)
		}
	}
	for _, bad := range []string{"ftp://x.example", "links.example.org", "https://", "https://u:p@x.example",
		"https://x.example/path", "https://x.example/?q=1", "https://x.example/#f", "https://x.example?", "javascript:alert(1)",
		"https://x.example/" + strings.Repeat("a", 300)} {
		_, err := Parse("herald.toml", []byte("[platform]\npublic_url = \""+bad+"\"\n"), nil)
		if err == nil || !strings.Contains(err.Error(), "platform.public_url") {
			t.Errorf("%q accepted (%v)", bad, err)
		}
	}
}
