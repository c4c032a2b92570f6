package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// dialFrom connects to addr from the loopback address local (a client
// "on the internet" with that address) and reads the greeting.
func dialFrom(t *testing.T, local, addr string) *client {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return wrapClient(t, conn)
}

// blocklistZone publishes a blocklist zen.test (weight 3) and an
// allow-list wl.test (weight -3) on dns:
//
//	127.0.0.2: on zen.test, with a TXT reason
//	127.0.0.3: on zen.test and on wl.test
//	127.0.0.4: zen.test answers Spamhaus's error code 127.255.255.254
//	127.0.0.20: on zen.test (our own sending address, for the monitor)
func blocklistZone(dns *testdns.Server) {
	dns.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.2")
	dns.AddTXT("2.0.0.127.zen.test", "Listed, see https://zen.test/query/127.0.0.2")
	dns.Add("3.0.0.127.zen.test. 300 IN A 127.0.0.3")
	dns.Add("3.0.0.127.wl.test. 300 IN A 127.0.10.2")
	dns.Add("4.0.0.127.zen.test. 300 IN A 127.255.255.254")
	dns.Add("20.0.0.127.zen.test. 300 IN A 127.0.0.4")
}

func sites(t *testing.T, weighted bool, specs ...string) []dnsbl.Site {
	t.Helper()
	var out []dnsbl.Site
	for _, s := range specs {
		site, err := dnsbl.ParseSite(s, weighted)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, site)
	}
	return out
}

// A listed peer on the MX listener is refused at RCPT with 554 5.7.1
// naming the list and its reason, but may still write to postmaster@;
// peers on no list, allow-listed peers, peers whose list answered an error
// code and authenticated users are accepted. The monitor finds our own
// address on the list.
func TestDNSBLScreensMXPeers(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.DNSBL.ClientLists = sites(t, true, "zen.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-3")
		c.DNSBL.Threshold = 3
		c.DNSBL.ReputationIPLists = sites(t, false, "zen.test")
		c.DNSBL.OwnIPs = []netip.Addr{netip.MustParseAddr("127.0.0.20")}
	})
	blocklistZone(h.dns)
	h.addDomain("example.test")
	h.addUser("alice@example.test")
	h.addUser("postmaster@example.test")
	pw := h.addUser("bob@example.test")

	c := dialFrom(t, "127.0.0.2", h.addr("smtp"))
	c.ok(250, "EHLO listed.test")
	c.ok(250, "MAIL FROM:<spam@listed.test>")
	code, msg := c.cmd("RCPT TO:<alice@example.test>")
	if code != 554 || !strings.HasPrefix(msg, "5.7.1 ") || !strings.Contains(msg, "zen.test") ||
		!strings.Contains(msg, "[127.0.0.2]") || !strings.Contains(msg, "https://zen.test/query/127.0.0.2") {
		t.Fatalf("listed peer: %d %s; want 554 5.7.1 naming zen.test and its reason", code, msg)
	}
	if strings.Contains(msg, "wl.test") {
		t.Errorf("the reply names the allow-list: %s", msg)
	}
	c.ok(250, "RCPT TO:<postmaster@example.test>")
	c.ok(354, "DATA")
	c.raw("From: spam@listed.test\r\nSubject: please delist me\r\n\r\nwhy?\r\n.\r\n")
	c.expect(250)
	c.ok(221, "QUIT")
	h.waitMaildir("postmaster@example.test", 1)

	for _, ip := range []string{"127.0.0.5", "127.0.0.3", "127.0.0.4"} {
		c := dialFrom(t, ip, h.addr("smtp"))
		c.ok(250, "EHLO peer.test")
		c.ok(250, "MAIL FROM:<someone@peer.test>")
		if code, msg := c.cmd("RCPT TO:<alice@example.test>"); code != 250 {
			t.Errorf("peer %s: RCPT %d %s, want 250", ip, code, msg)
		}
	}

	// bob logs in from the listed address, on the MX listener and on
	// submission: not screened.
	for _, l := range []string{"smtp", "submission"} {
		c := dialFrom(t, "127.0.0.2", h.addr(l))
		c.ok(250, "EHLO bob.test")
		c.startTLS()
		c.ok(250, "EHLO bob.test")
		if code, msg := c.authPlain("bob@example.test", pw); code != 235 {
			t.Fatalf("AUTH on %s: %d %s", l, code, msg)
		}
		c.ok(250, "MAIL FROM:<bob@example.test>")
		if code, msg := c.cmd("RCPT TO:<alice@example.test>"); code != 250 {
			t.Errorf("authenticated on %s from a listed address: %d %s, want 250", l, code, msg)
		}
	}

	// The monitor's first round ran at start-up.
	deadline := time.Now().Add(10 * time.Second)
	for h.app.Blocklists().LastCheck().IsZero() {
		if time.Now().After(deadline) {
			t.Fatal("the blocklist monitor did not run")
		}
		time.Sleep(5 * time.Millisecond)
	}
	st := h.app.Blocklists().Status()
	if len(st) != 1 || st[0].Target != "127.0.0.20" || st[0].List != "zen.test" || st[0].Codes[0] != "127.0.0.4" {
		t.Errorf("own listings: %+v", st)
	}

	resp, err := http.Get("http://" + h.addr("http") + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`herald_dnsbl_rejects_total{list="zen.test"} 1`,
		// .2 twice (the lookup starts at connect, before bob logs in on
		// the MX listener; submission is not looked up) and .3.
		`herald_dnsbl_hits_total{list="zen.test"} 3`,
		`herald_dnsbl_hits_total{list="wl.test"} 1`,
		`herald_dnsbl_errors_total{list="zen.test"} 1`,
		`herald_rejections_total{reason="dnsbl"} 1`,
		`herald_blocklist_listed{target="127.0.0.20",list="zen.test"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", body)
	}
}

// Through the real binary: `herald serve` with [dnsbl] in its
// configuration file refuses a listed 127.0.0.2 at RCPT and accepts
// 127.0.0.5.
func TestDNSBLServeBinary(t *testing.T) {
	t.Parallel()
	dns := testdns.Start(t)
	blocklistZone(dns)
	dir := t.TempDir()
	smtpAddr := freePort(t)
	cfgPath := filepath.Join(dir, "herald.toml")
	must(t, os.WriteFile(cfgPath, []byte(fmt.Sprintf(`[server]
hostname = "mx.herald.test"
data_dir = %q
shutdown_timeout = "2s"
[smtp]
listen = [%q]
[submission]
listen = []
[submissions]
listen = []
[http]
listen = []
[limits]
pregreet_wait = "0"
[dns]
resolver = %q
[dnsbl]
client_lists = ["zen.test=127.0.0.[2..11]*3", "wl.test=127.0.[0..255].[1..3]*-2"]
threshold = 3
timeout = "2s"
`, filepath.Join(dir, "data"), smtpAddr, dns.Addr())), 0o644))
	if code, out, errs := runBinary(t, 0, "", "domain", "add", "example.test", "--config", cfgPath); code != 0 {
		t.Fatalf("domain add: %d %s %s", code, out, errs)
	}
	if code, out, errs := runBinary(t, 0, "a-long-enough-password\n", "user", "add", "alice@example.test", "--config", cfgPath); code != 0 {
		t.Fatalf("user add: %d %s %s", code, out, errs)
	}
	p := startProc(t, startupBinary(t), cfgPath, filepath.Join(dir, "herald.log"))
	defer p.term(t)
	waitListening(t, smtpAddr)

	c := dialFrom(t, "127.0.0.2", smtpAddr)
	c.ok(250, "EHLO listed.test")
	c.ok(250, "MAIL FROM:<spam@listed.test>")
	if code, msg := c.cmd("RCPT TO:<alice@example.test>"); code != 554 || !strings.HasPrefix(msg, "5.7.1 ") || !strings.Contains(msg, "zen.test") {
		t.Errorf("listed 127.0.0.2: %d %s, want 554 5.7.1 naming zen.test", code, msg)
	}
	c.ok(221, "QUIT")

	c = dialFrom(t, "127.0.0.5", smtpAddr)
	c.ok(250, "EHLO clean.test")
	c.ok(250, "MAIL FROM:<someone@clean.test>")
	c.ok(250, "RCPT TO:<alice@example.test>")
	c.ok(221, "QUIT")
}

// An IPv6 peer is looked up by the reversed nibbles of its address
// (RFC 5782 §2.4): ::1 listed on zen.test is refused on an IPv6 listener.
func TestDNSBLIPv6Peer(t *testing.T) {
	t.Parallel()
	h := startHerald(t, func(c *config.Config) {
		c.SMTP.Listen = []string{"[::1]:0"}
		c.DNSBL.ClientLists = sites(t, true, "zen.test")
	})
	h.dns.Add(dnsbl.ReverseName(netip.MustParseAddr("::1"), "zen.test") + ". 300 IN A 127.0.0.2")
	h.addDomain("example.test")
	h.addUser("alice@example.test")
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO v6.test")
	c.ok(250, "MAIL FROM:<someone@v6.test>")
	if code, msg := c.cmd("RCPT TO:<alice@example.test>"); code != 554 || !strings.Contains(msg, "client [::1] blocked using zen.test") {
		t.Errorf("listed ::1: %d %s, want 554 naming zen.test", code, msg)
	}
}
