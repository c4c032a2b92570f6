package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// `herald alert` lists the rules (with the configuration's changes),
// silences and unsilences them in the store, and shows the history.
func TestAlertCommands(t *testing.T) {
	t.Parallel()
	c := newCLI(t, "[alerts.rules.bounce_rate]\nthreshold = \"2%\"\n[alerts.rules.gmail]\nkind = \"deferral_rate\"\ndestination = \"gmail.com\"\n")
	c.fails(66, "holds no store", "alert", "list")
	st := c.store()
	ctx := context.Background()
	now := time.Now()
	if _, ok, err := st.TransitionAlert(ctx, store.AlertState{Key: "bounce_rate", Rule: "bounce_rate", Firing: true, Since: now.Add(-time.Hour),
		Value: 0.1, Detail: "30 bounced of 300 sent\x1b[2J"}, 0); err != nil || !ok {
		t.Fatal(ok, err)
	}
	st.Close()
	out := c.ok("", "alert", "list")
	for _, want := range []string{"bounce_rate      FIRING", "bounce rate above 2 % over 1h (at least 100 sent)",
		"gmail            ok", "deferral rate of gmail.com above 30 %", "complaint_rate   ok", "Firing:\n  bounce_rate since "} {
		if !strings.Contains(out, want) {
			t.Errorf("alert list lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "\x1b") {
		t.Errorf("alert list writes control characters:\n%q", out)
	}
	if out := c.ok("", "alert", "silence", "bounce_rate", "--for", "3h", "--reason", "migration"); !strings.HasPrefix(out, "bounce_rate silenced until ") {
		t.Errorf("silence: %s", out)
	}
	out = c.ok("", "alert", "list")
	if !strings.Contains(out, "(migration)") {
		t.Errorf("silence not listed:\n%s", out)
	}
	c.ok("", "alert", "unsilence", "bounce_rate")
	if out := c.ok("", "alert", "list"); strings.Contains(out, "migration") {
		t.Errorf("unsilenced rule still silenced:\n%s", out)
	}
	c.fails(2, `no rule "nope"`, "alert", "silence", "nope")
	c.fails(2, "--for must be between", "alert", "silence", "bounce_rate", "--for", "2000h")
	c.fails(2, "usage", "alert", "frobnicate")
	out = c.ok("", "alert", "history")
	if !strings.Contains(out, "FIRING  bounce_rate  host.example") || !strings.Contains(out, "30 bounced of 300 sent") {
		t.Errorf("history:\n%s", out)
	}
	if out := c.ok("", "alert", "history", "disk_free"); strings.Contains(out, "bounce_rate") {
		t.Errorf("history of disk_free shows bounce_rate:\n%s", out)
	}
}
