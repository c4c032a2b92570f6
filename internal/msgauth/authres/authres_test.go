package authres

import (
	"bytes"
	"strings"
	"testing"

	msgauthres "github.com/emersion/go-msgauth/authres"
)

// unfold turns a Field into its value on one line, as a header reader does.
func unfold(t *testing.T, field string) string {
	t.Helper()
	if !strings.HasSuffix(field, "\r\n") {
		t.Fatalf("field %q does not end in CRLF", field)
	}
	name, v, ok := strings.Cut(strings.TrimSuffix(field, "\r\n"), ":")
	if !ok || name != FieldName {
		t.Fatalf("field %q has no %s name", field, FieldName)
	}
	for _, line := range strings.Split(v, "\r\n")[1:] {
		if line == "" || (line[0] != ' ' && line[0] != '\t') {
			t.Fatalf("field %q has a line that is not a continuation: %q", field, line)
		}
	}
	return strings.ReplaceAll(v, "\r\n", "")
}

func TestFieldRoundTrip(t *testing.T) {
	t.Parallel()
	sig := "dGhpcyBpcyBhIHNpZ25hdHVyZQ==AAAA"
	res := Results{
		SPF: &SPF{Result: "pass", MailFrom: "bounce@example.org", HELO: "mx.example.org"},
		DKIM: []DKIM{
			{Result: "pass", Domain: "example.org", Selector: "s1", Algorithm: "rsa-sha256", Signature: sig},
			{Result: "fail", Domain: "example.net", Selector: "ed", Algorithm: "ed25519-sha256", Signature: "abc", Reason: "signature did not verify"},
		},
		DMARC: &DMARC{Result: "pass", From: "example.org", Policy: "none"},
		ARC:   &ARC{Result: "pass", RemoteIP: "192.0.2.1", OldestPass: 2},
	}
	f := Field("mx.herald.example", res)
	if strings.Count(f, "\r\n") != 6 { // 5 folds + final CRLF
		t.Fatalf("field %q: want one line per result", f)
	}
	v := unfold(t, f)
	id, got, err := msgauthres.Parse(v)
	if err != nil {
		t.Fatalf("Parse(%q): %v", v, err)
	}
	if id != "mx.herald.example" || len(got) != 5 {
		t.Fatalf("Parse = %q, %d results, want our id and 5 results: %q", id, len(got), v)
	}
	spf, ok := got[0].(*msgauthres.SPFResult)
	if !ok || spf.Value != msgauthres.ResultPass || spf.From != "bounce@example.org" || spf.Helo != "mx.example.org" {
		t.Fatalf("spf = %#v", got[0])
	}
	d1, ok := got[1].(*msgauthres.DKIMResult)
	if !ok || d1.Value != msgauthres.ResultPass || d1.Domain != "example.org" {
		t.Fatalf("dkim[0] = %#v", got[1])
	}
	d2, ok := got[2].(*msgauthres.DKIMResult)
	if !ok || d2.Value != msgauthres.ResultFail || d2.Domain != "example.net" || d2.Reason != `"signature` {
		// go-msgauth's Parse splits on spaces, so a quoted reason comes back cut.
		t.Fatalf("dkim[1] = %#v", got[2])
	}
	dm, ok := got[3].(*msgauthres.DMARCResult)
	if !ok || dm.Value != msgauthres.ResultPass || dm.From != "example.org" {
		t.Fatalf("dmarc = %#v", got[3])
	}
	arc, ok := got[4].(*msgauthres.ARCResult)
	if !ok || arc.Value != msgauthres.ResultPass || arc.RemoteIP != "192.0.2.1" || arc.OldestPass != 2 {
		t.Fatalf("arc = %#v", got[4])
	}
	for _, want := range []string{"header.s=s1", "header.a=rsa-sha256", "header.b=" + sig[:12] + " ", "header.s=ed",
		"header.a=ed25519-sha256", "header.b=abc", "policy.dmarc=none", `reason="signature did not verify"`} {
		if !strings.Contains(v+" ", want) {
			t.Errorf("value %q lacks %q", v, want)
		}
	}
	if norm := strings.TrimSpace(strings.ReplaceAll(v, "\t", " ")); Value("mx.herald.example", res) != norm {
		t.Fatalf("Value differs from unfolded Field:\n%q\n%q", Value("mx.herald.example", res), v)
	}
}

func TestValueNoneAndNullSender(t *testing.T) {
	t.Parallel()
	if got := Value("mx.example", Results{}); got != "mx.example; none" {
		t.Fatalf("empty = %q", got)
	}
	got := Value("mx.example", Results{SPF: &SPF{Result: "None", HELO: "client.example"}})
	if got != "mx.example; spf=none smtp.helo=client.example" {
		t.Fatalf("null sender = %q", got)
	}
}

func TestNoHeaderInjection(t *testing.T) {
	t.Parallel()
	evil := "x\r\nX-Evil: 1"
	f := Field("mx.example\r\nX-Id: 2", Results{
		SPF:   &SPF{Result: "pass\r\n", MailFrom: evil, HELO: evil, Reason: evil},
		DKIM:  []DKIM{{Result: "pass; dkim=fail", Domain: evil, Selector: evil, Signature: evil}},
		DMARC: &DMARC{Result: "fail", From: evil, Policy: "reject\n"},
	})
	v := unfold(t, f) // fails on any line that is not a continuation
	if strings.ContainsAny(v, "\r\n") {
		t.Fatalf("value has a line break: %q", v)
	}
	id, rs, err := msgauthres.Parse(v)
	if err != nil || id != "mx.exampleX-Id2" || len(rs) != 3 {
		t.Fatalf("Parse(%q) = %q, %d results, %v", v, id, len(rs), err)
	}
}

func TestStrip(t *testing.T) {
	t.Parallel()
	const id = "mx.herald.example"
	keep := []string{
		"Received: from a by b; Thu, 26 Nov 2026 10:00:00 +0000\r\n",
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=a@b.example\r\n",
		"Authentication-Results: mx.herald.example.evil.com; dkim=pass\r\n",
		"Authentication-Results: mx; dkim=pass (mx.herald.example)\r\n",
		"ARC-Authentication-Results: i=1; mx.herald.example; dkim=pass\r\n",
		"X-Authentication-Results: mx.herald.example; dkim=pass\r\n",
		"Subject: Authentication-Results: mx.herald.example; spf=pass\r\n",
		"From: a@b.example\r\n",
	}
	forged := []string{
		"Authentication-Results: mx.herald.example; dmarc=pass header.from=bank.example\r\n",
		"authentication-results: MX.Herald.Example; dkim=pass\r\n",
		"AUTHENTICATION-RESULTS:mx.herald.example;spf=pass\r\n",
		"Authentication-Results: mx.herald.example. 1; spf=pass\r\n",
		"Authentication-Results : mx.herald.example; spf=pass\r\n",
		"Authentication-Results: (forged) mx.herald.example (comment (nested)); spf=pass\r\n",
		"Authentication-Results: \"mx.herald.example\"; spf=pass\r\n",
		"Authentication-Results:\r\n\tmx.herald.example;\r\n  dkim=pass header.d=bank.example;\r\n\tdmarc=pass\r\n",
		"Authentication-Results: mx.herald.example\r\n",
		"Authentication-Results: mx.herald.example; none\n",
	}
	var in, want bytes.Buffer
	for i := range max(len(keep), len(forged)) {
		if i < len(forged) {
			in.WriteString(forged[i])
		}
		if i < len(keep) {
			in.WriteString(keep[i])
			want.WriteString(keep[i])
		}
	}
	in.WriteString("\r\n")
	want.WriteString("\r\n")
	// Anything after the blank line is the body and must not be touched.
	body := "Authentication-Results: mx.herald.example; spf=pass\r\n"
	in.WriteString(body)
	want.WriteString(body)

	got := Strip(in.Bytes(), "MX.herald.example")
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("Strip:\n%s\nwant:\n%s", got, want.Bytes())
	}
}

func TestStripUnchangedAndEdges(t *testing.T) {
	t.Parallel()
	h := []byte("From: a@b.example\r\nAuthentication-Results: other.example; none\r\nSubject: hi\r\n\r\n")
	got := Strip(h, "mx.example")
	if &got[0] != &h[0] || len(got) != len(h) {
		t.Fatalf("Strip without a match must return its input unchanged")
	}
	// Header block without blank line, last field without line end, LF only.
	h2 := []byte("From: a@b.example\nAuthentication-Results: mx.example; spf=pass\nSubject: x\nAuthentication-Results: mx.example; dkim=pass")
	if got := string(Strip(h2, "mx.example")); got != "From: a@b.example\nSubject: x\n" {
		t.Fatalf("Strip(LF) = %q", got)
	}
	if got := Strip(nil, "mx.example"); len(got) != 0 {
		t.Fatalf("Strip(nil) = %q", got)
	}
	// A field first in the block is removed too.
	h3 := []byte("Authentication-Results: mx.example; spf=pass\r\n\r\nbody")
	if got := string(Strip(h3, "mx.example")); got != "\r\nbody" {
		t.Fatalf("Strip(first) = %q", got)
	}
}

func FuzzStrip(f *testing.F) {
	f.Add([]byte("Authentication-Results: mx.example; spf=pass\r\nFrom: a\r\n\r\n"), "mx.example")
	f.Add([]byte("Authentication-Results: (x\\) mx.example; none\r\n\tfoo\r\n"), "mx.example")
	f.Fuzz(func(t *testing.T, h []byte, id string) {
		got := Strip(h, id)
		if len(got) > len(h) {
			t.Fatalf("Strip grew the header: %d > %d", len(got), len(h))
		}
	})
}

func TestSPFForBothIdentities(t *testing.T) {
	v := Value("mx.example", Results{
		SPF:     &SPF{Result: "fail", MailFrom: "a@forged.example"},
		SPFHELO: &SPF{Result: "pass", HELO: "mail.sender.example"},
	})
	for _, want := range []string{"spf=fail smtp.mailfrom=a@forged.example", "spf=pass smtp.helo=mail.sender.example"} {
		if !strings.Contains(v, want) {
			t.Errorf("%q lacks %q", v, want)
		}
	}
}
