package submit_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/feedback"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/submit"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
	"github.com/heraldmail/herald/internal/verp"
)

// env is a pipeline over a real store with two tenants:
//
//	acme owns example.test (local; users alice and bob, aliases) and
//	  news.example.test (sending only, no local delivery)
//	bank owns bank.test (local; user ceo, DKIM key)
//	the default account owns corp.test (local)
type env struct {
	t     *testing.T
	st    store.Store
	p     *submit.Pipeline
	fb    *feedback.Processor
	key   []byte
	clock *clock.Fake
}

func setup(t *testing.T, cfg submit.Config) *env {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return setupOn(t, cfg, st, true)
}

// setupOn builds the env on st; with fill false st holds the tenants
// already (another node of the same database).
func setupOn(t *testing.T, cfg submit.Config, st store.Store, fill bool) *env {
	t.Helper()
	clk := clock.NewFake(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC))
	key := make([]byte, verp.KeySize)
	fb := feedback.New(st, key, clk, nil)
	if cfg.Hostname == "" {
		cfg.Hostname = "mx.herald.test"
	}
	p := submit.New(cfg, submit.Deps{Store: st, Spool: spool.New(st, nil, clk), Feedback: fb,
		Clock: clk})
	e := &env{t: t, st: st, p: p, fb: fb, key: key, clock: clk}
	if fill {
		fillTenants(t, st)
	}
	return e
}

// fillTenants adds the accounts, domains, users, aliases and DKIM keys of
// env to st.
func fillTenants(t *testing.T, st store.Store) {
	t.Helper()
	ctx := context.Background()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{"acme", "bank"} {
		must(st.AddAccount(ctx, store.Account{ID: a, Name: a}))
	}
	for d, acct := range map[string]string{"example.test": "acme", "news.example.test": "acme", "bank.test": "bank", "corp.test": ""} {
		must(st.AddDomain(ctx, d))
		if acct != "" {
			must(st.SetDomainAccount(ctx, d, acct))
		}
	}
	must(st.DeleteDomain(ctx, "news.example.test")) // sending only: owned, not local
	must(st.AddDomain(ctx, "news.example.test"))
	must(st.SetDomainAccount(ctx, "news.example.test", "acme"))
	for _, u := range []store.User{
		{Address: "alice@example.test"},
		{Address: "bob@example.test"},
		{Address: "carol@example.test", SendAs: []string{"@news.example.test", "partner.test", "ceo@bank.test"}},
		{Address: "ceo@bank.test"},
		{Address: "ops@corp.test"},
	} {
		must(st.AddUser(ctx, u))
		if d := smtp.DomainOf(u.Address); d == "example.test" {
			must(st.SetUserAccount(ctx, u.Address, "acme"))
		} else if d == "bank.test" {
			must(st.SetUserAccount(ctx, u.Address, "bank"))
		}
	}
	must(st.AddAlias(ctx, store.Alias{Address: "team@example.test", Targets: []string{"alice@example.test", "bob@example.test"}}))
	must(st.AddAlias(ctx, store.Alias{Address: "sales@example.test", Targets: []string{"team@example.test"}}))
	must(st.AddAlias(ctx, store.Alias{Address: "bobby@example.test", Targets: []string{"bob@example.test"}}))
	must(st.AddAlias(ctx, store.Alias{Address: "fwd@example.test", Targets: []string{"someone@elsewhere.test"}}))
	must(st.AddAlias(ctx, store.Alias{Address: "@corp.test", Targets: []string{"ops@corp.test"}}))
	for _, d := range []string{"example.test", "bank.test"} {
		priv, err := dkim.GenerateKey(store.DKIMAlgorithmEd25519)
		must(err)
		must(st.AddDKIMKey(ctx, store.DKIMKey{Domain: d, Selector: "s1", Algorithm: store.DKIMAlgorithmEd25519, PrivateKey: priv, Active: true}))
	}
}

func user(u string) submit.Identity {
	return submit.Identity{Kind: submit.User, User: u, Source: "submission"}
}

func apiKey(acct string) submit.Identity {
	return submit.Identity{Kind: submit.APIKey, Account: acct, Source: "api"}
}

var (
	anonymous = submit.Identity{Kind: submit.Anonymous, ClientIP: netip.MustParseAddr("192.0.2.9"), HELO: "peer.test", Source: "smtp"}
	trusted   = submit.Identity{Kind: submit.Trusted, ClientIP: netip.MustParseAddr("10.0.0.5"), Source: "smtp"}
	system    = submit.Identity{Kind: submit.System, Source: "dsn"}
)

// code returns "ok" or the enhanced status code of err.
func code(err error) string {
	if err == nil {
		return "ok"
	}
	if e, ok := smtp.AsError(err); ok {
		return e.Enhanced.String()
	}
	return err.Error()
}

// send submits a whole message and returns its ID (or the error).
func (e *env) send(id submit.Identity, from string, rcpts []string, msg string) (submit.Result, error) {
	e.t.Helper()
	req := &submit.Request{Identity: id, From: from, Body: strings.NewReader(msg)}
	for _, r := range rcpts {
		req.Recipients = append(req.Recipients, submit.Recipient{Address: r})
	}
	return e.p.Submit(context.Background(), req)
}

// stored returns the queued message and its stored text.
func (e *env) stored(id string) (*store.Message, string) {
	e.t.Helper()
	m, err := e.st.Get(context.Background(), id)
	if err != nil {
		e.t.Fatalf("message %s: %v", id, err)
	}
	rc, err := e.st.OpenBody(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return m, string(b)
}

func (e *env) queued() int {
	e.t.Helper()
	s, err := e.st.Stats(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return s.Messages
}

func TestEnvelopeSenderRights(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	for _, c := range []struct {
		id   submit.Identity
		from string
		want string
	}{
		{user("alice@example.test"), "alice@example.test", "ok"},
		{user("alice@example.test"), "ALICE@Example.TEST", "ok"},
		{user("alice@example.test"), "", "ok"},                      // null sender (auto-replies)
		{user("alice@example.test"), "bob@example.test", "5.7.1"},   // a colleague: not without a grant
		{user("alice@example.test"), "ceo@example.test", "5.7.1"},   // the domain is not hers
		{user("alice@example.test"), "team@example.test", "ok"},     // an alias that delivers to her
		{user("alice@example.test"), "sales@example.test", "ok"},    // ... through another alias
		{user("alice@example.test"), "bobby@example.test", "5.7.1"}, // an alias of someone else
		{user("alice@example.test"), "ceo@bank.test", "5.7.1"},      // another tenant
		{user("ops@corp.test"), "anything@corp.test", "5.7.1"},      // a catch-all is not a grant
		{user("carol@example.test"), "x@news.example.test", "ok"},   // "@domain" grant
		{user("carol@example.test"), "y@partner.test", "ok"},        // bare-domain grant
		{user("carol@example.test"), "ceo@bank.test", "ok"},         // exact-address grant
		{user("carol@example.test"), "cfo@bank.test", "5.7.1"},
		{apiKey("acme"), "app@example.test", "ok"},
		{apiKey("acme"), "app@news.example.test", "ok"},
		{apiKey("acme"), "ceo@bank.test", "5.7.1"},
		{apiKey("acme"), "x@unowned.test", "5.7.1"},
		{trusted, "cron@corp.test", "ok"},   // the default account's domain
		{trusted, "x@unowned.test", "ok"},   // unhosted: like Postfix's mynetworks
		{trusted, "ceo@bank.test", "5.7.1"}, // a tenant's domain
		{anonymous, "ceo@bank.test", "ok"},  // SPF and DMARC judge it
		{system, "", "ok"},
	} {
		tx, err := e.p.Begin(context.Background(), c.id)
		if err != nil {
			t.Fatal(err)
		}
		if got := code(tx.Mail(context.Background(), submit.Mail{From: c.from})); got != c.want {
			t.Errorf("%s %q MAIL FROM:<%s> = %s, want %s", c.id.Kind, c.id.User+c.id.Account, c.from, got, c.want)
		}
	}
}

// Every address of every From: and Sender: field is checked, however the
// header is written; the header section gets Date and Message-ID.
func TestHeaderAddressesChecked(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	alice := user("alice@example.test")
	for _, c := range []struct {
		name, header, want string
	}{
		{"own", "From: Alice <alice@example.test>\r\n", "ok"},
		{"display name quoting an address", "From: \"ceo@bank.test\" <alice@example.test>\r\n", "ok"},
		{"other tenant", "From: ceo@bank.test\r\n", "5.7.1"},
		{"second mailbox", "From: alice@example.test, ceo@bank.test\r\n", "5.7.1"},
		{"group", "From: Board: alice@example.test, ceo@bank.test;\r\n", "5.7.1"},
		{"second field", "From: alice@example.test\r\nFrom: ceo@bank.test\r\n", "5.6.0"},
		{"obsolete space before colon", "From: alice@example.test\r\nFrom : ceo@bank.test\r\n", "5.6.0"},
		{"lower-case name", "from: ceo@bank.test\r\n", "5.7.1"},
		{"folded", "From: Alice\r\n <ceo@bank.test>\r\n", "5.7.1"},
		{"sender field", "From: alice@example.test\r\nSender: ceo@bank.test\r\n", "5.7.1"},
		{"two senders", "From: alice@example.test\r\nSender: alice@example.test\r\nSender: alice@example.test\r\n", "5.6.0"},
		{"unparsable", "From: <alice@example.test\r\n", "5.6.0"},
		{"empty group", "From: undisclosed:;\r\n", "5.6.0"},
		{"leading continuation line", " From: ceo@bank.test\r\nFrom: alice@example.test\r\n", "5.6.0"},
		{"too many authors", "From: " + strings.Repeat("alice@example.test, ", 50) + "alice@example.test\r\n", "5.6.0"},
		{"missing: taken from the envelope", "", "ok"},
	} {
		res, err := e.send(alice, "alice@example.test", []string{"x@remote.test"}, c.header+"Subject: t\r\n\r\nbody\r\n")
		if got := code(err); got != c.want {
			t.Errorf("%s: %s, want %s (%v)", c.name, got, c.want, err)
			continue
		}
		if err != nil {
			continue
		}
		_, text := e.stored(res.ID)
		hdr, _, _ := strings.Cut(text, "\r\n\r\n")
		for _, f := range []string{"\r\nDate: ", "\r\nMessage-ID: <", "DKIM-Signature: "} {
			if !strings.Contains("\r\n"+hdr, f) {
				t.Errorf("%s: stored header lacks %q:\n%s", c.name, f, hdr)
			}
		}
		if c.header == "" && !strings.Contains(hdr, "\r\nFrom: <alice@example.test>\r\n") {
			t.Errorf("missing From not added from the envelope:\n%s", hdr)
		}
	}
	// Without a sender to take it from, a missing From is refused.
	if _, err := e.send(alice, "", []string{"x@remote.test"}, "Subject: t\r\n\r\nbody\r\n"); code(err) != "5.6.0" {
		t.Errorf("no From and null sender: %v, want 5.6.0", err)
	}
}

// A tenant's mail is signed only with its own domains' keys: another
// tenant's From: domain is refused, never signed.
func TestSigningOnlyForOwnDomains(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	msg := func(from string) string { return "From: " + from + "\r\nSubject: s\r\n\r\nhello\r\n" }
	if _, err := e.send(apiKey("acme"), "app@example.test", []string{"x@remote.test"}, msg("ceo@bank.test")); code(err) != "5.7.1" {
		t.Fatalf("API key of acme with From: ceo@bank.test: %v, want 5.7.1", err)
	}
	if _, err := e.send(trusted, "app@corp.test", []string{"x@remote.test"}, msg("ceo@bank.test")); code(err) != "5.7.1" {
		t.Fatalf("allow-listed client with From: ceo@bank.test: %v, want 5.7.1", err)
	}
	if e.queued() != 0 {
		t.Fatalf("%d messages queued after refusals", e.queued())
	}
	res, err := e.send(apiKey("acme"), "app@example.test", []string{"x@remote.test"}, msg("App <app@example.test>"))
	if err != nil {
		t.Fatal(err)
	}
	_, text := e.stored(res.ID)
	if !strings.Contains(text, "DKIM-Signature: ") || !strings.Contains(text, "d=example.test") || strings.Contains(text, "d=bank.test") {
		t.Fatalf("own-domain mail not signed with its key:\n%s", text)
	}
	// Mail from the outside is never signed, whatever its From.
	res, err = e.send(anonymous, "ceo@bank.test", []string{"ceo@bank.test"}, msg("ceo@bank.test"))
	if err != nil {
		t.Fatal(err)
	}
	if _, text := e.stored(res.ID); strings.Contains(text, "DKIM-Signature") {
		t.Fatalf("inbound mail was signed:\n%s", text)
	}
}

// Recipients resolve the same way from every source: aliases, nested
// aliases, catch-alls and forwards; unknown local addresses are refused;
// only relaying identities reach remote domains.
func TestRecipientResolution(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	for _, c := range []struct {
		id   submit.Identity
		from string
	}{
		{apiKey("acme"), "alice@example.test"},
		{user("alice@example.test"), "alice@example.test"},
		{anonymous, "alice@example.test"},
		{submit.Identity{Kind: submit.Local, Source: "sendmail"}, "root@corp.test"},
	} {
		id := c.id
		body := "From: " + c.from + "\r\nSubject: r\r\n\r\nhi\r\n"
		res, err := e.send(id, c.from, []string{"sales@example.test", "fwd@example.test", "anyone@corp.test"}, body)
		if err != nil {
			t.Fatalf("%s: %v", id.Kind, err)
		}
		m, _ := e.stored(res.ID)
		var got []string
		for _, r := range m.Recipients {
			got = append(got, r.Address+"|"+r.ORCPT)
		}
		want := "alice@example.test|rfc822;sales@example.test bob@example.test|rfc822;sales@example.test " +
			"someone@elsewhere.test|rfc822;fwd@example.test ops@corp.test|rfc822;anyone@corp.test"
		if strings.Join(got, " ") != want {
			t.Errorf("%s: recipients %v, want %s", id.Kind, got, want)
		}
	}
	tx, _ := e.p.Begin(context.Background(), anonymous)
	tx.Mail(context.Background(), submit.Mail{From: "x@remote.test"})
	if err := tx.Rcpt(context.Background(), submit.Recipient{Address: "victim@remote.test"}); code(err) != "5.7.1" {
		t.Errorf("anonymous relay: %v, want 5.7.1", err)
	}
	if err := tx.Rcpt(context.Background(), submit.Recipient{Address: "nobody@example.test"}); code(err) != "5.1.1" {
		t.Errorf("unknown local recipient: %v, want 5.1.1", err)
	}
}

// Suppressed recipients are refused with ErrSuppressed and an event; a
// whole-message submission skips them and sends to the rest.
func TestSuppressedRecipients(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	ctx := context.Background()
	if err := e.st.AddSuppression(ctx, store.Suppression{Account: "acme", Address: "gone@remote.test", Reason: store.SuppressHardBounce}); err != nil {
		t.Fatal(err)
	}
	res, err := e.send(apiKey("acme"), "app@example.test", []string{"gone@remote.test", "ok@remote.test"}, "From: app@example.test\r\n\r\nx\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Suppressed) != 1 || res.Suppressed[0] != "gone@remote.test" || res.Queued != 1 {
		t.Fatalf("result %+v", res)
	}
	evs, _ := e.st.ListEvents(ctx, store.EventFilter{Account: "acme", Types: []string{store.EventSuppressed}})
	if len(evs) != 1 || evs[0].MessageID != res.ID || evs[0].Recipient != "gone@remote.test" {
		t.Fatalf("suppressed events %+v", evs)
	}
	// Another account's list does not apply.
	tx, _ := e.p.Begin(ctx, user("ceo@bank.test"))
	tx.Mail(ctx, submit.Mail{From: "ceo@bank.test"})
	if err := tx.Rcpt(ctx, submit.Recipient{Address: "gone@remote.test"}); err != nil {
		t.Fatalf("bank refused a recipient suppressed by acme: %v", err)
	}
	tx, _ = e.p.Begin(ctx, user("alice@example.test"))
	tx.Mail(ctx, submit.Mail{From: "alice@example.test"})
	if err := tx.Rcpt(ctx, submit.Recipient{Address: "Gone@Remote.test"}); !errors.Is(err, submit.ErrSuppressed) || code(err) != "5.1.1" {
		t.Fatalf("SMTP user of acme to a suppressed address: %v", err)
	}
}

// Size, recipient count and rate limits hold for every source; rates
// count recipients, all or nothing.
func TestLimits(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{MaxMessageSize: 4096, MaxRecipients: 3})
	ctx := context.Background()
	hdr := "From: app@example.test\r\n\r\n"
	if _, err := e.send(apiKey("acme"), "app@example.test", []string{"a@r.test"}, hdr+strings.Repeat("x", 20000)); code(err) != "5.3.4" {
		t.Errorf("oversized API message: %v, want 5.3.4", err)
	}
	if _, err := e.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test", "c@r.test", "d@r.test"}, hdr); code(err) != "4.5.3" {
		t.Errorf("4 recipients over a limit of 3: %v, want 4.5.3", err)
	}
	if e.queued() != 0 {
		t.Fatal("a refused message was queued")
	}
	if err := e.st.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 4}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test", "c@r.test"}, hdr); err != nil {
		t.Fatalf("3 of 4 per minute: %v", err)
	}
	_, err := e.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test"}, hdr)
	var r *submit.Refusal
	if !errors.As(err, &r) || code(err) != "4.7.1" || r.RetryAfter <= 0 || r.Reason != submit.ReasonRateLimit {
		t.Fatalf("2 more recipients over 4 per minute: %v, want 4.7.1 with a retry time", err)
	}
	// The same limit binds the account's SMTP users.
	tx, _ := e.p.Begin(ctx, user("alice@example.test"))
	if err := tx.Mail(ctx, submit.Mail{From: "alice@example.test"}); err != nil {
		t.Fatalf("one recipient left, MAIL refused: %v", err)
	}
	e.clock.Advance(2 * time.Minute)
	if _, err := e.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test"}, hdr); err != nil {
		t.Fatalf("after the window: %v", err)
	}
	st, _ := e.p.AccountRate(ctx, "acme")
	if st.Limit != 4 || st.Remaining != 2 || st.Reset <= 0 {
		t.Errorf("rate status %+v, want limit 4, 2 remaining", st)
	}
	e2 := setup(t, submit.Config{MaxRecipients: 10})
	e2.st.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 2})
	if _, err := e2.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test", "c@r.test"}, hdr); code(err) != "5.7.1" {
		t.Errorf("more recipients than the window allows: %v, want a permanent 5.7.1", err)
	}
}

// Two nodes on one PostgreSQL database charge one account's limit: what
// node A sent counts on node B, at MAIL FROM and at the end of DATA, and
// the API's X-RateLimit status is the same on both. A user's own limit is
// shared the same way.
func TestLimitsSharedByNodes(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, dsn := pgtest.NewSchema(t)
	open := func(node string) store.Store {
		st, err := postgres.Open(ctx, dsn, postgres.Options{Node: node, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	cfg := submit.Config{MaxRecipients: 10, UserLimits: ratelimit.Limits{PerHour: 3}}
	a := setupOn(t, cfg, open("mx1"), true)
	b := setupOn(t, cfg, open("mx2"), false)
	if err := a.st.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 6}); err != nil {
		t.Fatal(err)
	}
	hdr := "From: app@example.test\r\n\r\n"
	if _, err := a.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test", "c@r.test"}, hdr); err != nil {
		t.Fatalf("node A, 3 of 6: %v", err)
	}
	if _, err := b.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test", "c@r.test", "d@r.test"}, hdr); code(err) != "4.7.1" {
		t.Fatalf("node B, 4 more: %v, want 4.7.1", err)
	}
	if _, err := b.send(apiKey("acme"), "app@example.test", []string{"a@r.test", "b@r.test"}, hdr); err != nil {
		t.Fatalf("node B, 2 more: %v", err)
	}
	for _, e := range []*env{a, b} {
		if st, err := e.p.AccountRate(ctx, "acme"); err != nil || st.Limit != 6 || st.Remaining != 1 {
			t.Errorf("rate status %+v %v, want 1 of 6 left on every node", st, err)
		}
	}
	// alice's own limit (3 an hour) and the account's last recipient.
	if _, err := a.send(user("alice@example.test"), "alice@example.test", []string{"x@r.test"}, "From: alice@example.test\r\n\r\n"); err != nil {
		t.Fatalf("alice on node A: %v", err)
	}
	tx, _ := b.p.Begin(ctx, user("alice@example.test"))
	if err := tx.Mail(ctx, submit.Mail{From: "alice@example.test"}); code(err) != "4.7.1" {
		t.Fatalf("alice on node B at MAIL, the account's limit reached on node A: %v", err)
	}
	a.clock.Advance(2 * time.Minute)
	b.clock.Advance(2 * time.Minute)
	if _, err := b.send(user("alice@example.test"), "alice@example.test", []string{"x@r.test", "y@r.test"}, "From: alice@example.test\r\n\r\n"); err != nil {
		t.Fatalf("alice on node B a minute later: %v", err)
	}
	if _, err := a.send(user("alice@example.test"), "alice@example.test", []string{"z@r.test"}, "From: alice@example.test\r\n\r\n"); code(err) != "4.7.1" {
		t.Fatalf("alice's 4th recipient in the hour, on node A: %v, want 4.7.1", err)
	}
}

// Reports to a VERP address are consumed; Herald's own DSN to one is
// dropped; a forged token is an unknown user.
func TestFeedbackAddresses(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{VERP: "api"})
	ctx := context.Background()
	res, err := e.send(apiKey("acme"), "app@example.test", []string{"victim@remote.test"}, "From: app@example.test\r\n\r\nx\r\n")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := e.stored(res.ID)
	if !strings.HasPrefix(m.Sender, "bounces+") || !strings.HasSuffix(m.Sender, "@example.test") {
		t.Fatalf("API mail has envelope sender %q, want a VERP address", m.Sender)
	}
	before := e.queued()
	dsnMsg := "From: MAILER-DAEMON@mx.herald.test\r\nSubject: failure\r\n\r\nnot a DSN\r\n"
	if res, err := e.send(system, "", []string{m.Sender}, dsnMsg); err != nil || res.ID != "" {
		t.Fatalf("own DSN to a VERP address: %+v %v, want dropped", res, err)
	}
	if e.queued() != before {
		t.Fatal("Herald's own DSN to a VERP address was queued")
	}
	if res, err := e.send(anonymous, "", []string{m.Sender}, dsnMsg); err != nil || res.Consumed != 1 || res.ID != "" {
		t.Fatalf("report from outside to a VERP address: %+v %v, want consumed", res, err)
	}
	forged := "bounces+" + strings.Repeat("a", 30) + "@example.test"
	tx, _ := e.p.Begin(ctx, anonymous)
	tx.Mail(ctx, submit.Mail{})
	if err := tx.Rcpt(ctx, submit.Recipient{Address: forged}); code(err) != "5.1.1" {
		t.Fatalf("forged VERP address: %v, want 5.1.1", err)
	}
}
