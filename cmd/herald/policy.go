package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// domainPolicy shows or sets a local domain's inbound policy:
// herald domain policy DOMAIN [--dmarc enforce|quarantine|monitor|default]
// [--spf-reject on|off|default] [--mta-sts testing|enforce|none|default].
func (e *cmdEnv) domainPolicy(args []string) error {
	var dmarcMode, spfReject, mtaSTS string
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&dmarcMode, "dmarc", "", "enforce (refuse p=reject failures), quarantine (mark only), monitor (record only) or default")
		fs.StringVar(&spfReject, "spf-reject", "", "on (refuse SPF hard fails at RCPT), off or default")
		fs.StringVar(&mtaSTS, "mta-sts", "", "mode of the MTA-STS policy Herald serves: testing, enforce, none or default (testing)")
	}
	return e.withStore("domain policy", existingStore, args, extra, func(ctx context.Context, st store.Store, pos []string) error {
		if len(pos) != 1 {
			return fmt.Errorf("%w: herald domain policy DOMAIN [--dmarc enforce|quarantine|monitor|default] [--spf-reject on|off|default] [--mta-sts testing|enforce|none|default]", errUsage)
		}
		d, err := smtp.NormalizeDomain(pos[0])
		if err != nil {
			return fmt.Errorf("invalid domain %q", pos[0])
		}
		p, err := st.GetDomainPolicy(ctx, d)
		if err != nil {
			return fmt.Errorf("domain %s: %w", d, err)
		}
		if dmarcMode != "" || spfReject != "" || mtaSTS != "" {
			switch dmarcMode {
			case "", "enforce", "quarantine", "monitor":
				if dmarcMode != "" {
					p.DMARC = dmarcMode
				}
			case "default":
				p.DMARC = ""
			default:
				return fmt.Errorf("%w: --dmarc must be enforce, quarantine, monitor or default", errUsage)
			}
			switch spfReject {
			case "", "on", "off":
				if spfReject != "" {
					p.SPFReject = spfReject
				}
			case "default":
				p.SPFReject = ""
			default:
				return fmt.Errorf("%w: --spf-reject must be on, off or default", errUsage)
			}
			switch mtaSTS {
			case "", "testing", "enforce", "none":
				if mtaSTS != "" {
					p.MTASTS = mtaSTS
				}
			case "default":
				p.MTASTS = ""
			default:
				return fmt.Errorf("%w: --mta-sts must be testing, enforce, none or default", errUsage)
			}
			if err := st.SetDomainPolicy(ctx, d, p); err != nil {
				return fmt.Errorf("domain %s: %w", d, err)
			}
		}
		show := func(v string) string {
			if v == "" {
				return "default ([checks] in the config)"
			}
			return v
		}
		sts := p.MTASTS
		if sts == "" {
			sts = "testing (default)"
		}
		fmt.Fprintf(e.stdout, "domain %s: dmarc %s, spf-reject %s, mta-sts %s\n", d, show(p.DMARC), show(p.SPFReject), sts)
		return nil
	})
}
