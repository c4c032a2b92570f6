package wellknown_test

import (
	"context"
	"encoding/xml"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/wellknown"
)

// FuzzAutodiscover: whatever the request body, the answer is 200, 400 or
// 404; a 200 is well-formed XML for an address of the local domain, the
// address given back as text (escaped), never as markup.
func FuzzAutodiscover(f *testing.F) {
	st, err := sqlite.Open(f.TempDir(), sqlite.Options{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	if err := st.AddDomain(context.Background(), "example.org"); err != nil {
		f.Fatal(err)
	}
	h := wellknown.New(wellknown.Config{Hostname: "mail.example.org", Submissions: 465, Autoconfig: true, Dir: st})
	for _, s := range []string{"user@example.org", "a&amp;b@example.org", "<x/>@example.org", "user@example.net", "", "]]>"} {
		f.Add(strings.Replace(autodiscoverRequest, "%s", s, 1))
	}
	f.Add("<Autodiscover><Request><EMailAddress>x@example.org</EMailAddress></Request></Autodiscover>")
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", wellknown.AutodiscoverPath, strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusBadRequest, http.StatusNotFound:
			return
		case http.StatusOK:
		default:
			t.Fatalf("status %d", rec.Code)
		}
		out, _ := io.ReadAll(rec.Body)
		var resp struct {
			Response struct {
				Proto []struct{ LoginName string } `xml:"Account>Protocol"`
			}
		}
		if err := xml.Unmarshal(out, &resp); err != nil {
			t.Fatalf("answer is not XML: %v\n%s", err, out)
		}
		if len(resp.Response.Proto) != 1 || !strings.HasSuffix(resp.Response.Proto[0].LoginName, "@example.org") {
			t.Fatalf("answer for a non-local address: %s", out)
		}
	})
}
