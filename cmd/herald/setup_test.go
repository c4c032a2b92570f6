package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/app"
	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
)

// runSetup runs herald setup in-process and returns exit code, stdout
// and stderr.
func runSetup(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(append([]string{"setup"}, args...), strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

var setupPW = regexp.MustCompile(`(?m)^    ([A-Z2-7]{26})$`)

func TestSetupCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A data directory whose name needs TOML escaping.
	cfgPath, dataDir := filepath.Join(dir, "conf", "herald.toml"), filepath.Join(dir, `da"ta\dir`)
	code, out, errs := runSetup("Example.COM.", "--hostname", "MAIL.example.com", "--ip", "192.0.2.25,2001:db8::25",
		"--acme", "--config", cfgPath, "--data-dir", dataDir)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
	m := setupPW.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no password:\n%s", out)
	}
	if strings.Contains(errs, m[1]) {
		t.Error("the password went to stderr")
	}
	cfg, err := config.Parse(cfgPath, mustRead(t, cfgPath), nil)
	if err != nil {
		t.Fatalf("written config does not load: %v", err)
	}
	if cfg.Server.Hostname != "mail.example.com" || cfg.Server.DataDir != dataDir || cfg.Server.Postmaster != "postmaster@example.com" ||
		!slices.Equal(cfg.SMTP.Listen, []string{"0.0.0.0:25", "[::]:25"}) || !slices.Equal(cfg.Submission.Listen, []string{"0.0.0.0:587", "[::]:587"}) ||
		!slices.Equal(cfg.Submissions.Listen, []string{"0.0.0.0:465", "[::]:465"}) || !slices.Equal(cfg.HTTP.Listen, []string{"127.0.0.1:8025"}) ||
		!cfg.ACME.Enabled || cfg.ACME.Email != "postmaster@example.com" || cfg.Delivery.HeloName != "mail.example.com" {
		t.Errorf("config: %+v %+v %+v", cfg.Server, cfg.ACME, cfg.Delivery)
	}
	if info, _ := os.Stat(cfgPath); info.Mode().Perm() != 0o640 {
		t.Errorf("mode %v", info.Mode())
	}

	// The store: the domain, two active keys (RSA and Ed25519), the
	// postmaster with the printed password, the aliases.
	st, _, err := app.OpenStore(cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	keys, _ := st.ActiveDKIMKeys(ctx, "example.com")
	var algos []string
	for _, k := range keys {
		algos = append(algos, k.Algorithm)
		if !strings.Contains(out, k.Selector+"._domainkey.example.com. 3600 IN TXT") {
			t.Errorf("record of %s not printed", k.Selector)
		}
	}
	if !slices.Equal(algos, []string{store.DKIMAlgorithmEd25519, store.DKIMAlgorithmRSA}) {
		t.Errorf("active keys %v", algos)
	}
	u, err := st.GetUser(ctx, "postmaster@example.com")
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := auth.CheckPassword(u.PasswordHash, m[1]); !ok {
		t.Error("the printed password does not match the stored hash")
	}
	for _, a := range []string{"abuse@example.com", "dmarc-reports@example.com", "tls-reports@example.com"} {
		if al, err := st.GetAlias(ctx, a); err != nil || !slices.Equal(al.Targets, []string{"postmaster@example.com"}) {
			t.Errorf("alias %s: %v %v", a, al, err)
		}
	}
	st.Close()

	// Again: the configuration is kept, nothing else happens.
	before := mustRead(t, cfgPath)
	code, _, errs = runSetup("example.com", "--hostname", "mail.example.com", "--config", cfgPath, "--data-dir", dataDir)
	if code != 73 || !strings.Contains(errs, "exists: not replaced (give --force") {
		t.Errorf("rerun: exit %d %q", code, errs)
	}
	if !bytes.Equal(mustRead(t, cfgPath), before) {
		t.Error("rerun changed the configuration")
	}
	// --force: replaced, old kept; keys and password untouched.
	code, out, errs = runSetup("example.com", "--hostname", "mail.example.com", "--config", cfgPath, "--data-dir", dataDir, "--force")
	if code != 0 || setupPW.MatchString(out) || strings.Contains(out, "created") ||
		!strings.Contains(out, "User postmaster@example.com: exists, password unchanged") {
		t.Fatalf("--force: exit %d\n%s\n%s", code, out, errs)
	}
	if !bytes.Equal(mustRead(t, cfgPath+".bak"), before) {
		t.Error("old configuration not kept")
	}
	st, _, err = app.OpenStore(cfg, nil, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	all, _ := st.ListDKIMKeys(ctx, "example.com")
	u2, _ := st.GetUser(ctx, "postmaster@example.com")
	if len(all) != 2 || u2.PasswordHash != u.PasswordHash {
		t.Errorf("--force made %d keys, hash changed: %v", len(all), u2.PasswordHash != u.PasswordHash)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Names and addresses from the command line are checked before anything
// is written: nothing that could inject into the TOML file or the zone.
func TestSetupRejectsBadInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "herald.toml")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"example.com"}, "herald setup DOMAIN --hostname"},
		{[]string{"--hostname", "mail.example.com"}, "herald setup DOMAIN --hostname"},
		{[]string{"exa mple.com", "--hostname", "mail.example.com"}, "is not a DNS name"},
		{[]string{"example.com\"\n[x]", "--hostname", "mail.example.com"}, "is not a DNS name"},
		{[]string{"example.com", "--hostname", "mail.example.com.\nexample.com. TXT x"}, "is not a DNS name"},
		{[]string{"[192.0.2.1]", "--hostname", "mail.example.com"}, "is not a DNS name"},
		{[]string{"localhost", "--hostname", "mail.example.com"}, "not a fully qualified name"},
		{[]string{"example.com", "--hostname", "192.0.2.1"}, "looks like an address"},
		{[]string{"_dmarc.example.com", "--hostname", "mail.example.com"}, "is not a DNS name"},
		{[]string{"example.com", "--hostname", strings.Repeat("a", 64) + ".example.com"}, "is not a DNS name"},
		{[]string{"example.com", "--hostname", "mail.example.com", "--ip", "0.0.0.0"}, "not a host address"},
		{[]string{"example.com", "--hostname", "mail.example.com", "--ip", "fe80::1%eth0"}, "bad address"},
		{[]string{"example.com", "--hostname", "mail.example.com", "--ip", "mail.example.com"}, "bad address"},
		{[]string{"example.com", "--hostname", "mail.example.com", "--email", "a@example.com"}, "give --acme too"},
		{[]string{"example.com", "--hostname", "mail.example.com", "--acme", "--email", "not an address"}, "is not a mail address"},
		{[]string{"example.com", "other.com", "--hostname", "mail.example.com"}, "herald setup DOMAIN"},
	} {
		code, _, errs := runSetup(append(tc.args, "--config", cfgPath, "--data-dir", filepath.Join(dir, "data"))...)
		if code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("setup %q: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if _, err := os.Stat(cfgPath); !os.IsNotExist(err) {
		t.Error("a configuration was written despite bad input")
	}
	if _, err := os.Stat(filepath.Join(dir, "data")); !os.IsNotExist(err) {
		t.Error("a data directory was created despite bad input")
	}
}

// An IDN domain is set up under its A-label.
func TestSetupIDN(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, out, errs := runSetup("bücher.example", "--hostname", "mail.bücher.example", "--config", filepath.Join(dir, "h.toml"),
		"--data-dir", filepath.Join(dir, "data"))
	if code != 0 || !strings.Contains(out, "xn--bcher-kva.example. 3600 IN MX 10 mail.xn--bcher-kva.example.") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errs)
	}
}
