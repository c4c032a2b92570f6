package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/store"
)

// queueExplain is `herald queue explain ID`: where a message is and why,
// in sentences and a table of its recipients (or the JSON of GET
// /v1/messages/{id}/explain with --json). The operator sees every
// account's messages; --account limits the look to one account's.
func (e *cmdEnv) queueExplain(args []string) error {
	var asJSON bool
	var account string
	extra := func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print the explanation as JSON (as the HTTP API returns it)")
		fs.StringVar(&account, "account", "", "explain only a message of this account")
	}
	return e.withStore("queue explain", existingStore, args, extra, func(ctx context.Context, st store.Store, pos []string) error {
		if len(pos) != 1 {
			return fmt.Errorf("%w: herald queue explain ID [--account A] [--json]", errUsage)
		}
		est, err := app.ExplainStore(st)
		if err != nil {
			return err
		}
		x, err := explain.New(est, app.ExplainConfig(e.cfg), nil).Explain(ctx, pos[0], account)
		if errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("message %s: not found in the queue or the event log", pos[0])
		}
		if err != nil {
			return err
		}
		if asJSON {
			enc := json.NewEncoder(e.stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(x)
		}
		e.printExplanation(x)
		return nil
	})
}

func (e *cmdEnv) printExplanation(x *explain.Explanation) {
	fmt.Fprintf(e.stdout, "Message %s: %s\n", x.ID, x.State)
	for _, s := range x.Summary {
		fmt.Fprintf(e.stdout, "  %s\n", s)
	}
	fmt.Fprintln(e.stdout)
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECIPIENT\tSTATUS\tATTEMPTS\tNEXT ATTEMPT\tDESTINATION\tSUPPRESSED\tLAST REPLY")
	for _, r := range x.Recipients {
		next := "-"
		switch {
		case r.Lease != nil && !r.Lease.Expired:
			next = "in delivery (" + r.Lease.Node + ")"
		case r.NextAttempt != nil && r.Due:
			next = "due now"
		case r.NextAttempt != nil:
			next = r.NextAttempt.Format(time.DateTime)
		}
		dest := r.Destination
		if t := r.Throttle; t != nil {
			dest += fmt.Sprintf(" (%.0f %%", t.Factor*100)
			if t.PausedUntil != nil && t.PausedUntil.After(x.Now) {
				dest += ", paused until " + t.PausedUntil.Format(time.TimeOnly)
			}
			dest += ")"
		}
		sup := "no"
		if r.Suppressed {
			sup = "yes"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Address, r.Status, r.Attempts, next, dest, sup,
			truncate(strings.Join(strings.Fields(r.LastReply), " "), 60))
	}
	tw.Flush()
}
