package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/store"
)

// inboundHerald is a node receiving for example.com, with DNS for a few
// sender domains:
//   - good.test: SPF authorises 127.0.0.1, DMARC p=reject
//   - forged.test: SPF -all, DMARC p=reject
//   - junk.test: SPF -all, DMARC p=quarantine
func inboundHerald(t *testing.T, mutate func(*config.Config)) *herald {
	h := startHerald(t, mutate)
	h.addDomain("example.com")
	h.addUser("alice@example.com")
	h.dns.AddTXT("good.test", "v=spf1 ip4:127.0.0.0/8 -all")
	h.dns.AddTXT("_dmarc.good.test", "v=DMARC1; p=reject")
	h.dns.AddTXT("forged.test", "v=spf1 -all")
	h.dns.AddTXT("_dmarc.forged.test", "v=DMARC1; p=reject")
	h.dns.AddTXT("junk.test", "v=spf1 -all")
	h.dns.AddTXT("_dmarc.junk.test", "v=DMARC1; p=quarantine")
	h.dns.AddTXT("sender.test", "v=spf1 ip4:127.0.0.0/8 -all") // the clients' HELO name
	return h
}

func sendMX(t *testing.T, h *herald, from, headerFrom, extraHeaders string) (int, string) {
	t.Helper()
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO sender.test")
	return c.send(from, []string{"alice@example.com"}, extraHeaders+"From: <"+headerFrom+">\r\nTo: <alice@example.com>\r\nSubject: inbound\r\n\r\nhello\r\n")
}

func TestInboundAuthResultsAndForgeryStripped(t *testing.T) {
	t.Parallel()
	h := inboundHerald(t, nil)
	forged := "Authentication-Results: mx.herald.test; dkim=pass header.d=good.test; dmarc=pass\r\n" +
		"Authentication-Results: other.example; spf=pass\r\n"
	if code, msg := sendMX(t, h, "news@good.test", "news@good.test", forged); code != 250 {
		t.Fatalf("aligned SPF pass refused: %d %s", code, msg)
	}
	m := h.waitMaildir("alice@example.com", 1)[0]
	hdr := headerBlock(m)
	if n := strings.Count(hdr, "Authentication-Results: mx.herald.test"); n != 1 {
		t.Fatalf("want exactly our own Authentication-Results, found %d:\n%s", n, hdr)
	}
	if strings.Contains(hdr, "header.d=good.test; dmarc=pass") {
		t.Errorf("the forged Authentication-Results survived:\n%s", hdr)
	}
	if !strings.Contains(hdr, "Authentication-Results: other.example; spf=pass") {
		t.Errorf("a foreign Authentication-Results was removed:\n%s", hdr)
	}
	ours := hdr[strings.Index(hdr, "Authentication-Results: mx.herald.test"):]
	for _, want := range []string{"spf=pass", "smtp.mailfrom=news@good.test", "smtp.helo=sender.test", "dkim=none", "dmarc=pass", "header.from=good.test"} {
		if !strings.Contains(ours, want) {
			t.Errorf("our Authentication-Results lacks %q:\n%s", want, ours)
		}
	}
}

func TestInboundDMARCRejectAndQuarantine(t *testing.T) {
	t.Parallel()
	h := inboundHerald(t, nil)
	code, msg := sendMX(t, h, "ceo@forged.test", "ceo@forged.test", "")
	if code != 550 || !strings.HasPrefix(msg, "5.7.1") || !strings.Contains(msg, "DMARC") {
		t.Fatalf("DMARC p=reject failure answered %d %s, want 550 5.7.1", code, msg)
	}
	// The same From with an envelope sender that passes SPF but is not
	// aligned still fails DMARC.
	if code, _ := sendMX(t, h, "bounce@good.test", "ceo@forged.test", ""); code != 550 {
		t.Fatalf("unaligned SPF pass accepted: %d", code)
	}
	// Quarantine: delivered, marked, and filed in .Junk when it exists.
	junk := filepath.Join(h.dataDir, "mail", "example.com", "alice", ".Junk")
	for _, d := range []string{"new", "cur", "tmp"} {
		must(t, os.MkdirAll(filepath.Join(junk, d), 0o700))
	}
	if code, msg := sendMX(t, h, "x@junk.test", "x@junk.test", ""); code != 250 {
		t.Fatalf("quarantine policy refused: %d %s", code, msg)
	}
	h.waitQueueEmpty()
	ents, _ := os.ReadDir(filepath.Join(junk, "new"))
	if len(ents) != 1 {
		t.Fatalf("%d messages in .Junk, want 1 (inbox has %d)", len(ents), len(h.maildir("alice@example.com")))
	}
	b, _ := os.ReadFile(filepath.Join(junk, "new", ents[0].Name()))
	if !strings.Contains(string(b), "X-Herald-Quarantine: dmarc policy of junk.test") || !strings.Contains(string(b), "dmarc=fail") {
		t.Errorf("quarantined message:\n%s", headerBlock(string(b)))
	}
}

// SPF hard fails are refused at RCPT for domains whose policy says so
// (server default [checks] spf_reject_fail, or per domain).
func TestInboundSPFRejectPerDomain(t *testing.T) {
	t.Parallel()
	h := inboundHerald(t, func(c *config.Config) { c.Checks.SPFRejectFail = true })
	h.addDomain("lenient.test")
	h.addUser("bob@lenient.test")
	must(t, h.app.Store().SetDomainPolicy(context.Background(), "lenient.test", store.DomainPolicy{SPFReject: "off", DMARC: "monitor"}))
	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO sender.test")
	c.ok(250, "MAIL FROM:<ceo@forged.test>")
	if code, msg := c.cmd("RCPT TO:<alice@example.com>"); code != 550 || !strings.HasPrefix(msg, "5.7.23") {
		t.Fatalf("SPF fail answered %d %s at RCPT, want 550 5.7.23", code, msg)
	}
	// lenient.test neither refuses SPF fails nor enforces DMARC: the same
	// forged message is delivered there, with the verdicts recorded.
	c.ok(250, "RCPT TO:<bob@lenient.test>")
	c.ok(354, "DATA")
	c.raw("From: <ceo@forged.test>\r\nTo: <bob@lenient.test>\r\nSubject: forged\r\n\r\nhi\r\n.\r\n")
	c.expect(250)
	got := h.waitMaildir("bob@lenient.test", 1)[0]
	if !strings.Contains(got, "spf=fail") || !strings.Contains(got, "dmarc=fail") || strings.Contains(got, "X-Herald-Quarantine") {
		t.Errorf("monitored domain's copy:\n%s", headerBlock(got))
	}
}

// A message signed by dkimpy (an independent implementation) passes DKIM in
// Herald and so DMARC, even though SPF fails; tampered in transit, it fails.
func TestInboundDkimpySignedMessage(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim").Run(); err != nil {
		t.Skip("python3-dkim (dkimpy) not installed")
	}
	h := inboundHerald(t, nil)
	priv, err := dkim.GenerateKey("rsa")
	if err != nil {
		t.Fatal(err)
	}
	name, value, err := dkim.DNSRecord("forged.test", "py", priv)
	if err != nil {
		t.Fatal(err)
	}
	h.dns.AddTXT(strings.TrimSuffix(name, "."), value)
	keyFile := filepath.Join(t.TempDir(), "key.pem")
	must(t, os.WriteFile(keyFile, priv, 0o600))
	msg := "From: <ceo@forged.test>\r\nTo: <alice@example.com>\r\nSubject: dkimpy\r\n\r\nsigned by dkimpy\r\n"
	py := `
import sys, dkim
msg = sys.stdin.buffer.read()
key = open(sys.argv[1], "rb").read()
sig = dkim.sign(msg, b"py", b"forged.test", key, include_headers=[b"from", b"to", b"subject"])
sys.stdout.buffer.write(sig + msg)
`
	cmd := exec.Command("/usr/bin/python3", "-c", py, keyFile)
	cmd.Stdin = strings.NewReader(msg)
	signed, err := cmd.Output()
	if err != nil {
		t.Fatalf("dkimpy sign: %v", err)
	}
	s := strings.ReplaceAll(strings.ReplaceAll(string(signed), "\r\n", "\n"), "\n", "\r\n")

	c := dial(t, h.addr("smtp"))
	c.ok(250, "EHLO sender.test")
	if code, msg := c.send("ceo@forged.test", []string{"alice@example.com"}, s); code != 250 {
		t.Fatalf("dkimpy-signed message refused: %d %s", code, msg)
	}
	got := h.waitMaildir("alice@example.com", 1)[0]
	if !strings.Contains(got, "dkim=pass") || !strings.Contains(got, "header.d=forged.test") || !strings.Contains(got, "dmarc=pass") {
		t.Errorf("Authentication-Results:\n%s", headerBlock(got))
	}
	tampered := strings.Replace(s, "signed by dkimpy", "signed by dkimpy, then changed", 1)
	if code, _ := c.send("ceo@forged.test", []string{"alice@example.com"}, tampered); code != 550 {
		t.Errorf("tampered message (DKIM fail, SPF fail, p=reject) answered %d, want 550", code)
	}
}

// A message forwarded by a mailing list fails DMARC (the list's server is
// not in the author's SPF and the list changed the subject), but the list
// sealed it with ARC after recording a DMARC pass: trusted sealers get it
// through, untrusted ones do not.
func TestInboundARCOverrideForTrustedSealer(t *testing.T) {
	t.Parallel()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, authres").Run(); err != nil {
		t.Skip("python3-dkim (dkimpy with authres) not installed")
	}
	for _, trusted := range []bool{true, false} {
		h := inboundHerald(t, func(c *config.Config) {
			if trusted {
				c.Checks.ARCTrustedSealers = []string{"lists.test"}
			}
		})
		priv, err := dkim.GenerateKey("rsa")
		if err != nil {
			t.Fatal(err)
		}
		name, value, err := dkim.DNSRecord("lists.test", "arc", priv)
		if err != nil {
			t.Fatal(err)
		}
		h.dns.AddTXT(strings.TrimSuffix(name, "."), value)
		keyFile := filepath.Join(t.TempDir(), "key.pem")
		must(t, os.WriteFile(keyFile, priv, 0o600))
		msg := "Authentication-Results: lists.test; spf=pass smtp.mailfrom=forged.test; dmarc=pass header.from=forged.test\r\n" +
			"From: <ceo@forged.test>\r\nTo: <list@lists.test>\r\nSubject: [list] hello\r\n\r\nforwarded by a list\r\n"
		py := `
import sys, dkim
msg = sys.stdin.buffer.read()
key = open(sys.argv[1], "rb").read()
sigs = dkim.arc_sign(msg, b"arc", b"lists.test", key, b"lists.test", include_headers=[b"from", b"to", b"subject"])
sys.stdout.buffer.write(b"".join(sigs) + msg)
`
		cmd := exec.Command("/usr/bin/python3", "-c", py, keyFile)
		cmd.Stdin = strings.NewReader(msg)
		sealed, err := cmd.Output()
		if err != nil {
			t.Fatalf("dkimpy arc_sign: %v", err)
		}
		s := strings.ReplaceAll(strings.ReplaceAll(string(sealed), "\r\n", "\n"), "\n", "\r\n")
		c := dial(t, h.addr("smtp"))
		c.ok(250, "EHLO lists.test")
		code, reply := c.send("list-bounces@lists.test", []string{"alice@example.com"}, s)
		if trusted {
			if code != 250 {
				t.Fatalf("trusted ARC sealer: %d %s, want 250", code, reply)
			}
			got := h.waitMaildir("alice@example.com", 1)[0]
			if !strings.Contains(got, "arc=pass") || !strings.Contains(got, "dmarc=fail") {
				t.Errorf("Authentication-Results:\n%s", headerBlock(got))
			}
		} else if code != 550 {
			t.Fatalf("untrusted ARC sealer: %d %s, want 550 (DMARC p=reject)", code, reply)
		}
	}
}
