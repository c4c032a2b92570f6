package e2e

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// The payloads every attacker-controlled field carries: each one, if it
// ran, would mark the page (window.__xss, document.title).
const (
	xssScript = `<script>window.__xss=1;document.title='XSS'</script>`
	xssImg    = `"><img src=x onerror="window.__xss=2;document.title='XSS'">`
)

// browser starts headless Chromium (Debian's chromium package; .ci/run
// installs it) and returns a tab's context.
func browser(t *testing.T) context.Context {
	t.Helper()
	var path string
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no chromium on PATH: apt-get install -y chromium (.ci/run does)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.WindowSize(1366, 900), chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelC(); cancelA() })
	// The first call starts the browser; it must not carry a timeout
	// (that would end the browser), the later ones do.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// consoleUI drives the console of one node in one browser tab.
type consoleUI struct {
	t    *testing.T
	ctx  context.Context
	base string
	shot string // HERALD_SCREENSHOTS: directory for screenshots, "" for none
}

func (u *consoleUI) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		u.t.Fatalf("%s: %v", what, err)
	}
}

// value runs an action that returns a value.
func value[T any](u *consoleUI, what string, a chromedp.Action[T]) T {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		u.t.Fatalf("%s: %v", what, err)
	}
	return v
}

func (u *consoleUI) text(sel string) string {
	u.t.Helper()
	return value(u, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

// open loads a page and checks that no payload ran on it.
func (u *consoleUI) open(path string) string {
	u.t.Helper()
	u.run("open "+path, chromedp.Navigate(u.base+path), chromedp.WaitReady(chromedp.CSS("body")))
	u.noScriptRan(path)
	return u.text("body")
}

func (u *consoleUI) noScriptRan(where string) {
	u.t.Helper()
	marked := value(u, "check "+where, chromedp.Evaluate[bool](`window.__xss !== undefined`))
	title := value(u, "title of "+where, chromedp.Title())
	if marked || strings.Contains(title, "XSS") {
		u.t.Errorf("%s: an injected script ran (title %q)", where, title)
	}
	// Escaping, apart from the CSP (which would stop a handler that got
	// through): no injected element is in the DOM, and every script is
	// one of the console's own files.
	injected := value(u, "DOM of "+where, chromedp.Evaluate[bool](`document.querySelectorAll('img[src="x"], [onerror]').length > 0 ||
		!Array.from(document.scripts).every(function (s) { return s.src.indexOf(location.origin + '/assets/') === 0 })`))
	if injected {
		u.t.Errorf("%s: an injected element is in the page", where)
	}
}

func (u *consoleUI) screenshot(name string) {
	u.t.Helper()
	if u.shot == "" {
		return
	}
	png := value(u, "screenshot "+name, chromedp.CaptureScreenshot())
	if err := os.WriteFile(filepath.Join(u.shot, name+".png"), png, 0o644); err != nil {
		u.t.Fatal(err)
	}
}

func (u *consoleUI) login(name, pw string) {
	u.t.Helper()
	u.run("login "+name, chromedp.Navigate(u.base+"/login"), chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), name), chromedp.SendKeys(chromedp.ID("password"), pw),
		chromedp.Click(chromedp.ID("login")), chromedp.WaitVisible(chromedp.CSS("form.logout")))
}

// waitFor polls cond (reading the page) until it holds.
func (u *consoleUI) waitFor(what string, d time.Duration, cond func() bool) {
	u.t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			u.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitURL waits until the tab's location contains s (after a click
// that navigates).
func (u *consoleUI) waitURL(s string) {
	u.t.Helper()
	u.waitFor("a location with "+s, 20*time.Second, func() bool {
		ctx, cancel := context.WithTimeout(u.ctx, 5*time.Second)
		defer cancel()
		loc, err := chromedp.Run(ctx, chromedp.Location())
		return err == nil && strings.Contains(loc, s)
	})
	u.run("page ready", chromedp.WaitReady(chromedp.CSS("body")))
}

// dmarcReportMessage is an aggregate report for domain whose reporter
// and identifiers carry the payloads (XML-escaped, as a reporter sends
// them).
func dmarcReportMessage(domain, to string) string {
	esc := func(s string) string {
		r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
		return r.Replace(s)
	}
	xml := `<?xml version="1.0" encoding="UTF-8"?>
<feedback>
  <report_metadata><org_name>` + esc(xssScript) + `</org_name><email>r@reporter.test</email><report_id>` + esc(xssImg) + `</report_id>
    <date_range><begin>1764028800</begin><end>1764115199</end></date_range></report_metadata>
  <policy_published><domain>` + domain + `</domain><p>none</p></policy_published>
  <record>
    <row><source_ip>203.0.113.66</source_ip><count>7</count>
      <policy_evaluated><disposition>none</disposition><dkim>fail</dkim><spf>pass</spf></policy_evaluated></row>
    <identifiers><header_from>` + esc(xssImg) + `</header_from></identifiers>
    <auth_results><spf><domain>spoofer.test</domain><result>pass</result></spf></auth_results>
  </record>
</feedback>`
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(xml))
	zw.Close()
	b64 := base64.StdEncoding.EncodeToString(gz.Bytes())
	var lines []string
	for len(b64) > 76 {
		lines, b64 = append(lines, b64[:76]), b64[76:]
	}
	lines = append(lines, b64)
	return "From: noreply@reporter.test\r\nTo: " + to + "\r\nSubject: Report domain: " + domain + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: application/gzip; name=\"r!" + domain + "!1764028800!1764115199.xml.gz\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + strings.Join(lines, "\r\n") + "\r\n"
}

// TestConsoleInBrowser drives the console of a running node in headless
// Chromium: an operator logs in, watches the overview count mail sent by
// SMTP and the API, opens a timeline, retries and deletes a queued
// message and removes a suppression; an account member sees only its
// account. Attacker-controlled text (subjects, envelope addresses, a
// remote's reply, a DMARC report) is on the pages and never runs.
func TestConsoleInBrowser(t *testing.T) {
	h := startHerald(t, nil)
	ctx := context.Background()
	st := h.app.Store()
	tok, pw := h.tenant("acme", "acme.test", "send", "read", "admin")
	otherTok, _ := h.tenant("other", "other.test", "send", "read", "admin")
	opHash, err := auth.HashPassword("operator password 1")
	if err != nil {
		t.Fatal(err)
	}
	must(t, st.AddOperator(ctx, store.Operator{Name: "admin", PasswordHash: opHash}))
	mx := h.remoteMX("remote.test", testmx.Config{})
	evilRcpt := `"` + strings.ReplaceAll(xssImg, `"`, `\"`) + `"@remote.test`
	mx.SetRcptReply("rejected@remote.test", 550, [3]int{5, 1, 1}, "no such user "+xssScript+" "+xssImg)
	mx.SetRcptReply("slow@remote.test", 451, [3]int{4, 7, 1}, "greylisted "+xssScript)

	u := &consoleUI{t: t, ctx: browser(t), base: "http://" + h.addr("http"), shot: os.Getenv("HERALD_SCREENSHOTS")}
	if u.shot != "" {
		must(t, os.MkdirAll(u.shot, 0o755))
	}

	// An anonymous visitor gets the login page; the operator logs in.
	u.open("/")
	u.screenshot("login")
	u.login("admin", "operator password 1")
	u.open("/")
	before := u.text(`[data-count="delivered"]`)
	if before != "0" {
		t.Fatalf("delivered before any mail: %q", before)
	}

	// Mail by the API and by SMTP; one recipient is refused with the
	// payload as the remote's reply, one is deferred; the subject carries
	// the payloads too.
	var sent struct{ ID string }
	if code := h.api(tok, "POST", "/v1/messages", sendReq("app@acme.test", "ok@remote.test", "api "+xssScript), &sent); code != 202 {
		t.Fatalf("API send: %d", code)
	}
	body := "To: <x@remote.test>\r\nSubject: " + xssScript + " " + xssImg + "\r\n\r\nhello\r\n"
	slowID := h.submit("app@acme.test", pw, "app@acme.test", []string{"slow@remote.test"}, body)
	bouncedID := h.submit("app@acme.test", pw, "app@acme.test", []string{evilRcpt, "rejected@remote.test"}, body)
	var otherSent struct{ ID string }
	if code := h.api(otherTok, "POST", "/v1/messages", sendReq("app@other.test", "ok2@remote.test", "other"), &otherSent); code != 202 {
		t.Fatalf("API send of the other account: %d", code)
	}
	// From outside, with the payload as the envelope sender, and a DMARC
	// report whose contents carry it.
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO evil.test")
	evilSender := `"` + xssScript + `"@evil.test`
	if code, msg := c.send(evilSender, []string{"app@acme.test"}, "Subject: "+xssImg+"\r\n\r\nhi\r\n"); code != 250 {
		t.Fatalf("inbound: %d %s", code, msg)
	}
	if code, msg := c.send("noreply@reporter.test", []string{"app@acme.test"}, dmarcReportMessage("acme.test", "app@acme.test")); code != 250 {
		t.Fatalf("DMARC report: %d %s", code, msg)
	}
	h.waitMaildir("app@acme.test", 2)
	h.waitEvent(tok, "bounced", "")
	h.waitEvent(tok, "delivered", "ok@remote.test")

	// The overview's live refresh shows the deliveries without a reload.
	u.waitFor("the overview's delivered count to change", 20*time.Second, func() bool {
		return u.text(`[data-count="delivered"]`) != before
	})
	drawn := value(u, "chart", chromedp.Evaluate[bool](`document.querySelector('figure.chart.drawn canvas') !== null`))
	if !drawn {
		t.Error("the overview chart was not drawn")
	}
	u.noScriptRan("overview after refresh")
	u.screenshot("overview")

	// Every page, with the payloads on them, runs none of them.
	pages := []string{"/", "/destinations", "/messages", "/messages?sender=" + strings.ReplaceAll(evilSender, `"`, "%22"),
		"/messages/" + slowID, "/messages/" + bouncedID, "/messages/" + sent.ID, "/suppressions?account=acme",
		"/domains", "/domains/acme.test", "/domains/acme.test?check=1", "/accounts", "/apikeys?account=acme",
		"/webhooks?account=acme", "/alerts", "/blocklists"}
	for _, p := range pages {
		u.open(p)
	}
	// The payloads are there, as text.
	if txt := u.open("/messages/" + bouncedID); !strings.Contains(txt, "no such user "+xssScript) {
		t.Errorf("the remote's reply is not shown as text on the timeline:\n%s", txt)
	}
	u.screenshot("message-bounced")
	if txt := u.open("/messages?account=acme"); !strings.Contains(txt, xssScript+"@evil.test") && !strings.Contains(txt, evilSender) {
		t.Errorf("the envelope sender is not shown as text")
	}
	u.screenshot("messages")
	if txt := u.open("/domains/acme.test"); !strings.Contains(txt, "203.0.113.66") || !strings.Contains(strings.ToLower(txt), strings.ToLower(xssImg)) ||
		!strings.Contains(txt, xssScript) {
		t.Errorf("the DMARC report summary is not shown:\n%s", txt)
	}
	u.screenshot("domain")
	u.open("/destinations")
	u.screenshot("destinations")
	// The DNS doctor's findings, with the records to publish.
	if txt := u.open("/domains/acme.test?check=1"); !strings.Contains(txt, "errors,") || !strings.Contains(txt, "record to publish") ||
		!strings.Contains(txt, "_dmarc.acme.test") {
		t.Errorf("DNS doctor results missing:\n%s", txt)
	}
	u.screenshot("domain-dns")

	// The CSP blocks inline script even when one gets into the DOM.
	inline := value(u, "inline script", chromedp.Evaluate[bool](`(function(){var s=document.createElement('script');s.textContent='window.__inline=1';document.body.appendChild(s);return window.__inline===1})()`))
	if inline {
		t.Error("an inline script ran: the CSP does not block it")
	}

	// The deferred message's timeline: the remote's reply, then retry
	// and delete.
	txt := u.open("/messages/" + slowID)
	if !strings.Contains(txt, "greylisted") || !strings.Contains(txt, xssScript+" "+xssImg) {
		t.Errorf("timeline lacks the reply or the subject:\n%s", txt)
	}
	u.screenshot("message")
	u.run("retry", chromedp.Click(chromedp.ID("retry")))
	u.waitURL("done=retry")
	if f := u.text(".flash"); !strings.Contains(f, "retry scheduled") {
		t.Errorf("after retry: %q", f)
	}
	u.run("delete", chromedp.Click(chromedp.ID("delete")))
	u.waitURL("done=deleted")
	if _, err := st.Get(ctx, slowID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleted message still queued: %v", err)
	}

	// The refused recipient was suppressed; remove it.
	addr := "rejected@remote.test"
	if ok, _ := st.IsSuppressed(ctx, "acme", addr); !ok {
		sups, _ := st.ListSuppressions(ctx, "acme", "", 100)
		t.Fatalf("bounced recipient not suppressed: %+v", sups)
	}
	u.open("/suppressions?account=acme")
	u.screenshot("suppressions")
	u.run("remove suppression", chromedp.Click(chromedp.Search(`//tr[td[text()="rejected@remote.test"]]//button`)))
	u.waitURL("done=removed")
	if ok, _ := st.IsSuppressed(ctx, "acme", addr); ok {
		t.Error("suppression not removed")
	}

	// An account member sees only its account.
	u.run("logout", chromedp.Click(chromedp.CSS(`form.logout button`)))
	u.waitURL("/login")
	u.login("app@acme.test", pw)
	txt = u.open("/messages")
	if !strings.Contains(txt, sent.ID) || strings.Contains(txt, otherSent.ID) || strings.Contains(txt, "ok2@remote.test") {
		t.Errorf("member's message list: own %v, other's %v", strings.Contains(txt, sent.ID), strings.Contains(txt, otherSent.ID))
	}
	u.screenshot("member-messages")
	if txt := u.open("/messages/" + otherSent.ID); !strings.Contains(txt, "Not found") || strings.Contains(txt, "ok2@remote.test") {
		t.Errorf("another account's message by URL:\n%s", txt)
	}
	if txt := u.open("/messages/" + sent.ID); strings.Contains(txt, "Not found") {
		t.Errorf("own message not found")
	}
	if txt := u.open("/alerts"); !strings.Contains(txt, "Not allowed") {
		t.Errorf("member on the alerts page:\n%s", txt)
	}
}

// The console is in the binary: `herald serve` serves it, with its
// assets, beside the API, with no other step than adding an operator.
func TestConsoleServedByBinary(t *testing.T) {
	t.Parallel()
	bin := heraldBinary(t)
	dir := t.TempDir()
	httpAddr := freePort(t)
	cfgPath := filepath.Join(dir, "herald.toml")
	cfg := fmt.Sprintf("[server]\nhostname = \"mx.console.test\"\ndata_dir = %q\n[smtp]\nlisten = [%q]\n[submission]\nlisten = []\n"+
		"[submissions]\nlisten = []\n[http]\nlisten = [%q]\n", filepath.Join(dir, "data"), freePort(t), httpAddr)
	must(t, os.WriteFile(cfgPath, []byte(cfg), 0o644))
	add := exec.Command(bin, "operator", "add", "admin", "--config", cfgPath)
	add.Stdin = strings.NewReader("a long operator password\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("operator add: %v\n%s", err, out)
	}
	p := startProc(t, bin, cfgPath, filepath.Join(dir, "herald.log"))
	defer p.term(t)
	waitListening(t, httpAddr)
	base := "http://" + httpAddr
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	get := func(path string) (*http.Response, string) {
		resp, err := hc.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	if resp, _ := get("/"); resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Location"))
	}
	resp, page := get("/login")
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("GET /login: %d", resp.StatusCode)
	}
	resp, err := hc.PostForm(base+"/login", url.Values{"csrf": {m[1]}, "name": {"admin"}, "password": {"a long operator password"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("login: %d", resp.StatusCode)
	}
	if resp, body := get("/"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "<h1>Overview") {
		t.Fatalf("overview after login: %d", resp.StatusCode)
	}
	if resp, body := get("/assets/vendor/uplot/uPlot.iife.min.js"); resp.StatusCode != http.StatusOK || !strings.Contains(body, "uPlot") {
		t.Errorf("embedded uPlot: %d", resp.StatusCode)
	}
	if resp, _ := get("/v1/events"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API under /v1 without a key: %d, want 401", resp.StatusCode)
	}
	if resp, body := get("/healthz"); resp.StatusCode != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz: %d %q", resp.StatusCode, body)
	}
}
