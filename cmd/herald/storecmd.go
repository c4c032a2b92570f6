package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/term"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
)

// storeCmd runs herald store migrate|copy.
func (e *cmdEnv) storeCmd(args []string) error {
	verb, rest := sub(args)
	switch verb {
	case "migrate":
		return e.storeMigrate(rest)
	case "copy":
		return e.storeCopy(rest)
	}
	return fmt.Errorf("%w: herald store migrate | herald store copy --to postgres://... [--replace]", errUsage)
}

// storeMigrate applies the pending schema migrations and says from which
// version to which.
func (e *cmdEnv) storeMigrate(args []string) error {
	cfg, pos, err := e.flags("store migrate", args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: store migrate takes no arguments", errUsage)
	}
	from, to, err := app.MigrateStore(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		return err
	}
	where := cfg.Server.DataDir + "/herald.db"
	if cfg.Store.URL != "" {
		where = postgres.Redact(cfg.Store.URL)
	}
	if from == to {
		fmt.Fprintf(e.stdout, "store %s: schema version %d, up to date\n", where, to)
	} else {
		fmt.Fprintf(e.stdout, "store %s: schema migrated from version %d to %d\n", where, from, to)
	}
	return nil
}

// storeCopy copies the store into another and prints the counts per kind.
func (e *cmdEnv) storeCopy(args []string) error {
	var to string
	var replace bool
	cfg, pos, err := e.flags("store copy", args, func(fs *flag.FlagSet) {
		fs.StringVar(&to, "to", "", "destination: postgres://... URL, or a data directory")
		fs.BoolVar(&replace, "replace", false, "overwrite the destination's VERP key, DKIM keys and events where they differ")
	})
	if err != nil {
		return err
	}
	if len(pos) > 0 || to == "" {
		return fmt.Errorf("%w: herald store copy --to postgres://USER@HOST/DB [--replace]", errUsage)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	opts := store.CopyOptions{Replace: replace}
	clearLine := func() {}
	if f, ok := e.stderr.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		// Progress for a person watching, at most every second.
		var last time.Time
		opts.Progress = func(kind string, seen int) {
			if time.Since(last) >= time.Second {
				last = time.Now()
				fmt.Fprintf(e.stderr, "\rherald: copying %s: %d   ", kind, seen)
			}
		}
		clearLine = func() { fmt.Fprint(e.stderr, "\r\033[K") }
	}
	res, err := app.CopyStore(ctx, cfg, to, opts, slog.New(slog.DiscardHandler))
	clearLine()
	for _, n := range res.Notes {
		fmt.Fprintf(e.stderr, "herald: %s\n", n)
	}
	if res.Created {
		fmt.Fprintf(e.stderr, "herald: created a new store in %s\n", res.To)
	}
	if len(res.Counts) > 0 {
		if res.Interrupted {
			fmt.Fprintf(e.stdout, "copy of %s to %s interrupted:\n", res.From, res.To)
		} else {
			fmt.Fprintf(e.stdout, "copied %s to %s:\n", res.From, res.To)
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "kind\tin source\tcopied\talready there\treplaced")
		for _, c := range res.Counts {
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\n", c.Kind, c.Seen, c.Copied, c.Present, c.Replaced)
		}
		tw.Flush()
	}
	return err
}
