package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// fullOverview is a stub OverviewSource with all three charts filled.
type fullOverview struct{}

func (fullOverview) Overview(_ context.Context, _ string, now time.Time) (Overview, error) {
	o := Overview{Totals: map[string]int64{}, HasRate: true, DeliveryRate: 0.98, LatencyP50: time.Second, LatencyP99: 9 * time.Second}
	for _, r := range []struct {
		name string
		n    int
		step time.Duration
	}{{"hour", 60, time.Minute}, {"day", 24, time.Hour}, {"month", 30, 24 * time.Hour}} {
		s := Series{Range: r.name, Step: r.step, Counts: map[string][]int64{}}
		for i := range r.n {
			s.Times = append(s.Times, now.Add(-time.Duration(r.n-i)*r.step))
		}
		for _, t := range CountTypes {
			c := make([]int64, r.n)
			for i := range c {
				c[i] = int64(1000 + i)
			}
			s.Counts[t] = c
			o.Totals[t] = 123456
		}
		o.Series = append(o.Series, s)
	}
	return o, nil
}

// benchEnv is a console with an operator's session cookie.
func benchEnv(b *testing.B, src OverviewSource) (*Console, *http.Cookie, *sqlite.Store) {
	st := openBenchStore(b)
	con, err := New(Config{}, Deps{Store: st, Overview: src, Logger: discardLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := st.AddOperator(context.Background(), store.Operator{Name: "admin", PasswordHash: fastHash}); err != nil {
		b.Fatal(err)
	}
	id := randomToken()
	now := time.Now()
	if err := st.AddSession(context.Background(), store.Session{IDHash: hashID(id), Kind: store.SessionOperator, Subject: "admin",
		CSRF: "x", Created: now, LastSeen: now, Expires: now.Add(time.Hour)}); err != nil {
		b.Fatal(err)
	}
	return con, &http.Cookie{Name: sessionCookie, Value: id}, st
}

func benchPage(b *testing.B, con *Console, ck *http.Cookie, path string) {
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodGet, path, nil)
		req.AddCookie(ck)
		w := httptest.NewRecorder()
		con.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("%s: %d", path, w.Code)
		}
	}
}

// BenchmarkOverviewPage is the console's own share of an overview: the
// session check and the page (three charts as tables) or its JSON, with
// the statistics source answering at once.
func BenchmarkOverviewPage(b *testing.B) {
	con, ck, _ := benchEnv(b, fullOverview{})
	b.Run("html", func(b *testing.B) { benchPage(b, con, ck, "/") })
	b.Run("json", func(b *testing.B) { benchPage(b, con, ck, "/overview.json") })
}

// BenchmarkOverviewInterim is the overview from the interim source at its
// bound: 5000 events in the last hour.
func BenchmarkOverviewInterim(b *testing.B) {
	con, ck, st := benchEnv(b, nil)
	now := time.Now()
	evs := make([]store.Event, 0, 1000)
	for i := range interimMaxEvents {
		typ := CountTypes[i%len(CountTypes)]
		evs = append(evs, store.Event{Time: now.Add(-time.Duration(i) * 500 * time.Millisecond), Type: typ, Account: "default",
			MessageID: store.NewID(), Recipient: "r@dest.test"})
		if len(evs) == cap(evs) {
			if err := st.AddEvents(context.Background(), evs); err != nil {
				b.Fatal(err)
			}
			evs = evs[:0]
		}
	}
	b.ResetTimer()
	benchPage(b, con, ck, "/")
}
