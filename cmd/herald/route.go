package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"net/url"

	"github.com/heraldmail/herald/internal/store"
)

// routeCmd manages inbound HTTP routes: mail for a local address (or
// @domain) is POSTed as JSON to a URL instead of a mailbox.
func (e *cmdEnv) routeCmd(args []string) error {
	verb, rest := sub(args)
	var account, secret string
	extra := func(fs *flag.FlagSet) {
		fs.StringVar(&account, "account", store.DefaultAccount, "owning account")
		if verb == "add" {
			fs.StringVar(&secret, "secret", "", "HMAC secret for the signature header (default: generated and printed)")
		}
	}
	return e.withStore("route", modeFor(verb), rest, extra, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			rs, err := st.ListRoutes(ctx, account)
			for _, r := range rs {
				fmt.Fprintf(e.stdout, "%s -> %s %s\n", r.Address, r.Action, r.URL)
			}
			return err
		case verb == "add" && len(pos) == 2:
			addr, err := aliasSource(pos[0])
			if err != nil {
				return err
			}
			u, err := url.Parse(pos[1])
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
				return fmt.Errorf("invalid URL %q: want http(s)://host/path", pos[1])
			}
			if secret == "" {
				var b [24]byte
				rand.Read(b[:])
				secret = "whsec_" + hex.EncodeToString(b[:])
			}
			if err := st.AddRoute(ctx, store.Route{Address: addr, Account: account, Action: "http", URL: u.String(), Secret: secret}); err != nil {
				return fmt.Errorf("route %s: %w", addr, err)
			}
			fmt.Fprintf(e.stdout, "route %s -> %s\nsecret (for Herald-Signature): %s\n", addr, u, secret)
			return nil
		case verb == "del" && len(pos) == 1:
			addr, err := aliasSource(pos[0])
			if err != nil {
				return err
			}
			if err := st.DeleteRoute(ctx, account, addr); err != nil {
				return fmt.Errorf("route %s: %w", addr, err)
			}
			fmt.Fprintf(e.stdout, "route %s: deleted\n", addr)
			return nil
		}
		return fmt.Errorf("%w: herald route add ADDRESS URL [--account A] [--secret S], route list [--account A], route del ADDRESS [--account A]", errUsage)
	})
}
