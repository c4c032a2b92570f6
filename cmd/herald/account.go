package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// accountCmd manages accounts (tenants): herald account add|list|del|limits.
func (e *cmdEnv) accountCmd(args []string) error {
	verb, rest := sub(args)
	var name string
	var perMinute, perHour, perDay int
	var force bool
	extra := func(fs *flag.FlagSet) {
		switch verb {
		case "add":
			fs.StringVar(&name, "name", "", "display name")
		case "del":
			fs.BoolVar(&force, "force", false, "delete even while the account owns domains or users or has queued messages: "+
				"domains and users go back to the default account, queued messages are deleted")
		case "limits":
			fs.IntVar(&perMinute, "per-minute", -1, "messages per minute (0: unlimited; unset: unchanged)")
			fs.IntVar(&perHour, "per-hour", -1, "messages per hour (0: unlimited; unset: unchanged)")
			fs.IntVar(&perDay, "per-day", -1, "messages per day (0: unlimited; unset: unchanged)")
		}
	}
	return e.withStore("account", modeFor(verb), rest, extra, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			as, err := st.ListAccounts(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tPER MINUTE\tPER HOUR\tPER DAY\tDOMAINS")
			for _, a := range as {
				ds, err := st.ListAccountDomains(ctx, a.ID)
				if err != nil {
					return err
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", a.ID, a.Name, limitText(a.Limits.PerMinute),
					limitText(a.Limits.PerHour), limitText(a.Limits.PerDay), strings.Join(ds, ","))
			}
			return tw.Flush()
		case verb == "add" && len(pos) == 1:
			id := pos[0]
			if !httpapi.ValidAccountID(id) {
				return fmt.Errorf("invalid account ID %q: 1 to 63 characters of a-z, 0-9 and '-'", id)
			}
			if err := st.AddAccount(ctx, store.Account{ID: id, Name: name, Created: time.Now()}); err != nil {
				return fmt.Errorf("account %s: %w", id, err)
			}
			fmt.Fprintf(e.stdout, "account %s: added\n", id)
			return nil
		case verb == "del" && len(pos) == 1:
			del, err := st.DeleteAccount(ctx, pos[0], force)
			var inUse *store.AccountInUseError
			switch {
			case errors.As(err, &inUse):
				return fmt.Errorf("account %s still owns %s and %s and has %s: "+
					"assign the domains elsewhere (herald domain assign DOMAIN ACCOUNT) and let the queue drain, "+
					"or use --force (domains and users go back to the default account, queued messages are deleted): %w",
					pos[0], count(inUse.Domains, "domain", "domains"), count(inUse.Users, "user", "users"),
					count(inUse.Messages, "queued message", "queued messages"), err)
			case errors.Is(err, store.ErrExists):
				return fmt.Errorf("account %s cannot be deleted: %w", pos[0], err)
			case err != nil:
				return fmt.Errorf("account %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "account %s: deleted (%s", pos[0], count(del.Events, "event", "events"))
			if force {
				fmt.Fprintf(e.stdout, ", %s; %s and %s back to %s", count(del.Messages, "queued message", "queued messages"),
					count(del.Domains, "domain", "domains"), count(del.Users, "user", "users"), store.DefaultAccount)
			}
			fmt.Fprintln(e.stdout, ")")
			if del.Pending {
				fmt.Fprintf(e.stderr, "account %s: the rest of its events is deleted by the server's next hourly prune\n", pos[0])
			}
			return nil
		case verb == "limits" && len(pos) == 1:
			a, err := st.GetAccount(ctx, pos[0])
			if err != nil {
				return fmt.Errorf("account %s: %w", pos[0], err)
			}
			if perMinute < 0 && perHour < 0 && perDay < 0 {
				fmt.Fprintf(e.stdout, "account %s: per minute %s, per hour %s, per day %s\n", a.ID,
					limitText(a.Limits.PerMinute), limitText(a.Limits.PerHour), limitText(a.Limits.PerDay))
				return nil
			}
			l := a.Limits
			for _, p := range []struct{ src, dst *int }{{&perMinute, &l.PerMinute}, {&perHour, &l.PerHour}, {&perDay, &l.PerDay}} {
				if *p.src >= 0 {
					*p.dst = *p.src
				}
			}
			if err := st.UpdateAccountLimits(ctx, a.ID, l); err != nil {
				return fmt.Errorf("account %s: %w", a.ID, err)
			}
			fmt.Fprintf(e.stdout, "account %s: per minute %s, per hour %s, per day %s\n", a.ID,
				limitText(l.PerMinute), limitText(l.PerHour), limitText(l.PerDay))
			return nil
		}
		return fmt.Errorf("%w: herald account add ID [--name N], account list, account del ID [--force], account limits ID [--per-minute N] [--per-hour N] [--per-day N]", errUsage)
	})
}

// count renders n with the singular or plural noun.
func count(n int, one, many string) string {
	return fmt.Sprintf("%d %s", n, dnsPlural(n, one, many))
}

func limitText(n int) string {
	if n == 0 {
		return "unlimited"
	}
	return fmt.Sprint(n)
}

// apikeyCmd manages HTTP API keys: herald apikey add|list|del.
func (e *cmdEnv) apikeyCmd(args []string) error {
	verb, rest := sub(args)
	var scope, name string
	extra := func(fs *flag.FlagSet) {
		if verb == "add" {
			fs.StringVar(&scope, "scope", "", "comma-separated scopes: send, read, admin (admin of the default account: operator)")
			fs.StringVar(&name, "name", "", "a label for the key")
		}
	}
	return e.withStore("apikey", modeFor(verb), rest, extra, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "add" && len(pos) == 1:
			acct := pos[0]
			if _, err := st.GetAccount(ctx, acct); err != nil {
				return fmt.Errorf("account %s: %w", acct, err)
			}
			scopes, err := httpapi.ParseScopes(strings.Split(scope, ","))
			if scope == "" {
				err = errors.New("give --scope send,read or admin")
			}
			if err != nil {
				return fmt.Errorf("%w: %v", errUsage, err)
			}
			token, id, hash := httpapi.NewToken()
			k := store.APIKey{ID: id, Account: acct, Name: name, Scopes: scopes, SecretHash: hash, Created: time.Now()}
			if err := st.AddAPIKey(ctx, k); err != nil {
				return fmt.Errorf("API key: %w", err)
			}
			fmt.Fprintln(e.stdout, token)
			fmt.Fprintf(e.stderr, "API key %s for account %s (%s): the token above is shown only now; keep it safe\n", id, acct, strings.Join(scopes, ","))
			return nil
		case verb == "list" && len(pos) == 1:
			ks, err := st.ListAPIKeys(ctx, pos[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tNAME\tSCOPES\tCREATED\tLAST USED")
			for _, k := range ks {
				last := "never"
				if !k.LastUsed.IsZero() {
					last = k.LastUsed.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Name, strings.Join(k.Scopes, ","), k.Created.UTC().Format(time.RFC3339), last)
			}
			return tw.Flush()
		case verb == "del" && len(pos) == 2:
			if err := st.DeleteAPIKey(ctx, pos[0], pos[1]); err != nil {
				return fmt.Errorf("API key %s of account %s: %w", pos[1], pos[0], err)
			}
			fmt.Fprintf(e.stdout, "API key %s: deleted\n", pos[1])
			return nil
		}
		return fmt.Errorf("%w: herald apikey add ACCOUNT --scope send,read,admin [--name N], apikey list ACCOUNT, apikey del ACCOUNT ID", errUsage)
	})
}

// domainAssign gives a domain to an account: herald domain assign DOMAIN ACCOUNT.
func (e *cmdEnv) domainAssign(args []string) error {
	return e.withStore("domain", existingStore, args, nil, func(ctx context.Context, st store.Store, pos []string) error {
		if len(pos) != 2 {
			return fmt.Errorf("%w: herald domain assign DOMAIN ACCOUNT", errUsage)
		}
		d, err := smtp.NormalizeDomain(pos[0])
		if err != nil {
			return fmt.Errorf("invalid domain %q", pos[0])
		}
		if err := st.SetDomainAccount(ctx, d, pos[1]); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				return fmt.Errorf("domain %s or account %s unknown (herald domain add %s, herald account add %s): %w", d, pos[1], d, pos[1], err)
			}
			return fmt.Errorf("domain %s: %w", d, err)
		}
		fmt.Fprintf(e.stdout, "domain %s: assigned to account %s\n", d, pos[1])
		return nil
	})
}
