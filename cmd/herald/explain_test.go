package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/storetest"
)

// herald queue explain: the sentences and the recipient table of a
// deferred message, its JSON, the account filter and an unknown ID.
func TestQueueExplain(t *testing.T) {
	c := newCLI(t, "[queue]\nmax_lifetime = \"48h\"\n")
	st := c.store()
	ctx := context.Background()
	received := time.Now().UTC().Truncate(time.Second)
	m := storetest.NewMessage(received, "bob@example.org", "amy@example.org")
	m.Account = "acme"
	storetest.Enqueue(t, st, m, []byte("Subject: x\r\n\r\nhi\r\n"), time.Time{})
	next := received.Add(15 * time.Minute)
	if err := st.Update(ctx, m.ID, "", []store.Outcome{{RecipientID: m.Recipients[0].ID, Status: store.StatusDeferred, NextAttempt: next,
		Reply: "421 4.7.0 Try again later", RemoteMTA: "mx.example.org", Enhanced: "4.7.0"}}); err != nil {
		t.Fatal(err)
	}
	if err := st.AddSuppression(ctx, store.Suppression{Account: "acme", Address: "amy@example.org", Reason: store.SuppressManual, Created: received}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	out := c.ok("", "queue", "explain", m.ID)
	t.Log(out)
	for _, want := range []string{
		"Message " + m.ID + ": deferred",
		`bob@example.org: waiting for example.org: the last attempt at`,
		`got "421 4.7.0 Try again later" from mx.example.org; next attempt at ` + next.Format("2006-01-02 15:04:05 UTC"),
		"amy@example.org: waiting for its first attempt, due now.",
		"amy@example.org is on the account's suppression list",
		"The message expires on " + received.Add(48*time.Hour).Format("2006-01-02 15:04:05 UTC"),
		"RECIPIENT", "bob@example.org  deferred", next.Format(time.DateTime), "421 4.7.0 Try again later",
		"amy@example.org  queued", "due now",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("queue explain does not say %q:\n%s", want, out)
		}
	}
	if !strings.Contains(out, "yes") {
		t.Errorf("the table does not mark the suppressed recipient:\n%s", out)
	}

	var x explain.Explanation
	if err := json.Unmarshal([]byte(c.ok("", "queue", "explain", m.ID, "--json")), &x); err != nil {
		t.Fatal(err)
	}
	if x.State != explain.StateDeferred || x.Account != "acme" || len(x.Recipients) != 2 || x.Recipients[0].Enhanced != "4.7.0" || !x.Recipients[1].Suppressed {
		t.Errorf("--json: %+v", x)
	}
	c.ok("", "queue", "explain", m.ID, "--account", "acme")
	c.fails(1, "not found", "queue", "explain", m.ID, "--account", "beta")
	c.fails(1, "not found", "queue", "explain", "NOSUCHMESSAGE")
	c.fails(2, "herald queue explain ID", "queue", "explain")
}
