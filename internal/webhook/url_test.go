package webhook

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestValidateURL(t *testing.T) {
	t.Parallel()
	// Refused whatever allowPrivate says: syntax, scheme, userinfo and
	// numeric hosts in non-standard notations.
	always := map[string]string{
		"ftp://hooks.example.com/":             "http or https",
		"javascript:alert(1)":                  "http or https",
		"/relative":                            "http or https",
		"http:opaque":                          "with a host",
		"http:///path":                         "with a host",
		"https://user:pw@hooks.example.com/":   "user name or password",
		"https://user@hooks.example.com/":      "user name or password",
		"https://@hooks.example.com/":          "user name or password",
		"https://hooks.example.com/#frag":      "fragment",
		"https://hooks.example.com/#":          "fragment",
		"https://hooks.example.com:0/":         "invalid port",
		"https://hooks.example.com:99999/":     "invalid port",
		"http://2130706433/":                   "numeric host",
		"http://0x7f000001/":                   "numeric host",
		"http://0x7f.0.0.1/":                   "numeric host",
		"http://0177.0.0.1/":                   "numeric host",
		"http://127.1/":                        "numeric host",
		"http://127.000.000.001/":              "numeric host",
		"http://1.2.3.0x4/":                    "numeric host",
		"http://0x/":                           "numeric host",
		"http://[fe80::1%25eth0]/":             "zone",
		"http://[::1%25lo]:8080/":              "zone",
		"http://[1.2.3.4]/":                    "",
		"http://loc%61lhost/":                  "valid URL",
		"http://hooks..example.com/":           "invalid host name",
		"http://.example.com/":                 "invalid host name",
		"http://hooks.exa mple.com/":           "valid URL",
		"http://hooks.exämple.com/":            "xn--",
		"http://ⓛocalhost/":                    "xn--",
		"http://hooks.example.com\\@evil/":     "",
		"https://" + strings.Repeat("a", 2100): "longer than",
	}
	// Refused unless allowPrivate.
	private := []string{
		"http://localhost/", "http://LOCALHOST:8080/x", "http://localhost./", "http://app.localhost/",
		"http://metadata/computeMetadata/v1/", "http://metadata.google.internal/", "http://printer.local/",
		"http://nas.home.arpa/", "http://db.corp/", "http://x.lan/", "http://box.localdomain/",
		"http://127.0.0.1/", "http://127.0.0.1.:8025/", "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
		"http://100.100.100.200/", "http://192.168.1.1/", "http://198.18.0.1/", "http://240.0.0.1/",
		"http://0.0.0.0/", "http://255.255.255.255/",
		"http://[::1]/", "http://[::]/", "http://[::ffff:127.0.0.1]/", "http://[::ffff:7f00:1]/",
		"http://[::127.0.0.1]/", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::]/",
		"http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/", "http://[fd00::1]/", "http://[fe80::1]/",
		"http://[fec0::1]/", "http://[ff02::1]/", "http://[2001:db8::1]/",
	}
	ok := []string{
		"https://hooks.example.com/herald", "http://hooks.example.com:8080/x?y=1", "https://HOOKS.Example.COM/",
		"https://hooks.example.com./", "https://a_b.example.com/", "https://xn--mnchen-3ya.de/",
		"https://8.8.8.8/", "https://[2606:4700::1111]:8443/", "https://[::ffff:8.8.8.8]/", "https://[64:ff9b::808:808]/",
		"https://my.example.com.internal-host.net/", "https://localhost.example.com/", "https://1.example.com/",
	}
	for raw, want := range always {
		for _, ap := range []bool{false, true} {
			_, err := ValidateURL(raw, ap)
			var ue *URLError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), want) {
				t.Errorf("ValidateURL(%q, %v) = %v, want a URLError mentioning %q", raw, ap, err, want)
			}
		}
	}
	for _, raw := range private {
		if _, err := ValidateURL(raw, false); err == nil {
			t.Errorf("ValidateURL(%q, false) accepted a private destination", raw)
		}
		if _, err := ValidateURL(raw, true); err != nil {
			t.Errorf("ValidateURL(%q, true) = %v, want accepted with allowPrivate", raw, err)
		}
	}
	for _, raw := range ok {
		if _, err := ValidateURL(raw, false); err != nil {
			t.Errorf("ValidateURL(%q, false) = %v, want accepted", raw, err)
		}
	}
}

// FuzzValidateURL: an accepted URL is http(s) without userinfo, its IP
// literal (if any) is public, and the stored form (String) is accepted
// again with the same host.
func FuzzValidateURL(f *testing.F) {
	for _, s := range []string{"https://hooks.example.com/x", "http://127.0.0.1/", "http://[::ffff:7f00:1]:80/",
		"http://2130706433/", "http://u@h.example.com/", "http://[fe80::1%25eth0]/", "https://8.8.8.8:443/a?b#c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ValidateURL(raw, false)
		if err != nil {
			return
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.User != nil || u.Host == "" {
			t.Fatalf("accepted %q: %#v", raw, u)
		}
		if ip, err := netip.ParseAddr(u.Hostname()); err == nil && CheckAddr(ip) != nil {
			t.Fatalf("accepted %q with a non-public address", raw)
		}
		u2, err := ValidateURL(u.String(), false)
		if err != nil || u2.Hostname() != u.Hostname() {
			t.Fatalf("stored form %q of %q: %v", u.String(), raw, err)
		}
	})
}
