package main

import (
	"fmt"
	"sort"
	"text/tabwriter"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
)

// dmarcCmd shows the DMARC aggregate reports received for our domains:
// who sends mail as the domain, from where, and whether it passed.
func (e *cmdEnv) dmarcCmd(args []string) error {
	verb, rest := sub(args)
	cfg, pos, err := e.flags("dmarc", rest, nil)
	if err != nil {
		return err
	}
	if verb != "reports" || len(pos) > 1 {
		return fmt.Errorf("%w: herald dmarc reports [DOMAIN]", errUsage)
	}
	domain := ""
	if len(pos) == 1 {
		domain = pos[0]
	}
	reps, err := dmarcreport.Load(app.DMARCReportDir(cfg), domain)
	if err != nil {
		return err
	}
	sort.Slice(reps, func(i, j int) bool { return reps[i].Begin.Before(reps[j].Begin) })
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
	return nil
}
