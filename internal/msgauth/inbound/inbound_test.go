package inbound_test

import (
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// wantReply fails unless err is an *smtp.Error with code and enhanced.
func wantReply(t *testing.T, err error, code int, enhanced smtp.EnhancedCode) *smtp.Error {
	t.Helper()
	e, ok := smtp.AsError(err)
	if !ok || e.Code != code || e.Enhanced != enhanced {
		t.Fatalf("got %v, want %d %s", err, code, enhanced)
	}
	return e
}

// SPF hard fails are refused at RCPT exactly when the recipient domain's
// policy, or without one the [checks] configuration, says so; other
// results never are.
func TestRcptSPFReject(t *testing.T) {
	t.Parallel()
	for _, serverDefault := range []bool{false, true} {
		w := newWorld(t, config.ChecksConfig{SPFRejectFail: serverDefault})
		w.addDomain("strict.test", store.DomainPolicy{SPFReject: "on"})
		w.addDomain("lenient.test", store.DomainPolicy{SPFReject: "off"})
		w.addDomain("dmarconly.test", store.DomainPolicy{DMARC: "enforce"}) // SPF follows the server default
		for _, c := range []struct {
			from, helo, rcptDomain string
			refuse                 bool
		}{
			{"ceo@forged.test", clientHELO, "strict.test", true},
			{"ceo@forged.test", clientHELO, "lenient.test", false},
			{"ceo@forged.test", clientHELO, "example.test", serverDefault},
			{"ceo@forged.test", clientHELO, "dmarconly.test", serverDefault},
			// A domain that is not local (or vanished) follows the default.
			{"ceo@forged.test", clientHELO, "unknown.test", serverDefault},
			// The null sender's identity is the HELO name (RFC 7208 §2.4).
			{"", "forged.test", "strict.test", true},
			// Only a hard fail refuses.
			{"news@good.test", clientHELO, "strict.test", false},
			{"x@soft.test", clientHELO, "strict.test", false},
			{"x@broken.test", clientHELO, "strict.test", false}, // temperror
			{"x@nospf.test", clientHELO, "strict.test", false},  // none
			{"", clientHELO, "strict.test", false},
		} {
			tx := w.ck.Begin(w.ctx, clientIP, c.helo, c.from)
			err := tx.Rcpt(w.ctx, c.rcptDomain)
			if !c.refuse {
				if err != nil {
					t.Errorf("default %v: MAIL FROM:<%s> (HELO %s) RCPT @%s refused: %v", serverDefault, c.from, c.helo, c.rcptDomain, err)
				}
				continue
			}
			e, ok := smtp.AsError(err)
			if !ok || e.Code != 550 || e.Enhanced != (smtp.EnhancedCode{5, 7, 23}) {
				t.Errorf("default %v: MAIL FROM:<%s> (HELO %s) RCPT @%s: %v, want 550 5.7.23", serverDefault, c.from, c.helo, c.rcptDomain, err)
				continue
			}
			if !strings.Contains(e.Message, "forged.test") || !strings.Contains(e.Message, clientIP.String()) {
				t.Errorf("refusal %q names neither the domain nor the client", e.Message)
			}
		}
	}
}

// The stored message starts with our Authentication-Results, holding the
// SPF results of MAIL FROM and HELO, DKIM and DMARC; forged fields claiming
// our authserv-id are removed, others kept byte for byte.
func TestAuthenticationResultsAndForgeriesStripped(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	forged := "Authentication-Results: mx.herald.test; dkim=pass header.d=good.test; dmarc=pass\r\n" +
		"authentication-results:\r\n\tMX.Herald.Test;\r\n\tspf=pass smtp.mailfrom=ceo@good.test\r\n" +
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=news@good.test\r\n"
	raw := message("news@good.test", forged)
	s, err := w.accept("news@good.test", "example.test", raw)
	if err != nil {
		t.Fatal(err)
	}
	res := ourResults(t, s)
	wantResults(t, res, "spf=pass", "smtp.mailfrom=news@good.test", "smtp.helo="+clientHELO,
		"dkim=none", "dmarc=pass", "header.from=good.test")
	if n := strings.Count(strings.ToLower(s.data), "authentication-results: mx.herald.test"); n != 1 {
		t.Errorf("%d Authentication-Results claim %s, want only ours:\n%s", n, authserv, header(s.data))
	}
	if strings.Contains(s.data, "MX.Herald.Test") || strings.Contains(s.data, "ceo@good.test") {
		t.Errorf("a folded forgery survived:\n%s", header(s.data))
	}
	// Everything but the forgeries is stored as received, after our field.
	want := message("news@good.test", "Authentication-Results: other.example; spf=pass smtp.mailfrom=news@good.test\r\n")
	if rest := s.data[len(firstField(s.data)):]; rest != want {
		t.Errorf("stored message after our field:\n%q\nwant\n%q", rest, want)
	}
	if string(s.msg.Headers) != firstField(s.data) {
		t.Errorf("message Headers %q, want just our field", s.msg.Headers)
	}
	if inbound.Quarantined(s.msg) {
		t.Error("a passing message is marked")
	}
}

// The null sender's SPF identity is the HELO name, reported as smtp.helo.
func TestAuthenticationResultsNullSender(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	tx := w.ck.Begin(w.ctx, clientIP, "good.test", "")
	s, err := w.acceptFrom(tx, "", "example.test", strings.NewReader(message("mailer-daemon@good.test", "")))
	if err != nil {
		t.Fatal(err)
	}
	res := ourResults(t, s)
	wantResults(t, res, "spf=pass", "smtp.helo=good.test")
	if strings.Contains(res, "smtp.mailfrom") {
		t.Errorf("null sender reported with a smtp.mailfrom: %s", res)
	}
}

// A message DKIM-signed with a key published in DNS passes DKIM, and so
// DMARC even though SPF fails; a changed body, or a signature of another
// domain, does not, and p=reject then refuses it.
func TestDKIM(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	w.addDomain("enforce.test", store.DomainPolicy{DMARC: "enforce"})
	key := w.publishKey("forged.test", "s2026")
	signed := dkimSign(t, message("ceo@forged.test", ""), "forged.test", "s2026", key)

	s, err := w.accept("ceo@forged.test", "enforce.test", signed)
	if err != nil {
		t.Fatalf("DKIM-aligned message refused: %v", err)
	}
	res := ourResults(t, s)
	wantResults(t, res, "spf=fail", "dkim=pass", "header.d=forged.test", "header.s=s2026", "header.a=ed25519-sha256",
		"dmarc=pass", "header.from=forged.test")
	if inbound.Quarantined(s.msg) {
		t.Error("DMARC pass marked for quarantine")
	}
	if !strings.HasSuffix(s.data, signed) {
		t.Error("the signed message was not stored unchanged after our field")
	}

	tampered := strings.Replace(signed, "a test message.", "a changed message.", 1)
	_, err = w.accept("ceo@forged.test", "enforce.test", tampered)
	wantReply(t, err, 550, smtp.EnhancedCode{5, 7, 1})

	otherKey := w.publishKey("other.test", "sel")
	unaligned := dkimSign(t, message("ceo@forged.test", ""), "other.test", "sel", otherKey)
	_, err = w.accept("ceo@forged.test", "enforce.test", unaligned)
	wantReply(t, err, 550, smtp.EnhancedCode{5, 7, 1})

	// Where DMARC is only recorded, the failures are visible.
	s, err = w.accept("ceo@forged.test", "example.test", tampered)
	if err != nil {
		t.Fatal(err)
	}
	wantResults(t, ourResults(t, s), "dkim=fail", "header.d=forged.test", "dmarc=fail")
	s, err = w.accept("ceo@forged.test", "example.test", unaligned)
	if err != nil {
		t.Fatal(err)
	}
	wantResults(t, ourResults(t, s), "dkim=pass", "header.d=other.test", "dmarc=fail")
	if n := w.queued(); n != 3 {
		t.Errorf("%d messages queued, want 3 (the two refusals store nothing)", n)
	}
}

// DMARC failures are refused, marked or only recorded as the recipient
// domain's mode says, with the [checks] configuration as the default.
func TestDMARCModes(t *testing.T) {
	t.Parallel()
	type verdict int
	const (
		recorded verdict = iota
		marked
		refused
	)
	for _, c := range []struct {
		name   string
		cfg    config.ChecksConfig
		mode   string // the recipient domain's DMARC mode, "" for none
		sender string
		want   verdict
	}{
		{"reject/enforce", config.ChecksConfig{}, "enforce", "ceo@forged.test", refused},
		{"reject/quarantine", config.ChecksConfig{}, "quarantine", "ceo@forged.test", marked},
		{"reject/monitor", config.ChecksConfig{}, "monitor", "ceo@forged.test", recorded},
		{"quarantine/enforce", config.ChecksConfig{}, "enforce", "x@junk.test", marked},
		{"quarantine/quarantine", config.ChecksConfig{}, "quarantine", "x@junk.test", marked},
		{"quarantine/monitor", config.ChecksConfig{}, "monitor", "x@junk.test", recorded},
		{"pass/enforce", config.ChecksConfig{}, "enforce", "news@good.test", recorded},
		{"softfail/enforce", config.ChecksConfig{}, "enforce", "x@soft.test", refused},
		{"reject/default dmarc_reject", config.ChecksConfig{DMARCReject: true}, "", "ceo@forged.test", refused},
		{"quarantine/default dmarc_reject", config.ChecksConfig{DMARCReject: true}, "", "x@junk.test", marked},
		{"reject/default dmarc_quarantine", config.ChecksConfig{DMARCQuarantine: true}, "", "ceo@forged.test", marked},
		{"reject/default monitor", config.ChecksConfig{}, "", "ceo@forged.test", recorded},
		{"reject/monitor over dmarc_reject", config.ChecksConfig{DMARCReject: true}, "monitor", "ceo@forged.test", recorded},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, c.cfg)
			w.addDomain("local.test", store.DomainPolicy{DMARC: c.mode})
			s, err := w.accept(c.sender, "local.test", message(c.sender, ""))
			senderDomain := c.sender[strings.IndexByte(c.sender, '@')+1:]
			if c.want == refused {
				e := wantReply(t, err, 550, smtp.EnhancedCode{5, 7, 1})
				if !strings.Contains(e.Message, senderDomain) {
					t.Errorf("refusal %q does not name %s", e.Message, senderDomain)
				}
				if n := w.queued(); n != 0 {
					t.Errorf("a refused message was queued (%d)", n)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			res := ourResults(t, s)
			if c.sender == "news@good.test" {
				wantResults(t, res, "dmarc=pass")
			} else {
				wantResults(t, res, "dmarc=fail", "header.from="+senderDomain)
			}
			mark := inbound.QuarantineHeader + ": dmarc policy of " + senderDomain + "\r\n"
			if got := inbound.Quarantined(s.msg); got != (c.want == marked) {
				t.Errorf("Quarantined = %v, want %v; headers:\n%s", got, c.want == marked, s.msg.Headers)
			}
			if got := strings.Contains(header(s.data), mark); got != (c.want == marked) {
				t.Errorf("stored header has the mark %q: %v, want %v:\n%s", mark, got, c.want == marked, header(s.data))
			}
		})
	}
}

// Quarantined looks only at the fields Herald prepended: a sender cannot
// file its message anywhere by writing the mark itself.
func TestQuarantinedIgnoresTheMessagesOwnHeader(t *testing.T) {
	t.Parallel()
	w := newWorld(t, config.ChecksConfig{})
	s, err := w.accept("news@good.test", "example.test", message("news@good.test", inbound.QuarantineHeader+": dmarc policy of good.test\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if inbound.Quarantined(s.msg) {
		t.Error("a mark in the message's own header counts")
	}
	if !inbound.Quarantined(&store.Message{Headers: []byte("Authentication-Results: x; none\r\n" + inbound.QuarantineHeader + ": dmarc policy of x.test\r\n")}) {
		t.Error("the mark after another prepended field is not seen")
	}
	if inbound.Quarantined(&store.Message{Headers: []byte("X-Herald-Quarantined-Not: 1\r\n")}) {
		t.Error("a field merely starting with the name counts")
	}
}

// An ARC pass overrides a DMARC failure only for sealers listed in
// arc_trusted_sealers whose first hop recorded dmarc=pass.
func TestARCOverride(t *testing.T) {
	t.Parallel()
	type outcome int
	const (
		overridden outcome = iota
		refused
	)
	const listPass = "mx.lists.test; spf=pass smtp.mailfrom=ceo@forged.test; dkim=pass header.d=forged.test; dmarc=pass header.from=forged.test"
	const listFail = "mx.lists.test; spf=fail smtp.mailfrom=ceo@forged.test; dkim=none; dmarc=fail header.from=forged.test"
	for _, c := range []struct {
		name    string
		trusted []string
		sealer  string // "" for no seal
		aar     string
		tamper  bool // change the body after sealing
		want    outcome
		arc     string // the arc= result recorded
	}{
		{"trusted sealer", []string{"lists.test"}, "lists.test", listPass, false, overridden, "; arc=pass"},
		{"trusted sealer, any case", []string{"LISTS.test"}, "lists.test", listPass, false, overridden, "; arc=pass"},
		{"no trusted sealers", nil, "lists.test", listPass, false, refused, "; arc=pass"},
		{"another sealer trusted", []string{"other.test"}, "lists.test", listPass, false, refused, "; arc=pass"},
		{"untrusted seal of its own", []string{"lists.test"}, "evil.test", listPass, false, refused, "; arc=pass"},
		{"first hop recorded a DMARC fail", []string{"lists.test"}, "lists.test", listFail, false, refused, "; arc=pass"},
		{"broken seal", []string{"lists.test"}, "lists.test", listPass, true, refused, "; arc=fail"},
		{"no seal", []string{"lists.test"}, "", "", false, refused, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			w := newWorld(t, config.ChecksConfig{ARCTrustedSealers: c.trusted})
			w.addDomain("enforce.test", store.DomainPolicy{DMARC: "enforce"})
			// The list changed the subject, so the author's DKIM
			// signature would not survive; the list's own envelope
			// sender passes SPF but is not aligned with From.
			raw := strings.Replace(message("ceo@forged.test", ""), "Subject: inbound test", "Subject: [list] inbound test", 1)
			if c.sealer != "" {
				key := w.publishKey(c.sealer, "arc")
				raw = arcSeal(t, raw, c.sealer, "arc", key, c.aar)
			}
			if c.tamper {
				raw = strings.Replace(raw, "a test message.", "a changed message.", 1)
			}
			// Monitor mode shows the verdicts the enforcing domain acts on.
			w.addDomain("monitor.test", store.DomainPolicy{DMARC: "monitor"})
			s, err := w.accept("list-bounces@lists.test", "monitor.test", raw)
			if err != nil {
				t.Fatal(err)
			}
			res := ourResults(t, s)
			wantResults(t, res, "spf=pass", "dmarc=fail", "header.from=forged.test")
			if c.arc != "" {
				wantResults(t, res, c.arc)
			} else if strings.Contains(res, "; arc=") {
				t.Errorf("arc reported without a seal: %s", res)
			}

			s, err = w.accept("list-bounces@lists.test", "enforce.test", raw)
			if c.want == refused {
				wantReply(t, err, 550, smtp.EnhancedCode{5, 7, 1})
				return
			}
			if err != nil {
				t.Fatalf("refused despite a trusted seal: %v", err)
			}
			res = ourResults(t, s)
			wantResults(t, res, "; arc=pass", "dmarc=fail", "overridden by ARC seal of "+c.sealer)
			if inbound.Quarantined(s.msg) {
				t.Error("an overridden failure is marked for quarantine")
			}
		})
	}
}

// Processors that saw the header and part of the body release their
// verifier goroutines when the message is abandoned, whether the spool
// aborts them (client gone in the middle of DATA) or the caller does.
// Not parallel: it counts the process's goroutines.
func TestAbortReleasesVerifiers(t *testing.T) {
	w := newWorld(t, config.ChecksConfig{})
	key := w.publishKey("forged.test", "s1")
	raw := dkimSign(t, message("ceo@forged.test", ""), "forged.test", "s1", key)
	raw = arcSeal(t, raw, "forged.test", "s1", key, "mx.forged.test; dmarc=pass")
	cut := strings.Index(raw, "\r\n\r\n") + 10 // the header and a few body bytes

	tx := w.ck.Begin(w.ctx, clientIP, clientHELO, "ceo@forged.test")
	procs := tx.Processors(w.ctx, "example.test")
	base := runtime.NumGoroutine()
	msg := &store.Message{Sender: "ceo@forged.test"}
	hdr := []byte(raw[:strings.Index(raw, "\r\n\r\n")+4])
	for _, p := range procs {
		var err error
		if hdr, err = p.Header(w.ctx, msg, hdr); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range procs {
		p.Write(hdr)
		p.Write([]byte(raw[len(hdr):cut]))
	}
	if n := verifiers(); n != 2 {
		t.Fatalf("%d verifier goroutines after Header, want 2 (DKIM and ARC)", n)
	}
	for _, p := range procs {
		p.Abort()
	}
	waitGoroutines(t, base)
	for deadline := time.Now().Add(5 * time.Second); verifiers() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d verifier goroutines left after Abort", verifiers())
		}
		runtime.Gosched()
	}
	for _, p := range procs {
		p.Abort() // a second Abort is harmless
	}

	// Through the spool: the body breaks off.
	tx = w.ck.Begin(w.ctx, clientIP, clientHELO, "ceo@forged.test")
	_, err := w.acceptFrom(tx, "ceo@forged.test", "example.test", io.MultiReader(strings.NewReader(raw[:cut]), failingReader{}))
	if !errors.Is(err, errClientGone) {
		t.Fatalf("Accept of a broken transfer: %v", err)
	}
	waitGoroutines(t, base)
	if n := w.queued(); n != 0 {
		t.Errorf("a broken transfer was queued (%d)", n)
	}
}

var errClientGone = errors.New("client gone")

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errClientGone }

// waitGoroutines waits (polling, bounded) until at most n goroutines run.
func waitGoroutines(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > n {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, want at most %d:\n%s", runtime.NumGoroutine(), n, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(time.Millisecond)
	}
}

// verifiers counts the goroutines running the DKIM and ARC verifiers of a
// message (started by the processor's Header), by their stacks: other
// tests' goroutines coming and going do not disturb it.
func verifiers() int {
	buf := make([]byte, 1<<20)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "inbound.(*inbound).Header.func")
}
