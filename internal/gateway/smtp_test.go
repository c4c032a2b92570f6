package gateway

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/smtpserver"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/submit"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// The DNS list lookups of an MX client start in Connect, before the
// greeting, and reach the pipeline's identity at MAIL; submission clients
// are not looked up.
func TestConnectStartsBlocklistLookup(t *testing.T) {
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	d := testdns.Start(t)
	d.Add("2.0.0.127.zen.test. 300 IN A 127.0.0.2")
	res, err := resolve.NewClient(d.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	site, _ := dnsbl.ParseSite("zen.test", true)
	chk := dnsbl.New(dnsbl.Config{Sites: []dnsbl.Site{site}, Resolver: res})
	p := submit.New(submit.Config{}, submit.Deps{Store: st, Spool: spool.New(st, nil, nil), Blocklists: chk})
	g := &SMTP{Pipeline: p, Log: slog.New(slog.DiscardHandler)}
	ctx := context.Background()
	if err := st.AddDomain(ctx, "example.test"); err != nil {
		t.Fatal(err)
	}
	if err := st.AddUser(ctx, store.User{Address: "user@example.test"}); err != nil {
		t.Fatal(err)
	}

	mx := &smtpserver.Conn{Mode: smtpserver.ModeMX, RemoteAddr: netip.MustParseAddrPort("127.0.0.2:40000")}
	if err := g.Connect(ctx, mx); err != nil {
		t.Fatal(err)
	}
	l, ok := mx.Meta.(*dnsbl.Lookup)
	if !ok {
		t.Fatalf("Connect did not start a lookup: Meta = %#v", mx.Meta)
	}
	if v := l.Wait(ctx); !v.Listed {
		t.Errorf("the lookup started at Connect: %+v", v)
	}
	env := &smtpserver.Envelope{From: "someone@elsewhere.test"}
	if err := g.Mail(ctx, mx, env); err != nil {
		t.Fatal(err)
	}
	err = g.Rcpt(ctx, mx, env, smtpserver.Rcpt{Address: "user@example.test"})
	if e, ok := smtp.AsError(err); !ok || e.Code != 554 || !strings.Contains(e.Message, "blocked using zen.test") {
		t.Fatalf("a listed client's recipient: %v, want 554 naming zen.test", err)
	}

	sub := &smtpserver.Conn{Mode: smtpserver.ModeSubmission, RemoteAddr: netip.MustParseAddrPort("127.0.0.2:40001")}
	if err := g.Connect(ctx, sub); err != nil {
		t.Fatal(err)
	}
	if sub.Meta != nil {
		t.Errorf("a submission client was looked up: %#v", sub.Meta)
	}
}
