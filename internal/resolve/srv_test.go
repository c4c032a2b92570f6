package resolve_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/resolve"
	"github.com/heraldmail/herald/internal/testutil/testdns"
)

func TestLookupSRV(t *testing.T) {
	t.Parallel()
	d := testdns.Start(t)
	d.Add("_submissions._tcp.example.com. SRV 0 1 465 Mail.Example.com.")
	d.Add("_imap._tcp.example.com. SRV 0 0 0 .")
	d.AddCNAME("_submission._tcp.example.com", "_sub.example.net")
	d.Add("_sub.example.net. SRV 10 1 587 mail.example.com.")
	r, err := resolve.New(d.Addr(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sr, ok := r.(resolve.SRVResolver)
	if !ok {
		t.Fatal("the client does not look up SRV records")
	}
	for name, want := range map[string][]resolve.SRV{
		"_submissions._tcp.example.com": {{Priority: 0, Weight: 1, Port: 465, Target: "mail.example.com"}},
		"_imap._tcp.example.com":        {{Target: ""}},
		"_submission._tcp.example.com":  {{Priority: 10, Weight: 1, Port: 587, Target: "mail.example.com"}},
	} {
		got, err := sr.LookupSRV(t.Context(), name)
		if err != nil || !slices.Equal(got, want) {
			t.Errorf("%s: %+v, %v; want %+v", name, got, err, want)
		}
	}
	if _, err := sr.LookupSRV(t.Context(), "_autodiscover._tcp.example.com"); !errors.Is(err, resolve.ErrNotFound) {
		t.Errorf("missing SRV: %v, want ErrNotFound", err)
	}
}
