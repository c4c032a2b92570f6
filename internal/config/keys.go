package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
)

const (
	tlsVersion12 = tls.VersionTLS12
	tlsVersion13 = tls.VersionTLS13
)

// kind is the shape of a key's value, used to convert environment strings.
type kind int

const (
	kString kind = iota
	kList        // array of strings; comma-separated in the environment
	kInt
	kFloat
	kBool
	kDuration // Go duration string
	kSize     // integer bytes or string with unit
	kTable    // table of string -> string; "k=v,k=v" in the environment
)

// field binds one "section.key" to a place in a Config.
type field struct {
	name string
	kind kind
	// set parses and validates v (a value decoded from TOML, or converted
	// from an environment string) and stores it. Its error says what is
	// wrong with the value, without the key name.
	set func(v any) error
	// get returns the current value in its TOML form.
	get func() any
}

// fields lists every key of c, in the order of the example file.
func (c *Config) fields() []field {
	return append([]field{
		strField("server.hostname", &c.Server.Hostname, checkHostname),
		strField("server.node_id", &c.Server.NodeID, checkOptional(checkNodeID)),
		strField("server.data_dir", &c.Server.DataDir, checkNotEmpty),
		strField("server.user", &c.Server.User, checkOptional(checkUserName)),
		durField("server.shutdown_timeout", &c.Server.ShutdownTimeout, false),
		strField("server.postmaster", &c.Server.Postmaster, checkOptional(checkMailbox)),

		strField("store.url", &c.Store.URL, checkOptional(checkStoreURL)),

		logLevelField("log.level", &c.Log.Level),
		enumField("log.format", &c.Log.Format, "text", "json"),
		strField("log.file", &c.Log.File, nil),

		listField("smtp.listen", &c.SMTP.Listen, checkListen),
		listField("submission.listen", &c.Submission.Listen, checkListen),
		listField("submissions.listen", &c.Submissions.Listen, checkListen),
		listField("http.listen", &c.HTTP.Listen, checkListen),
		durField("http.read_header_timeout", &c.HTTP.ReadHeaderTimeout, false),
		durField("http.read_timeout", &c.HTTP.ReadTimeout, false),
		durField("http.upload_timeout", &c.HTTP.UploadTimeout, false),
		durField("http.write_timeout", &c.HTTP.WriteTimeout, false),
		durField("http.idle_timeout", &c.HTTP.IdleTimeout, false),
		intField("http.max_header_bytes", &c.HTTP.MaxHeaderBytes, 1024, 1<<20),
		intField("http.max_connections", &c.HTTP.MaxConnections, 1, 1<<24),
		intField("http.max_connections_per_ip", &c.HTTP.MaxConnectionsPerIP, 0, 1<<24),

		strField("tls.cert_file", &c.TLS.CertFile, nil),
		strField("tls.key_file", &c.TLS.KeyFile, nil),
		tlsVersionField("tls.min_version", &c.TLS.MinVersion),

		sizeField("limits.max_message_size", &c.Limits.MaxMessageSize, 1),
		intField("limits.max_recipients", &c.Limits.MaxRecipients, 1, 1<<20),
		intField("limits.max_line_length", &c.Limits.MaxLineLength, 1000, 1<<20),
		intField("limits.max_command_line_length", &c.Limits.MaxCommandLineLength, 512, 1<<20),
		intField("limits.max_connections", &c.Limits.MaxConnections, 1, 1<<24),
		intField("limits.max_connections_per_ip", &c.Limits.MaxConnectionsPerIP, 1, 1<<24),
		intField("limits.max_junk_commands", &c.Limits.MaxJunkCommands, 1, math.MaxInt32),
		intField("limits.max_errors", &c.Limits.MaxErrors, 1, math.MaxInt32),
		durField("limits.pregreet_wait", &c.Limits.PregreetWait, true),
		durField("limits.idle_timeout", &c.Limits.IdleTimeout, false),
		durField("limits.data_timeout", &c.Limits.DataTimeout, false),
		durField("limits.session_timeout", &c.Limits.SessionTimeout, false),
		intField("limits.max_received_headers", &c.Limits.MaxReceivedHeaders, 1, 10000),
		sizeField("limits.queue_min_free", &c.Limits.QueueMinFree, 0),

		intField("auth.max_failures", &c.Auth.MaxFailures, 1, math.MaxInt32),
		durField("auth.failure_window", &c.Auth.FailureWindow, false),
		durField("auth.lockout", &c.Auth.Lockout, false),
		durField("auth.failure_delay", &c.Auth.FailureDelay, true),
		durField("auth.account_delay", &c.Auth.AccountDelay, true),
		durField("auth.account_max_delay", &c.Auth.AccountMaxDelay, true),
		intField("auth.min_password_length", &c.Auth.MinPasswordLength, MinPasswordFloor, maxPasswordLength),

		prefixField("relay.allow", &c.Relay.Allow),

		strField("dns.resolver", &c.DNS.Resolver, checkResolver),
		durField("dns.timeout", &c.DNS.Timeout, false),

		durField("queue.retry_initial", &c.Queue.RetryInitial, false),
		durField("queue.retry_max", &c.Queue.RetryMax, false),
		floatField("queue.retry_factor", &c.Queue.RetryFactor, 1, 100),
		floatField("queue.retry_jitter", &c.Queue.RetryJitter, 0, 1),
		durField("queue.max_lifetime", &c.Queue.MaxLifetime, false),
		durField("queue.delay_warning", &c.Queue.DelayWarning, true),
		durField("queue.poll_interval", &c.Queue.PollInterval, false),
		durField("queue.lease_timeout", &c.Queue.LeaseTimeout, false),
		intField("queue.workers", &c.Queue.Workers, 1, 1<<20),
		intField("queue.max_per_destination", &c.Queue.MaxPerDestination, 1, 1<<20),
		intField("queue.max_messages_per_connection", &c.Queue.MaxMessagesPerConnection, 1, 1<<20),
		durField("queue.throttle_backoff", &c.Queue.ThrottleBackoff, false),

		intField("delivery.port", &c.Delivery.Port, 1, 65535),
		strField("delivery.helo_name", &c.Delivery.HeloName, checkOptional(checkHostname)),
		durField("delivery.connect_timeout", &c.Delivery.ConnectTimeout, false),
		durField("delivery.command_timeout", &c.Delivery.CommandTimeout, false),
		addrField("delivery.source_ipv4", &c.Delivery.SourceIPv4, true),
		addrField("delivery.source_ipv6", &c.Delivery.SourceIPv6, false),
		strField("delivery.smarthost", &c.Delivery.Smarthost, checkOptional(checkHostPort)),
		strField("delivery.smarthost_username", &c.Delivery.SmarthostUser, nil),
		strField("delivery.smarthost_password", &c.Delivery.SmarthostPass, nil),
		enumField("delivery.smarthost_tls", &c.Delivery.SmarthostTLS, "starttls", "implicit"),
		routesField("delivery.routes", &c.Delivery.Routes),
		boolField("delivery.require_tls", &c.Delivery.RequireTLS),
		boolField("delivery.mta_sts", &c.Delivery.MTASTS),
		boolField("delivery.dane", &c.Delivery.DANE),

		strField("checks.authserv_id", &c.Checks.AuthservID, checkOptional(checkHostname)),
		boolField("checks.spf_reject_fail", &c.Checks.SPFRejectFail),
		boolField("checks.dmarc_reject", &c.Checks.DMARCReject),
		boolField("checks.dmarc_quarantine", &c.Checks.DMARCQuarantine),
		listField("checks.arc_trusted_sealers", &c.Checks.ARCTrustedSealers, checkHostname),

		boolField("tlsrpt.enabled", &c.TLSRPT.Enabled),
		strField("tlsrpt.organization", &c.TLSRPT.Organization, nil),
		strField("tlsrpt.contact", &c.TLSRPT.Contact, nil),
		strField("tlsrpt.from", &c.TLSRPT.From, nil),

		durField("platform.event_retention", &c.Platform.EventRetention, false),
		enumField("platform.verp", &c.Platform.VERP, "api", "all", "none"),
		intField("platform.user_per_minute", &c.Platform.UserPerMinute, 0, math.MaxInt32),
		intField("platform.user_per_hour", &c.Platform.UserPerHour, 0, math.MaxInt32),
		intField("platform.user_per_day", &c.Platform.UserPerDay, 0, math.MaxInt32),
		durField("platform.webhook_timeout", &c.Platform.WebhookTimeout, false),
		durField("platform.webhook_max_age", &c.Platform.WebhookMaxAge, false),
		boolField("platform.webhook_allow_private", &c.Platform.WebhookAllowPrivate),
		intField("platform.max_webhooks_per_account", &c.Platform.MaxWebhooksPerAccount, 1, 1<<20),
		intField("platform.max_templates_per_account", &c.Platform.MaxTemplatesPerAccount, 1, 1<<20),
		intField("platform.max_template_versions", &c.Platform.MaxTemplateVersions, 1, 10000),
		intField("platform.max_batch_recipients", &c.Platform.MaxBatchRecipients, 1, 1<<20),
		sizeField("platform.max_batch_size", &c.Platform.MaxBatchSize, 1<<20),
		intField("platform.max_batches_per_day", &c.Platform.MaxBatchesPerDay, 1, 1<<24),
		strField("platform.public_url", &c.Platform.PublicURL, checkOptional(checkPublicURL)),

		boolField("alerts.enabled", &c.Alerts.Enabled),
		durField("alerts.interval", &c.Alerts.Interval, false),
		listField("alerts.email", &c.Alerts.Email, checkMailbox),
		strField("alerts.webhook_url", &c.Alerts.WebhookURL, checkWebhookURL),
		boolField("alerts.webhook_allow_private", &c.Alerts.WebhookAllowPrivate),
		durField("alerts.history_retention", &c.Alerts.HistoryRetention, false),
		alertRulesField("alerts.rules", &c.Alerts.Rules),
		boolField("console.enabled", &c.Console.Enabled),
		durField("console.idle_timeout", &c.Console.IdleTimeout, false),
		durField("console.max_age", &c.Console.MaxAge, false),

		boolField("acme.enabled", &c.ACME.Enabled),
		strField("acme.directory_url", &c.ACME.DirectoryURL, checkOptional(checkHTTPSURL)),
		strField("acme.email", &c.ACME.Email, checkOptional(checkMailbox)),
		strField("acme.http_address", &c.ACME.HTTPAddress, checkOptional(checkListen)),
		strField("acme.https_address", &c.ACME.HTTPSAddress, checkOptional(checkListen)),
		durField("acme.renew_before", &c.ACME.RenewBefore, true),
		listField("acme.challenges", &c.ACME.Challenges, checkOneOf("tls-alpn-01", "http-01")),
		listField("acme.hosts", &c.ACME.Hosts, checkOneOf("mta-sts", "autoconfig", "autodiscover")),
		strField("acme.ca_file", &c.ACME.CAFile, nil),

		durField("wellknown.mta_sts_max_age", &c.WellKnown.MTASTSMaxAge, false),
		listField("wellknown.mta_sts_mx", &c.WellKnown.MTASTSMX, checkMXPattern),
		boolField("wellknown.autoconfig", &c.WellKnown.Autoconfig),
		strField("wellknown.imap_host", &c.WellKnown.IMAPHost, checkOptional(checkHostname)),
		intField("wellknown.imap_port", &c.WellKnown.IMAPPort, 1, 65535),
	}, c.dnsblFields()...)
}

// renamedKeys are keys that no longer exist, with what to do instead. Such
// a key is an error, not ignored: its meaning changed.
var renamedKeys = map[string]string{
	"limits.max_commands": "limits.max_commands was replaced by limits.max_junk_commands, " +
		"which counts only commands that move no mail (NOOP, RSET, VRFY, HELP, unknown commands, " +
		"repeated HELO/EHLO, recipients over limits.max_recipients) and restarts at every accepted message; " +
		"MAIL, RCPT, DATA and BDAT are no longer limited per session",
}

// index gives access to the fields of one Config by key, section and
// environment variable, and records where each value came from.
type index struct {
	fields   map[string]*field // "section.key"
	sections map[string]bool
	env      map[string]*field // HERALD_SECTION_KEY
	src      map[string]source
}

func (c *Config) index() *index {
	fs := c.fields()
	idx := &index{
		fields:   make(map[string]*field, len(fs)),
		sections: map[string]bool{},
		env:      make(map[string]*field, len(fs)),
		src:      map[string]source{},
	}
	for i := range fs {
		f := &fs[i]
		idx.fields[f.name] = f
		sec, _, _ := strings.Cut(f.name, ".")
		idx.sections[sec] = true
		idx.env[EnvName(f.name)] = f
	}
	return idx
}

// describe names the TOML type of v for error messages.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("string %q", v)
	case int64:
		return fmt.Sprintf("integer %d", v)
	case float64:
		return fmt.Sprintf("float %v", v)
	case bool:
		return fmt.Sprintf("boolean %v", v)
	case []any:
		return "an array"
	case map[string]any:
		return "a table"
	default:
		return fmt.Sprintf("%T", v) // dates and times
	}
}

func wrongType(want string, v any) error {
	return fmt.Errorf("expected %s, got %s", want, describe(v))
}

func asString(v any) (string, error) {
	s, ok := v.(string)
	if !ok {
		return "", wrongType("a string", v)
	}
	return s, nil
}

func strField(name string, p *string, check func(string) error) field {
	return field{name: name, kind: kString,
		set: func(v any) error {
			s, err := asString(v)
			if err != nil {
				return err
			}
			if check != nil {
				if err := check(s); err != nil {
					return err
				}
			}
			*p = s
			return nil
		},
		get: func() any { return *p },
	}
}

func enumField(name string, p *string, values ...string) field {
	return strField(name, p, func(s string) error {
		if !slices.Contains(values, s) {
			return fmt.Errorf("%q is not one of %s", s, quoteList(values))
		}
		return nil
	})
}

func quoteList(values []string) string {
	q := make([]string, len(values))
	for i, v := range values {
		q[i] = strconv.Quote(v)
	}
	return strings.Join(q, ", ")
}

func listField(name string, p *[]string, check func(string) error) field {
	return field{name: name, kind: kList,
		set: func(v any) error {
			var items []any
			switch v := v.(type) {
			case []any:
				items = v
			case string: // a single value is a list of one
				items = []any{v}
			default:
				return wrongType("an array of strings", v)
			}
			out := make([]string, 0, len(items))
			for _, it := range items {
				s, ok := it.(string)
				if !ok {
					return fmt.Errorf("expected an array of strings, found %s", describe(it))
				}
				if err := check(s); err != nil {
					return err
				}
				if slices.Contains(out, s) {
					return fmt.Errorf("%q is listed twice", s)
				}
				out = append(out, s)
			}
			*p = out
			return nil
		},
		get: func() any { return slices.Clone(*p) },
	}
}

func intField(name string, p *int, lo, hi int) field {
	return field{name: name, kind: kInt,
		set: func(v any) error {
			n, ok := v.(int64)
			if !ok {
				return wrongType("an integer", v)
			}
			if n < int64(lo) || n > int64(hi) {
				if lo == 1 && n < 1 {
					return fmt.Errorf("%d is not positive", n)
				}
				return fmt.Errorf("%d is out of range [%d, %d]", n, lo, hi)
			}
			*p = int(n)
			return nil
		},
		get: func() any { return int64(*p) },
	}
}

func floatField(name string, p *float64, lo, hi float64) field {
	return field{name: name, kind: kFloat,
		set: func(v any) error {
			var f float64
			switch v := v.(type) {
			case float64:
				f = v
			case int64:
				f = float64(v)
			default:
				return wrongType("a number", v)
			}
			if math.IsNaN(f) || f < lo || f > hi {
				return fmt.Errorf("%v is out of range [%v, %v]", f, lo, hi)
			}
			*p = f
			return nil
		},
		get: func() any { return *p },
	}
}

func boolField(name string, p *bool) field {
	return field{name: name, kind: kBool,
		set: func(v any) error {
			b, ok := v.(bool)
			if !ok {
				return wrongType("true or false", v)
			}
			*p = b
			return nil
		},
		get: func() any { return *p },
	}
}

// durField accepts Go duration strings ("90s", "5m", "120h"). allowZero
// lets "0" mean "disabled".
func durField(name string, p *time.Duration, allowZero bool) field {
	return field{name: name, kind: kDuration,
		set: func(v any) error {
			if n, ok := v.(int64); ok && n == 0 && allowZero {
				*p = 0
				return nil
			}
			s, ok := v.(string)
			if !ok {
				return wrongType(`a duration string such as "5m"`, v)
			}
			d, err := time.ParseDuration(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("%q is not a duration (use e.g. \"90s\", \"5m\", \"120h\")", s)
			}
			if d < 0 || (d == 0 && !allowZero) {
				return fmt.Errorf("%q is not a positive duration", s)
			}
			*p = d
			return nil
		},
		get: func() any { return formatDuration(*p) },
	}
}

// formatDuration renders d as a duration string ParseDuration reads back.
func formatDuration(d time.Duration) string {
	if d == 0 {
		return "0"
	}
	return d.String()
}

func sizeField(name string, p *int64, lo int64) field {
	return field{name: name, kind: kSize,
		set: func(v any) error {
			var n int64
			switch v := v.(type) {
			case int64:
				n = v
			case string:
				var err error
				if n, err = ParseSize(v); err != nil {
					return err
				}
			default:
				return wrongType(`a size (bytes, or a string such as "25MiB")`, v)
			}
			if n < lo {
				return fmt.Errorf("%d is not positive", n)
			}
			*p = n
			return nil
		},
		get: func() any { return *p },
	}
}

var sizeUnits = map[string]int64{
	"": 1, "B": 1,
	"KB": 1000, "MB": 1000 * 1000, "GB": 1000 * 1000 * 1000,
	"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30,
}

// ParseSize parses a size: an integer number of bytes, optionally followed
// by B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB (powers of 1024), case
// insensitive, with an optional space: "25MiB", "10 MB", "1048576".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && t[i] >= '0' && t[i] <= '9' {
		i++
	}
	unit, ok := sizeUnits[strings.ToUpper(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/unit {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return n * unit, nil
}

func logLevelField(name string, p *slog.Level) field {
	names := []string{"debug", "info", "warn", "error"}
	levels := []slog.Level{slog.LevelDebug, slog.LevelInfo, slog.LevelWarn, slog.LevelError}
	return field{name: name, kind: kString,
		set: func(v any) error {
			s, err := asString(v)
			if err != nil {
				return err
			}
			i := slices.Index(names, strings.ToLower(s))
			if i < 0 {
				return fmt.Errorf("%q is not one of %s", s, quoteList(names))
			}
			*p = levels[i]
			return nil
		},
		get: func() any {
			if i := slices.Index(levels, *p); i >= 0 {
				return names[i]
			}
			return strings.ToLower(p.String())
		},
	}
}

func tlsVersionField(name string, p *uint16) field {
	return field{name: name, kind: kString,
		set: func(v any) error {
			s, ok := v.(string)
			if !ok {
				return wrongType(`"1.2" or "1.3" (a string)`, v)
			}
			switch s {
			case "1.2":
				*p = tlsVersion12
			case "1.3":
				*p = tlsVersion13
			default:
				return fmt.Errorf("%q is not one of \"1.2\", \"1.3\"", s)
			}
			return nil
		},
		get: func() any {
			if *p == tlsVersion13 {
				return "1.3"
			}
			return "1.2"
		},
	}
}

// prefixField accepts CIDRs ("192.0.2.0/24", "2001:db8::/32") and single
// addresses (a /32 or /128). Host bits set in a CIDR are an error, since
// they usually reveal a typo.
func prefixField(name string, p *[]netip.Prefix) field {
	return field{name: name, kind: kList,
		set: func(v any) error {
			items, ok := v.([]any)
			if !ok {
				return wrongType("an array of CIDR strings", v)
			}
			out := make([]netip.Prefix, 0, len(items))
			for _, it := range items {
				s, ok := it.(string)
				if !ok {
					return fmt.Errorf("expected an array of CIDR strings, found %s", describe(it))
				}
				pf, err := parsePrefix(s)
				if err != nil {
					return err
				}
				out = append(out, pf)
			}
			*p = out
			return nil
		},
		get: func() any {
			out := make([]any, len(*p))
			for i, pf := range *p {
				out[i] = pf.String()
			}
			return out
		},
	}
}

func parsePrefix(s string) (netip.Prefix, error) {
	if !strings.Contains(s, "/") {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("%q is not a CIDR or IP address", s)
		}
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	pf, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a CIDR", s)
	}
	if m := pf.Masked(); m != pf {
		return netip.Prefix{}, fmt.Errorf("%q has host bits set (did you mean %q?)", s, m.String())
	}
	return pf, nil
}

func addrField(name string, p *netip.Addr, v4 bool) field {
	family := "IPv6"
	if v4 {
		family = "IPv4"
	}
	return field{name: name, kind: kString,
		set: func(v any) error {
			s, err := asString(v)
			if err != nil {
				return err
			}
			if s == "" {
				*p = netip.Addr{}
				return nil
			}
			a, err := netip.ParseAddr(s)
			if err != nil || a.Is4() != v4 || a.Is4In6() {
				return fmt.Errorf("%q is not an %s address", s, family)
			}
			*p = a
			return nil
		},
		get: func() any {
			if !p.IsValid() {
				return ""
			}
			return p.String()
		},
	}
}

// routesField is a table of domain -> "host:port". Domains are normalised
// to lower-case A-labels without a trailing dot.
func routesField(name string, p *map[string]string) field {
	return field{name: name, kind: kTable,
		set: func(v any) error {
			m, ok := v.(map[string]any)
			if !ok {
				return wrongType(`a table of domain = "host:port"`, v)
			}
			out := make(map[string]string, len(m))
			for _, k := range slices.Sorted(maps.Keys(m)) {
				s, ok := m[k].(string)
				if !ok {
					return fmt.Errorf("route for %q: %v", k, wrongType(`"host:port"`, m[k]))
				}
				d, err := smtp.NormalizeDomain(k)
				if err != nil || strings.HasPrefix(d, "[") || checkHostname(d) != nil {
					return fmt.Errorf("%q is not a domain", k)
				}
				if _, dup := out[d]; dup {
					return fmt.Errorf("domain %q is routed twice", d)
				}
				if err := checkHostPort(s); err != nil {
					return fmt.Errorf("route for %q: %v", k, err)
				}
				out[d] = s
			}
			*p = out
			return nil
		},
		get: func() any {
			out := make(map[string]any, len(*p))
			for k, v := range *p {
				out[k] = v
			}
			return out
		},
	}
}

func checkNotEmpty(s string) error {
	if strings.TrimSpace(s) == "" {
		return fmt.Errorf("must not be empty")
	}
	return nil
}

func checkOptional(check func(string) error) func(string) error {
	return func(s string) error {
		if s == "" {
			return nil
		}
		return check(s)
	}
}

// checkStoreURL accepts a postgres:// or postgresql:// URL naming a host
// (the embedded store is the empty value).
func checkStoreURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		// url's message repeats the value, which may hold a password.
		return errors.New("is not a URL (want postgres://user@host:5432/database, or \"\" for the embedded store)")
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("scheme %q is not postgres:// (the embedded SQLite store is the empty value)", u.Scheme)
	}
	if u.Host == "" && u.Query().Get("host") == "" {
		return errors.New("names no host (want postgres://user@host:5432/database)")
	}
	return nil
}

// checkMailbox accepts an address "local@domain".
func checkMailbox(s string) error {
	local, domain, ok := strings.Cut(s, "@")
	if !ok || local == "" || strings.ContainsAny(local, " \t<>\r\n\"") || !isHostname(domain) {
		return fmt.Errorf("want an address like postmaster@example.com")
	}
	return nil
}

// maxNodeID is the longest server.node_id: a host name's length, so that
// any valid server.hostname is a valid node ID.
const maxNodeID = 253

// checkNodeID accepts a node name: letters, digits, '.', '-' and '_'. It is
// stored with every lease and shown in logs, so nothing else is allowed.
func checkNodeID(s string) error {
	if len(s) > maxNodeID {
		return fmt.Errorf("%q is longer than %d characters", s, maxNodeID)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%q is not a node name (letters, digits, '.', '-' and '_' only)", s)
		}
	}
	return nil
}

// checkUserName accepts a POSIX-portable user name (letters, digits, '.',
// '_' and '-', not starting with '-'), at most 32 characters.
func checkUserName(s string) error {
	if len(s) > 32 || s[0] == '-' {
		return fmt.Errorf("%q is not a user name", s)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("%q is not a user name (letters, digits, '.', '-' and '_' only)", s)
		}
	}
	return nil
}

// checkHostname accepts an ASCII DNS host name (LDH labels), which is what
// EHLO and Received headers carry.
func checkHostname(s string) error {
	if !isHostname(s) {
		return fmt.Errorf("%q is not a valid host name", s)
	}
	return nil
}

func isHostname(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return false // all-numeric top label: a mistyped IP address, not a name
	}
	for _, label := range labels {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// splitHostPort splits "host:port" and checks the port is a number 0-65535.
func splitHostPort(s string) (host string, port uint16, err error) {
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%q is not a host:port address", s)
	}
	n, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("%q: port %q is not a number 0-65535", s, ps)
	}
	return h, uint16(n), nil
}

// checkListen accepts "host:port" where host is empty (all addresses), an
// IP address (IPv6 in brackets) or a host name.
func checkListen(s string) error {
	h, _, err := splitHostPort(s)
	if err != nil {
		return err
	}
	if h == "" {
		return nil
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return nil
	}
	if !isHostname(h) {
		return fmt.Errorf("%q: %q is not an IP address or host name", s, h)
	}
	return nil
}

// checkHostPort accepts "host:port" with a non-empty host and a port > 0.
func checkHostPort(s string) error {
	h, port, err := splitHostPort(s)
	if err != nil {
		return err
	}
	if port == 0 {
		return fmt.Errorf("%q: port must not be 0", s)
	}
	if _, err := netip.ParseAddr(h); err != nil && !isHostname(h) {
		return fmt.Errorf("%q: %q is not an IP address or host name", s, h)
	}
	return nil
}

// checkResolver accepts "" or "ip:port": the resolver's own address cannot
// need DNS.
func checkResolver(s string) error {
	if s == "" {
		return nil
	}
	h, port, err := splitHostPort(s)
	if err != nil {
		return err
	}
	if _, err := netip.ParseAddr(h); err != nil || port == 0 {
		return fmt.Errorf("%q is not an ip:port address (e.g. \"127.0.0.1:53\", \"[::1]:53\")", s)
	}
	return nil
}

// checkHTTPSURL accepts an absolute https:// URL with a host.
func checkHTTPSURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an https:// URL", s)
	}
	return nil
}

// checkOneOf accepts one of values.
func checkOneOf(values ...string) func(string) error {
	return func(s string) error {
		if !slices.Contains(values, s) {
			return fmt.Errorf("%q is not one of %s", s, quoteList(values))
		}
		return nil
	}
}

// checkMXPattern accepts a host name, or "*." and a host name (RFC 8461
// section 3.2).
func checkMXPattern(s string) error {
	if !isHostname(strings.TrimPrefix(s, "*.")) {
		return fmt.Errorf("%q is not a host name or *.domain pattern", s)
	}
	return nil
}
