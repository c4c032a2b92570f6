package config

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dnsbl"
)

func TestDefault(t *testing.T) {
	t.Parallel()
	c := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"hostname", c.Server.Hostname, "localhost"},
		{"data_dir", c.Server.DataDir, "./herald-data"},
		{"smtp", c.SMTP.Listen, []string{"127.0.0.1:2525"}},
		{"submission", c.Submission.Listen, []string{"127.0.0.1:2587"}},
		{"submissions", c.Submissions.Listen, []string{"127.0.0.1:2465"}},
		{"http", c.HTTP.Listen, []string{"127.0.0.1:8025"}},
		{"cert", c.TLS.CertFile + c.TLS.KeyFile, ""},
		{"min_version", c.TLS.MinVersion, uint16(tlsVersion12)},
		{"max_message_size", c.Limits.MaxMessageSize, int64(25 << 20)},
		{"max_line_length", c.Limits.MaxLineLength, 1000},
		{"idle_timeout", c.Limits.IdleTimeout, 5 * time.Minute},
		{"max_junk_commands", c.Limits.MaxJunkCommands, 1000},
		{"pregreet_wait", c.Limits.PregreetWait, time.Second},
		{"max_lifetime", c.Queue.MaxLifetime, 120 * time.Hour},
		{"delivery.port", c.Delivery.Port, 25},
		{"helo", c.Delivery.HeloName, "localhost"},
		{"log.level", c.Log.Level, slog.LevelInfo},
	}
	for _, ck := range checks {
		if !reflect.DeepEqual(ck.got, ck.want) {
			t.Errorf("%s = %#v, want %#v", ck.name, ck.got, ck.want)
		}
	}

	// No file, no environment: exactly the defaults, and they pass validation.
	got, err := Parse("", nil, nil)
	if err != nil {
		t.Fatalf("Parse defaults: %v", err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Errorf("Parse(\"\") = %+v, want Default()", got)
	}
	// Default() returns fresh values each time.
	a, b := Default(), Default()
	a.SMTP.Listen[0] = "changed"
	if b.SMTP.Listen[0] != "127.0.0.1:2525" {
		t.Error("Default() shares slices between calls")
	}
}

const fullFile = `
[server]
hostname = "mx1.example.net"
data_dir = "/var/lib/herald"
shutdown_timeout = "45s"

[log]
level = "debug"
format = "json"
file = "/var/log/herald.log"

[smtp]
listen = ["0.0.0.0:25", "[::]:25"]
[submission]
listen = ["[::1]:587"]
[submissions]
listen = []
[http]
listen = ["localhost:8080"]
read_header_timeout = "5s"
read_timeout = "20s"
upload_timeout = "15m"
write_timeout = "40s"
idle_timeout = "90s"
max_header_bytes = 8192
max_connections = 200
max_connections_per_ip = 0

[tls]
cert_file = "/etc/herald/cert.pem"
key_file = "/etc/herald/key.pem"
min_version = "1.3"

[limits]
max_message_size = "10MB"
max_recipients = 50
max_line_length = 2000
max_command_line_length = 1024
max_connections = 500
max_connections_per_ip = 10
max_junk_commands = 200
max_errors = 3
pregreet_wait = "2500ms"
idle_timeout = "6m"
data_timeout = "11m"
session_timeout = "1h"
max_received_headers = 50

[auth]
max_failures = 3
failure_window = "20m"
lockout = "1h"
failure_delay = "0"
account_delay = "2s"
account_max_delay = "1m"
min_password_length = 16

[relay]
allow = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]

[dns]
resolver = "[::1]:5353"
timeout = "2s"

[queue]
retry_initial = "1m"
retry_max = "2h"
retry_factor = 1.5
retry_jitter = 0
max_lifetime = "72h"
delay_warning = "0"
poll_interval = "500ms"
lease_timeout = "30s"
workers = 10
max_per_destination = 5
max_messages_per_connection = 7

[delivery]
port = 2525
helo_name = "out.example.net"
connect_timeout = "10s"
command_timeout = "2m"
source_ipv4 = "192.0.2.10"
source_ipv6 = "2001:db8::10"
smarthost = "relay.example.net:587"
smarthost_username = "herald"
smarthost_password = "s3cret"
smarthost_tls = "implicit"
require_tls = true
mta_sts = false

[platform]
event_retention = "48h"
verp = "all"
user_per_minute = 10
user_per_hour = 100
user_per_day = 1000
webhook_timeout = "5s"
webhook_max_age = "12h"
webhook_allow_private = true
max_webhooks_per_account = 5
max_templates_per_account = 50
max_template_versions = 10

[console]
enabled = false
idle_timeout = "10m"
max_age = "8h"

[tlsrpt]
enabled = false
organization = "Example Net"
contact = "tls@example.net"
from = "reports@example.net"

[checks]
authserv_id = "auth.example.net"
spf_reject_fail = true
dmarc_reject = false
dmarc_quarantine = false
arc_trusted_sealers = ["lists.example.org", "google.com"]

[dnsbl]
client_lists = ["zen.spamhaus.org=127.0.0.[2..11]*3", "bl.spamcop.net", "list.dnswl.org=127.0.[0..255].[1..3]*-2"]
threshold = 3
timeout = "3s"
cache_size = 500
reputation_ip_lists = ["zen.spamhaus.org"]
reputation_domain_lists = ["dbl.spamhaus.org=127.0.1.[2..99]"]
reputation_interval = "1h"
own_ips = ["192.0.2.10", "2001:db8::10"]
own_domains = ["example.net"]

[delivery.routes]
"Example.ORG." = "mx.internal:25"
"example.com" = "[2001:db8::25]:2525"

[alerts]
enabled = false
interval = "30s"
email = ["ops@example.net", "oncall@example.net"]
webhook_url = "https://hooks.example.net/T0/B0/x"
webhook_allow_private = true
history_retention = "240h"

[alerts.rules.bounce_rate]
threshold = "2%"
window = "2h"
min_volume = 50

[alerts.rules.disk_free]
enabled = false

[alerts.rules.gmail]
kind = "deferral_rate"
destination = "Gmail.COM."
threshold = 0.1

[alerts.rules.queue_oldest]
threshold = "30m"
`

func TestFullFile(t *testing.T) {
	t.Parallel()
	c, err := Parse("full.toml", []byte(fullFile), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Config{
		Server:      ServerConfig{Hostname: "mx1.example.net", NodeID: "mx1.example.net", DataDir: "/var/lib/herald", ShutdownTimeout: 45 * time.Second},
		Log:         LogConfig{Level: slog.LevelDebug, Format: "json", File: "/var/log/herald.log"},
		SMTP:        ListenConfig{Listen: []string{"0.0.0.0:25", "[::]:25"}},
		Submission:  ListenConfig{Listen: []string{"[::1]:587"}},
		Submissions: ListenConfig{Listen: []string{}},
		HTTP: HTTPConfig{ListenConfig: ListenConfig{Listen: []string{"localhost:8080"}},
			ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 20 * time.Second, UploadTimeout: 15 * time.Minute,
			WriteTimeout: 40 * time.Second, IdleTimeout: 90 * time.Second, MaxHeaderBytes: 8192,
			MaxConnections: 200, MaxConnectionsPerIP: 0},
		TLS: TLSConfig{CertFile: "/etc/herald/cert.pem", KeyFile: "/etc/herald/key.pem", MinVersion: tlsVersion13},
		Limits: LimitsConfig{
			MaxMessageSize: 10_000_000, MaxRecipients: 50, MaxLineLength: 2000, MaxCommandLineLength: 1024,
			MaxConnections: 500, MaxConnectionsPerIP: 10, MaxJunkCommands: 200, MaxErrors: 3, PregreetWait: 2500 * time.Millisecond,
			IdleTimeout: 6 * time.Minute, DataTimeout: 11 * time.Minute, SessionTimeout: time.Hour,
			MaxReceivedHeaders: 50, QueueMinFree: 100 << 20,
		},
		Auth: AuthConfig{MaxFailures: 3, FailureWindow: 20 * time.Minute, Lockout: time.Hour, FailureDelay: 0,
			AccountDelay: 2 * time.Second, AccountMaxDelay: time.Minute, MinPasswordLength: 16},
		Relay: RelayConfig{Allow: []netip.Prefix{
			netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.0.2.7/32"), netip.MustParsePrefix("2001:db8::/32"),
		}},
		DNS: DNSConfig{Resolver: "[::1]:5353", Timeout: 2 * time.Second},
		Queue: QueueConfig{
			RetryInitial: time.Minute, RetryMax: 2 * time.Hour, RetryFactor: 1.5, RetryJitter: 0,
			MaxLifetime: 72 * time.Hour, DelayWarning: 0, PollInterval: 500 * time.Millisecond, LeaseTimeout: 30 * time.Second,
			Workers: 10, MaxPerDestination: 5, MaxMessagesPerConnection: 7, ThrottleBackoff: time.Minute,
		},
		Delivery: DeliveryConfig{
			Port: 2525, HeloName: "out.example.net", ConnectTimeout: 10 * time.Second, CommandTimeout: 2 * time.Minute,
			SourceIPv4: netip.MustParseAddr("192.0.2.10"), SourceIPv6: netip.MustParseAddr("2001:db8::10"),
			Smarthost: "relay.example.net:587", SmarthostUser: "herald", SmarthostPass: "s3cret", SmarthostTLS: "implicit",
			Routes:     map[string]string{"example.org": "mx.internal:25", "example.com": "[2001:db8::25]:2525"},
			RequireTLS: true, MTASTS: false, DANE: true,
		},
		TLSRPT: TLSRPTConfig{Enabled: false, Organization: "Example Net", Contact: "tls@example.net", From: "reports@example.net"},
		Platform: PlatformConfig{EventRetention: 48 * time.Hour, VERP: "all", UserPerMinute: 10, UserPerHour: 100, UserPerDay: 1000,
			WebhookTimeout: 5 * time.Second, WebhookMaxAge: 12 * time.Hour, WebhookAllowPrivate: true,
			MaxWebhooksPerAccount: 5, MaxTemplatesPerAccount: 50, MaxTemplateVersions: 10,
			MaxBatchRecipients: 5000, MaxBatchSize: 256 << 20, MaxBatchesPerDay: 10000},
		Console: ConsoleConfig{Enabled: false, IdleTimeout: 10 * time.Minute, MaxAge: 8 * time.Hour},
		Checks: ChecksConfig{AuthservID: "auth.example.net", SPFRejectFail: true, DMARCReject: false, DMARCQuarantine: false,
			ARCTrustedSealers: []string{"lists.example.org", "google.com"}},
		DNSBL: DNSBLConfig{
			ClientLists: []dnsbl.Site{
				mustSite("zen.spamhaus.org=127.0.0.[2..11]*3", true), mustSite("bl.spamcop.net", true),
				mustSite("list.dnswl.org=127.0.[0..255].[1..3]*-2", true)},
			Threshold: 3, Timeout: 3 * time.Second, CacheSize: 500,
			ReputationIPLists:     []dnsbl.Site{mustSite("zen.spamhaus.org", false)},
			ReputationDomainLists: []dnsbl.Site{mustSite("dbl.spamhaus.org=127.0.1.[2..99]", false)},
			ReputationInterval:    time.Hour,
			OwnIPs:                []netip.Addr{netip.MustParseAddr("192.0.2.10"), netip.MustParseAddr("2001:db8::10")},
			OwnDomains:            []string{"example.net"},
		},
		Alerts: AlertsConfig{Enabled: false, Interval: 30 * time.Second, Email: []string{"ops@example.net", "oncall@example.net"},
			WebhookURL: "https://hooks.example.net/T0/B0/x", WebhookAllowPrivate: true, HistoryRetention: 240 * time.Hour,
			Rules: map[string]AlertRule{
				"bounce_rate": {Kind: "bounce_rate", Enabled: true, Threshold: 0.02, Window: 2 * time.Hour, MinVolume: 50,
					Set: map[string]bool{"threshold": true, "window": true, "min_volume": true}},
				"disk_free": {Kind: "disk_free", Enabled: false, Set: map[string]bool{"enabled": true}},
				"gmail": {Kind: "deferral_rate", Enabled: true, Threshold: 0.1, Destination: "gmail.com",
					Set: map[string]bool{"kind": true, "destination": true, "threshold": true}},
				"queue_oldest": {Kind: "queue_oldest", Enabled: true, Threshold: 1800, Set: map[string]bool{"threshold": true}},
			}},
		ACME:      Default().ACME,
		WellKnown: Default().WellKnown,
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("Parse(full) =\n%+v\nwant\n%+v", c, want)
	}

	// Round trip: marshal, parse again, same Config.
	out, err := c.MarshalTOML()
	if err != nil {
		t.Fatalf("MarshalTOML: %v", err)
	}
	back, err := Parse("marshalled.toml", out, nil)
	if err != nil {
		t.Fatalf("Parse(MarshalTOML()): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip differs:\n%+v\nwant\n%+v\nTOML:\n%s", back, c, out)
	}
	// And the defaults round-trip too.
	out, err = Default().MarshalTOML()
	if err != nil {
		t.Fatal(err)
	}
	if back, err := Parse("d.toml", out, nil); err != nil || !reflect.DeepEqual(back, Default()) {
		t.Fatalf("defaults round trip: err=%v\n%s", err, out)
	}
}

func TestHeloDefaultsToHostname(t *testing.T) {
	t.Parallel()
	c, err := Parse("h.toml", []byte("[server]\nhostname = \"mx.example.com\"\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.Delivery.HeloName != "mx.example.com" {
		t.Errorf("helo = %q, want server.hostname", c.Delivery.HeloName)
	}
	c, err = Parse("h.toml", []byte("[server]\nhostname = \"mx.example.com\"\n[delivery]\nhelo_name = \"\"\n"), []string{"HERALD_SERVER_HOSTNAME=env.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Delivery.HeloName != "env.example.com" {
		t.Errorf("helo = %q, want env hostname", c.Delivery.HeloName)
	}
}

// server.node_id defaults to server.hostname (from the file or the
// environment), "" included; an explicit name wins; anything but letters,
// digits, '.', '-' and '_' is refused with its line.
func TestNodeID(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file string
		env        []string
		want       string
	}{
		{"default", "[server]\nhostname = \"mx.example.com\"\n", nil, "mx.example.com"},
		{"empty", "[server]\nhostname = \"mx.example.com\"\nnode_id = \"\"\n", nil, "mx.example.com"},
		{"env hostname", "[server]\nhostname = \"mx.example.com\"\n", []string{"HERALD_SERVER_HOSTNAME=env.example.com"}, "env.example.com"},
		{"explicit", "[server]\nhostname = \"mx.example.com\"\nnode_id = \"node-2_b.eu\"\n", nil, "node-2_b.eu"},
		{"env", "[server]\nhostname = \"mx.example.com\"\n", []string{"HERALD_SERVER_NODE_ID=n3"}, "n3"},
	} {
		c, err := Parse("n.toml", []byte(tc.file), tc.env)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.Server.NodeID != tc.want {
			t.Errorf("%s: node_id = %q, want %q", tc.name, c.Server.NodeID, tc.want)
		}
	}
	for _, bad := range []string{"a b", "node/1", "n\\u00e9", "a;DROP", strings.Repeat("n", 254)} {
		_, err := Parse("n.toml", []byte("[server]\nnode_id = \""+bad+"\"\n"), nil)
		if err == nil || !strings.HasPrefix(err.Error(), "n.toml:2: server.node_id: ") {
			t.Errorf("node_id %q: err = %v, want n.toml:2: server.node_id: ...", bad, err)
		}
	}
	if _, err := Parse("n.toml", []byte("[server]\nnode_id = \""+strings.Repeat("n", 253)+"\"\n"), nil); err != nil {
		t.Errorf("node_id of 253 characters: %v", err)
	}
}

func TestLeaseTimeout(t *testing.T) {
	t.Parallel()
	c, err := Parse("q.toml", []byte("[queue]\nlease_timeout = \"90s\"\n"), nil)
	if err != nil || c.Queue.LeaseTimeout != 90*time.Second {
		t.Fatalf("lease_timeout = %v, %v; want 90s", c.Queue.LeaseTimeout, err)
	}
	if d := Default().Queue.LeaseTimeout; d != time.Minute {
		t.Errorf("default lease_timeout = %v, want 1m", d)
	}
	_, err = Parse("q.toml", []byte("[queue]\nlease_timeout = \"500ms\"\n"), nil)
	if err == nil || !strings.HasPrefix(err.Error(), "q.toml:2: queue.lease_timeout (500ms) is less than 1s") {
		t.Errorf("lease_timeout 500ms: err = %v", err)
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, file, want string
	}{
		{"unknown key", "[server]\nhostname = \"a.example\"\n\n[smtp]\nlisen = [\"127.0.0.1:25\"]\n",
			`herald.toml:5: unknown key "smtp.lisen"`},
		{"unknown dotted key", "smtp.lisen = []\n", `herald.toml:1: unknown key "smtp.lisen"`},
		{"unknown section", "\n[smpt]\nlisten = []\n", `herald.toml:2: unknown section "smpt"`},
		{"unknown top key", "hostname = \"x\"\n", `herald.toml:1: unknown key "hostname"`},
		{"unknown subtable", "[smtp]\nlisten = []\n[smtp.tls]\nx = 1\n", `herald.toml:3: unknown key "smtp.tls"`},
		{"section not a table", "smtp = 5\n", `herald.toml:1: smtp: expected a table [smtp], got integer 5`},
		{"bad size", "[limits]\nmax_recipients = 10\n\n\nmax_message_size = \"12XB\"\n",
			`herald.toml:5: limits.max_message_size: "12XB" is not a size`},
		{"size not positive", "[limits]\nmax_message_size = 0\n", `herald.toml:2: limits.max_message_size: 0 is not positive`},
		{"size overflow", "[limits]\nmax_message_size = \"99999999999999GiB\"\n", `herald.toml:2: limits.max_message_size: "99999999999999GiB" is too large`},
		{"acme on localhost", "[acme]\n\nenabled = true\n", `herald.toml:3: acme.enabled needs server.hostname to be the server's public DNS name, not "localhost"`},
		{"acme challenge", "[acme]\nchallenges = [\"dns-01\"]\n", `herald.toml:2: acme.challenges: "dns-01" is not one of "tls-alpn-01", "http-01"`},
		{"acme host", "[acme]\nhosts = [\"www\"]\n", `herald.toml:2: acme.hosts: "www" is not one of "mta-sts", "autoconfig", "autodiscover"`},
		{"acme directory", "[acme]\ndirectory_url = \"http://ca.example/dir\"\n", `herald.toml:2: acme.directory_url: "http://ca.example/dir" is not an https:// URL`},
		{"acme tls-alpn without https", "[server]\nhostname = \"mail.example.org\"\n[acme]\nenabled = true\nhttps_address = \"\"\n",
			`herald.toml:5: acme.challenges has tls-alpn-01 but acme.https_address is empty: the CA validates on port 443`},
		{"acme same address", "[server]\nhostname = \"mail.example.org\"\n[acme]\nenabled = true\nhttp_address = \"127.0.0.1:8443\"\nhttps_address = \"127.0.0.1:8443\"\n",
			`herald.toml:6: acme.http_address and acme.https_address are both "127.0.0.1:8443"`},
		{"mta-sts max_age", "[wellknown]\nmta_sts_max_age = \"9000h\"\n", `herald.toml:2: wellknown.mta_sts_max_age (9000h0m0s) must be between 1s and 8766h0m0s (RFC 8461)`},
		{"mta-sts mx", "[wellknown]\nmta_sts_mx = [\"*.*.example\"]\n", `herald.toml:2: wellknown.mta_sts_mx: "*.*.example" is not a host name or *.domain pattern`},
		{"bad duration", "[dns]\ntimeout = \"5 minutes\"\n",
			`herald.toml:2: dns.timeout: "5 minutes" is not a duration (use e.g. "90s", "5m", "120h")`},
		{"negative duration", "[queue]\nretry_initial = \"-5m\"\n", `herald.toml:2: queue.retry_initial: "-5m" is not a positive duration`},
		{"zero duration", "[limits]\nidle_timeout = \"0s\"\n", `herald.toml:2: limits.idle_timeout: "0s" is not a positive duration`},
		{"duration as integer", "[limits]\nidle_timeout = 300\n", `herald.toml:2: limits.idle_timeout: expected a duration string such as "5m", got integer 300`},
		{"bad cidr", "[relay]\nallow = [\"10.0.0.0/8\", \"10.1.0.0/33\"]\n", `herald.toml:2: relay.allow: "10.1.0.0/33" is not a CIDR`},
		{"cidr host bits", "[relay]\nallow = [\"192.168.1.5/24\"]\n", `herald.toml:2: relay.allow: "192.168.1.5/24" has host bits set (did you mean "192.168.1.0/24"?)`},
		{"bad listen", "[smtp]\nlisten = [\"127.0.0.1\"]\n", `herald.toml:2: smtp.listen: "127.0.0.1" is not a host:port address`},
		{"bad listen port", "[http]\nlisten = [\"127.0.0.1:http\"]\n", `herald.toml:2: http.listen: "127.0.0.1:http": port "http" is not a number 0-65535`},
		{"listen bad host", "[http]\nlisten = [\"bad_host:80\"]\n", `herald.toml:2: http.listen: "bad_host:80": "bad_host" is not an IP address or host name`},
		{"listen short IP", "[smtp]\nlisten = [\"127.0.0:25\"]\n", `herald.toml:2: smtp.listen: "127.0.0:25": "127.0.0" is not an IP address or host name`},
		{"console idle longer than max age", "[console]\nidle_timeout = \"13h\"\n", `herald.toml:2: console.idle_timeout (13h0m0s) is more than console.max_age (12h0m0s)`},
		{"cross check names the key set", "[limits]\n\nmax_connections = 5\n", `herald.toml:3: limits.max_connections_per_ip (20) is more than limits.max_connections (5)`},
		{"http per-IP over total", "[http]\nmax_connections = 10\n", `herald.toml:2: http.max_connections_per_ip (64) is more than http.max_connections (10)`},
		{"http header timeout over read timeout", "[http]\nread_timeout = \"5s\"\n", `herald.toml:2: http.read_header_timeout (10s) is more than http.read_timeout (5s), which bounds the header too`},
		{"http upload shorter than read", "[http]\nupload_timeout = \"20s\"\n", `herald.toml:2: http.upload_timeout (20s) is less than http.read_timeout (30s): uploads would get less time than other requests`},
		{"http header bytes too small", "[http]\nmax_header_bytes = 100\n", `herald.toml:2: http.max_header_bytes: 100 is out of range [1024, 1048576]`},
		{"webhook cap zero", "[platform]\nmax_webhooks_per_account = 0\n", `herald.toml:2: platform.max_webhooks_per_account: 0 is not positive`},
		{"listen twice", "[smtp]\nlisten = [\":25\", \":25\"]\n", `herald.toml:2: smtp.listen: ":25" is listed twice`},
		{"syntax error", "[server]\nhostname = \"x\n", `herald.toml:2: syntax error: basic strings cannot have new lines`},
		{"duplicate key", "[server]\nhostname = \"a\"\nhostname = \"b\"\n", `herald.toml:3: syntax error: key hostname is already defined`},
		{"wrong type", "[limits]\nmax_recipients = \"100\"\n", `herald.toml:2: limits.max_recipients: expected an integer, got string "100"`},
		{"enum", "[log]\nformat = \"xml\"\n", `herald.toml:2: log.format: "xml" is not one of "text", "json"`},
		{"log level", "[log]\nlevel = \"trace\"\n", `herald.toml:2: log.level: "trace" is not one of "debug", "info", "warn", "error"`},
		{"tls version", "[tls]\nmin_version = 1.2\n", `herald.toml:2: tls.min_version: expected "1.2" or "1.3" (a string), got float 1.2`},
		{"resolver hostname", "[dns]\nresolver = \"dns.example:53\"\n", `herald.toml:2: dns.resolver: "dns.example:53" is not an ip:port address (e.g. "127.0.0.1:53", "[::1]:53")`},
		{"line length below RFC", "[limits]\nmax_line_length = 80\n", `herald.toml:2: limits.max_line_length: 80 is out of range [1000, 1048576]`},
		{"jitter", "[queue]\nretry_jitter = 1.5\n", `herald.toml:2: queue.retry_jitter: 1.5 is out of range [0, 1]`},
		{"password length below NIST", "[auth]\nmin_password_length = 6\n", `herald.toml:2: auth.min_password_length: 6 is out of range [8, 1024]`},
		{"ipv4 source", "[delivery]\nsource_ipv4 = \"::1\"\n", `herald.toml:2: delivery.source_ipv4: "::1" is not an IPv4 address`},
		{"route", "[delivery.routes]\n\"a.example\" = \"mx:25\"\n\"b.example\" = \"mx\"\n", `herald.toml:3: delivery.routes: route for "b.example": "mx" is not a host:port address`},
		{"route domain", "[delivery]\nroutes = { \"bad domain\" = \"mx:25\" }\n", `herald.toml:2: delivery.routes: "bad domain" is not a domain`},
		{"cert without key", "[tls]\n\ncert_file = \"/c.pem\"\n", `herald.toml:3: tls.cert_file and tls.key_file must be set together (both empty means a self-signed certificate)`},
		{"retry order", "[queue]\nretry_initial = \"2h\"\nretry_max = \"1h\"\n", `herald.toml:3: queue.retry_max (1h0m0s) is less than queue.retry_initial (2h0m0s)`},
		{"pregreet_wait negative", "[limits]\npregreet_wait = \"-1s\"\n", `herald.toml:2: limits.pregreet_wait: "-1s" is not a positive duration`},
		{"pregreet_wait too long", "[limits]\nmax_errors = 5\npregreet_wait = \"45s\"\n", `herald.toml:3: limits.pregreet_wait (45s) is more than 30s: every new client would wait that long for the greeting`},
		{"renamed max_commands", "[limits]\n\nmax_commands = 5000\n", `herald.toml:3: limits.max_commands was replaced by limits.max_junk_commands, which counts only commands that move no mail (NOOP, RSET, VRFY, HELP, unknown commands, repeated HELO/EHLO, recipients over limits.max_recipients) and restarts at every accepted message; MAIL, RCPT, DATA and BDAT are no longer limited per session`},
		{"smarthost auth without host", "[delivery]\nsmarthost_username = \"u\"\nsmarthost_password = \"p\"\n", `herald.toml:2: delivery.smarthost_username/smarthost_password are set but delivery.smarthost is empty`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse("herald.toml", []byte(tt.file), nil)
			if err == nil {
				t.Fatalf("no error; config %+v", c)
			}
			if c != nil {
				t.Error("config returned with an error")
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestMultipleErrorsInLineOrder(t *testing.T) {
	t.Parallel()
	file := "[limits]\nmax_errors = 0\n[smtp]\nlisen = 1\n[dns]\ntimeout = \"x\"\n"
	_, err := Parse("f.toml", []byte(file), []string{"HERALD_QUEUE_WORKERS=many"})
	if err == nil {
		t.Fatal("no error")
	}
	want := strings.Join([]string{
		`f.toml:2: limits.max_errors: 0 is not positive`,
		`f.toml:4: unknown key "smtp.lisen"`,
		`f.toml:6: dns.timeout: "x" is not a duration (use e.g. "90s", "5m", "120h")`,
		`HERALD_QUEUE_WORKERS: queue.workers: "many" is not an integer`,
	}, "\n")
	if err.Error() != want {
		t.Errorf("got:\n%s\nwant:\n%s", err, want)
	}
	var ce *Error
	if !errors.As(err, &ce) || ce.File != "f.toml" || ce.Line != 2 {
		t.Errorf("errors.As(*Error) = %+v", ce)
	}
}

func TestEnv(t *testing.T) {
	t.Parallel()
	file := "[smtp]\nlisten = [\"127.0.0.1:25\"]\n[dns]\nresolver = \"127.0.0.1:53\"\n"
	env := []string{
		"PATH=/usr/bin",
		"HERALD_CONFIG=/etc/herald/herald.toml", // not a section: ignored
		"HERALD_DNS_RESOLVER=[::1]:5353",
		"HERALD_SMTP_LISTEN=0.0.0.0:25, [::]:25",
		"HERALD_SUBMISSIONS_LISTEN=",
		"HERALD_LIMITS_MAX_MESSAGE_SIZE=10 MiB",
		"HERALD_QUEUE_RETRY_FACTOR=3",
		"HERALD_DELIVERY_REQUIRE_TLS=true",
		"HERALD_DELIVERY_ROUTES=example.org=mx1:25,example.net=[::1]:2525",
		"HERALD_RELAY_ALLOW=10.0.0.0/8,::1",
		"HERALD_DELIVERY_PORT=2525",
	}
	c, err := Parse("herald.toml", []byte(file), env)
	if err != nil {
		t.Fatal(err)
	}
	if c.DNS.Resolver != "[::1]:5353" {
		t.Errorf("env did not override file: resolver = %q", c.DNS.Resolver)
	}
	if !slices.Equal(c.SMTP.Listen, []string{"0.0.0.0:25", "[::]:25"}) {
		t.Errorf("smtp.listen = %q", c.SMTP.Listen)
	}
	if len(c.Submissions.Listen) != 0 {
		t.Errorf("empty env list should disable: %q", c.Submissions.Listen)
	}
	if c.Limits.MaxMessageSize != 10<<20 || c.Queue.RetryFactor != 3 || !c.Delivery.RequireTLS || c.Delivery.Port != 2525 {
		t.Errorf("scalars: %+v %+v %+v", c.Limits, c.Queue, c.Delivery)
	}
	if !reflect.DeepEqual(c.Delivery.Routes, map[string]string{"example.org": "mx1:25", "example.net": "[::1]:2525"}) {
		t.Errorf("routes = %v", c.Delivery.Routes)
	}
	if !slices.Equal(c.Relay.Allow, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}) {
		t.Errorf("relay.allow = %v", c.Relay.Allow)
	}

	// Env alone, no file (Load("")).
	c, err = Parse("", nil, []string{"HERALD_SERVER_HOSTNAME=mx.example.com"})
	if err != nil || c.Server.Hostname != "mx.example.com" || c.Delivery.HeloName != "mx.example.com" {
		t.Errorf("env only: %v %+v", err, c)
	}

	bad := []struct{ env, want string }{
		{"HERALD_LIMITS_MAX_MESSAGE_SIZE=12XB", `HERALD_LIMITS_MAX_MESSAGE_SIZE: limits.max_message_size: "12XB" is not a size`},
		{"HERALD_SMTP_LISTEN=127.0.0.1:25,nonsense", `HERALD_SMTP_LISTEN: smtp.listen: "nonsense" is not a host:port address`},
		{"HERALD_DELIVERY_REQUIRE_TLS=yes", `HERALD_DELIVERY_REQUIRE_TLS: delivery.require_tls: "yes" is not true or false`},
		{"HERALD_SMTP_LISEN=:25", `HERALD_SMTP_LISEN: unknown configuration variable (no key "smtp.lisen")`},
		{"HERALD_DELIVERY_ROUTES=example.org", `HERALD_DELIVERY_ROUTES: delivery.routes: "example.org" is not key=value`},
		{"HERALD_LIMITS_MAX_COMMANDS=5000", `HERALD_LIMITS_MAX_COMMANDS: limits.max_commands was replaced by limits.max_junk_commands, which counts only commands that move no mail (NOOP, RSET, VRFY, HELP, unknown commands, repeated HELO/EHLO, recipients over limits.max_recipients) and restarts at every accepted message; MAIL, RCPT, DATA and BDAT are no longer limited per session`},
		{"HERALD_LIMITS_PREGREET_WAIT=2m", `HERALD_LIMITS_PREGREET_WAIT: limits.pregreet_wait (2m0s) is more than 30s: every new client would wait that long for the greeting`},
		{"HERALD_TLS_CERT_FILE=/c.pem", `HERALD_TLS_CERT_FILE: tls.cert_file and tls.key_file must be set together (both empty means a self-signed certificate)`},
	}
	for _, b := range bad {
		_, err := Parse("", nil, []string{b.env})
		if err == nil || err.Error() != b.want {
			t.Errorf("%s: error\n got: %v\nwant: %s", b.env, err, b.want)
		}
	}
}

func TestLoadFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "herald.toml")
	if err := os.WriteFile(path, []byte("[limits]\nmax_message_size = \"1XB\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + `:2: limits.max_message_size: "1XB" is not a size`; err == nil || err.Error() != want {
		t.Errorf("Load error = %v, want %s", err, want)
	}
	if _, err := Load(filepath.Join(dir, "missing.toml")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
	t.Setenv("HERALD_DNS_TIMEOUT", "7s")
	c, err := Load("")
	if err != nil || c.DNS.Timeout != 7*time.Second {
		t.Errorf("Load(\"\") with env: %v %+v", err, c)
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	good := map[string]int64{
		"1": 1, "1024": 1024, "10B": 10, "1KB": 1000, "1kb": 1000, "2 MB": 2_000_000, "3GB": 3_000_000_000,
		"1KiB": 1024, "25MiB": 25 << 20, "2gib": 2 << 30, " 7 MiB ": 7 << 20,
	}
	for s, want := range good {
		if got, err := ParseSize(s); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "MB", "1.5MB", "-1", "12XB", "1 M B", "0x10", "99999999999999999999"} {
		if got, err := ParseSize(s); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", s, got)
		}
	}
}

// exampleDoc reads the repository's example configuration.
func exampleDoc(t *testing.T) (string, []byte) {
	t.Helper()
	path := filepath.Join("..", "..", "herald.example.toml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return path, data
}

func TestExampleLoads(t *testing.T) {
	t.Parallel()
	path, data := exampleDoc(t)
	c, err := Parse(path, data, nil)
	if err != nil {
		t.Fatalf("example does not load: %v", err)
	}
	if c.Server.Hostname == "localhost" || !slices.Contains(c.SMTP.Listen, "0.0.0.0:25") {
		t.Errorf("example is not a production config: %+v", c.Server)
	}
}

func TestExampleIsComplete(t *testing.T) {
	t.Parallel()
	path, data := exampleDoc(t)
	doc, err := decode(path, data)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Keys() {
		sec, key, _ := strings.Cut(k, ".")
		if !doc.defined(sec, key) {
			t.Errorf("herald.example.toml lacks key %s", k)
		}
		// Each key has a comment on the line above (its explanation), or a
		// comment before its table header.
		line := doc.line(sec, key)
		lines := strings.Split(string(data), "\n")
		if line < 2 || !strings.HasPrefix(strings.TrimSpace(lines[line-2]), "#") {
			t.Errorf("herald.example.toml:%d: key %s has no comment above it", line, k)
		}
	}
}

// TestKeysCoverStruct checks that every toml-tagged field of Config is a
// key, and every key a field: the registry, the struct and (through
// TestExampleIsComplete) the example stay in step.
func TestKeysCoverStruct(t *testing.T) {
	t.Parallel()
	var tagged []string
	ct := reflect.TypeFor[Config]()
	for i := range ct.NumField() {
		sf := ct.Field(i)
		sec := sf.Tag.Get("toml")
		if sec == "" {
			t.Errorf("Config.%s has no toml tag", sf.Name)
		}
		for _, kf := range reflect.VisibleFields(sf.Type) {
			if kf.Anonymous { // an embedded struct (HTTPConfig's ListenConfig): its fields are visited
				continue
			}
			key := kf.Tag.Get("toml")
			if key == "" {
				t.Errorf("Config.%s.%s has no toml tag", sf.Name, kf.Name)
			}
			tagged = append(tagged, sec+"."+key)
		}
	}
	keys := Keys()
	slices.Sort(tagged)
	slices.Sort(keys)
	if !slices.Equal(tagged, keys) {
		t.Errorf("struct tags and keys differ:\n tags: %v\n keys: %v", tagged, keys)
	}
	// Every key can be set through the environment.
	for _, k := range keys {
		if !strings.HasPrefix(EnvName(k), "HERALD_") || strings.ContainsAny(EnvName(k), ".abcdefghijklmnopqrstuvwxyz") {
			t.Errorf("EnvName(%s) = %s", k, EnvName(k))
		}
	}
}

func FuzzLoad(f *testing.F) {
	f.Add([]byte(fullFile))
	f.Add([]byte("[smtp]\nlisten = [\"[::1]:25\"]\n"))
	f.Add([]byte("[delivery.routes]\n\"a.b\" = \"c:1\"\n"))
	f.Add([]byte("a = { b = { c = [1, {d = 2}] } }\n[[x]]\n[[x]]\n"))
	f.Add([]byte("[limits]\nmax_message_size = \"1KiB\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.toml", data, nil)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c != nil, err)
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), "fuzz.toml") {
				t.Fatalf("error not located: %v", err)
			}
			return
		}
		out, err := c.MarshalTOML()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Parse("again.toml", out, nil)
		if err != nil || !reflect.DeepEqual(back, c) {
			t.Fatalf("accepted config does not round-trip: %v\n%s", err, out)
		}
	})
}

// store.url is "" (the embedded store) or a postgres:// URL with a host,
// from the file or HERALD_STORE_URL; a refused value is reported with its
// line but without the URL, which may hold a password.
func TestStoreURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, file string
		env        []string
		want       string
	}{
		{"default", "", nil, ""},
		{"file", "[store]\nurl = \"postgres://herald@db.example.com:5432/herald?sslmode=verify-full\"\n", nil,
			"postgres://herald@db.example.com:5432/herald?sslmode=verify-full"},
		{"postgresql", "[store]\nurl = \"postgresql://db.example.com/herald\"\n", nil, "postgresql://db.example.com/herald"},
		{"host parameter", "[store]\nurl = \"postgres:///herald?host=/run/postgresql\"\n", nil, "postgres:///herald?host=/run/postgresql"},
		{"env", "", []string{"HERALD_STORE_URL=postgres://h@127.0.0.1/test"}, "postgres://h@127.0.0.1/test"},
		{"env empties", "[store]\nurl = \"postgres://db.example.com/herald\"\n", []string{"HERALD_STORE_URL="}, ""},
	} {
		c, err := Parse("s.toml", []byte(tc.file), tc.env)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if c.Store.URL != tc.want {
			t.Errorf("%s: store.url = %q, want %q", tc.name, c.Store.URL, tc.want)
		}
	}
	for _, bad := range []string{"mysql://u:s3cret@db/herald", "/var/lib/herald/herald.db", "postgres://u:s3cret@/herald", "postgres://u:s3cret@db/%zz"} {
		_, err := Parse("s.toml", []byte("[store]\nurl = \""+bad+"\"\n"), nil)
		if err == nil || !strings.HasPrefix(err.Error(), "s.toml:2: store.url: ") {
			t.Errorf("url %q: err = %v, want s.toml:2: store.url: ...", bad, err)
			continue
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Errorf("url %q: the error shows the password: %v", bad, err)
		}
	}
}

// Bad alert rules are reported at the line of the key at fault.
func TestAlertRuleErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ file, want string }{
		{"[alerts.rules.bounce_rate]\nwindow = \"1h\"\nthreshold = 5\n",
			`a.toml:3: alerts.rules: rule "bounce_rate": threshold: 5 is not a fraction between 0 and 1 (write 0.05 or "5%" for 5 %)`},
		{"[alerts.rules.x]\nthreshold = 1\n", `a.toml:1: alerts.rules: rule "x" is not a built-in rule: give its kind`},
		{"[alerts]\nenabled = true\n\n[alerts.rules.x]\nkind = \"bogus\"\n", `a.toml:5: alerts.rules: rule "x": kind: "bogus" is not a kind of rule`},
		{"[alerts.rules.dns_auth]\nthreshold = 1\n", `a.toml:2: alerts.rules: rule "dns_auth": threshold: a dns_auth rule has no threshold`},
		{"[alerts.rules.queue_oldest]\nthreshold = 3600\n", `a.toml:2: alerts.rules: rule "queue_oldest": threshold: expected a duration string`},
		{"[alerts.rules.queue_backlog]\nthreshold = \"1h\"\n", `a.toml:2: alerts.rules: rule "queue_backlog": threshold: expected a positive integer`},
		{"[alerts.rules.disk_free]\nwindow = \"1h\"\n", `a.toml:2: alerts.rules: rule "disk_free": window: a disk_free rule has no window`},
		{"[alerts.rules.bounce_rate]\nwindow = \"10s\"\n", `a.toml:2: alerts.rules: rule "bounce_rate": window: 10s is outside [1m, 168h]`},
		{"[alerts.rules.bounce_rate]\ndestination = \"a.example\"\n", `a.toml:2: alerts.rules: rule "bounce_rate": destination: only a deferral_rate rule`},
		{"[alerts.rules.bounce_rate]\nthreshhold = 0.1\n", `a.toml:2: alerts.rules: rule "bounce_rate": threshhold: unknown key`},
		{"[alerts.rules.\"Bad Name\"]\nenabled = true\n", `a.toml:1: alerts.rules: rule name "Bad Name"`},
		{"[alerts]\nwebhook_url = \"ftp://x.example/\"\n", `a.toml:2: alerts.webhook_url: "ftp://x.example/" is not an http or https URL`},
		{"[alerts]\nemail = [\"not an address\"]\n", `a.toml:2: alerts.email: `},
	} {
		_, err := Parse("a.toml", []byte(tc.file), nil)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: err = %v\nwant prefix %s", tc.file, err, tc.want)
		}
	}
	c, err := Parse("a.toml", []byte("[alerts.rules.complaint_rate]\nthreshold = \"0.3%\"\n"), nil)
	if err != nil || c.Alerts.Rules["complaint_rate"].Threshold != 0.003 {
		t.Errorf("0.3%% = %+v, %v", c.Alerts.Rules, err)
	}
}
