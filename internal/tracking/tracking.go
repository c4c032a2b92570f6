// Package tracking is open and click tracking of the mail the HTTP API
// sends (issue 12): it rewrites a message's HTML part before the message
// is signed and queued — each http(s) link becomes a link to Herald
// carrying a signed token, and a 1x1 pixel is added — and it serves those
// links: the pixel records an "opened" event, a link records "clicked"
// and redirects to the URL the token names.
//
// Tokens are signed with a key every node shares (KeySecret in the store),
// so any node answers any node's links. A click token carries its URL
// under the signature: Herald only ever redirects to a URL that was in a
// message it sent, never to one a visitor chose (no open redirect).
package tracking

import (
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"time"

	xhtml "golang.org/x/net/html"

	"github.com/heraldmail/herald/internal/clock"
)

// Paths of the public endpoints, under Config.BaseURL.
const (
	OpenPath  = "/t/o/" // + token: the pixel
	ClickPath = "/t/c/" // + token: the redirect
)

// Config is what the tracker needs to know.
type Config struct {
	// BaseURL is the public base of the tracking links, e.g.
	// "https://mail.example.com": the pixel is BaseURL+"/t/o/TOKEN".
	// Required: an absolute http(s) URL without query or fragment.
	BaseURL string
	// MaxLinks bounds the links rewritten in one message; later links are
	// left as they are. Default 250.
	MaxLinks int
	// Dedupe is how long the same link (token) records at most one event
	// on this node: repeated fetches of a pixel or clicks of a link within
	// it are answered without a new event. Default one minute.
	Dedupe time.Duration
	// MaxDedupe bounds the tokens remembered for Dedupe. Default 100,000.
	MaxDedupe int
}

// Target is the message whose HTML is rewritten and what to track.
type Target struct {
	Account   string // the sending account
	MessageID string // the queue ID the message will have
	// Recipient is the message's only recipient, or "" when it has
	// several (the events then carry no recipient).
	Recipient string
	Opens     bool // add the pixel
	Clicks    bool // rewrite links
}

// Result says what Rewrite did.
type Result struct {
	Links int  // links rewritten
	Pixel bool // pixel added
}

// Tracker rewrites messages and serves the tracking links.
type Tracker struct {
	cfg   Config
	base  string // BaseURL without a trailing slash
	key   []byte
	deps  Deps
	clock clock.Clock
	log   *slog.Logger

	mu   sync.Mutex
	seen map[string]time.Time // MAC -> last event recorded, for Dedupe
}

// New returns a tracker signing with key (LoadKey).
func New(cfg Config, key []byte, deps Deps) (*Tracker, error) {
	u, err := url.Parse(cfg.BaseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("tracking: base URL %q: want an absolute http(s) URL without query or fragment", cfg.BaseURL)
	}
	if len(key) < keyLen {
		return nil, errors.New("tracking: key too short")
	}
	if cfg.MaxLinks <= 0 {
		cfg.MaxLinks = 250
	}
	if cfg.Dedupe <= 0 {
		cfg.Dedupe = time.Minute
	}
	if cfg.MaxDedupe <= 0 {
		cfg.MaxDedupe = 100_000
	}
	t := &Tracker{cfg: cfg, base: strings.TrimRight(cfg.BaseURL, "/"), key: key, deps: deps,
		clock: deps.Clock, log: deps.Logger, seen: make(map[string]time.Time)}
	if t.clock == nil {
		t.clock = clock.Real{}
	}
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	return t, nil
}

// OpenURL returns the pixel's URL for tg.
func (t *Tracker) OpenURL(tg Target) string {
	return t.base + OpenPath + sign(t.key, claims{kind: kindOpen, issued: t.clock.Now().Unix(), account: tg.Account,
		messageID: tg.MessageID, recipient: tg.Recipient})
}

// ClickURL returns the tracking URL leading to target for tg.
func (t *Tracker) ClickURL(tg Target, target string) string {
	return t.base + ClickPath + sign(t.key, claims{kind: kindClick, issued: t.clock.Now().Unix(), account: tg.Account,
		messageID: tg.MessageID, recipient: tg.Recipient, url: target})
}

// trackable reports whether tg can carry tokens at all.
func trackable(tg *Target) bool {
	if len(tg.Recipient) > maxRecipientLen {
		tg.Recipient = ""
	}
	return tg.Account != "" && len(tg.Account) <= maxAccountLen && tg.MessageID != "" && len(tg.MessageID) <= maxMessageIDLen
}

// Rewrite returns the HTML document doc with tracking added: with Clicks,
// the href of each <a> element whose URL is absolute http or https
// becomes a tracking link (up to MaxLinks); with Opens, a 1x1 pixel goes
// before the last </body>, or at the end without one. Everything else is
// copied byte for byte: the tokenizer (golang.org/x/net/html) only finds
// the tags; malformed HTML passes through as it came. Links left alone:
// other schemes (mailto:, tel:, ...), relative links and fragments, links
// into Herald's own base URL (unsubscribe links, already tracked links),
// URLs longer than MaxURLLen or that are not clean absolute URLs, and
// links marked data-herald-notrack or clicktracking="off".
func (t *Tracker) Rewrite(doc string, tg Target) (string, Result) {
	var res Result
	if (!tg.Opens && !tg.Clicks) || !trackable(&tg) {
		return doc, res
	}
	z := xhtml.NewTokenizer(strings.NewReader(doc))
	var out strings.Builder
	out.Grow(len(doc) + 512)
	bodyEnd := -1
	consumed := 0 // bytes of doc tokenized so far
	for {
		tt := z.Next()
		if tt == xhtml.ErrorToken {
			// io.EOF (a strings.Reader fails no other way). A tag left
			// open at the end is not a token: copy what is left as is.
			out.WriteString(doc[min(consumed, len(doc)):])
			break
		}
		raw := z.Raw()
		consumed += len(raw)
		switch {
		case tt == xhtml.EndTagToken && tagIs(raw[2:], "body"):
			bodyEnd = out.Len()
		case (tt == xhtml.StartTagToken || tt == xhtml.SelfClosingTagToken) && tg.Clicks && res.Links < t.cfg.MaxLinks && tagIs(raw[1:], "a"):
			orig := string(raw) // Token lower-cases the buffer in place
			tok := z.Token()
			if t.rewriteLink(&tok, tg) {
				res.Links++
				out.WriteString(tok.String())
			} else {
				out.WriteString(orig)
			}
			continue
		}
		out.Write(raw)
	}
	s := out.String()
	if tg.Opens {
		pixel := `<img src="` + html.EscapeString(t.OpenURL(tg)) + `" width="1" height="1" alt="" style="display:block;width:1px;height:1px;border:0;margin:0;padding:0">`
		if bodyEnd < 0 {
			bodyEnd = len(s)
		}
		s = s[:bodyEnd] + pixel + s[bodyEnd:]
		res.Pixel = true
	}
	return s, res
}

// tagIs reports whether b (a tag's raw text after "<" or "</") starts
// with the tag name, case-insensitively, followed by its end.
func tagIs(b []byte, name string) bool {
	if len(b) < len(name) || !strings.EqualFold(string(b[:len(name)]), name) {
		return false
	}
	if len(b) == len(name) {
		return true
	}
	switch b[len(name)] {
	case ' ', '\t', '\n', '\r', '\f', '/', '>':
		return true
	}
	return false
}

// rewriteLink replaces the href of an <a> tag with its tracking link; it
// reports whether it did.
func (t *Tracker) rewriteLink(tok *xhtml.Token, tg Target) bool {
	href := -1
	for i, a := range tok.Attr {
		switch {
		case a.Key == "data-herald-notrack":
			return false
		case a.Key == "clicktracking" && strings.EqualFold(strings.TrimSpace(a.Val), "off"):
			return false
		case a.Key == "href" && href < 0:
			href = i // the first href is the one browsers follow
		}
	}
	if href < 0 {
		return false
	}
	target, ok := t.trackableURL(tok.Attr[href].Val)
	if !ok {
		return false
	}
	tok.Attr[href].Val = t.ClickURL(tg, target)
	return true
}

// trackableURL returns the URL a link leads to when it is one to track:
// absolute http(s), clean, not Herald's own.
func (t *Tracker) trackableURL(v string) (string, bool) {
	v = strings.Trim(v, " \t\n\r\f") // what browsers strip from a URL attribute
	if !CleanURL(v) {
		return "", false
	}
	if lv := strings.ToLower(v); strings.HasPrefix(lv, strings.ToLower(t.base)+"/") {
		return "", false
	}
	return v, true
}

// CleanURL reports whether s is a URL Herald may redirect to: absolute
// http or https with a host, at most MaxURLLen bytes, without white
// space or control characters.
func CleanURL(s string) bool {
	if len(s) == 0 || len(s) > MaxURLLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c == 0x7f {
			return false
		}
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.User != nil {
		return false
	}
	return u.Scheme == "http" || u.Scheme == "https"
}
