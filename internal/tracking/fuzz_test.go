package tracking

import (
	"strings"
	"testing"
)

// FuzzRewrite: any input is copied unchanged but for the pixel (opens)
// or the rewritten links (clicks), and every rewritten link carries a
// token that verifies and leads to a clean http(s) URL.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{`<html><body><a href="https://x.example/?a=1&amp;b">x</a></body></html>`,
		`<a href=http://u.example/>`, `<script><a href="https://s.example/"></script>`, `<a href="mailto:x@y">`, `</body`, "<a\x00href='https://n.example'>"} {
		f.Add(s)
	}
	tr, err := New(Config{BaseURL: base}, testKey, Deps{})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, res := tr.Rewrite(in, Target{Account: "acme", MessageID: "m", Opens: true})
		i := strings.Index(out, `<img src="`+base+OpenPath)
		if i < 0 || !res.Pixel {
			t.Fatalf("no pixel in %q", out)
		}
		j := strings.Index(out[i:], ">") + i + 1
		if strings.Replace(out, out[i:j], "", 1) != in {
			t.Fatalf("opens changed more than the pixel: %q -> %q", in, out)
		}
		out, res = tr.Rewrite(in, Target{Account: "acme", MessageID: "m", Recipient: "r@example.org", Clicks: true})
		n := 0
		for _, h := range hrefs(out) {
			tok, ok := strings.CutPrefix(h, base+ClickPath)
			if !ok {
				continue
			}
			c, _, err := verify(testKey, tok, kindClick)
			if err != nil || !CleanURL(c.url) || c.recipient != "r@example.org" {
				t.Fatalf("link %q: %+v %v", h, c, err)
			}
			n++
		}
		if n < res.Links || (res.Links == 0 && out != in) {
			t.Fatalf("%q: %d links found, result %+v, output %q", in, n, res, out)
		}
	})
}

// FuzzVerify: no token crashes verify, and one that verifies is exactly
// the token its claims sign to (nothing else is accepted for them).
func FuzzVerify(f *testing.F) {
	f.Add(sign(testKey, claims{kind: kindClick, account: "a", messageID: "m", url: "https://x.example/"}))
	f.Add(sign(testKey, claims{kind: kindOpen, account: "a", messageID: "m", recipient: "r@x"}))
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, tok string) {
		for _, kind := range []byte{kindOpen, kindClick} {
			c, _, err := verify(testKey, tok, kind)
			if err != nil {
				continue
			}
			if again := sign(testKey, c); again != tok {
				t.Fatalf("token %q verifies but its claims sign to %q", tok, again)
			}
		}
	})
}
