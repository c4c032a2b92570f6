package inbound_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/dsn"
	"github.com/heraldmail/herald/internal/msgauth/dkim"
	"github.com/heraldmail/herald/internal/msgauth/dmarcreport"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

// authserv is the authserv-id of the server under test.
const authserv = "mx.herald.test"

// clientIP is the MX peer's address: inside the SPF range of good.test
// and lists.test, outside every other sender domain's.
var clientIP = netip.MustParseAddr("192.0.2.25")

// clientHELO is the peer's EHLO name; it publishes no SPF record.
const clientHELO = "client.test"

// world is one test's surroundings: a DNS server on loopback publishing
// the sender domains' SPF and DMARC records, a SQLite store in a temporary
// directory (the local domains and their policies, and the queue the spool
// writes to), and a Checker with a Catcher.
//
// Sender domains:
//   - good.test: SPF allows clientIP, DMARC p=reject
//   - forged.test: SPF -all, DMARC p=reject
//   - junk.test: SPF -all, DMARC p=quarantine
//   - soft.test: SPF ~all, DMARC p=reject
//   - broken.test: every question SERVFAILs
//   - lists.test: a mailing list's domain, SPF allows clientIP, no DMARC
//
// Local domain example.test has no policy of its own (the [checks]
// configuration applies).
type world struct {
	t   *testing.T
	ctx context.Context
	dns *testdns.Server
	st  *sqlite.Store
	sp  *spool.Spool
	ck  *inbound.Checker

	mu         sync.Mutex
	complaints []*dsn.Feedback
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newWorld(t *testing.T, cfg config.ChecksConfig) *world {
	t.Helper()
	d := testdns.Start(t)
	d.AddTXT("good.test", "v=spf1 ip4:192.0.2.0/24 -all")
	d.AddTXT("_dmarc.good.test", "v=DMARC1; p=reject")
	d.AddTXT("forged.test", "v=spf1 -all")
	d.AddTXT("_dmarc.forged.test", "v=DMARC1; p=reject")
	d.AddTXT("junk.test", "v=spf1 -all")
	d.AddTXT("_dmarc.junk.test", "v=DMARC1; p=quarantine")
	d.AddTXT("soft.test", "v=spf1 ~all")
	d.AddTXT("_dmarc.soft.test", "v=DMARC1; p=reject")
	d.SetServfail("broken.test")
	d.AddTXT("lists.test", "v=spf1 ip4:192.0.2.0/24 -all")
	res, err := resolve.New(d.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := sqlite.Open(filepath.Join(dir, "data"), sqlite.Options{Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	w := &world{t: t, ctx: context.Background(), dns: d, st: st, sp: spool.New(st, nil, clock.Real{})}
	w.ck = &inbound.Checker{Resolver: res, Config: cfg, Policies: st, AuthservID: authserv, Log: discard(),
		Catcher: &inbound.Catcher{Reports: st, Log: discard(), Complaint: w.complaint,
			Ours: func(ctx context.Context, domain string) bool {
				ok, err := st.IsLocalDomain(ctx, domain)
				return err == nil && ok
			}}}
	w.addDomain("example.test", store.DomainPolicy{})
	w.addDomain("herald.example", store.DomainPolicy{}) // the domain of the sample DMARC report
	return w
}

func (w *world) complaint(_ context.Context, fb *dsn.Feedback) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.complaints = append(w.complaints, fb)
}

func (w *world) gotComplaints() []*dsn.Feedback {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]*dsn.Feedback(nil), w.complaints...)
}

// addDomain adds a local domain with its inbound policy (zero: none).
func (w *world) addDomain(domain string, p store.DomainPolicy) {
	w.t.Helper()
	if err := w.st.AddDomain(w.ctx, domain); err != nil {
		w.t.Fatal(err)
	}
	if p != (store.DomainPolicy{}) {
		if err := w.st.SetDomainPolicy(w.ctx, domain, p); err != nil {
			w.t.Fatal(err)
		}
	}
}

// stored is a message as the queue holds it.
type stored struct {
	msg  *store.Message // as read back with Get (Headers included)
	data string         // as read back with OpenBody: the prepended fields, then the message
}

// accept runs one transaction from clientIP the way the acceptance stage
// does for anonymous mail: Begin at MAIL FROM, then the spool streams raw
// into the store through the transaction's processors for rcptDomain.
func (w *world) accept(from, rcptDomain, raw string) (stored, error) {
	w.t.Helper()
	return w.acceptFrom(w.ck.Begin(w.ctx, clientIP, clientHELO, from), from, rcptDomain, strings.NewReader(raw))
}

func (w *world) acceptFrom(tx *inbound.Tx, from, rcptDomain string, r io.Reader) (stored, error) {
	w.t.Helper()
	m := &store.Message{Sender: from, ClientIP: clientIP.String(), HELO: clientHELO, Source: "smtp",
		Recipients: []store.Recipient{{Address: "alice@" + rcptDomain}}}
	id, err := w.sp.Accept(w.ctx, m, r, tx.Processors(w.ctx, rcptDomain)...)
	if err != nil {
		return stored{}, err
	}
	got, err := w.st.Get(w.ctx, id)
	if err != nil {
		w.t.Fatal(err)
	}
	rc, err := w.st.OpenBody(w.ctx, id)
	if err != nil {
		w.t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		w.t.Fatal(err)
	}
	return stored{msg: got, data: string(b)}, nil
}

// queued returns how many messages the queue holds.
func (w *world) queued() int {
	w.t.Helper()
	ms, err := w.st.List(w.ctx, "", 100)
	if err != nil {
		w.t.Fatal(err)
	}
	return len(ms)
}

// publishKey generates an Ed25519 DKIM key for selector._domainkey.domain,
// publishes it in the world's DNS and returns its PEM.
func (w *world) publishKey(domain, selector string) []byte {
	w.t.Helper()
	priv, err := dkim.GenerateKey(dkim.AlgorithmEd25519)
	if err != nil {
		w.t.Fatal(err)
	}
	name, value, err := dkim.DNSRecord(domain, selector, priv)
	if err != nil {
		w.t.Fatal(err)
	}
	w.dns.AddTXT(name, value)
	return priv
}

// message is a plain message from headerFrom, after any extra header
// fields (each ending in CRLF).
func message(headerFrom, extra string) string {
	return extra + "From: <" + headerFrom + ">\r\n" +
		"To: <alice@example.test>\r\n" +
		"Subject: inbound test\r\n" +
		"Date: Thu, 01 Jan 2026 00:00:00 +0000\r\n" +
		"Message-ID: <1@" + headerFrom[strings.IndexByte(headerFrom, '@')+1:] + ">\r\n" +
		"\r\n" +
		"Hello,\r\n" +
		"\r\n" +
		"a test message.\r\n"
}

// dkimSign returns raw with the DKIM-Signature of key (domain, selector)
// prepended.
func dkimSign(t *testing.T, raw, domain, selector string, key []byte) string {
	t.Helper()
	s, err := dkim.NewSigner([]dkim.Key{{Domain: domain, Selector: selector, PrivateKey: key}}, dkim.SignOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte(raw))
	sig, err := s.Headers()
	if err != nil {
		t.Fatal(err)
	}
	return string(sig) + raw
}

// ourResults returns the value of the Authentication-Results field the
// checks prepended, unfolded, and fails unless the stored message starts
// with it.
func ourResults(t *testing.T, s stored) string {
	t.Helper()
	prefix := "Authentication-Results: " + authserv + ";"
	if !strings.HasPrefix(s.data, prefix) {
		t.Fatalf("stored message does not start with our Authentication-Results:\n%s", header(s.data))
	}
	return unfold(firstField(s.data))
}

// firstField returns the first header field of data, folding kept.
func firstField(data string) string {
	end := 0
	for {
		i := strings.Index(data[end:], "\r\n")
		if i < 0 {
			return data
		}
		end += i + 2
		if end >= len(data) || (data[end] != ' ' && data[end] != '\t') {
			return data[:end]
		}
	}
}

func unfold(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "\r\n\t", " "), "\r\n ", " ")
}

// header returns the header section of a message.
func header(data string) string {
	if i := strings.Index(data, "\r\n\r\n"); i >= 0 {
		return data[:i+2]
	}
	return data
}

// wantResults fails unless res contains every one of want.
func wantResults(t *testing.T, res string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(res, w) {
			t.Errorf("Authentication-Results lacks %q:\n%s", w, res)
		}
	}
}

// kept returns the DMARC reports the store holds for domain ("" all).
func (w *world) kept(domain string) []*dmarcreport.Report {
	w.t.Helper()
	return keptReports(w.t, w.st, domain)
}

func keptReports(t *testing.T, st store.DMARCReports, domain string) []*dmarcreport.Report {
	t.Helper()
	rs, err := st.ListDMARCReports(context.Background(), domain)
	if err != nil {
		t.Fatal(err)
	}
	var out []*dmarcreport.Report
	for _, r := range rs {
		var rep dmarcreport.Report
		if err := json.Unmarshal(r.Data, &rep); err != nil {
			t.Fatalf("stored report %s: %v", r.ReportID, err)
		}
		if rep.ReportID != r.ReportID || rep.OrgName != r.Reporter || !rep.Begin.Equal(r.Begin) || !rep.End.Equal(r.End) ||
			!strings.EqualFold(rep.Policy.Domain, r.Domain) {
			t.Errorf("stored report's key %+v does not match its contents", r)
		}
		out = append(out, &rep)
	}
	return out
}
