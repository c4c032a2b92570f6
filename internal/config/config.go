// Package config loads Herald's boot configuration: one TOML file, then
// HERALD_<SECTION>_<KEY> environment overrides, into a typed Config.
//
// Config holds only what a node needs to start (listeners, TLS files, data
// directory, limits, resolver, delivery settings). Everything that changes at
// run time (domains, users, DKIM keys, ...) lives in the store.
//
// Every value is parsed and validated here, so callers never parse: durations
// are time.Duration, sizes int64 bytes, CIDRs []netip.Prefix, and so on.
// Unknown keys and bad values are errors of the form "FILE:LINE: what is
// wrong", or "HERALD_X_Y: what is wrong" for environment overrides.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// EnvPrefix starts every environment override: HERALD_<SECTION>_<KEY>.
const EnvPrefix = "HERALD_"

// Config is Herald's boot configuration. The toml tags name the file keys.
type Config struct {
	Server      ServerConfig    `toml:"server"`
	Store       StoreConfig     `toml:"store"`
	Log         LogConfig       `toml:"log"`
	SMTP        ListenConfig    `toml:"smtp"`        // MX listener (port 25 in production)
	Submission  ListenConfig    `toml:"submission"`  // submission with STARTTLS (587)
	Submissions ListenConfig    `toml:"submissions"` // submission with implicit TLS (465)
	HTTP        HTTPConfig      `toml:"http"`        // API, metrics, dashboard
	TLS         TLSConfig       `toml:"tls"`
	Limits      LimitsConfig    `toml:"limits"`
	Auth        AuthConfig      `toml:"auth"`
	Relay       RelayConfig     `toml:"relay"`
	DNS         DNSConfig       `toml:"dns"`
	Queue       QueueConfig     `toml:"queue"`
	Delivery    DeliveryConfig  `toml:"delivery"`
	Checks      ChecksConfig    `toml:"checks"`
	TLSRPT      TLSRPTConfig    `toml:"tlsrpt"`
	Platform    PlatformConfig  `toml:"platform"`
	DNSBL       DNSBLConfig     `toml:"dnsbl"` // DNS blocklists (dnsbl.go)
	Alerts      AlertsConfig    `toml:"alerts"`
	Console     ConsoleConfig   `toml:"console"`
	ACME        ACMEConfig      `toml:"acme"`
	WellKnown   WellKnownConfig `toml:"wellknown"`
}

// ConsoleConfig is the [console] section: the web console served on the
// HTTP listener under "/".
type ConsoleConfig struct {
	// Enabled serves the console; off, "/" answers 404 (the API,
	// metrics and health stay).
	Enabled bool `toml:"enabled"`
	// IdleTimeout ends a login session not used for this long.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// MaxAge ends a login session this long after the login, used or not.
	MaxAge time.Duration `toml:"max_age"`
}

// ACMEConfig is the [acme] section: certificates from an ACME CA (Let's
// Encrypt by default) for server.hostname and the hosts of each local
// domain, with the listeners the CA validates on.
type ACMEConfig struct {
	Enabled      bool          `toml:"enabled"`
	DirectoryURL string        `toml:"directory_url"` // the CA's ACME directory
	Email        string        `toml:"email"`         // account contact ("" for none)
	HTTPAddress  string        `toml:"http_address"`  // listener for http-01 (port 80), redirects and autoconfig; "" for none
	HTTPSAddress string        `toml:"https_address"` // listener for tls-alpn-01 (port 443), MTA-STS and autoconfig; "" for none
	RenewBefore  time.Duration `toml:"renew_before"`  // renew this long before expiry; 0: at two thirds of the lifetime
	Challenges   []string      `toml:"challenges"`    // "tls-alpn-01", "http-01", in order of preference
	Hosts        []string      `toml:"hosts"`         // per-domain host prefixes certified: "mta-sts", "autoconfig", "autodiscover"
	CAFile       string        `toml:"ca_file"`       // extra roots (PEM) trusted for the directory URL (a private CA); "" for the system roots
}

// WellKnownConfig is the [wellknown] section: what Herald publishes for
// the local domains over HTTPS (the MTA-STS policy, mail client
// autoconfiguration).
type WellKnownConfig struct {
	MTASTSMaxAge time.Duration `toml:"mta_sts_max_age"` // max_age of the MTA-STS policies
	MTASTSMX     []string      `toml:"mta_sts_mx"`      // mx lines of the policies; empty: server.hostname
	Autoconfig   bool          `toml:"autoconfig"`      // serve Thunderbird autoconfig and Outlook autodiscover
	IMAPHost     string        `toml:"imap_host"`       // an IMAP server to announce to clients ("" for none)
	IMAPPort     int           `toml:"imap_port"`       // its port: 993 (implicit TLS) or 143 (STARTTLS)
}

// PlatformConfig is the [platform] section: delivery tracking, bounce
// handling, webhooks and sending limits.
type PlatformConfig struct {
	// EventRetention is how long delivery events are kept.
	EventRetention time.Duration `toml:"event_retention"`
	// VERP selects which mail gets a bounces+TOKEN@domain envelope sender
	// so asynchronous bounces are matched: "api" (HTTP API mail), "all"
	// (also SMTP submissions) or "none".
	VERP string `toml:"verp"`
	// UserPerMinute/Hour/Day limit each SMTP user's messages; 0 = no limit.
	UserPerMinute int `toml:"user_per_minute"`
	UserPerHour   int `toml:"user_per_hour"`
	UserPerDay    int `toml:"user_per_day"`
	// WebhookTimeout bounds one webhook POST; WebhookMaxAge is how long a
	// failing webhook is retried.
	WebhookTimeout time.Duration `toml:"webhook_timeout"`
	WebhookMaxAge  time.Duration `toml:"webhook_max_age"`
	// WebhookAllowPrivate lets webhooks reach loopback, private and other
	// special-purpose addresses and internal host names. Off by default:
	// tenants create webhooks, and must not be able to make Herald call
	// internal services (SSRF).
	WebhookAllowPrivate bool `toml:"webhook_allow_private"`
	// MaxWebhooksPerAccount caps the webhooks one account may create.
	MaxWebhooksPerAccount int `toml:"max_webhooks_per_account"`
	// MaxTemplatesPerAccount caps the stored templates of one account
	// (issue 12).
	MaxTemplatesPerAccount int `toml:"max_templates_per_account"`
	// MaxTemplateVersions caps the versions of one stored template.
	MaxTemplateVersions int `toml:"max_template_versions"`
	// MaxBatchRecipients caps the recipients of all the messages of one
	// API request with personalizations (issue 12).
	MaxBatchRecipients int `toml:"max_batch_recipients"`
	// MaxBatchSize caps the estimated (and rendered) size of all the
	// messages of one API request with personalizations, in bytes.
	MaxBatchSize int64 `toml:"max_batch_size"`
	// MaxBatchesPerDay caps the batches one account may create in a day.
	MaxBatchesPerDay int `toml:"max_batches_per_day"`
	// PublicURL is the base URL (scheme and host, optionally a port; no
	// path) of the links Herald puts into mail and serves itself, such as
	// one-click unsubscribe; "" means "https://" + server.hostname.
	PublicURL string `toml:"public_url"`
}

// PublicBaseURL returns platform.public_url without a trailing slash, or
// "https://" + server.hostname when it is not set.
func (c *Config) PublicBaseURL() string {
	if c.Platform.PublicURL == "" {
		return "https://" + c.Server.Hostname
	}
	return strings.TrimSuffix(c.Platform.PublicURL, "/")
}

// ChecksConfig is the [checks] section: how the authentication checks of
// mail received on the MX listener (SPF, DKIM, DMARC, ARC) are applied.
type ChecksConfig struct {
	// AuthservID names this server in Authentication-Results; "" means
	// server.hostname. Headers claiming it that arrive from outside are
	// removed.
	AuthservID string `toml:"authserv_id"`
	// SPFRejectFail refuses MAIL FROM when SPF gives a hard fail (550 5.7.23).
	SPFRejectFail bool `toml:"spf_reject_fail"`
	// DMARCReject refuses (550 5.7.1) a message failing DMARC whose domain
	// publishes p=reject.
	DMARCReject bool `toml:"dmarc_reject"`
	// DMARCQuarantine marks a message failing DMARC with p=quarantine
	// (X-Herald-Quarantine header; local delivery files it in .Junk).
	DMARCQuarantine bool `toml:"dmarc_quarantine"`
	// ARCTrustedSealers are domains whose valid ARC seal lets a message
	// that fails DMARC through, when the first hop's recorded results
	// passed (mailing lists that forward).
	ARCTrustedSealers []string `toml:"arc_trusted_sealers"`
}

// ServerConfig is the [server] section.
type ServerConfig struct {
	// Hostname is the node's public name: HELO/EHLO name, banner and
	// Received headers. It should be the FQDN the MX record points to.
	Hostname string `toml:"hostname"`
	// NodeID names this node among the nodes sharing one store: the
	// queue leases it takes are recorded under it, and at start-up it
	// releases only its own. Letters, digits, '.', '-' and '_', at most
	// 253 characters; unset or "" means Hostname. Two nodes sharing a
	// store must not have the same NodeID: on PostgreSQL a node holds a
	// lock on its NodeID while it runs, and a second one with the same
	// NodeID is refused at start-up (exit 69).
	NodeID string `toml:"node_id"`
	// DataDir holds the embedded store, message bodies and generated keys.
	DataDir string `toml:"data_dir"`
	// User is the account herald serve switches to once its listeners
	// are bound, when started as root: "" means "herald" if that user
	// exists (the Debian package creates it), else stay root with a
	// warning; "root" stays root on purpose. The data directory is handed
	// to the user. Ignored when not started as root.
	User string `toml:"user"`
	// ShutdownTimeout bounds the graceful drain on SIGTERM: sessions and
	// deliveries in progress get this long before they are cut.
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
	// Postmaster receives the delivery notifications that could not be
	// delivered to their sender (double bounces); "" means
	// postmaster@HOSTNAME.
	Postmaster string `toml:"postmaster"`
}

// StoreConfig is the [store] section: where the queue and the shared
// state live.
type StoreConfig struct {
	// URL selects the store: "" is the embedded SQLite store in
	// server.data_dir (one node); a postgres:// (or postgresql://) URL is
	// a PostgreSQL database shared by every node of a cluster. It may hold
	// a password: do not log it.
	URL string `toml:"url"`
}

// LogConfig is the [log] section.
type LogConfig struct {
	Level  slog.Level `toml:"level"`  // debug, info, warn or error
	Format string     `toml:"format"` // "text" or "json"
	File   string     `toml:"file"`   // "" means stderr
}

// ListenConfig is a listener section ([smtp], [submission], [submissions],
// [http]). An empty Listen list disables the listener.
type ListenConfig struct {
	Listen []string `toml:"listen"` // "host:port" addresses, validated
}

// HTTPConfig is the [http] section: the listener of the API, metrics and
// health check, and what one client may hold of it.
type HTTPConfig struct {
	ListenConfig
	// ReadHeaderTimeout bounds reading a request's header (slowloris).
	ReadHeaderTimeout time.Duration `toml:"read_header_timeout"`
	// ReadTimeout bounds reading a whole request, header and body, for
	// every request including unauthenticated ones.
	ReadTimeout time.Duration `toml:"read_timeout"`
	// UploadTimeout replaces ReadTimeout for the body of an authenticated
	// message upload (POST /v1/messages, up to 35 MiB): the default 10m
	// admits 35 MiB at 60 KB/s.
	UploadTimeout time.Duration `toml:"upload_timeout"`
	// WriteTimeout bounds the time from the end of the request header to
	// the end of the response (for an upload: after UploadTimeout).
	WriteTimeout time.Duration `toml:"write_timeout"`
	// IdleTimeout closes keep-alive connections idle this long.
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// MaxHeaderBytes bounds the request line and header fields (431 beyond).
	MaxHeaderBytes int `toml:"max_header_bytes"`
	// MaxConnections caps concurrent HTTP connections in total.
	MaxConnections int `toml:"max_connections"`
	// MaxConnectionsPerIP caps concurrent HTTP connections per client
	// address (IPv6: per /64); 0 means no per-address cap (behind a
	// reverse proxy every client has the proxy's address).
	MaxConnectionsPerIP int `toml:"max_connections_per_ip"`
}

// TLSConfig is the [tls] section.
type TLSConfig struct {
	// CertFile and KeyFile are PEM files (chain and key). Both empty means a
	// self-signed certificate generated in DataDir.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// MinVersion is tls.VersionTLS12 or tls.VersionTLS13.
	MinVersion uint16 `toml:"min_version"`
}

// LimitsConfig is the [limits] section: every size, count and timeout a
// client controls.
type LimitsConfig struct {
	MaxMessageSize       int64         `toml:"max_message_size"`        // bytes, advertised in EHLO SIZE
	MaxRecipients        int           `toml:"max_recipients"`          // RCPT TO per transaction
	MaxLineLength        int           `toml:"max_line_length"`         // DATA text line, incl. CRLF (RFC 5321 4.5.3.1.6)
	MaxCommandLineLength int           `toml:"max_command_line_length"` // command line, incl. CRLF (RFC 5321 4.5.3.1.4)
	MaxConnections       int           `toml:"max_connections"`         // concurrent inbound connections, all listeners
	MaxConnectionsPerIP  int           `toml:"max_connections_per_ip"`  // concurrent inbound connections per client IP
	MaxJunkCommands      int           `toml:"max_junk_commands"`       // commands that move no mail (NOOP, RSET, ...) since the last accepted message
	MaxErrors            int           `toml:"max_errors"`              // error replies since the last accepted message before disconnecting
	PregreetWait         time.Duration `toml:"pregreet_wait"`           // MX listener: wait before the greeting to catch clients that talk first; 0 disables
	IdleTimeout          time.Duration `toml:"idle_timeout"`            // wait for a command (RFC 5321 4.5.3.2)
	DataTimeout          time.Duration `toml:"data_timeout"`            // without progress during DATA
	SessionTimeout       time.Duration `toml:"session_timeout"`         // whole session
	MaxReceivedHeaders   int           `toml:"max_received_headers"`    // loop detection (RFC 5321 6.3)
	QueueMinFree         int64         `toml:"queue_min_free"`          // refuse new mail (452 4.3.1) below this much free disk
}

// AuthConfig is the [auth] section: brute-force protection for AUTH and
// the password policy.
type AuthConfig struct {
	MaxFailures   int           `toml:"max_failures"`   // failures within FailureWindow before lockout
	FailureWindow time.Duration `toml:"failure_window"` // window in which failures are counted
	Lockout       time.Duration `toml:"lockout"`        // how long a locked-out client address is refused
	FailureDelay  time.Duration `toml:"failure_delay"`  // added per failure before replying; 0 disables
	// AccountDelay slows AUTH for an account that had MaxFailures failures
	// (from any addresses) within FailureWindow: waited before each check,
	// doubling per further failure up to AccountMaxDelay. Never a refusal.
	// 0 disables.
	AccountDelay    time.Duration `toml:"account_delay"`
	AccountMaxDelay time.Duration `toml:"account_max_delay"`
	// MinPasswordLength is the fewest characters (Unicode code points, not
	// bytes) a password set with `herald user add|passwd` may have.
	MinPasswordLength int `toml:"min_password_length"`
}

// MinPasswordFloor is the lowest auth.min_password_length accepted: NIST SP
// 800-63B never allows fewer than 8 characters.
const MinPasswordFloor = 8

// maxPasswordLength mirrors auth.MaxPasswordLen (bytes), the longest
// password Herald hashes.
const maxPasswordLength = 1024

// RelayConfig is the [relay] section.
type RelayConfig struct {
	// Allow lists client networks that may relay without AUTH. Empty (the
	// default) means only authenticated clients relay.
	Allow []netip.Prefix `toml:"allow"`
}

// DNSConfig is the [dns] section.
type DNSConfig struct {
	// Resolver is "ip:port" of the DNS server to ask; "" means the system's
	// resolv.conf.
	Resolver string        `toml:"resolver"`
	Timeout  time.Duration `toml:"timeout"` // per query
}

// QueueConfig is the [queue] section: retry schedule and concurrency.
type QueueConfig struct {
	RetryInitial             time.Duration `toml:"retry_initial"`               // first retry after a temporary failure
	RetryMax                 time.Duration `toml:"retry_max"`                   // cap of the backoff
	RetryFactor              float64       `toml:"retry_factor"`                // backoff multiplier (>= 1)
	RetryJitter              float64       `toml:"retry_jitter"`                // random fraction +/- applied to each delay (0..1)
	MaxLifetime              time.Duration `toml:"max_lifetime"`                // bounce (expire) after this long in the queue
	DelayWarning             time.Duration `toml:"delay_warning"`               // send a "delayed" DSN after this long; 0 disables
	PollInterval             time.Duration `toml:"poll_interval"`               // how often the scheduler looks for due work
	LeaseTimeout             time.Duration `toml:"lease_timeout"`               // a delivery's lease without renewal (renewed every third of it); a dead node's mail waits this long
	Workers                  int           `toml:"workers"`                     // concurrent deliveries in total
	MaxPerDestination        int           `toml:"max_per_destination"`         // concurrent connections per destination domain
	MaxMessagesPerConnection int           `toml:"max_messages_per_connection"` // messages sent over one reused connection
	ThrottleBackoff          time.Duration `toml:"throttle_backoff"`            // pause of a destination after a throttling reply (doubles, up to 30x)
}

// DeliveryConfig is the [delivery] section: outbound SMTP.
type DeliveryConfig struct {
	Port           int               `toml:"port"`               // remote SMTP port (25)
	HeloName       string            `toml:"helo_name"`          // effective EHLO name; Server.Hostname when not set
	ConnectTimeout time.Duration     `toml:"connect_timeout"`    // TCP connect + banner
	CommandTimeout time.Duration     `toml:"command_timeout"`    // per command reply (RFC 5321 4.5.3.2)
	SourceIPv4     netip.Addr        `toml:"source_ipv4"`        // bind address for IPv4 connections; zero = any
	SourceIPv6     netip.Addr        `toml:"source_ipv6"`        // bind address for IPv6 connections; zero = any
	Smarthost      string            `toml:"smarthost"`          // "host:port" to relay all mail through; "" = direct MX
	SmarthostUser  string            `toml:"smarthost_username"` // AUTH user at the smarthost; "" = no AUTH
	SmarthostPass  string            `toml:"smarthost_password"` // AUTH password (prefer the environment variable)
	SmarthostTLS   string            `toml:"smarthost_tls"`      // "starttls" (required) or "implicit"
	Routes         map[string]string `toml:"routes"`             // domain -> "host:port", static per-domain routes
	RequireTLS     bool              `toml:"require_tls"`        // refuse to deliver without TLS
	MTASTS         bool              `toml:"mta_sts"`            // enforce recipient domains' MTA-STS policies (RFC 8461)
	DANE           bool              `toml:"dane"`               // enforce TLSA records when the resolver validates DNSSEC (RFC 7672)
}

// TLSRPTConfig is the [tlsrpt] section: daily TLS reports (RFC 8460) to the
// domains we deliver to that ask for them.
type TLSRPTConfig struct {
	Enabled      bool   `toml:"enabled"`
	Organization string `toml:"organization"` // organization-name in reports; "" = server.hostname
	Contact      string `toml:"contact"`      // contact-info; "" = postmaster@server.hostname
	From         string `toml:"from"`         // sender of mailed reports; "" = tlsrpt-noreply@server.hostname
}

// Default returns the development default configuration: everything on
// loopback, unprivileged ports, data in ./herald-data and a self-signed
// certificate generated there.
func Default() *Config {
	return &Config{
		Server: ServerConfig{
			Hostname:        "localhost",
			NodeID:          "localhost",
			DataDir:         "./herald-data",
			ShutdownTimeout: 30 * time.Second,
		},
		Log: LogConfig{Level: slog.LevelInfo, Format: "text"},
		ACME: ACMEConfig{DirectoryURL: "https://acme-v02.api.letsencrypt.org/directory", HTTPAddress: ":80", HTTPSAddress: ":443",
			Challenges: []string{"tls-alpn-01", "http-01"}, Hosts: []string{"mta-sts", "autoconfig", "autodiscover"}},
		WellKnown:   WellKnownConfig{MTASTSMaxAge: 7 * 24 * time.Hour, MTASTSMX: []string{}, Autoconfig: true, IMAPPort: 993},
		SMTP:        ListenConfig{Listen: []string{"127.0.0.1:2525"}},
		Submission:  ListenConfig{Listen: []string{"127.0.0.1:2587"}},
		Submissions: ListenConfig{Listen: []string{"127.0.0.1:2465"}},
		HTTP: HTTPConfig{
			ListenConfig:        ListenConfig{Listen: []string{"127.0.0.1:8025"}},
			ReadHeaderTimeout:   10 * time.Second,
			ReadTimeout:         30 * time.Second,
			UploadTimeout:       10 * time.Minute,
			WriteTimeout:        60 * time.Second,
			IdleTimeout:         2 * time.Minute,
			MaxHeaderBytes:      16 << 10,
			MaxConnections:      1000,
			MaxConnectionsPerIP: 64,
		},
		TLS: TLSConfig{MinVersion: tlsVersion12},
		Limits: LimitsConfig{
			MaxMessageSize:       25 << 20,
			MaxRecipients:        100,
			MaxLineLength:        1000,
			MaxCommandLineLength: 512,
			MaxConnections:       1000,
			MaxConnectionsPerIP:  20,
			MaxJunkCommands:      1000,
			MaxErrors:            10,
			PregreetWait:         time.Second,
			IdleTimeout:          5 * time.Minute,
			DataTimeout:          10 * time.Minute,
			SessionTimeout:       30 * time.Minute,
			MaxReceivedHeaders:   30,
			QueueMinFree:         100 << 20,
		},
		Auth: AuthConfig{
			MaxFailures:     5,
			FailureWindow:   10 * time.Minute,
			Lockout:         15 * time.Minute,
			FailureDelay:    time.Second,
			AccountDelay:    time.Second,
			AccountMaxDelay: 15 * time.Second,
			// NIST SP 800-63B: 8 at the very least, 15 advised for a
			// password alone; SMTP AUTH is open to guessing from anywhere.
			MinPasswordLength: 12,
		},
		Relay: RelayConfig{Allow: []netip.Prefix{}},
		DNS:   DNSConfig{Timeout: 5 * time.Second},
		Queue: QueueConfig{
			RetryInitial:             5 * time.Minute,
			RetryMax:                 time.Hour,
			RetryFactor:              2.0,
			RetryJitter:              0.2,
			MaxLifetime:              120 * time.Hour,
			DelayWarning:             4 * time.Hour,
			PollInterval:             time.Second,
			LeaseTimeout:             time.Minute,
			Workers:                  100,
			MaxPerDestination:        20,
			MaxMessagesPerConnection: 100,
			ThrottleBackoff:          time.Minute,
		},
		Checks: ChecksConfig{
			DMARCReject:       true,
			DMARCQuarantine:   true,
			ARCTrustedSealers: []string{},
		},
		Delivery: DeliveryConfig{
			Port:           25,
			HeloName:       "localhost",
			ConnectTimeout: 30 * time.Second,
			CommandTimeout: 5 * time.Minute,
			SmarthostTLS:   "starttls",
			Routes:         map[string]string{},
			MTASTS:         true,
			DANE:           true,
		},
		TLSRPT: TLSRPTConfig{Enabled: true},
		DNSBL:  defaultDNSBL(),
		Platform: PlatformConfig{
			EventRetention: 30 * 24 * time.Hour,
			VERP:           "api",
			WebhookTimeout: 10 * time.Second,
			WebhookMaxAge:  24 * time.Hour,

			MaxWebhooksPerAccount:  20,
			MaxTemplatesPerAccount: 200,
			MaxTemplateVersions:    100,
			MaxBatchRecipients:     5000,
			MaxBatchSize:           256 << 20,
			MaxBatchesPerDay:       10000,
		},
		Alerts: AlertsConfig{
			Enabled:          true,
			Interval:         time.Minute,
			Email:            []string{},
			HistoryRetention: 90 * 24 * time.Hour,
			Rules:            map[string]AlertRule{},
		},
		Console: ConsoleConfig{Enabled: true, IdleTimeout: 30 * time.Minute, MaxAge: 12 * time.Hour},
	}
}

// Load returns the configuration: Default, then the TOML file at path (if
// path is not ""), then HERALD_<SECTION>_<KEY> variables of the process
// environment. Load("") is the defaults plus the environment. `herald config
// check FILE` is Load.
func Load(path string) (*Config, error) {
	var data []byte
	if path != "" {
		var err error
		data, err = os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	return Parse(path, data, os.Environ())
}

// Parse is Load on file contents and an explicit environment (a list of
// "NAME=value" like os.Environ). name is used in error messages; when name
// is "" the data are ignored and only the environment applies.
func Parse(name string, data []byte, environ []string) (*Config, error) {
	c := Default()
	helo := false // whether delivery.helo_name was set explicitly
	var errs errList
	idx := c.index()

	if name != "" {
		doc, err := decode(name, data)
		if err != nil {
			return nil, err
		}
		errs = applyDoc(name, doc, idx)
		helo = doc.defined("delivery", "helo_name")
	}

	envErrs, heloEnv := applyEnv(environ, idx)
	errs = append(errs, envErrs...)
	helo = helo || heloEnv

	if len(errs) == 0 {
		errs = c.crossCheck(idx)
	}
	if len(errs) > 0 {
		return nil, errs.join()
	}
	if !helo || c.Delivery.HeloName == "" {
		c.Delivery.HeloName = c.Server.Hostname
	}
	if _, set := idx.src["server.node_id"]; !set || c.Server.NodeID == "" {
		c.Server.NodeID = c.Server.Hostname
	}
	return c, nil
}

// Error is one configuration problem. Exactly one of Line (with File) or Var
// locates it; neither is set for a problem not tied to one source.
type Error struct {
	File string // file name as given to Load
	Line int    // 1-based line in File, 0 if unknown
	Var  string // environment variable, if the value came from there
	Msg  string // what is wrong, e.g. `limits.max_message_size: "12XB" is not a size`
}

// Error formats "FILE:LINE: what is wrong" or "VAR: what is wrong".
func (e *Error) Error() string {
	switch {
	case e.Var != "":
		return e.Var + ": " + e.Msg
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	default:
		return "config: " + e.Msg
	}
}

type errList []*Error

// join returns the single error, or all of them one per line, in order.
func (l errList) join() error {
	sort.SliceStable(l, func(i, j int) bool {
		if (l[i].Var == "") != (l[j].Var == "") {
			return l[i].Var == "" // file errors first
		}
		return l[i].Line < l[j].Line
	})
	if len(l) == 1 {
		return l[0]
	}
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errors.Join(errs...)
}

// source records where a key's value came from, for cross-key checks.
type source struct {
	file string
	line int
	env  string
}

func (s source) err(format string, args ...any) *Error {
	return &Error{File: s.file, Line: s.line, Var: s.env, Msg: fmt.Sprintf(format, args...)}
}

// minLeaseTimeout bounds queue.lease_timeout from below: every running
// delivery writes a renewal every third of it.
const minLeaseTimeout = time.Second

// maxPregreetWait bounds limits.pregreet_wait: each new client waits that
// long, holding a connection slot (Postfix's postscreen_greet_wait is 6s).
const maxPregreetWait = 30 * time.Second

// crossCheck validates relations between keys after everything is applied.
func (c *Config) crossCheck(idx *index) errList {
	var errs errList
	// at locates a problem at the first of keys that was set explicitly.
	at := func(keys ...string) source {
		for _, k := range keys {
			if s, ok := idx.src[k]; ok {
				return s
			}
		}
		return source{}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		k := "tls.cert_file"
		if c.TLS.KeyFile != "" {
			k = "tls.key_file"
		}
		errs = append(errs, at(k).err("tls.cert_file and tls.key_file must be set together (both empty means a self-signed certificate)"))
	}
	if c.Queue.RetryInitial > c.Queue.RetryMax {
		errs = append(errs, at("queue.retry_max", "queue.retry_initial").err("queue.retry_max (%s) is less than queue.retry_initial (%s)", c.Queue.RetryMax, c.Queue.RetryInitial))
	}
	if c.Queue.DelayWarning >= c.Queue.MaxLifetime {
		errs = append(errs, at("queue.delay_warning", "queue.max_lifetime").err("queue.delay_warning (%s) must be less than queue.max_lifetime (%s); use \"0\" to disable it", c.Queue.DelayWarning, c.Queue.MaxLifetime))
	}
	if c.Queue.LeaseTimeout < minLeaseTimeout {
		errs = append(errs, at("queue.lease_timeout").err("queue.lease_timeout (%s) is less than %s: running deliveries renew their leases every third of it", c.Queue.LeaseTimeout, minLeaseTimeout))
	}
	if c.Limits.PregreetWait > maxPregreetWait {
		errs = append(errs, at("limits.pregreet_wait").err("limits.pregreet_wait (%s) is more than %s: every new client would wait that long for the greeting", c.Limits.PregreetWait, maxPregreetWait))
	}
	if c.Limits.MaxConnectionsPerIP > c.Limits.MaxConnections {
		errs = append(errs, at("limits.max_connections_per_ip", "limits.max_connections").err("limits.max_connections_per_ip (%d) is more than limits.max_connections (%d)", c.Limits.MaxConnectionsPerIP, c.Limits.MaxConnections))
	}
	if c.HTTP.MaxConnectionsPerIP > c.HTTP.MaxConnections {
		errs = append(errs, at("http.max_connections_per_ip", "http.max_connections").err("http.max_connections_per_ip (%d) is more than http.max_connections (%d)", c.HTTP.MaxConnectionsPerIP, c.HTTP.MaxConnections))
	}
	if c.HTTP.ReadHeaderTimeout > c.HTTP.ReadTimeout {
		errs = append(errs, at("http.read_header_timeout", "http.read_timeout").err("http.read_header_timeout (%s) is more than http.read_timeout (%s), which bounds the header too", c.HTTP.ReadHeaderTimeout, c.HTTP.ReadTimeout))
	}
	if c.HTTP.UploadTimeout < c.HTTP.ReadTimeout {
		errs = append(errs, at("http.upload_timeout", "http.read_timeout").err("http.upload_timeout (%s) is less than http.read_timeout (%s): uploads would get less time than other requests", c.HTTP.UploadTimeout, c.HTTP.ReadTimeout))
	}
	if c.Console.IdleTimeout > c.Console.MaxAge {
		errs = append(errs, at("console.idle_timeout", "console.max_age").err("console.idle_timeout (%s) is more than console.max_age (%s)", c.Console.IdleTimeout, c.Console.MaxAge))
	}
	if c.Queue.MaxPerDestination > c.Queue.Workers {
		errs = append(errs, at("queue.max_per_destination", "queue.workers").err("queue.max_per_destination (%d) is more than queue.workers (%d)", c.Queue.MaxPerDestination, c.Queue.Workers))
	}
	errs = append(errs, c.dnsblCrossCheck(at)...)
	errs = append(errs, c.checkACME(at)...)
	if c.Delivery.SmarthostUser != "" || c.Delivery.SmarthostPass != "" {
		if c.Delivery.Smarthost == "" {
			errs = append(errs, at("delivery.smarthost_username", "delivery.smarthost_password").err("delivery.smarthost_username/smarthost_password are set but delivery.smarthost is empty"))
		} else if c.Delivery.SmarthostUser == "" || c.Delivery.SmarthostPass == "" {
			errs = append(errs, at("delivery.smarthost_username", "delivery.smarthost_password").err("delivery.smarthost_username and delivery.smarthost_password must be set together"))
		}
	}
	return errs
}

// maxMTASTSMaxAge is RFC 8461's limit on max_age (about a year).
const maxMTASTSMaxAge = 31557600 * time.Second

// checkACME validates the [acme] and [wellknown] keys against each other
// and the rest.
func (c *Config) checkACME(at func(keys ...string) source) errList {
	var errs errList
	a := c.ACME
	if a.Enabled {
		if !strings.Contains(c.Server.Hostname, ".") {
			errs = append(errs, at("acme.enabled", "server.hostname").err("acme.enabled needs server.hostname to be the server's public DNS name, not %q", c.Server.Hostname))
		}
		if a.DirectoryURL == "" {
			errs = append(errs, at("acme.directory_url", "acme.enabled").err("acme.enabled needs acme.directory_url"))
		}
		if len(a.Challenges) == 0 {
			errs = append(errs, at("acme.challenges", "acme.enabled").err("acme.challenges is empty: list \"tls-alpn-01\", \"http-01\" or both"))
		}
		if slices.Contains(a.Challenges, "tls-alpn-01") && a.HTTPSAddress == "" {
			errs = append(errs, at("acme.https_address", "acme.challenges").err("acme.challenges has tls-alpn-01 but acme.https_address is empty: the CA validates on port 443"))
		}
		if slices.Contains(a.Challenges, "http-01") && a.HTTPAddress == "" {
			errs = append(errs, at("acme.http_address", "acme.challenges").err("acme.challenges has http-01 but acme.http_address is empty: the CA validates on port 80"))
		}
		if a.HTTPAddress != "" && a.HTTPAddress == a.HTTPSAddress {
			errs = append(errs, at("acme.https_address", "acme.http_address").err("acme.http_address and acme.https_address are both %q", a.HTTPAddress))
		}
	}
	w := c.WellKnown
	if w.MTASTSMaxAge > maxMTASTSMaxAge || w.MTASTSMaxAge < time.Second {
		errs = append(errs, at("wellknown.mta_sts_max_age").err("wellknown.mta_sts_max_age (%s) must be between 1s and %s (RFC 8461)", w.MTASTSMaxAge, maxMTASTSMaxAge))
	}
	return errs
}

// MarshalTOML renders the configuration as a TOML file that Parse reads back
// to an equal Config. It includes secrets (smarthost_password): do not log it.
func (c *Config) MarshalTOML() ([]byte, error) {
	doc := map[string]map[string]any{}
	for _, f := range c.fields() {
		sec, key, _ := strings.Cut(f.name, ".")
		if doc[sec] == nil {
			doc[sec] = map[string]any{}
		}
		doc[sec][key] = f.get()
	}
	var buf bytes.Buffer
	enc := toml.NewEncoder(&buf)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("config: encode: %w", err)
	}
	return buf.Bytes(), nil
}

// Keys returns every key Config knows, as "section.key", in file order.
func Keys() []string {
	fs := Default().fields()
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.name
	}
	return out
}

// EnvName returns the environment variable that overrides key
// ("limits.max_message_size" -> "HERALD_LIMITS_MAX_MESSAGE_SIZE").
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}
