package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/privdrop"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/startup"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"golang.org/x/term"
)

// storeMode says whether a command may create the store.
type storeMode int

const (
	// existingStore: the command reads, or changes what must already be
	// there (del, passwd, retry...); a data directory without a store is
	// an error (a wrong --config or server.data_dir, most likely), and
	// nothing is created.
	existingStore storeMode = iota
	// createStore: the command adds something and creates the store if
	// needed, so that a node can be set up before its first start.
	createStore
)

// modeFor is the store mode of a command verb: only adding creates.
func modeFor(verb string) storeMode {
	switch verb {
	case "add", "keygen":
		return createStore
	}
	return existingStore
}

// openStore opens the store of the configuration (app.OpenStore: the
// embedded SQLite store of server.data_dir, or the PostgreSQL database of
// store.url). It works while the server runs: SQLite in WAL mode lets both
// processes in, PostgreSQL is shared anyway, and the server reads the
// directory afresh (within a second), so changes apply without a restart
// (only a second `herald serve` on one data directory is refused, by the
// server's own lock). It reports whether it created a new store. Its
// errors are one line saying what to do, with an exit status
// (internal/startup).
//
// Run as root, a command first becomes server.user (the user herald serve
// runs as, see privdrop.Plan), so that nothing it creates in the data
// directory is root's and unwritable for the server.
func openStore(cfg *config.Config, mode storeMode) (st store.Store, created bool, err error) {
	if err := becomeServerUser(cfg); err != nil {
		return nil, false, err
	}
	return app.OpenStore(cfg, nil, mode == createStore)
}

// becomeServerUser switches a command run as root to server.user, creating
// the data directory for it first if need be.
func becomeServerUser(cfg *config.Config) error {
	acct, _, err := privdrop.Plan(os.Geteuid(), cfg.Server.User)
	if err != nil {
		return startup.User(cfg.Server.User, err)
	}
	if acct == nil {
		return nil
	}
	if cfg.Store.URL == "" {
		if err := os.MkdirAll(cfg.Server.DataDir, 0o750); err != nil {
			return startup.DataDir(cfg.Server.DataDir, err)
		}
		if err := privdrop.Chown(cfg.Server.DataDir, *acct); err != nil {
			return startup.User(acct.Name, err)
		}
	}
	if err := privdrop.Drop(*acct); err != nil {
		return startup.User(acct.Name, err)
	}
	return nil
}

// openStore opens the store for a command and notes on stderr when it
// created a new one (in case the data directory was not the one meant).
func (e *cmdEnv) openStore(cfg *config.Config, mode storeMode) (store.Store, error) {
	st, created, err := openStore(cfg, mode)
	if created && cfg.Store.URL != "" {
		fmt.Fprintf(e.stderr, "herald: created a new store in %s (store.url)\n", postgres.Redact(cfg.Store.URL))
	} else if created {
		fmt.Fprintf(e.stderr, "herald: created a new store in %s (server.data_dir)\n", cfg.Server.DataDir)
	}
	return st, err
}

// withStore parses flags, opens the store and runs f.
func (e *cmdEnv) withStore(name string, mode storeMode, args []string, extra func(*flag.FlagSet), f func(ctx context.Context, st store.Store, pos []string) error) error {
	cfg, pos, err := e.flags(name, args, extra)
	if err != nil {
		return err
	}
	return e.useStore(cfg, mode, pos, f)
}

// useStore opens the store and runs f.
func (e *cmdEnv) useStore(cfg *config.Config, mode storeMode, pos []string, f func(ctx context.Context, st store.Store, pos []string) error) error {
	e.cfg = cfg
	st, err := e.openStore(cfg, mode)
	if err != nil {
		return err
	}
	defer st.Close()
	return f(context.Background(), st, pos)
}

func sub(args []string) (string, []string) {
	if len(args) == 0 {
		return "", nil
	}
	return args[0], args[1:]
}

func (e *cmdEnv) domainCmd(args []string) error {
	verb, rest := sub(args)
	return e.withStore("domain", modeFor(verb), rest, nil, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			ds, err := st.ListDomains(ctx)
			for _, d := range ds {
				fmt.Fprintln(e.stdout, d)
			}
			return err
		case (verb == "add" || verb == "del") && len(pos) == 1:
			d, err := smtp.NormalizeDomain(pos[0])
			if err != nil {
				return fmt.Errorf("invalid domain %q", pos[0])
			}
			if verb == "add" {
				err = st.AddDomain(ctx, d)
			} else {
				err = st.DeleteDomain(ctx, d)
			}
			if err != nil {
				return fmt.Errorf("domain %s: %w", d, err)
			}
			fmt.Fprintf(e.stdout, "domain %s: %s\n", d, map[string]string{"add": "added", "del": "deleted"}[verb])
			return nil
		}
		return fmt.Errorf("%w: herald domain add|del DOMAIN, herald domain list", errUsage)
	})
}

// readPassword reads a password from stdin: without echo on a terminal,
// else the first line.
func (e *cmdEnv) readPassword() (string, error) {
	if f, ok := e.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(e.stderr, "Password: ")
		pw, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(e.stderr)
		if err != nil {
			return "", err
		}
		return string(pw), nil
	}
	line, err := bufio.NewReader(e.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("reading password from stdin: %w", err)
	}
	pw := strings.TrimRight(line, "\r\n")
	if pw == "" {
		return "", exitcode.New(exitcode.DataErr, "empty password: give it on stdin (echo 'a-long-password' | herald user add ...)", nil)
	}
	return pw, nil
}

// newPassword reads a password and checks it against the policy
// (auth.min_password_length).
func (e *cmdEnv) newPassword() (string, error) {
	pw, err := e.readPassword()
	if err != nil {
		return "", err
	}
	if err := auth.CheckNewPassword(pw, e.cfg.Auth.MinPasswordLength); err != nil {
		return "", exitcode.With(exitcode.DataErr, err)
	}
	return pw, nil
}

func (e *cmdEnv) userCmd(args []string) error {
	verb, rest := sub(args)
	var sendAs string
	extra := func(fs *flag.FlagSet) {
		if verb == "add" {
			fs.StringVar(&sendAs, "send-as", "", "comma-separated grants: an address (ceo@example.com) or a whole domain (@example.com); without any, the user sends only as itself and the aliases that deliver to it")
		}
	}
	cfg, pos, err := e.flags("user", rest, extra)
	if err != nil {
		return err
	}
	e.cfg = cfg
	// A new user's address and password are checked before the store is
	// opened (and perhaps created).
	var newPW string
	if verb == "add" && len(pos) == 1 {
		if _, err := smtp.ParseAddress(pos[0]); err != nil {
			return fmt.Errorf("invalid address %q", pos[0])
		}
		if newPW, err = e.newPassword(); err != nil {
			return err
		}
	}
	return e.useStore(cfg, modeFor(verb), pos, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			us, err := st.ListUsers(ctx)
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			for _, u := range us {
				as := strings.Join(u.SendAs, ",")
				if as == "" {
					as = "(itself and its aliases)"
				}
				fmt.Fprintf(tw, "%s\tsend-as %s\n", u.Address, as)
			}
			tw.Flush()
			return err
		case verb == "send-as" && len(pos) >= 1:
			addr, err := smtp.ParseAddress(pos[0])
			if err != nil {
				return fmt.Errorf("invalid address %q", pos[0])
			}
			grants, err := parseSendAs(strings.Join(pos[1:], ","))
			if err != nil {
				return err
			}
			name := strings.ToLower(addr.String())
			if err := st.SetSendAs(ctx, name, grants); err != nil {
				return fmt.Errorf("user %s: %w", name, err)
			}
			if len(grants) == 0 {
				fmt.Fprintf(e.stdout, "user %s: sends only as itself and its aliases\n", name)
			} else {
				fmt.Fprintf(e.stdout, "user %s: may also send as %s\n", name, strings.Join(grants, ", "))
			}
			return nil
		case (verb == "add" || verb == "passwd" || verb == "del") && len(pos) == 1:
			addr, err := smtp.ParseAddress(pos[0])
			if err != nil {
				return fmt.Errorf("invalid address %q", pos[0])
			}
			name := strings.ToLower(addr.String())
			if verb == "del" {
				if err := st.DeleteUser(ctx, name); err != nil {
					return fmt.Errorf("user %s: %w", name, err)
				}
				fmt.Fprintf(e.stdout, "user %s: deleted\n", name)
				return nil
			}
			pw := newPW
			if verb == "passwd" {
				if _, err := st.GetUser(ctx, name); err != nil {
					return fmt.Errorf("user %s: %w", name, err)
				}
				if pw, err = e.newPassword(); err != nil {
					return err
				}
			}
			hash, err := auth.HashPassword(pw)
			if err != nil {
				return err
			}
			if verb == "passwd" {
				if err := st.SetPassword(ctx, name, hash); err != nil {
					return fmt.Errorf("user %s: %w", name, err)
				}
				// A new password ends the user's console logins.
				if _, err := st.DeleteSessionsOf(ctx, store.SessionUser, name); err != nil {
					return fmt.Errorf("user %s: ending its console sessions: %w", name, err)
				}
				fmt.Fprintf(e.stdout, "user %s: password changed\n", name)
				return nil
			}
			if local, err := st.IsLocalDomain(ctx, addr.Domain); err == nil && !local {
				fmt.Fprintf(e.stderr, "warning: %s is not a local domain yet (herald domain add %s)\n", addr.Domain, addr.Domain)
			}
			u := store.User{Address: name, PasswordHash: hash, Created: time.Now()}
			if u.SendAs, err = parseSendAs(sendAs); err != nil {
				return err
			}
			if err := st.AddUser(ctx, u); err != nil {
				return fmt.Errorf("user %s: %w", name, err)
			}
			fmt.Fprintf(e.stdout, "user %s: added\n", name)
			return nil
		}
		return fmt.Errorf("%w: herald user add|passwd|del ADDRESS, herald user send-as ADDRESS [GRANT...], herald user list", errUsage)
	})
}

func (e *cmdEnv) aliasCmd(args []string) error {
	verb, rest := sub(args)
	return e.withStore("alias", modeFor(verb), rest, nil, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			as, err := st.ListAliases(ctx)
			for _, a := range as {
				fmt.Fprintf(e.stdout, "%s -> %s\n", a.Address, strings.Join(a.Targets, ", "))
			}
			return err
		case verb == "add" && len(pos) >= 2:
			src, err := aliasSource(pos[0])
			if err != nil {
				return err
			}
			var targets []string
			for _, t := range pos[1:] {
				a, err := smtp.ParseAddress(t)
				if err != nil {
					return fmt.Errorf("invalid target address %q", t)
				}
				targets = append(targets, a.String())
			}
			if err := st.AddAlias(ctx, store.Alias{Address: src, Targets: targets}); err != nil {
				return fmt.Errorf("alias %s: %w", src, err)
			}
			fmt.Fprintf(e.stdout, "alias %s -> %s\n", src, strings.Join(targets, ", "))
			return nil
		case verb == "del" && len(pos) == 1:
			src, err := aliasSource(pos[0])
			if err != nil {
				return err
			}
			if err := st.DeleteAlias(ctx, src); err != nil {
				return fmt.Errorf("alias %s: %w", src, err)
			}
			fmt.Fprintf(e.stdout, "alias %s: deleted\n", src)
			return nil
		}
		return fmt.Errorf("%w: herald alias add ADDRESS TARGET..., herald alias del ADDRESS, herald alias list", errUsage)
	})
}

// aliasSource validates "user@domain" or "@domain" (catch-all).
func aliasSource(s string) (string, error) {
	if strings.HasPrefix(s, "@") {
		d, err := smtp.NormalizeDomain(s[1:])
		if err != nil {
			return "", fmt.Errorf("invalid catch-all %q", s)
		}
		return "@" + d, nil
	}
	a, err := smtp.ParseAddress(s)
	if err != nil {
		return "", fmt.Errorf("invalid address %q", s)
	}
	return strings.ToLower(a.String()), nil
}

func (e *cmdEnv) queueCmd(args []string) error {
	verb, rest := sub(args)
	if verb == "explain" {
		return e.queueExplain(rest)
	}
	return e.withStore("queue", modeFor(verb), rest, nil, func(ctx context.Context, st store.Store, pos []string) error {
		switch {
		case verb == "list" && len(pos) == 0:
			tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tRECEIVED\tSIZE\tSENDER\tPENDING\tNEXT ATTEMPT\tLAST REPLY")
			after := ""
			total := 0
			for {
				ms, err := st.List(ctx, after, 500)
				if err != nil {
					return err
				}
				for _, m := range ms {
					pending, next, last := 0, time.Time{}, ""
					for _, r := range m.Recipients {
						if !r.Status.Final() {
							pending++
							if next.IsZero() || r.NextAttempt.Before(next) {
								next = r.NextAttempt
							}
							if r.LastReply != "" {
								last = r.LastReply
							}
						}
					}
					sender := m.Sender
					if sender == "" {
						sender = "<>"
					}
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d/%d\t%s\t%s\n", m.ID, m.Received.Format(time.DateTime), m.Size,
						sender, pending, len(m.Recipients), next.Format(time.DateTime), truncate(last, 60))
					after = m.ID
				}
				total += len(ms)
				if len(ms) < 500 {
					break
				}
			}
			tw.Flush()
			fmt.Fprintf(e.stdout, "%d message(s)\n", total)
			return nil
		case verb == "show" && len(pos) == 1:
			m, err := st.Get(ctx, pos[0])
			if err != nil {
				return fmt.Errorf("message %s: %w", pos[0], err)
			}
			e.showMessage(m)
			return nil
		case verb == "retry" && len(pos) == 1:
			if err := st.Retry(ctx, pos[0], time.Now()); err != nil {
				return fmt.Errorf("message %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "message %s: due now\n", pos[0])
			return nil
		case verb == "delete" && len(pos) == 1:
			if err := st.Delete(ctx, pos[0]); err != nil {
				return fmt.Errorf("message %s: %w", pos[0], err)
			}
			fmt.Fprintf(e.stdout, "message %s: deleted\n", pos[0])
			return nil
		}
		return fmt.Errorf("%w: herald queue list, herald queue show|explain|retry|delete ID", errUsage)
	})
}

func (e *cmdEnv) showMessage(m *store.Message) {
	sender := m.Sender
	if sender == "" {
		sender = "<>"
	}
	fmt.Fprintf(e.stdout, "ID:        %s\nReceived:  %s\nSender:    %s\nSize:      %d\nSource:    %s\nClient:    %s (HELO %s)\n",
		m.ID, m.Received.Format(time.RFC3339), sender, m.Size, m.Source, m.ClientIP, m.HELO)
	if m.AuthUser != "" {
		fmt.Fprintf(e.stdout, "User:      %s\n", m.AuthUser)
	}
	if m.EnvID != "" || m.Ret != "" {
		fmt.Fprintf(e.stdout, "DSN:       ENVID=%s RET=%s\n", m.EnvID, m.Ret)
	}
	for _, r := range m.Recipients {
		fmt.Fprintf(e.stdout, "Recipient: %s  status=%s attempts=%d", r.Address, r.Status, r.Attempts)
		if !r.Status.Final() {
			fmt.Fprintf(e.stdout, " next=%s", r.NextAttempt.Format(time.RFC3339))
		}
		if r.LastReply != "" {
			fmt.Fprintf(e.stdout, "\n           last: %s (%s)", r.LastReply, r.RemoteMTA)
		}
		fmt.Fprintln(e.stdout)
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// parseSendAs checks a comma-separated list of SendAs grants: full
// addresses, or "@domain" for a whole domain (a bare "domain" is taken as
// "@domain"). It returns them normalised.
func parseSendAs(list string) ([]string, error) {
	var out []string
	for _, g := range strings.Split(list, ",") {
		g = strings.TrimSpace(g)
		if g == "" {
			continue
		}
		if i := strings.LastIndexByte(g, '@'); i > 0 {
			a, err := smtp.ParseAddress(g)
			if err != nil {
				return nil, fmt.Errorf("send-as: %q is not a valid address", g)
			}
			out = append(out, strings.ToLower(a.String()))
			continue
		}
		d, err := smtp.NormalizeDomain(strings.TrimPrefix(g, "@"))
		if err != nil || strings.HasPrefix(d, "[") {
			return nil, fmt.Errorf("send-as: %q is neither an address nor @domain", g)
		}
		out = append(out, "@"+d)
	}
	return out, nil
}
