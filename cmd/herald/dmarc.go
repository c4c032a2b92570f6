package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/store"
)

// dmarcCmd shows the DMARC aggregate reports received for our domains (by
// every node: they are kept in the store): who sends mail as the domain,
// from where, and whether it passed.
func (e *cmdEnv) dmarcCmd(args []string) error {
	verb, rest := sub(args)
	cfg, pos, err := e.flags("dmarc", rest, nil)
	if err != nil {
		return err
	}
	if verb != "reports" || len(pos) > 1 {
		return fmt.Errorf("%w: herald dmarc reports [DOMAIN]", errUsage)
	}
	return e.useStore(cfg, existingStore, pos, func(ctx context.Context, st store.Store, pos []string) error {
		domain := ""
		if len(pos) == 1 {
			domain = pos[0]
		}
		kept, err := st.ListDMARCReports(ctx, domain)
		if err != nil {
			return err
		}
		reps := make([]*dmarcreport.Report, 0, len(kept))
		for _, k := range kept {
			var r dmarcreport.Report
			if err := json.Unmarshal(k.Data, &r); err != nil {
				return fmt.Errorf("DMARC report %s from %s: %w", k.ReportID, k.Reporter, err)
			}
			reps = append(reps, &r)
		}
		e.printDMARCReports(reps)
		return nil
	})
}

// printDMARCReports prints one line per record, oldest report first.
func (e *cmdEnv) printDMARCReports(reps []*dmarcreport.Report) {
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tPERIOD\tREPORTER\tSOURCE IP\tCOUNT\tDISPOSITION\tDKIM\tSPF\tHEADER FROM")
	var total, failing int64
	for _, r := range reps {
		period := r.Begin.UTC().Format("2006-01-02") + ".." + r.End.UTC().Format("01-02")
		for _, rec := range r.Records {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.Policy.Domain, period, r.OrgName,
				rec.SourceIP, rec.Count, rec.Disposition, rec.DKIM, rec.SPF, rec.HeaderFrom)
			total += rec.Count
			if rec.DKIM != "pass" && rec.SPF != "pass" {
				failing += rec.Count
			}
		}
	}
	tw.Flush()
	fmt.Fprintf(e.stdout, "%d report(s), %d message(s), %d failing DMARC\n", len(reps), total, failing)
}
