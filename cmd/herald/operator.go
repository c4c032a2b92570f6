package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/store"
)

// operatorName is what an operator may be called: a short login name.
var operatorName = regexp.MustCompile(`^[a-z0-9][a-z0-9._@-]{0,63}$`)

// operatorCmd manages the web console's operators (they see every
// account): herald operator add|passwd NAME (password from stdin),
// herald operator del NAME, herald operator list.
func (e *cmdEnv) operatorCmd(args []string) error {
	verb, rest := sub(args)
	cfg, pos, err := e.flags("operator", rest, nil)
	if err != nil {
		return err
	}
	e.cfg = cfg
	usageErr := fmt.Errorf("%w: herald operator add|passwd|del NAME, herald operator list", errUsage)
	switch {
	case verb == "list" && len(pos) == 0:
	case (verb == "add" || verb == "passwd" || verb == "del" || verb == "delete") && len(pos) == 1:
		pos[0] = strings.ToLower(pos[0])
		if !operatorName.MatchString(pos[0]) {
			return fmt.Errorf("invalid operator name %q (1-64 of a-z 0-9 . _ @ -)", pos[0])
		}
	default:
		return usageErr
	}
	var hash string
	if verb == "add" {
		pw, err := e.newPassword()
		if err != nil {
			return err
		}
		if hash, err = auth.HashPassword(pw); err != nil {
			return err
		}
	}
	return e.useStore(cfg, modeFor(verb), pos, func(ctx context.Context, st store.Store, pos []string) error {
		switch verb {
		case "list":
			ops, err := st.ListOperators(ctx)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			for _, o := range ops {
				fmt.Fprintf(tw, "%s\tcreated %s\n", o.Name, o.Created.UTC().Format(time.RFC3339))
			}
			return tw.Flush()
		case "add":
			if err := st.AddOperator(ctx, store.Operator{Name: pos[0], PasswordHash: hash, Created: time.Now()}); err != nil {
				if errors.Is(err, store.ErrExists) {
					return fmt.Errorf("operator %s exists already (herald operator passwd %s)", pos[0], pos[0])
				}
				return fmt.Errorf("operator %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "operator %s: added\n", pos[0])
		case "passwd":
			if _, err := st.GetOperator(ctx, pos[0]); err != nil {
				return fmt.Errorf("operator %s: %w", pos[0], err)
			}
			pw, err := e.newPassword()
			if err != nil {
				return err
			}
			h, err := auth.HashPassword(pw)
			if err != nil {
				return err
			}
			if err := st.SetOperatorPassword(ctx, pos[0], h); err != nil {
				return fmt.Errorf("operator %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "operator %s: password changed, its console sessions ended\n", pos[0])
		default:
			if err := st.DeleteOperator(ctx, pos[0]); err != nil {
				return fmt.Errorf("operator %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "operator %s: deleted, its console sessions ended\n", pos[0])
		}
		return nil
	})
}
