package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/submit"
)

// sendmailArgs are the sendmail(1) options Herald understands. Options that
// only tune the classic daemon (-oem, -odb, -v, -B...) are accepted and
// ignored, as scripts pass them out of habit.
type sendmailArgs struct {
	extract    bool   // -t
	ignoreDots bool   // -i, -oi
	from       string // -f, -r
	fullName   string // -F
	notify     string // -N
	ret        string // -R
	envID      string // -V
	configPath string // --config
	rcpts      []string
}

func parseSendmailArgs(args []string) (*sendmailArgs, error) {
	sa := &sendmailArgs{configPath: configFile()}
	// takeArg returns the option's value, attached ("-ffoo") or next.
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			sa.rcpts = append(sa.rcpts, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			sa.rcpts = append(sa.rcpts, a)
			continue
		}
		takeArg := func() (string, error) {
			if len(a) > 2 {
				return a[2:], nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("%w: option %s needs a value", errUsage, a)
			}
			i++
			return args[i], nil
		}
		var err error
		switch {
		case a == "--config":
			if i+1 >= len(args) {
				return nil, fmt.Errorf("%w: --config needs a file", errUsage)
			}
			i++
			sa.configPath = args[i]
		case strings.HasPrefix(a, "--config="):
			sa.configPath = strings.TrimPrefix(a, "--config=")
		case a == "-t":
			sa.extract = true
		case a == "-i" || a == "-oi":
			sa.ignoreDots = true
		case a[1] == 'f' || a[1] == 'r':
			sa.from, err = takeArg()
		case a[1] == 'F':
			sa.fullName, err = takeArg()
		case a[1] == 'N':
			sa.notify, err = takeArg()
		case a[1] == 'R':
			sa.ret, err = takeArg()
		case a[1] == 'V':
			sa.envID, err = takeArg()
		case a[1] == 'B' || a[1] == 'C' || a[1] == 'h' || a[1] == 'L' || a[1] == 'O' || a[1] == 'X':
			_, err = takeArg() // options with a value we do not use
		case a[1] == 'o' || a[1] == 'v' || a == "-bm" || a == "-U" || a[1] == 'q' && len(a) > 2:
			// ignored: delivery mode, error mode, verbose, initial submission
		default:
			return nil, fmt.Errorf("%w: sendmail option %s is not supported", errUsage, a)
		}
		if err != nil {
			return nil, err
		}
	}
	switch strings.ToUpper(sa.ret) {
	case "", "FULL", "HDRS":
		sa.ret = strings.ToUpper(sa.ret)
	default:
		return nil, fmt.Errorf("%w: -R must be full or hdrs", errUsage)
	}
	return sa, nil
}

// sendmail reads a message on stdin and queues it, like /usr/sbin/sendmail.
// It writes to the data directory directly (as Postfix's maildrop does), so
// it works even while the server is down; the server picks the message up
// within one poll interval.
func (e *cmdEnv) sendmail(args []string) error {
	sa, err := parseSendmailArgs(args)
	if err != nil {
		return err
	}
	cfg, err := config.Load(sa.configPath)
	if err != nil {
		return err
	}
	raw, err := io.ReadAll(io.LimitReader(e.stdin, cfg.Limits.MaxMessageSize+1))
	if err != nil {
		return fmt.Errorf("reading message: %w", err)
	}
	if int64(len(raw)) > cfg.Limits.MaxMessageSize {
		return fmt.Errorf("message larger than limits.max_message_size (%d bytes)", cfg.Limits.MaxMessageSize)
	}
	sender, err := sendmailSender(sa.from, cfg.Server.Hostname)
	if err != nil {
		return err
	}
	data, headerRcpts, err := prepareSendmailMessage(raw, sa, sender, cfg.Server.Hostname, time.Now())
	if err != nil {
		return err
	}
	var rcpts []submit.Recipient
	seen := map[string]bool{}
	for _, r := range append(append([]string(nil), sa.rcpts...), headerRcpts...) {
		for _, one := range strings.Split(r, ",") {
			one = strings.TrimSpace(one)
			if one == "" {
				continue
			}
			if !strings.Contains(one, "@") {
				one += "@" + cfg.Server.Hostname
			}
			a, err := smtp.ParseAddress(strings.Trim(one, "<>"))
			if err != nil {
				return fmt.Errorf("invalid recipient %q", one)
			}
			if key := strings.ToLower(a.String()); !seen[key] {
				seen[key] = true
				rcpts = append(rcpts, submit.Recipient{Address: a.String(), Notify: strings.ToUpper(sa.notify)})
			}
		}
	}
	if len(rcpts) == 0 {
		return fmt.Errorf("%w: no recipients (give them as arguments or use -t)", errUsage)
	}
	// Like Postfix's maildrop: works before the first start too, and says
	// nothing on success.
	st, _, err := openStore(cfg, createStore)
	if err != nil {
		return err
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	p, err := app.NewLocalPipeline(cfg, st, log)
	if err != nil {
		return err
	}
	req := &submit.Request{
		Identity: submit.Identity{Kind: submit.Local, Source: "sendmail"},
		From:     sender, Ret: sa.ret, EnvID: sa.envID,
		Recipients: rcpts,
		Body:       bytes.NewReader(data),
	}
	if _, err := p.Submit(context.Background(), req); err != nil {
		return fmt.Errorf("message not queued: %w", err)
	}
	return nil // like sendmail(1): nothing on success
}

// sendmailSender is -f's address, or the invoking user at the hostname.
func sendmailSender(from, hostname string) (string, error) {
	if from == "<>" {
		return "", nil
	}
	if from == "" {
		name := "root"
		if u, err := user.Current(); err == nil && u.Username != "" {
			name = u.Username
		}
		from = name + "@" + hostname
	}
	from = strings.Trim(from, "<>")
	if from == "" {
		return "", nil
	}
	if !strings.Contains(from, "@") {
		from += "@" + hostname
	}
	a, err := smtp.ParseAddress(from)
	if err != nil {
		return "", fmt.Errorf("invalid sender %q", from)
	}
	return a.String(), nil
}

// prepareSendmailMessage normalises line endings to CRLF, honours the "."
// terminator unless -i, adds From when missing (with -F's full name),
// qualifies bare addresses ("root") with the host name as sendmail does,
// removes Bcc and returns the header recipients when -t is set. Date and
// Message-ID, when missing, are added by the acceptance path.
func prepareSendmailMessage(raw []byte, sa *sendmailArgs, sender, hostname string, now time.Time) ([]byte, []string, error) {
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 64*1024), len(raw)+1)
	first := true
	for sc.Scan() {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if first && strings.HasPrefix(line, "From ") {
			first = false
			continue // mbox separator
		}
		first = false
		if !sa.ignoreDots && line == "." {
			break
		}
		lines = append(lines, line)
	}
	if err := sc.Err(); err != nil {
		return nil, nil, fmt.Errorf("reading message: %w", err)
	}
	// Split header and body at the first empty line.
	hdrEnd := len(lines)
	for i, l := range lines {
		if l == "" {
			hdrEnd = i
			break
		}
	}
	header := lines[:hdrEnd]
	body := lines[hdrEnd:]
	has := func(name string) bool {
		for _, h := range header {
			if len(h) > len(name) && strings.EqualFold(h[:len(name)+1], name+":") {
				return true
			}
		}
		return false
	}
	var rcpts []string
	var kept []string
	for i := 0; i < len(header); i++ {
		// Collect one header field with its continuation lines.
		field := header[i]
		j := i + 1
		for j < len(header) && (strings.HasPrefix(header[j], " ") || strings.HasPrefix(header[j], "\t")) {
			field += "\r\n" + header[j]
			j++
		}
		name, value, _ := strings.Cut(field, ":")
		lname := strings.ToLower(strings.TrimSpace(name))
		if addressFields[lname] {
			value = qualifyAddresses(value, hostname)
			field = name + ":" + value
		}
		if sa.extract && (lname == "to" || lname == "cc" || lname == "bcc") {
			list, err := mail.ParseAddressList(strings.ReplaceAll(value, "\r\n", ""))
			if err != nil {
				return nil, nil, fmt.Errorf("-t: cannot parse %s header: %w", name, err)
			}
			for _, a := range list {
				rcpts = append(rcpts, a.Address)
			}
		}
		if lname != "bcc" {
			kept = append(kept, field)
		}
		i = j - 1
	}
	var out bytes.Buffer
	fmt.Fprintf(&out, "Received: by %s (Herald sendmail, uid %d);\r\n\t%s\r\n", hostname, os.Getuid(), now.Format(time.RFC1123Z))
	if !has("From") {
		if sender == "" {
			sender = "MAILER-DAEMON@" + hostname // -f '<>': a From is still needed
		}
		if sa.fullName != "" {
			fmt.Fprintf(&out, "From: %s\r\n", (&mail.Address{Name: sa.fullName, Address: sender}).String())
		} else {
			fmt.Fprintf(&out, "From: <%s>\r\n", sender)
		}
	}
	for _, f := range kept {
		out.WriteString(f)
		out.WriteString("\r\n")
	}
	if len(body) == 0 {
		out.WriteString("\r\n")
	}
	for _, l := range body {
		out.WriteString(l)
		out.WriteString("\r\n")
	}
	return out.Bytes(), rcpts, nil
}

// addressFields are the header fields whose bare addresses get qualified.
var addressFields = map[string]bool{"from": true, "sender": true, "reply-to": true, "to": true, "cc": true, "bcc": true}

// qualifyAddresses appends "@domain" to the unqualified addresses of an
// address-list field value: "root" and "Root <root>" become
// "root@domain" and "Root <root@domain>". A value that does not parse
// either way is returned as it is (the acceptance path judges it).
func qualifyAddresses(value, domain string) string {
	if _, err := mail.ParseAddressList(value); err == nil || strings.TrimSpace(value) == "" {
		return value
	}
	parts := splitAddressList(value)
	for i, p := range parts {
		t := strings.TrimSpace(p)
		switch {
		case strings.HasSuffix(t, ">") && strings.Contains(t, "<"):
			open := strings.LastIndexByte(t, '<')
			if inner := t[open+1 : len(t)-1]; inner != "" && !strings.Contains(inner, "@") {
				parts[i] = strings.Replace(p, "<"+inner+">", "<"+inner+"@"+domain+">", 1)
			}
		case t != "" && !strings.ContainsAny(t, "@<>\"(),:;"):
			parts[i] = strings.Replace(p, t, t+"@"+domain, 1)
		}
	}
	out := strings.Join(parts, ",")
	if _, err := mail.ParseAddressList(out); err != nil {
		return value
	}
	return out
}

// splitAddressList splits at commas outside quoted strings, angle
// brackets and comments.
func splitAddressList(v string) []string {
	var parts []string
	depth, quoted, start := 0, false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\' && quoted:
			i++
		case c == '"':
			quoted = !quoted
		case quoted:
		case c == '<' || c == '(':
			depth++
		case (c == '>' || c == ')') && depth > 0:
			depth--
		case c == ',' && depth == 0:
			parts = append(parts, v[start:i])
			start = i + 1
		}
	}
	return append(parts, v[start:])
}
