package e2e

import (
	"crypto/tls"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/testutil/testmx"
)

// Through the real listeners: a recipient domain with an MTA-STS policy in
// enforce mode gets its mail over verified TLS, and a domain whose MX does
// not offer STARTTLS keeps the mail queued instead of receiving it in
// clear text.
func TestMTASTSEnforcedEndToEnd(t *testing.T) {
	t.Parallel()
	ca := testmx.NewCA(t, "E2E Test CA")
	h := startHeraldWith(t, nil, func(d *delivery.Config) { d.RootCAs = ca.Pool() })
	h.addDomain("example.com")
	pw := h.addUser("alice@example.com")

	// Policy server for both domains on 127.0.x.y:443.
	stsIP := nextMXIP()
	policies := map[string]string{
		"mta-sts.secure.test": "version: STSv1\nmode: enforce\nmx: mx.secure.test\nmax_age: 86400\n",
		"mta-sts.plain.test":  "version: STSv1\nmode: enforce\nmx: mx.plain.test\nmax_age: 86400\n",
	}
	cert := ca.Issue("mta-sts.secure.test", "mta-sts.plain.test")
	ln, err := tls.Listen("tcp", stsIP+":443", &tls.Config{Certificates: []tls.Certificate{cert}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := policies[strings.Split(r.Host, ":")[0]]
		if !ok || r.URL.Path != "/.well-known/mta-sts.txt" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain")
		w.Write([]byte(p))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	for _, d := range []string{"secure.test", "plain.test"} {
		h.dns.AddTXT("_mta-sts."+d, "v=STSv1; id=2026112601;")
		h.dns.AddA("mta-sts."+d, stsIP)
	}
	mxCert := ca.Issue("mx.secure.test")
	secure := h.remoteMX("secure.test", testmx.Config{STARTTLS: true, Certificate: &mxCert})
	plain := h.remoteMX("plain.test", testmx.Config{})

	h.submit("alice@example.com", pw, "alice@example.com", []string{"bob@secure.test"}, testBody("sts-ok"))
	got := secure.WaitMessages(t, 1, 10*time.Second)
	if !got[0].TLS {
		t.Fatal("delivered without TLS under an enforce policy")
	}
	id := h.submit("alice@example.com", pw, "alice@example.com", []string{"carol@plain.test"}, testBody("sts-plain"))
	waitStatus(t, h, id, "deferred")
	m, err := h.app.Store().Get(t.Context(), id)
	if err != nil {
		t.Fatal(err)
	}
	if r := m.Recipients[0]; !strings.Contains(r.LastReply, "4.7.4") {
		t.Errorf("last reply %q, want a 4.7.4 STARTTLS-required deferral", r.LastReply)
	}
	if n := len(plain.Messages()); n != 0 {
		t.Fatalf("%d messages delivered in clear text despite the enforce policy", n)
	}
}
