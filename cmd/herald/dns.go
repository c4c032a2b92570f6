package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"strings"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/dnscheck"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
)

// dnsCmd runs "herald dns check DOMAIN [--ip ADDR]...": the DNS doctor.
func (e *cmdEnv) dnsCmd(args []string) error {
	const use = "herald dns check DOMAIN [--config FILE] [--ip ADDR]..."
	verb, rest := sub(args)
	if verb != "check" {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	var ips []netip.Addr
	cfg, pos, err := e.flags("dns check", rest, func(fs *flag.FlagSet) {
		fs.Func("ip", "a sending address (repeatable; default delivery.source_ipv4/6, else the hostname's addresses)", func(s string) error {
			for f := range strings.SplitSeq(s, ",") {
				ip, err := netip.ParseAddr(strings.TrimSpace(f))
				if err != nil {
					return fmt.Errorf("bad address %q", f)
				}
				ips = append(ips, ip.Unmap())
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: %s", errUsage, use)
	}
	domain, err := smtp.NormalizeDomain(strings.TrimSuffix(pos[0], "."))
	if err != nil || strings.HasPrefix(domain, "[") {
		return fmt.Errorf("%w: invalid domain %q", errUsage, pos[0])
	}
	r, err := resolve.New(cfg.DNS.Resolver, cfg.DNS.Timeout)
	if err != nil {
		return err
	}
	st, err := e.openStore(cfg, existingStore)
	if err != nil {
		return err
	}
	defer st.Close()
	rep := app.DNSReport(context.Background(), cfg, r, st, domain, ips)
	e.printDNSReport(rep)
	if n := rep.Errors(); n > 0 {
		return fmt.Errorf("dns check %s: %d %s", domain, n, dnsPlural(n, "error", "errors"))
	}
	return nil
}

// printDNSReport prints one line per finding, its fix indented below, and
// a summary.
func (e *cmdEnv) printDNSReport(rep dnscheck.Report) {
	w := e.stdout
	fmt.Fprintf(w, "DNS check of %s (hostname %s, sending from %s)\n", rep.Domain, rep.Hostname, dnsAddrList(rep.SendingIPs))
	ok := 0
	for _, f := range rep.Findings {
		if f.Level == dnscheck.LevelOK {
			ok++
		}
		fmt.Fprintf(w, "%-5s  %s: %s\n", f.Level, f.Check, f.Message)
		if f.Fix != "" {
			fmt.Fprintf(w, "       fix: %s\n", strings.ReplaceAll(f.Fix, "\n", "\n            "))
		}
	}
	nw, ne := rep.Warnings(), rep.Errors()
	fmt.Fprintf(w, "%s: %d OK, %d %s, %d %s\n", rep.Domain, ok, nw, dnsPlural(nw, "warning", "warnings"), ne, dnsPlural(ne, "error", "errors"))
}

func dnsPlural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func dnsAddrList(ips []netip.Addr) string {
	if len(ips) == 0 {
		return "no known address"
	}
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
