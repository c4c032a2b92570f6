package wellknown_test

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/wellknown"
)

func setup(t *testing.T) (store.Store, *httptest.Server) {
	t.Helper()
	st, err := sqlite.Open(t.TempDir(), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.AddDomain(context.Background(), "example.org"); err != nil {
		t.Fatal(err)
	}
	h := wellknown.New(wellknown.Config{Hostname: "mail.example.org", MaxAge: 14 * 24 * time.Hour,
		Submission: 587, Submissions: 465, IMAP: wellknown.Server{Host: "imap.example.org", Port: 993}, Autoconfig: true, Dir: st})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return st, srv
}

func do(t *testing.T, srv *httptest.Server, method, host, path, body string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

func TestMTASTSPolicy(t *testing.T) {
	t.Parallel()
	st, srv := setup(t)
	code, body, hdr := do(t, srv, "GET", "MTA-STS.example.org:443", wellknown.MTASTSPath, "")
	want := "version: STSv1\r\nmode: testing\r\nmx: mail.example.org\r\nmax_age: 1209600\r\n"
	if code != 200 || body != want || !strings.HasPrefix(hdr.Get("Content-Type"), "text/plain") {
		t.Fatalf("policy: %d %q %q; want %q", code, body, hdr.Get("Content-Type"), want)
	}
	if err := st.SetDomainPolicy(context.Background(), "example.org", store.DomainPolicy{MTASTS: "enforce"}); err != nil {
		t.Fatal(err)
	}
	if _, body, _ = do(t, srv, "GET", "mta-sts.example.org", wellknown.MTASTSPath, ""); !strings.Contains(body, "\r\nmode: enforce\r\n") {
		t.Fatalf("mode from the store not used: %q", body)
	}
	for _, host := range []string{"mta-sts.example.net", "example.org", "mta-sts.", "", "mta-sts.example.org<x>"} {
		if code, _, _ := do(t, srv, "GET", host, wellknown.MTASTSPath, ""); code != 404 {
			t.Errorf("host %q: %d, want 404", host, code)
		}
	}
	if code, _, _ := do(t, srv, "POST", "mta-sts.example.org", wellknown.MTASTSPath, ""); code != 405 {
		t.Errorf("POST: %d, want 405", code)
	}
}

type clientConfig struct {
	Provider struct {
		ID       string `xml:"id,attr"`
		Domain   string `xml:"domain"`
		Incoming []struct {
			Type     string `xml:"type,attr"`
			Hostname string `xml:"hostname"`
			Port     int    `xml:"port"`
			Socket   string `xml:"socketType"`
		} `xml:"incomingServer"`
		Outgoing []struct {
			Hostname string `xml:"hostname"`
			Port     int    `xml:"port"`
			Socket   string `xml:"socketType"`
			Username string `xml:"username"`
		} `xml:"outgoingServer"`
	} `xml:"emailProvider"`
}

func TestAutoconfig(t *testing.T) {
	t.Parallel()
	_, srv := setup(t)
	for _, c := range []struct{ host, path string }{
		{"autoconfig.example.org", wellknown.AutoconfigPath + "?emailaddress=user%40example.org"},
		{"autoconfig.example.org", wellknown.AutoconfigPath},
		{"example.org", wellknown.WellKnownAutoconfigPath},
		{"mail.example.org", wellknown.AutoconfigPath + "?emailaddress=user%40example.org"},
	} {
		code, body, _ := do(t, srv, "GET", c.host, c.path, "")
		if code != 200 {
			t.Fatalf("%s%s: %d", c.host, c.path, code)
		}
		var cc clientConfig
		if err := xml.Unmarshal([]byte(body), &cc); err != nil {
			t.Fatalf("%s%s: %v\n%s", c.host, c.path, err, body)
		}
		p := cc.Provider
		if p.Domain != "example.org" || len(p.Outgoing) != 2 || p.Outgoing[0].Port != 465 || p.Outgoing[0].Socket != "SSL" ||
			p.Outgoing[1].Port != 587 || p.Outgoing[1].Socket != "STARTTLS" || p.Outgoing[0].Hostname != "mail.example.org" ||
			p.Outgoing[0].Username != "%EMAILADDRESS%" || len(p.Incoming) != 1 || p.Incoming[0].Port != 993 || p.Incoming[0].Socket != "SSL" {
			t.Fatalf("%s%s: %+v", c.host, c.path, p)
		}
	}
	// Other domains: nothing, whatever the parameter says.
	for _, c := range []struct{ host, path string }{
		{"autoconfig.example.net", wellknown.AutoconfigPath + "?emailaddress=user%40example.net"},
		{"example.net", wellknown.WellKnownAutoconfigPath},
		{"mail.example.org", wellknown.AutoconfigPath + "?emailaddress=%3Cscript%3E"},
	} {
		if code, body, _ := do(t, srv, "GET", c.host, c.path, ""); code != 404 || strings.Contains(body, "<script") {
			t.Errorf("%s%s: %d %q, want 404", c.host, c.path, code, body)
		}
	}
	// The address is never echoed.
	_, body, _ := do(t, srv, "GET", "autoconfig.example.org", wellknown.AutoconfigPath+"?emailaddress=%3Cb%3E%22x%40example.org", "")
	if strings.Contains(body, "<b>") || strings.Contains(body, `"x`) {
		t.Fatalf("parameter echoed: %s", body)
	}
}

const autodiscoverRequest = `<?xml version="1.0" encoding="utf-8"?>
<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
  <Request>
    <EMailAddress>%s</EMailAddress>
    <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
  </Request>
</Autodiscover>`

func TestAutodiscover(t *testing.T) {
	t.Parallel()
	_, srv := setup(t)
	req := strings.Replace(autodiscoverRequest, "%s", "a&amp;b'x@Example.ORG", 1)
	code, body, _ := do(t, srv, "POST", "autodiscover.example.org", "/Autodiscover/Autodiscover.xml", req)
	if code != 200 {
		t.Fatalf("autodiscover: %d %s", code, body)
	}
	if strings.Contains(body, "a&b") || !strings.Contains(body, "a&amp;b&#39;x@example.org") {
		t.Fatalf("address not escaped: %s", body)
	}
	var resp struct {
		Response struct {
			Proto []struct {
				Type       string
				Server     string
				Port       int
				LoginName  string
				SSL        string
				Encryption string
			} `xml:"Account>Protocol"`
		}
	}
	if err := xml.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	pr := resp.Response.Proto
	if len(pr) != 3 || pr[0].Type != "IMAP" || pr[1].Type != "SMTP" || pr[1].Port != 465 || pr[2].Port != 587 ||
		pr[2].Encryption != "TLS" || pr[1].Server != "mail.example.org" || pr[1].LoginName != "a&b'x@example.org" {
		t.Fatalf("protocols: %+v", pr)
	}
	for _, c := range []struct {
		method, body string
		want         int
	}{
		{"POST", strings.Replace(autodiscoverRequest, "%s", "user@example.net", 1), 404},
		{"POST", strings.Replace(autodiscoverRequest, "%s", "not an address", 1), 404},
		{"POST", "<Autodiscover><Request>", 400},
		{"POST", strings.Replace(autodiscoverRequest, "%s", strings.Repeat("x", 20<<10)+"@example.org", 1), 400},
		{"GET", "", 405},
	} {
		if code, _, _ := do(t, srv, c.method, "autodiscover.example.org", wellknown.AutodiscoverPath, c.body); code != c.want {
			t.Errorf("%s %.40q: %d, want %d", c.method, c.body, code, c.want)
		}
	}
}

func TestHandles(t *testing.T) {
	t.Parallel()
	for p, want := range map[string]bool{
		wellknown.MTASTSPath: true, "/Autodiscover/Autodiscover.xml": true, wellknown.WellKnownAutoconfigPath: true,
		"/v1/messages": false, "/.well-known/acme-challenge/x": false,
	} {
		if wellknown.Handles(p) != want {
			t.Errorf("Handles(%q) = %v", p, !want)
		}
	}
}
