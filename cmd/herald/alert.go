package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldmail/herald/internal/alert"
	"github.com/heraldmail/herald/internal/store"
)

// maxSilence bounds `herald alert silence --for`: a forgotten silence must
// end.
const maxSilence = 30 * 24 * time.Hour

// alertCmd lists the alert rules with their state, silences and unsilences
// rules, and shows the history of transitions (kept in the store, shared
// by every node).
func (e *cmdEnv) alertCmd(args []string) error {
	verb, rest := sub(args)
	var dur *time.Duration
	var reason *string
	var limit *int
	extra := func(fs *flag.FlagSet) {
		switch verb {
		case "silence":
			dur = fs.Duration("for", 2*time.Hour, "how long the rule stays silent")
			reason = fs.String("reason", "", "why, shown by herald alert list")
		case "history":
			limit = fs.Int("n", 50, "transitions shown, newest first")
		}
	}
	cfg, pos, err := e.flags("alert", rest, extra)
	if err != nil {
		return err
	}
	rules := alert.Rules(cfg.Alerts.Rules)
	known := func(name string) error {
		for _, r := range rules {
			if r.Name == name {
				return nil
			}
		}
		return fmt.Errorf("%w: no rule %q (herald alert list shows them)", errUsage, name)
	}
	switch {
	case verb == "list" && len(pos) == 0:
	case (verb == "silence" || verb == "unsilence") && len(pos) == 1:
		if err := known(pos[0]); err != nil {
			return err
		}
		if verb == "silence" && (*dur <= 0 || *dur > maxSilence) {
			return fmt.Errorf("%w: --for must be between 1s and %s", errUsage, maxSilence)
		}
	case verb == "history" && len(pos) <= 1:
		if *limit < 1 || *limit > 10000 {
			return fmt.Errorf("%w: -n must be between 1 and 10000", errUsage)
		}
	default:
		return fmt.Errorf("%w: herald alert list | silence RULE [--for 2h] [--reason TEXT] | unsilence RULE | history [RULE] [-n N]", errUsage)
	}
	return e.useStore(cfg, existingStore, pos, func(ctx context.Context, st store.Store, pos []string) error {
		now := time.Now()
		switch verb {
		case "silence":
			until := now.Add(*dur)
			if err := st.SilenceAlert(ctx, store.AlertSilence{Rule: pos[0], Until: until, Reason: *reason, Created: now}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s silenced until %s\n", pos[0], until.UTC().Format(time.RFC3339))
			return nil
		case "unsilence":
			if err := st.SilenceAlert(ctx, store.AlertSilence{Rule: pos[0]}); err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "%s notifies again\n", pos[0])
			return nil
		case "history":
			rule := ""
			if len(pos) == 1 {
				rule = pos[0]
			}
			h, err := st.AlertHistory(ctx, rule, *limit)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TIME\tSTATE\tALERT\tNODE\tDETAIL")
			for _, ev := range h {
				state := "resolved"
				if ev.Firing {
					state = "FIRING"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", ev.Time.UTC().Format(time.RFC3339), state, clean(ev.Key), clean(ev.Node), clean(ev.Detail))
			}
			return tw.Flush()
		}
		return e.listAlerts(ctx, st, rules, now)
	})
}

// listAlerts prints every rule, its state and silence, then what fires.
func (e *cmdEnv) listAlerts(ctx context.Context, st store.Store, rules []alert.Rule, now time.Time) error {
	v, err := alert.Overview(ctx, st, rules, now, 0)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tSTATE\tSILENCED UNTIL\tWATCHES")
	for _, r := range v.Rules {
		state := "ok"
		switch n := len(r.Firing); {
		case !r.Enabled:
			state = "disabled"
		case n == 1:
			state = "FIRING"
		case n > 1:
			state = fmt.Sprintf("FIRING (%d)", n)
		}
		until := "-"
		if r.SilencedUntil != nil {
			until = r.SilencedUntil.Format(time.RFC3339)
			if r.SilenceReason != "" {
				until += " (" + clean(r.SilenceReason) + ")"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, state, until, r.Description)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	first := true
	for _, r := range v.Rules {
		for _, f := range r.Firing {
			if first {
				fmt.Fprintln(e.stdout, "\nFiring:")
				first = false
			}
			fmt.Fprintf(e.stdout, "  %s since %s: %s\n", clean(f.Alert), f.Since.Format(time.RFC3339), clean(f.Detail))
		}
	}
	return nil
}

// clean keeps stored text (which may come from outside: a destination's
// name, a DNS record) from writing control characters to the terminal.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return '?'
		}
		return r
	}, s)
}
