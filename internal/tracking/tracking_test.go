package tracking

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	xhtml "golang.org/x/net/html"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/store"
)

const base = "https://mail.example.net"

var testKey = bytes.Repeat([]byte{7}, 32)

func newTracker(t *testing.T, deps Deps) *Tracker {
	t.Helper()
	tr, err := New(Config{BaseURL: base + "/"}, testKey, deps)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

var target = Target{Account: "acme", MessageID: "msg1", Recipient: "bob@example.org", Opens: true, Clicks: true}

// hrefs returns the href of every <a> start tag of doc, in order.
func hrefs(doc string) []string {
	var out []string
	z := xhtml.NewTokenizer(strings.NewReader(doc))
	for tt := z.Next(); tt != xhtml.ErrorToken; tt = z.Next() {
		if tt != xhtml.StartTagToken && tt != xhtml.SelfClosingTagToken {
			continue
		}
		tok := z.Token()
		if tok.Data != "a" {
			continue
		}
		for _, a := range tok.Attr {
			if a.Key == "href" {
				out = append(out, a.Val)
				break
			}
		}
	}
	return out
}

// clickTarget verifies a rewritten href and returns the claims it carries.
func clickTarget(t *testing.T, href string) claims {
	t.Helper()
	tok, ok := strings.CutPrefix(href, base+ClickPath)
	if !ok {
		t.Fatalf("href %q is not a tracking link", href)
	}
	c, _, err := verify(testKey, tok, kindClick)
	if err != nil {
		t.Fatalf("href %q: %v", href, err)
	}
	return c
}

func TestRewriteLinks(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, Deps{})
	doc := `<!DOCTYPE html><html><body>
<p><a href="https://shop.example.com/item?id=1&amp;ref=mail" class="btn">Buy</a>
<A HREF='http://Example.COM/Path'>upper</A>
<a href="  https://spaces.example.com/  ">spaces</a>
<a href="mailto:help@example.com">mail</a>
<a href="tel:+15551234">call</a>
<a href="#top">anchor</a>
<a href="/relative">relative</a>
<a href="javascript:alert(1)">js</a>
<a data-herald-notrack href="https://private.example.com/">notrack</a>
<a clicktracking="OFF" href="https://sendgrid-style.example.com/">off</a>
<a href="https://mail.example.net/unsubscribe/abc">own</a>
<a href="https://user:pw@example.com/">userinfo</a>
<a name="x">no href</a>
<script>var s = '<a href="https://in-script.example.com/">';</script>
<!-- <a href="https://in-comment.example.com/"> -->
<a href="https://dup.example.com/first" href="https://dup.example.com/second">dup</a>
</p></body></html>`
	out, res := tr.Rewrite(doc, Target{Account: "acme", MessageID: "msg1", Recipient: "bob@example.org", Clicks: true})
	if res.Links != 4 || res.Pixel {
		t.Fatalf("result %+v, want 4 links and no pixel\n%s", res, out)
	}
	got := hrefs(out)
	want := []string{"https://shop.example.com/item?id=1&ref=mail", "http://Example.COM/Path", "https://spaces.example.com/"}
	for i, w := range want {
		c := clickTarget(t, got[i])
		if c.url != w || c.account != "acme" || c.messageID != "msg1" || c.recipient != "bob@example.org" {
			t.Errorf("link %d: claims %+v, want URL %q", i, c, w)
		}
	}
	if c := clickTarget(t, got[len(got)-1]); c.url != "https://dup.example.com/first" {
		t.Errorf("duplicate href: tracked %q, want the first", c.url)
	}
	// Everything else is byte for byte as it was.
	for _, keep := range []string{
		`<a href="mailto:help@example.com">`, `<a href="tel:+15551234">`, `<a href="#top">`, `<a href="/relative">`,
		`<a href="javascript:alert(1)">`, `<a data-herald-notrack href="https://private.example.com/">`,
		`<a clicktracking="OFF" href="https://sendgrid-style.example.com/">`, `<a href="https://mail.example.net/unsubscribe/abc">`,
		`<a href="https://user:pw@example.com/">`, `<a name="x">`,
		`<script>var s = '<a href="https://in-script.example.com/">';</script>`,
		`<!-- <a href="https://in-comment.example.com/"> -->`, `class="btn">Buy</a>`, `>upper</A>`,
	} {
		if !strings.Contains(out, keep) {
			t.Errorf("output lost %q:\n%s", keep, out)
		}
	}
	if strings.Contains(out, "<img") {
		t.Error("pixel added without Opens")
	}
}

func TestRewritePixel(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, Deps{})
	opens := Target{Account: "acme", MessageID: "msg1", Opens: true}
	pixelAt := func(out string) (string, string) {
		i := strings.Index(out, "<img ")
		if i < 0 {
			t.Fatalf("no pixel in %q", out)
		}
		j := strings.Index(out[i:], ">") + i + 1
		return out[:i], out[j:]
	}
	for _, c := range []struct{ in, before, after string }{
		{`<html><body><p>hi</p></body></html>`, `<html><body><p>hi</p>`, `</body></html>`},
		{`<BODY>x</BODY >tail`, `<BODY>x`, `</BODY >tail`},
		{`<body>a</body><body>b</body>`, `<body>a</body><body>b`, `</body>`}, // the last one
		{`<p>fragment without body`, `<p>fragment without body`, ``},
		{`<body><!-- </body> --><textarea></body></textarea>`, `<body><!-- </body> --><textarea></body></textarea>`, ``},
		{``, ``, ``},
	} {
		out, res := tr.Rewrite(c.in, opens)
		if !res.Pixel || res.Links != 0 {
			t.Errorf("%q: result %+v", c.in, res)
		}
		before, after := pixelAt(out)
		if before != c.before || after != c.after {
			t.Errorf("%q: pixel between %q and %q, want %q and %q", c.in, before, after, c.before, c.after)
		}
	}
	out, _ := tr.Rewrite(`<body><a href="https://x.example/">x</a></body>`, opens)
	if !strings.Contains(out, `<a href="https://x.example/">`) {
		t.Errorf("opens only rewrote a link: %s", out)
	}
	var src string
	z := xhtml.NewTokenizer(strings.NewReader(out))
	for tt := z.Next(); tt != xhtml.ErrorToken; tt = z.Next() {
		if tok := z.Token(); tok.Data == "img" {
			for _, a := range tok.Attr {
				if a.Key == "src" {
					src = a.Val
				}
			}
		}
	}
	tok, ok := strings.CutPrefix(src, base+OpenPath)
	if !ok {
		t.Fatalf("pixel src %q", src)
	}
	if c, _, err := verify(testKey, tok, kindOpen); err != nil || c.messageID != "msg1" || c.recipient != "" {
		t.Errorf("pixel token: %+v %v", c, err)
	}
	// Nothing to track, or nothing the token can carry: unchanged.
	for _, tg := range []Target{{Account: "acme", MessageID: "m"}, {Account: "", MessageID: "m", Opens: true},
		{Account: "acme", MessageID: strings.Repeat("m", 65), Opens: true}} {
		if out, res := tr.Rewrite("<body>x</body>", tg); out != "<body>x</body>" || res != (Result{}) {
			t.Errorf("%+v: %q %+v", tg, out, res)
		}
	}
}

// Malformed HTML passes through: the pixel is the only change with opens
// on, and the links found are those a browser would follow.
func TestRewriteMalformed(t *testing.T) {
	t.Parallel()
	tr := newTracker(t, Deps{})
	inputs := []string{
		`<a href="https://x.example/`, `<<<>>><a`, `<a href=https://unquoted.example/a>x`, "<a\x00 href=\"https://nul.example/\">",
		`</body`, `<body><a href="http://ok.example/"</body>`, `<a href="http://ok.example/" <b>`, "\xff\xfe<a href='https://bad-utf8.example/\xff'>",
		`<svg><a href="https://svg.example/">s</a></svg>`, `<plaintext><a href="https://plain.example/">`, `<a href="https://a.example/"/>`,
		`<title><a href="https://title.example/"></title>`, `<style>a{}</style><a href = "https://spaced-eq.example/" >`,
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []string{"<", ">", "a", " href=", `"`, "'", "https://r.example/", "</body>", "<!--", "-->", "&amp;", "/", "=", "x", "\n", "<script>", "</script>"}
	for range 300 {
		var b strings.Builder
		for range rng.IntN(30) {
			b.WriteString(alphabet[rng.IntN(len(alphabet))])
		}
		inputs = append(inputs, b.String())
	}
	for _, in := range inputs {
		out, res := tr.Rewrite(in, Target{Account: "acme", MessageID: "m", Opens: true})
		i := strings.Index(out, `<img src="`+base+OpenPath)
		if i < 0 || !res.Pixel {
			t.Fatalf("%q: no pixel in %q", in, out)
		}
		j := strings.Index(out[i:], ">") + i + 1
		pixel := out[i:j]
		if strings.Replace(out, pixel, "", 1) != in {
			t.Errorf("%q: opens changed more than the pixel: %q", in, out)
		}
		out, res = tr.Rewrite(in, Target{Account: "acme", MessageID: "m", Clicks: true})
		n := 0
		for _, h := range hrefs(out) {
			if strings.HasPrefix(h, base+ClickPath) {
				clickTarget(t, h)
				n++
			}
		}
		if n != res.Links {
			t.Errorf("%q: %d tracking links, result says %d", in, n, res.Links)
		}
		if res.Links == 0 && out != in {
			t.Errorf("%q: no link tracked but changed to %q", in, out)
		}
	}
}

func TestRewriteBounds(t *testing.T) {
	t.Parallel()
	tr, err := New(Config{BaseURL: base, MaxLinks: 3}, testKey, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for i := range 5 {
		fmt.Fprintf(&b, `<a href="https://x.example/%d">%d</a>`, i, i)
	}
	long := "https://long.example/" + strings.Repeat("a", MaxURLLen)
	b.WriteString(`<a href="` + long + `">long</a>`)
	out, res := tr.Rewrite(b.String(), Target{Account: "acme", MessageID: "m", Recipient: strings.Repeat("r", 400), Clicks: true})
	if res.Links != 3 {
		t.Errorf("%d links rewritten, want MaxLinks 3", res.Links)
	}
	hs := hrefs(out)
	if c := clickTarget(t, hs[0]); c.recipient != "" {
		t.Errorf("an over-long recipient is carried: %q", c.recipient)
	}
	if hs[3] != "https://x.example/3" || hs[5] != long {
		t.Errorf("links past the bound or too long changed: %q %q", hs[3], hs[5][:40])
	}
	// The longest token stays within MaxTokenLen.
	tok := sign(testKey, claims{kind: kindClick, account: strings.Repeat("a", maxAccountLen), messageID: strings.Repeat("m", maxMessageIDLen),
		recipient: strings.Repeat("r", maxRecipientLen), url: strings.Repeat("u", MaxURLLen)})
	if len(tok) > MaxTokenLen {
		t.Errorf("longest token %d characters, over MaxTokenLen %d", len(tok), MaxTokenLen)
	}
	for _, bad := range []string{"", "ftp://x", "https://", "/t", "https://x.example/?q#f", "https://u@x.example"} {
		if _, err := New(Config{BaseURL: bad}, testKey, Deps{}); err == nil {
			t.Errorf("base URL %q accepted", bad)
		}
	}
	if _, err := New(Config{BaseURL: base}, testKey[:16], Deps{}); err == nil {
		t.Error("short key accepted")
	}
}

// fakeStore records events and knows one queued message and one that
// left the queue.
type fakeStore struct {
	mu  sync.Mutex
	evs []store.Event
}

func (f *fakeStore) AddEvents(_ context.Context, evs []store.Event) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.evs = append(f.evs, evs...)
	return nil
}

func (f *fakeStore) events() []store.Event {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]store.Event(nil), f.evs...)
}

func (f *fakeStore) Get(_ context.Context, id string) (*store.Message, error) {
	switch id {
	case "queued":
		return &store.Message{ID: id, Account: "acme", Sender: "bounces+x@acme.example", Tags: []string{"welcome"}, Metadata: map[string]string{"user": "7"}}, nil
	case "foreign":
		return &store.Message{ID: id, Account: "other", Tags: []string{"secret"}}, nil
	}
	return nil, fmt.Errorf("get %s: %w", id, store.ErrNotFound)
}

func (f *fakeStore) ListEvents(_ context.Context, fl store.EventFilter) ([]store.Event, error) {
	if fl.MessageID == "gone" && fl.Account == "acme" {
		return []store.Event{{Type: store.EventAccepted, Account: "acme", MessageID: "gone", Sender: "s@acme.example", Tags: []string{"receipt"}, Metadata: map[string]string{"order": "42"}}}, nil
	}
	return nil, nil
}

// noRedirect is a client that shows redirects instead of following them.
var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func fetch(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestHandlerRecords(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{}
	clk := clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	tr := newTracker(t, Deps{Events: fs, Messages: fs, Clock: clk})
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	local := func(u string) string { return srv.URL + strings.TrimPrefix(u, base) }
	tg := Target{Account: "acme", MessageID: "queued", Recipient: "bob@example.org"}

	open := local(tr.OpenURL(tg))
	resp, body := fetch(t, "GET", open)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/gif" || !bytes.Equal(body, gif) ||
		!strings.Contains(resp.Header.Get("Cache-Control"), "no-store") {
		t.Fatalf("pixel: %d %v %q", resp.StatusCode, resp.Header, body)
	}
	evs := fs.events()
	if len(evs) != 1 || evs[0].Type != store.EventOpened || evs[0].Account != "acme" || evs[0].MessageID != "queued" ||
		evs[0].Recipient != "bob@example.org" || evs[0].Sender != "bounces+x@acme.example" ||
		len(evs[0].Tags) != 1 || evs[0].Tags[0] != "welcome" || evs[0].Metadata["user"] != "7" || !evs[0].Time.Equal(clk.Now()) {
		t.Fatalf("opened events %+v", evs)
	}
	// Within a minute the same pixel records nothing more; HEAD never does.
	fetch(t, "GET", open)
	if resp, _ := fetch(t, "HEAD", open); resp.StatusCode != 200 {
		t.Errorf("HEAD pixel: %d", resp.StatusCode)
	}
	clk.Advance(59 * time.Second)
	fetch(t, "GET", open)
	if n := len(fs.events()); n != 1 {
		t.Errorf("%d events after repeats within a minute, want 1", n)
	}
	clk.Advance(2 * time.Second)
	fetch(t, "GET", open)
	if n := len(fs.events()); n != 2 {
		t.Errorf("%d events after a minute, want 2", n)
	}

	// A click redirects to the very URL and records it; a message that
	// left the queue lends its tags from the event log.
	dest := "https://shop.example.com/item?id=1&ref=mail#top"
	click := local(tr.ClickURL(Target{Account: "acme", MessageID: "gone"}, dest))
	resp, _ = fetch(t, "GET", click)
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != dest {
		t.Fatalf("click: %d Location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	evs = fs.events()
	last := evs[len(evs)-1]
	if last.Type != store.EventClicked || last.Reply != dest || last.MessageID != "gone" || last.Recipient != "" ||
		last.Sender != "s@acme.example" || last.Metadata["order"] != "42" {
		t.Errorf("clicked event %+v", last)
	}
	if resp, _ := fetch(t, "HEAD", click); resp.StatusCode != http.StatusFound || len(fs.events()) != 3 {
		t.Errorf("HEAD click: %d, %d events", resp.StatusCode, len(fs.events()))
	}
	// An unknown message is recorded with its account only; a message of
	// another account in the queue lends nothing.
	for _, id := range []string{"unknown", "foreign"} {
		fetch(t, "GET", local(tr.OpenURL(Target{Account: "acme", MessageID: id})))
		evs = fs.events()
		if last := evs[len(evs)-1]; last.MessageID != id || last.Account != "acme" || last.Tags != nil || last.Sender != "" {
			t.Errorf("%s: event %+v", id, last)
		}
	}
	if resp, _ := fetch(t, "POST", open); resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST pixel: %d", resp.StatusCode)
	}
}

// A token changed in any way, forged with another key, of the other kind
// or carrying a URL that was not in the message gets 404 and no redirect,
// and records nothing.
func TestHandlerRefusesTamperedTokens(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{}
	tr := newTracker(t, Deps{Events: fs, Messages: fs})
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	c := claims{kind: kindClick, account: "acme", messageID: "queued", url: "https://shop.example.com/"}
	good := sign(testKey, c)
	raw, _ := base64.RawURLEncoding.DecodeString(good)

	var bad []string
	for i := range raw {
		b := bytes.Clone(raw)
		b[i] ^= 0x20
		bad = append(bad, base64.RawURLEncoding.EncodeToString(b))
	}
	// The attacker's own URL in place of the message's, MAC kept.
	evil := c
	evil.url = "https://evil.example/phish"
	forged := sign(testKey, evil)
	fraw, _ := base64.RawURLEncoding.DecodeString(forged)
	swapped := append(fraw[:len(fraw)-macLen:len(fraw)-macLen], raw[len(raw)-macLen:]...)
	otherKey := bytes.Repeat([]byte{8}, 32)
	bad = append(bad,
		base64.RawURLEncoding.EncodeToString(swapped),
		sign(otherKey, evil), // forged with a key that is not the cluster's
		sign(testKey, claims{kind: kindOpen, account: "acme", messageID: "queued"}), // an open token as a click
		sign(testKey, claims{kind: kindClick, account: "acme", messageID: "queued", url: "javascript:alert(1)"}),
		good[:len(good)-1], good+"A", good+"/", "", strings.Repeat("A", MaxTokenLen+1), good+"=", "not*base64",
	)
	for _, tok := range bad {
		resp, _ := fetch(t, "GET", srv.URL+ClickPath+tok)
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
			t.Errorf("token %.40q: %d Location %q, want 404 without one", tok, resp.StatusCode, resp.Header.Get("Location"))
		}
	}
	if resp, _ := fetch(t, "GET", srv.URL+OpenPath+good); resp.StatusCode != http.StatusNotFound {
		t.Errorf("a click token as a pixel: %d", resp.StatusCode)
	}
	if n := len(fs.events()); n != 0 {
		t.Errorf("%d events recorded for refused tokens", n)
	}
	if resp, _ := fetch(t, "GET", srv.URL+ClickPath+good); resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != c.url {
		t.Errorf("the untouched token: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestLoadKeyShared(t *testing.T) {
	t.Parallel()
	sec := &memSecrets{m: map[string][]byte{}}
	k1, err := LoadKey(context.Background(), sec)
	if err != nil {
		t.Fatal(err)
	}
	k2, err := LoadKey(context.Background(), sec)
	if err != nil || !bytes.Equal(k1, k2) || len(k1) != keyLen {
		t.Errorf("second load: %x vs %x, %v", k1, k2, err)
	}
	sec.m[KeySecret] = []byte("short")
	if _, err := LoadKey(context.Background(), sec); err == nil {
		t.Error("a short stored key accepted")
	}
}

type memSecrets struct{ m map[string][]byte }

func (s *memSecrets) Secret(_ context.Context, name string, initial []byte) ([]byte, error) {
	if v, ok := s.m[name]; ok {
		return v, nil
	}
	if len(initial) == 0 {
		return nil, store.ErrNotFound
	}
	s.m[name] = initial
	return initial, nil
}

// accounts is a fake store.Platform.GetAccount.
type accounts map[string]time.Time

func (a accounts) GetAccount(_ context.Context, id string) (store.Account, error) {
	created, ok := a[id]
	if !ok {
		return store.Account{}, fmt.Errorf("account %s: %w", id, store.ErrNotFound)
	}
	return store.Account{ID: id, Created: created}, nil
}

// Links of a deleted account, or of one deleted and created anew since
// the message was sent, still answer but record nothing: the new
// account's events never show the old one's recipients.
func TestHandlerDropsDeletedAccounts(t *testing.T) {
	t.Parallel()
	fs := &fakeStore{}
	clk := clock.NewFake(time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC))
	accts := accounts{"acme": clk.Now().Add(-time.Hour), "fresh": clk.Now()}
	tr := newTracker(t, Deps{Events: fs, Messages: fs, Accounts: accts, Clock: clk})
	srv := httptest.NewServer(tr.Handler())
	defer srv.Close()
	local := func(u string) string { return srv.URL + strings.TrimPrefix(u, base) }
	links := map[string]string{}
	for _, a := range []string{"acme", "fresh", "deleted", "recreated"} {
		links[a] = local(tr.OpenURL(Target{Account: a, MessageID: "m-" + a}))
	}
	accts["recreated"] = clk.Now().Add(time.Second) // deleted and created again after the send
	clk.Advance(time.Hour)
	for _, a := range []string{"acme", "fresh", "deleted", "recreated"} {
		if resp, _ := fetch(t, "GET", links[a]); resp.StatusCode != 200 {
			t.Errorf("%s: pixel %d", a, resp.StatusCode)
		}
	}
	var got []string
	for _, ev := range fs.events() {
		got = append(got, ev.Account)
	}
	if strings.Join(got, ",") != "acme,fresh" {
		t.Errorf("events recorded for accounts %v, want acme and fresh (created the second the message was)", got)
	}
}
