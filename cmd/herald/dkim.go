package main

import (
	"context"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

const dkimUsage = "herald dkim keygen DOMAIN [--selector S] [--algorithm rsa|ed25519], " +
	"herald dkim list [DOMAIN], herald dkim record|activate|deactivate|del DOMAIN SELECTOR"

// defaultSelector names a new key after its month and algorithm, so that a
// rotation gets a fresh selector: "herald202611r", "herald202611e".
func defaultSelector(now time.Time, algorithm string) string {
	return "herald" + now.Format("200601") + algorithm[:1]
}

// dkimCmd manages DKIM signing keys. Private keys never leave the store;
// only the public DNS record is printed.
func (e *cmdEnv) dkimCmd(args []string) error {
	verb, rest := sub(args)
	var selector, algorithm string
	extra := func(fs *flag.FlagSet) {
		if verb == "keygen" {
			fs.StringVar(&selector, "selector", "", `selector (default "herald" + YYYYMM + "r" or "e")`)
			fs.StringVar(&algorithm, "algorithm", store.DKIMAlgorithmRSA, "key algorithm: rsa (2048 bits) or ed25519")
		}
	}
	return e.withStore("dkim", modeFor(verb), rest, extra, func(ctx context.Context, st store.Store, pos []string) error {
		var domain, sel string
		if len(pos) > 0 {
			d, err := smtp.NormalizeDomain(pos[0])
			if err != nil || strings.HasPrefix(d, "[") {
				return fmt.Errorf("invalid domain %q", pos[0])
			}
			domain = d
		}
		if len(pos) > 1 {
			sel = strings.ToLower(pos[1])
			if !dkim.ValidSelector(sel) {
				return fmt.Errorf("invalid selector %q", pos[1])
			}
		}
		switch {
		case verb == "keygen" && len(pos) == 1:
			return e.dkimKeygen(ctx, st, domain, selector, algorithm)
		case verb == "list" && len(pos) <= 1:
			return e.dkimList(ctx, st, domain)
		case verb == "record" && len(pos) == 2:
			k, err := st.GetDKIMKey(ctx, domain, sel)
			if err != nil {
				return fmt.Errorf("DKIM key %s of %s: %w", sel, domain, err)
			}
			return e.printDKIMRecord(k)
		case (verb == "activate" || verb == "deactivate" || verb == "del") && len(pos) == 2:
			var err error
			switch verb {
			case "activate":
				err = st.ActivateDKIMKey(ctx, domain, sel)
			case "deactivate":
				err = st.DeactivateDKIMKey(ctx, domain, sel)
			case "del":
				err = st.DeleteDKIMKey(ctx, domain, sel)
			}
			if err != nil {
				return fmt.Errorf("DKIM key %s of %s: %w", sel, domain, err)
			}
			done := map[string]string{"activate": "active", "deactivate": "inactive", "del": "deleted"}[verb]
			fmt.Fprintf(e.stdout, "DKIM key %s of %s: %s\n", sel, domain, done)
			return nil
		}
		return fmt.Errorf("%w: %s", errUsage, dkimUsage)
	})
}

func (e *cmdEnv) dkimKeygen(ctx context.Context, st store.Store, domain, selector, algorithm string) error {
	k, err := newDKIMKey(ctx, st, domain, selector, algorithm, time.Now())
	if err != nil {
		return err
	}
	state := "inactive: publish the record, wait for it to propagate, then run\n  herald dkim activate " + domain + " " + k.Selector
	if k.Active {
		state = "active (the domain's first " + k.Algorithm + " key): mail from " + domain + " is signed with it from now on"
	}
	fmt.Fprintf(e.stdout, "DKIM key %s of %s created, %s\n\nPublish this DNS TXT record:\n\n", k.Selector, domain, state)
	return e.printDKIMRecord(k)
}

// newDKIMKey generates a key of algorithm (rsa: 2048 bits, or ed25519)
// for domain and adds it to the store under selector (""; the default
// selector of now). The domain's first key of an algorithm is active at
// once, so that a new domain signs from its first message; a later one
// (a rotation) stays inactive until its record is published. Used by
// "dkim keygen" and "setup".
func newDKIMKey(ctx context.Context, st store.DKIMKeys, domain, selector, algorithm string, now time.Time) (store.DKIMKey, error) {
	algorithm = strings.ToLower(algorithm)
	if algorithm != store.DKIMAlgorithmRSA && algorithm != store.DKIMAlgorithmEd25519 {
		return store.DKIMKey{}, fmt.Errorf("%w: --algorithm must be rsa or ed25519, not %q", errUsage, algorithm)
	}
	if selector == "" {
		selector = defaultSelector(now, algorithm)
	}
	selector = strings.ToLower(selector)
	if !dkim.ValidSelector(selector) {
		return store.DKIMKey{}, fmt.Errorf("invalid selector %q", selector)
	}
	existing, err := st.ListDKIMKeys(ctx, domain)
	if err != nil {
		return store.DKIMKey{}, err
	}
	first := true
	for _, k := range existing {
		if k.Selector == selector {
			return store.DKIMKey{}, fmt.Errorf("DKIM key %s of %s: %w (choose another --selector)", selector, domain, store.ErrExists)
		}
		if k.Algorithm == algorithm {
			first = false
		}
	}
	priv, err := dkim.GenerateKey(algorithm)
	if err != nil {
		return store.DKIMKey{}, err
	}
	k := store.DKIMKey{Domain: domain, Selector: selector, Algorithm: algorithm, PrivateKey: priv, Active: first, Created: now}
	if err := st.AddDKIMKey(ctx, k); err != nil {
		return store.DKIMKey{}, fmt.Errorf("DKIM key %s of %s: %w", selector, domain, err)
	}
	return k, nil
}

// printDKIMRecord prints a key's public TXT record in zone-file form.
func (e *cmdEnv) printDKIMRecord(k store.DKIMKey) error {
	name, value, err := dkim.DNSRecord(k.Domain, k.Selector, k.PrivateKey)
	if err != nil {
		return fmt.Errorf("DKIM key %s of %s: %w", k.Selector, k.Domain, err)
	}
	fmt.Fprintln(e.stdout, dkim.FormatZoneLine(name, value))
	return nil
}

func (e *cmdEnv) dkimList(ctx context.Context, st store.Store, domain string) error {
	ks, err := st.ListDKIMKeys(ctx, domain)
	if err != nil {
		return err
	}
	if len(ks) == 0 {
		if domain == "" {
			domain = "DOMAIN"
		}
		fmt.Fprintf(e.stderr, "no DKIM keys (create one with: herald dkim keygen %s)\n", domain)
		return nil
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGORITHM\tSTATE\tCREATED")
	for _, k := range ks {
		state := "inactive"
		if k.Active {
			state = "active"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.Domain, k.Selector, k.Algorithm, state, k.Created.Local().Format(time.DateTime))
	}
	return tw.Flush()
}
