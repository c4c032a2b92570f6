package config

import (
	"testing"

	"github.com/heraldmail/herald/internal/dnsbl"
)

func mustSite(s string, weighted bool) dnsbl.Site {
	site, err := dnsbl.ParseSite(s, weighted)
	if err != nil {
		panic(err)
	}
	return site
}

func TestDNSBLErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, file, want string }{
		{"bad weight", "[dnsbl]\nclient_lists = [\"zen.spamhaus.org*x\"]\n",
			`herald.toml:2: dnsbl.client_lists: "zen.spamhaus.org*x": the weight "x" is not a whole number from -1000 to 1000`},
		{"bad pattern", "[dnsbl]\n\nclient_lists = [\"zen.spamhaus.org=127.0.0.[11..2]\"]\n",
			`herald.toml:3: dnsbl.client_lists: "zen.spamhaus.org=127.0.0.[11..2]": the result pattern "127.0.0.[11..2]": "[11..2]" is not an octet, a range a..b or a set [a;b..c]`},
		{"bad zone", "[dnsbl]\nclient_lists = [\"zen\"]\n", `herald.toml:2: dnsbl.client_lists: "zen": "zen" is not a DNS zone name`},
		{"list twice", "[dnsbl]\nclient_lists = [\"zen.spamhaus.org*3\", \"ZEN.spamhaus.org=127.0.0.2\"]\n",
			`herald.toml:2: dnsbl.client_lists: the list zen.spamhaus.org is named twice`},
		{"weight on a reputation list", "[dnsbl]\nreputation_domain_lists = [\"dbl.spamhaus.org*2\"]\n",
			`herald.toml:2: dnsbl.reputation_domain_lists: "dbl.spamhaus.org*2": a weight (*N) only applies to client lists`},
		{"threshold unreachable", "[dnsbl]\nclient_lists = [\"zen.spamhaus.org*2\", \"list.dnswl.org*-5\"]\nthreshold = 3\n",
			`herald.toml:3: dnsbl.threshold (3) is more than the positive weights of dnsbl.client_lists add up to (2): no client could ever be refused`},
		{"timeout too long", "[dnsbl]\ntimeout = \"2m\"\n", `herald.toml:2: dnsbl.timeout (2m0s) is more than 1m0s: clients would wait that long at RCPT`},
		{"interval too short", "[dnsbl]\nreputation_interval = \"10s\"\n",
			`herald.toml:2: dnsbl.reputation_interval (10s) is less than 1m0s: the lists would block us for excessive queries`},
		{"own ip", "[dnsbl]\nown_ips = [\"192.0.2.300\"]\n", `herald.toml:2: dnsbl.own_ips: "192.0.2.300" is not an IP address`},
		{"own domain", "[dnsbl]\nown_domains = [\"bad domain\"]\n", `herald.toml:2: dnsbl.own_domains: "bad domain" is not a valid host name`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c, err := Parse("herald.toml", []byte(tt.file), nil)
			if err == nil {
				t.Fatalf("no error; config %+v", c.DNSBL)
			}
			if err.Error() != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", err, tt.want)
			}
		})
	}
}

func TestDNSBLEnvironment(t *testing.T) {
	t.Parallel()
	c, err := Parse("", nil, []string{"HERALD_DNSBL_CLIENT_LISTS=zen.spamhaus.org=127.0.0.[2..11;20]*3, list.dnswl.org*-2",
		"HERALD_DNSBL_THRESHOLD=3"})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.DNSBL.ClientLists; len(got) != 2 || got[0].String() != "zen.spamhaus.org=127.0.0.[2..11;20]*3" || got[1].Weight != -2 {
		t.Errorf("client_lists from the environment: %v", got)
	}
	if _, err := Parse("", nil, []string{"HERALD_DNSBL_CLIENT_LISTS=zen*3"}); err == nil ||
		err.Error() != `HERALD_DNSBL_CLIENT_LISTS: dnsbl.client_lists: "zen*3": "zen" is not a DNS zone name` {
		t.Errorf("bad list from the environment: %v", err)
	}
}
