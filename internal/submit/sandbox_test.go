package submit_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
)

func (e *env) sandbox(id submit.Identity, from string, rcpts []string, msg string) (submit.SandboxResult, error) {
	e.t.Helper()
	req := &submit.Request{Identity: id, From: from, Body: strings.NewReader(msg), Tags: []string{"t1"}, Metadata: map[string]string{"k": "v"}}
	for _, r := range rcpts {
		req.Recipients = append(req.Recipients, submit.Recipient{Address: r})
	}
	return e.p.Sandbox(context.Background(), req)
}

// A sandbox send is checked like a real one, signed and completed in
// memory, charged to the rate limits, records one "sandboxed" event per
// recipient and queues nothing.
func TestSandbox(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	ctx := context.Background()
	if err := e.st.AddSuppression(ctx, store.Suppression{Account: "acme", Address: "gone@remote.test", Reason: store.SuppressHardBounce}); err != nil {
		t.Fatal(err)
	}
	if err := e.st.UpdateAccountLimits(ctx, "acme", store.AccountLimits{PerMinute: 3}); err != nil {
		t.Fatal(err)
	}
	res, err := e.sandbox(apiKey("acme"), "app@example.test", []string{"gone@remote.test", "ok@remote.test", "team@example.test"},
		"From: App <app@example.test>\r\nSubject: hi\r\n\r\nbody\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if res.ID == "" || strings.Join(res.Recipients, ",") != "ok@remote.test,alice@example.test,bob@example.test" ||
		strings.Join(res.Suppressed, ",") != "gone@remote.test" {
		t.Fatalf("result %+v", res)
	}
	msg := string(res.Message)
	for _, want := range []string{"DKIM-Signature: ", "d=example.test", "Message-ID: <", "Date: ", "Subject: hi\r\n", "\r\n\r\nbody\r\n"} {
		if !strings.Contains(msg, want) {
			t.Errorf("rendered message lacks %q:\n%s", want, msg)
		}
	}
	if !strings.HasPrefix(msg, "DKIM-Signature: ") {
		t.Errorf("the signature is not prepended:\n%s", msg)
	}
	if res.Rate.Limit != 3 || res.Rate.Remaining != 1 {
		t.Errorf("rate after 2 accepted recipients: %+v, want 1 of 3 left", res.Rate)
	}
	if n := e.queued(); n != 0 {
		t.Fatalf("%d messages queued by a sandbox send", n)
	}
	evs, err := e.st.ListEvents(ctx, store.EventFilter{Account: "acme", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, ev := range evs {
		if ev.Type != store.EventSandboxed || ev.MessageID != res.ID || ev.Sender != "app@example.test" ||
			len(ev.Tags) != 1 || ev.Tags[0] != "t1" || ev.Metadata["k"] != "v" {
			t.Errorf("event %+v", ev)
		}
		got[ev.Recipient] = ev.Reply
	}
	if len(got) != 4 || !strings.Contains(got["gone@remote.test"], "suppression list") || !strings.Contains(got["ok@remote.test"], "would queue") {
		t.Errorf("sandboxed events %v", got)
	}

	// What a real send would be refused for, the sandbox is refused for,
	// recording nothing.
	for _, c := range []struct {
		name, from, msg, want string
		rcpts                 []string
	}{
		{"sender of another account", "ceo@bank.test", "From: ceo@bank.test\r\n\r\nx\r\n", "5.7.1", []string{"a@remote.test"}},
		{"unknown simulator address", "app@example.test", "From: app@example.test\r\n\r\nx\r\n", "5.1.1", []string{"nobody@simulator.herald.invalid"}},
		{"From of another account", "app@example.test", "From: ceo@bank.test\r\n\r\nx\r\n", "5.7.1", []string{"a@remote.test"}},
		{"over the rate limit", "app@example.test", "From: app@example.test\r\n\r\nx\r\n", "4.7.1", []string{"a@remote.test", "b@remote.test"}},
	} {
		if _, err := e.sandbox(apiKey("acme"), c.from, c.rcpts, c.msg); code(err) != c.want {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}
	evs, _ = e.st.ListEvents(ctx, store.EventFilter{Account: "acme", Limit: 100})
	if len(evs) != 4 || e.queued() != 0 {
		t.Errorf("refused sandbox sends left %d events, %d queued", len(evs), e.queued())
	}
}

// Simulator addresses need no local domain: identities that relay send
// to them, suppressed@ (with any +tag) is on every suppression list, an
// unknown local part is refused, and peers from outside may not use them.
func TestSimulatorRecipients(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	ctx := context.Background()
	res, err := e.send(apiKey("acme"), "app@example.test",
		[]string{"delivered@simulator.herald.invalid", "bounce+1@simulator.herald.invalid", "Suppressed+x@Simulator.Herald.Invalid"},
		"From: app@example.test\r\n\r\nx\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if res.Queued != 2 || len(res.Suppressed) != 1 {
		t.Fatalf("result %+v; want 2 queued, suppressed@ skipped", res)
	}
	evs, _ := e.st.ListEvents(ctx, store.EventFilter{Account: "acme", Types: []string{store.EventSuppressed}})
	if len(evs) != 1 || evs[0].Recipient != "suppressed+x@simulator.herald.invalid" || evs[0].MessageID != res.ID {
		t.Fatalf("suppressed events %+v", evs)
	}
	tx, _ := e.p.Begin(ctx, user("alice@example.test"))
	tx.Mail(ctx, submit.Mail{From: "alice@example.test"})
	if err := tx.Rcpt(ctx, submit.Recipient{Address: "complaint@simulator.herald.invalid"}); err != nil {
		t.Errorf("submission user to complaint@: %v", err)
	}
	if err := tx.Rcpt(ctx, submit.Recipient{Address: "suppressed@simulator.herald.invalid"}); !errors.Is(err, submit.ErrSuppressed) {
		t.Errorf("submission user to suppressed@: %v, want suppressed", err)
	}
	if err := tx.Rcpt(ctx, submit.Recipient{Address: "typo@simulator.herald.invalid"}); code(err) != "5.1.1" {
		t.Errorf("unknown simulator address: %v, want 5.1.1", err)
	}
	tx, _ = e.p.Begin(ctx, anonymous)
	tx.Mail(ctx, submit.Mail{From: "x@peer.test"})
	if err := tx.Rcpt(ctx, submit.Recipient{Address: "delivered@simulator.herald.invalid"}); code(err) != "5.7.1" {
		t.Errorf("anonymous peer to the simulator: %v, want relay denied", err)
	}
}
