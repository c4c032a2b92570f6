// Command herald is a self-hosted mail server: SMTP receiving and
// submission, a durable queue, delivery by DNS MX with retries and bounces,
// and the tools to run it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/exitcode"
)

const usage = `herald: a secure, self-hosted mail server

Usage:
  herald serve [--config FILE]             run the server (no config: development default)
  herald config check FILE                 validate a configuration file
  herald setup DOMAIN --hostname mail.DOMAIN [--ip ADDR]... [--acme] [--email ADDR]
               [--config FILE] [--data-dir DIR] [--force]
                                           write a production config, create the domain, DKIM keys,
                                           postmaster (password printed once); print the DNS records
  herald domain add|del DOMAIN             manage local domains
  herald domain list
  herald domain policy DOMAIN [--dmarc enforce|quarantine|monitor|default] [--spf-reject on|off|default]
                             [--mta-sts testing|enforce|none|default]
  herald domain assign DOMAIN ACCOUNT      give a domain to an account
  herald account add ID [--name N]         manage accounts (tenants)
  herald account list | del ID [--force]   (--force: give its domains and users back to default, drop its queued mail)
  herald account limits ID [--per-minute N] [--per-hour N] [--per-day N]   (0: unlimited)
  herald apikey add ACCOUNT --scope send,read,admin [--name N]   HTTP API key (token printed once)
  herald apikey list ACCOUNT
  herald apikey del ACCOUNT ID
  herald user add ADDRESS [--send-as LIST] create a user; password read from stdin
  herald user passwd ADDRESS               change a password (read from stdin)
  herald user send-as ADDRESS [GRANT...]   what else it may send as: addresses or @domain
  herald user del ADDRESS
  herald user list
  herald operator add|passwd NAME         web console operator (sees every account); password from stdin
  herald operator del NAME | list
  herald alias add ADDRESS TARGET...       ADDRESS may be @domain (catch-all)
  herald alias del ADDRESS
  herald alias list
  herald dkim keygen|list|record|activate|deactivate|del   DKIM keys (prints the DNS record)
  herald dns check DOMAIN [--ip ADDR]...   check MX, SPF, DKIM, DMARC, PTR, MTA-STS records
  herald route add ADDRESS URL | list | del ADDRESS   POST a local address's mail to a URL
  herald template list | show ID | render ID [--data FILE] [--version N] [--account A]   stored templates
  herald dmarc reports [DOMAIN]            DMARC aggregate reports received for our domains
  herald alert list                        alert rules, their state and silences
  herald alert silence RULE [--for 2h] [--reason TEXT] | unsilence RULE
  herald alert history [RULE] [-n N]       fire and resolve events, newest first
  herald queue list                        show queued messages
  herald queue show|retry|delete ID
  herald queue explain ID [--account A] [--json]   why a message is not delivered yet
  herald trace ID                          a message's whole life from the log file
  herald sendmail [-t] [-i] [-f FROM] [-F NAME] [RCPT...]   sendmail(1) interface
  herald store migrate                     apply pending schema migrations (PostgreSQL: once per upgrade)
  herald store copy --to postgres://... [--replace]   copy everything into another store (node stopped)
  herald backup DEST                       consistent copy of the data directory, server running (SQLite store)
  herald restore SRC [--force]             bring a backup back into the data directory (server stopped)
  herald version

Every command but "config check" accepts --config FILE (or HERALD_CONFIG) to
find the data directory; settings may also come from HERALD_<SECTION>_<KEY>.

Exit status: 0 success, 1 failure, 2 usage; sysexits(3) codes for what an
operator must fix: 65 bad input (a short password), 66 missing input file or
store, 69 port or data directory in use, 70 internal error, 71 OS error,
72 system file missing, 73 cannot create or write the data directory,
67 server.user does not exist, 74 I/O error, 75 store locked (try again),
77 permission denied, 78 configuration error.
`

// version is set by the build (-ldflags "-X main.version=...").
var version = "dev"

// defaultConfig is the configuration file used when neither --config nor
// HERALD_CONFIG names one. Empty (the built-in development defaults) in a
// plain build; the Debian package sets /etc/herald/herald.toml
// (-ldflags "-X main.defaultConfig=...") so that commands and sendmail
// find the installed configuration.
var defaultConfig = ""

// configFile is the configuration file to use without --config.
func configFile() string {
	if v, ok := os.LookupEnv("HERALD_CONFIG"); ok {
		return v
	}
	return defaultConfig
}

func main() {
	// Installed as /usr/sbin/sendmail (symlink), behave as sendmail.
	if base := baseName(os.Args[0]); base == "sendmail" {
		os.Exit(run(append([]string{"sendmail"}, os.Args[1:]...), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// errUsage marks a command-line mistake (exit status 2).
var errUsage = errors.New("usage")

// exitStatus is the status err calls for (see internal/exitcode).
func exitStatus(err error) int {
	if errors.Is(err, errUsage) {
		return exitcode.Usage
	}
	return exitcode.Of(err, exitcode.Failure)
}

// printErr writes err as "herald: ..." lines: one line for one problem (a
// configuration file with several mistakes gives one line each).
func printErr(w io.Writer, err error) {
	for _, line := range strings.Split(strings.TrimRight(err.Error(), "\n"), "\n") {
		fmt.Fprintf(w, "herald: %s\n", line)
	}
}

// run executes one command and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	env := &cmdEnv{stdin: stdin, stdout: stdout, stderr: stderr}
	var err error
	switch args[0] {
	case "serve":
		err = env.serve(args[1:])
	case "config":
		err = env.configCmd(args[1:])
	case "domain":
		switch {
		case len(args) > 1 && args[1] == "policy":
			err = env.domainPolicy(args[2:])
		case len(args) > 1 && args[1] == "assign":
			err = env.domainAssign(args[2:])
		default:
			err = env.domainCmd(args[1:])
		}
	case "account":
		err = env.accountCmd(args[1:])
	case "apikey":
		err = env.apikeyCmd(args[1:])
	case "user":
		err = env.userCmd(args[1:])
	case "operator":
		err = env.operatorCmd(args[1:])
	case "alias":
		err = env.aliasCmd(args[1:])
	case "route":
		err = env.routeCmd(args[1:])
	case "template":
		err = env.templateCmd(args[1:])
	case "dmarc":
		err = env.dmarcCmd(args[1:])
	case "alert":
		err = env.alertCmd(args[1:])
	case "dkim":
		err = env.dkimCmd(args[1:])
	case "dns":
		err = env.dnsCmd(args[1:])
	case "setup":
		err = env.setupCmd(args[1:])
	case "queue":
		err = env.queueCmd(args[1:])
	case "trace":
		err = env.traceCmd(args[1:])
	case "sendmail":
		err = env.sendmail(args[1:])
	case "store":
		err = env.storeCmd(args[1:])
	case "backup":
		err = env.backupCmd(args[1:])
	case "restore":
		err = env.restoreCmd(args[1:])
	case "version", "--version":
		fmt.Fprintln(stdout, "herald", version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "herald: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		printErr(stderr, err)
		return exitStatus(err)
	}
	return 0
}

// cmdEnv carries the standard streams of one command run.
type cmdEnv struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	cfg            *config.Config // the command's configuration, once loaded (useStore, userCmd)
}

// flags parses --config FILE among a command's arguments and returns the
// remaining positional arguments.
func (e *cmdEnv) flags(name string, args []string, extra func(*flag.FlagSet)) (*config.Config, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	path := fs.String("config", configFile(), "configuration file")
	if extra != nil {
		extra(fs)
	}
	// Allow flags after positional arguments ("user add a@b --send-as x").
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, nil, fmt.Errorf("%w: %v", errUsage, err)
		}
		args = fs.Args()
		if len(args) > 0 {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return nil, nil, exitcode.With(exitcode.Config, err)
	}
	return cfg, pos, nil
}

func (e *cmdEnv) serve(args []string) error {
	cfg, pos, err := e.flags("serve", args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return fmt.Errorf("%w: serve takes no arguments", errUsage)
	}
	// Catch SIGTERM before the listeners are bound: a signal arriving while
	// app.New runs must shut down cleanly, not kill the process.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	a, err := app.New(cfg, app.Options{DropPrivileges: true})
	if err != nil {
		// app.New describes every failure it expects; anything else is a bug.
		return exitcode.With(exitcode.Software, err)
	}
	e.banner(cfg, a)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		for range hup {
			if err := a.Reload(); err != nil {
				a.Logger().Error("reload failed", "err", err)
			} else {
				a.Logger().Info("reloaded: TLS certificate re-read, log file reopened")
			}
		}
	}()
	return a.Run(ctx)
}

// banner tells the operator where everything is.
func (e *cmdEnv) banner(cfg *config.Config, a *app.App) {
	addrs := a.Addrs()
	show := func(name, what string) {
		if v := addrs[name]; len(v) > 0 {
			fmt.Fprintf(e.stderr, "  %-12s %-40s %s\n", name, strings.Join(v, ", "), what)
		}
	}
	fmt.Fprintf(e.stderr, "Herald %s is running as %s\n", version, cfg.Server.Hostname)
	show("smtp", "MX: mail for local domains")
	show("submission", "submission, STARTTLS then AUTH")
	show("submissions", "submission, implicit TLS, AUTH")
	show("http", "HTTP: console at / (herald operator add NAME), API under /v1, /metrics, /healthz")
	fmt.Fprintf(e.stderr, "  data         %s\n", cfg.Server.DataDir)
	switch {
	case cfg.ACME.Enabled:
		fmt.Fprintf(e.stderr, "  tls          certificates from ACME (%s); self-signed until they arrive\n", cfg.ACME.DirectoryURL)
	case cfg.TLS.CertFile == "":
		fmt.Fprintf(e.stderr, "  tls          self-signed certificate in %s/tls (set tls.cert_file/key_file or acme.enabled for production)\n", cfg.Server.DataDir)
	}
	fmt.Fprintf(e.stderr, "Set up a domain for production (config, DKIM keys, postmaster, DNS records):\n"+
		"  herald setup example.com --hostname mail.example.com --ip ADDR --acme\n")
	fmt.Fprintf(e.stderr, "Or one by one: a domain, a user, a DKIM key and an API key:\n  herald domain add example.com\n"+
		"  echo 'a-long-password' | herald user add you@example.com\n  herald dkim keygen example.com\n"+
		"  herald apikey add default --scope send,read\n")
}

func (e *cmdEnv) configCmd(args []string) error {
	if len(args) != 2 || args[0] != "check" {
		return fmt.Errorf("%w: herald config check FILE", errUsage)
	}
	if _, err := config.Load(args[1]); err != nil {
		return exitcode.With(exitcode.Config, err)
	}
	fmt.Fprintf(e.stdout, "%s: OK\n", args[1])
	return nil
}

func baseName(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[i+1:]
	}
	return p
}
