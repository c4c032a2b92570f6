package stats_test

import (
	"context"
	"log/slog"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/stats"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/store/storetest"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// backends opens a fresh store of each backend.
var backends = []struct {
	name string
	open func(t testing.TB) store.Store
}{
	{"sqlite", openSQLite},
	{"postgres", openPostgres},
}

func openSQLite(t testing.TB) store.Store {
	s, err := sqlite.Open(t.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("sqlite.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openPostgres(t testing.TB) store.Store {
	_, dsn := pgtest.NewSchema(t)
	s, err := postgres.Open(context.Background(), dsn, postgres.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("postgres.Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func forEachBackend(t *testing.T, fn func(t *testing.T, s store.Store)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(t, b.open(t))
		})
	}
}

func must(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// now is the tests' reference time: 14:30:30 UTC.
var now = time.Date(2026, 12, 1, 14, 30, 30, 0, time.UTC)

func event(at time.Time, typ, account, rcpt string) store.Event {
	return store.Event{Time: at, Type: typ, Account: account, Recipient: rcpt}
}

func TestOverview(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s store.Store) {
		ctx := context.Background()
		var evs []store.Event
		add := func(n int, at time.Time, typ, account string) {
			for range n {
				evs = append(evs, event(at, typ, account, "r@dest.example"))
			}
		}
		add(5, now, store.EventAccepted, "a")                        // this minute
		add(3, now.Add(-time.Minute), store.EventDelivered, "a")     // the minute before
		add(1, now.Add(-59*time.Minute), store.EventBounced, "a")    // first minute of the hour window
		add(2, now.Add(-61*time.Minute), store.EventDeferred, "a")   // outside the hour, inside the day
		add(4, now.Add(-23*time.Hour), store.EventComplained, "a")   // first hour of the day window
		add(6, now.Add(-25*time.Hour), store.EventExpired, "a")      // yesterday: month only
		add(7, now.Add(-29*24*time.Hour), store.EventDelivered, "a") // first day of the month window
		add(8, now.Add(-31*24*time.Hour), store.EventDelivered, "a") // outside every window
		add(9, now.Add(-time.Minute), store.EventDelivered, "other") // another account
		add(1, now.Add(-2*time.Minute), store.EventRejected, "a")    // refused
		add(1, now.Add(-2*time.Minute), store.EventSuppressed, "a")  // not sent
		for i := range evs {
			if evs[i].Type == store.EventDelivered {
				evs[i].Queued = evs[i].Time.Add(-2 * time.Second)
			}
		}
		must(t, "AddEvents", s.AddEvents(ctx, evs))
		m := storetest.NewMessage(now.Add(-5*time.Minute), "x@q.example", "y@q.example")
		m.Account = "a"
		storetest.Enqueue(t, s, m, []byte("x\r\n"), time.Time{})

		o, err := stats.New(s).Overview(ctx, "a", now)
		must(t, "Overview", err)
		if len(o.Hour.Points) != 60 || len(o.Day.Points) != 24 || len(o.Month.Points) != 30 {
			t.Fatalf("points: %d, %d, %d", len(o.Hour.Points), len(o.Day.Points), len(o.Month.Points))
		}
		if p := o.Hour.Points[59]; !p.Start.Equal(now.Truncate(time.Minute)) || p.Accepted != 5 {
			t.Errorf("last minute: %+v", p)
		}
		if p := o.Hour.Points[58]; p.Delivered != 3 {
			t.Errorf("minute before: %+v", p)
		}
		if p := o.Hour.Points[0]; !p.Start.Equal(now.Truncate(time.Minute).Add(-59*time.Minute)) || p.Bounced != 1 {
			t.Errorf("first minute: %+v", p)
		}
		wantHour := stats.Counts{Accepted: 5, Delivered: 3, Bounced: 1, Rejected: 1, Suppressed: 1}
		if o.Hour.Total != wantHour {
			t.Errorf("hour total: %+v, want %+v", o.Hour.Total, wantHour)
		}
		if o.Hour.DeliveryRate != 0.75 {
			t.Errorf("hour delivery rate: %v", o.Hour.DeliveryRate)
		}
		wantDay := wantHour
		wantDay.Deferred, wantDay.Complained = 2, 4
		if o.Day.Total != wantDay {
			t.Errorf("day total: %+v, want %+v", o.Day.Total, wantDay)
		}
		if p := o.Day.Points[0]; !p.Start.Equal(now.Truncate(time.Hour).Add(-23*time.Hour)) || p.Complained != 4 {
			t.Errorf("first hour: %+v", p)
		}
		wantMonth := wantDay
		wantMonth.Expired, wantMonth.Delivered = 6, 3+7
		if o.Month.Total != wantMonth {
			t.Errorf("month total: %+v, want %+v", o.Month.Total, wantMonth)
		}
		day := now.Truncate(24 * time.Hour)
		if p := o.Month.Points[0]; !p.Start.Equal(day.Add(-29*24*time.Hour)) || p.Delivered != 7 {
			t.Errorf("first day: %+v", p)
		}
		if p := o.Month.Points[28]; !p.Start.Equal(day.Add(-24*time.Hour)) || p.Expired != 6 {
			t.Errorf("yesterday: %+v", p)
		}
		if o.Hour.Latency.Samples != 3 || o.Month.Latency.Samples != 10 || math.Abs(float64(o.Month.Latency.P50-2*time.Second)) > 0.03*float64(2*time.Second) {
			t.Errorf("latency: hour %+v, month %+v", o.Hour.Latency, o.Month.Latency)
		}
		if o.Queue != (stats.Queue{Messages: 1, Recipients: 2, OldestAge: 5 * time.Minute}) {
			t.Errorf("queue: %+v", o.Queue)
		}

		all, err := stats.New(s).Overview(ctx, store.AllAccounts, now)
		must(t, "Overview of all accounts", err)
		if all.Hour.Total.Delivered != 12 || all.Month.Total.Delivered != 19 {
			t.Errorf("all accounts: hour %+v, month %+v", all.Hour.Total, all.Month.Total)
		}
		other, err := stats.New(s).Overview(ctx, "other", now)
		must(t, "Overview of other", err)
		if other.Hour.Total != (stats.Counts{Delivered: 9}) || other.Queue != (stats.Queue{}) {
			t.Errorf("other: %+v, queue %+v", other.Hour.Total, other.Queue)
		}
	})
}

// TestPercentiles checks the estimates against the exact percentiles of
// known latencies: a log-normal body (median about 3 s) with a long tail.
func TestPercentiles(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s store.Store) {
		ctx := context.Background()
		r := rand.New(rand.NewPCG(1, 2))
		var lats []time.Duration
		var evs []store.Event
		for i := range 20000 {
			d := time.Duration(math.Exp(r.NormFloat64()*1.2+math.Log(3000)) * float64(time.Millisecond))
			if i%40 == 0 {
				d = time.Duration(r.Float64()*6*float64(time.Hour)) + time.Hour // deferred ones
			}
			lats = append(lats, d)
			at := now.Add(-time.Duration(i%3000) * time.Second)
			e := event(at, store.EventDelivered, "p", "r@x.example")
			e.Queued = at.Add(-d)
			evs = append(evs, e)
			if len(evs) == 1000 {
				must(t, "AddEvents", s.AddEvents(ctx, evs))
				evs = evs[:0]
			}
		}
		slices.Sort(lats)
		exact := func(q float64) time.Duration { return lats[int(math.Ceil(q*float64(len(lats))))-1] }
		rates, err := stats.New(s).Rates(ctx, "p", time.Hour, now)
		must(t, "Rates", err)
		if rates.Latency.Samples != int64(len(lats)) {
			t.Fatalf("samples: %d", rates.Latency.Samples)
		}
		for _, c := range []struct {
			name       string
			got, exact time.Duration
		}{{"p50", rates.Latency.P50, exact(0.50)}, {"p99", rates.Latency.P99, exact(0.99)}} {
			if e := math.Abs(float64(c.got-c.exact)) / float64(c.exact); e > 0.022 {
				t.Errorf("%s: estimate %v, exact %v: error %.1f %%", c.name, c.got, c.exact, 100*e)
			} else {
				t.Logf("%s: estimate %v, exact %v: error %.2f %%", c.name, c.got, c.exact, 100*e)
			}
		}
	})
}

func TestPercentileEdges(t *testing.T) {
	if p := stats.Percentile(make([]int64, store.LatencyBins), 0.5); p != 0 {
		t.Errorf("empty histogram: %v", p)
	}
	h := make([]int64, store.LatencyBins)
	h[0] = 10 // all under a millisecond
	if p := stats.Percentile(h, 0.5); p < 0 || p > time.Millisecond {
		t.Errorf("sub-millisecond median: %v", p)
	}
	h = make([]int64, store.LatencyBins)
	h[store.LatencyBin(time.Second)] = 1
	lo, hi := store.LatencyBinBounds(store.LatencyBin(time.Second))
	if p := stats.Percentile(h, 0.99); p < lo || p > hi || lo > time.Second || hi <= time.Second {
		t.Errorf("one sample of 1s: %v in [%v, %v)", p, lo, hi)
	}
	for _, d := range []time.Duration{0, time.Microsecond, time.Millisecond, 1500 * time.Millisecond, time.Hour, 40 * 24 * time.Hour} {
		b := store.LatencyBin(d)
		lo, hi := store.LatencyBinBounds(b)
		if b < 0 || b >= store.LatencyBins || d < lo || (d >= hi && b != store.LatencyBins-1) {
			t.Errorf("LatencyBin(%v) = %d: [%v, %v)", d, b, lo, hi)
		}
	}
}

func TestDestinationsAndRates(t *testing.T) {
	forEachBackend(t, func(t *testing.T, s store.Store) {
		ctx := context.Background()
		var evs []store.Event
		add := func(n int, at time.Time, typ, rcpt, tls string) {
			for range n {
				e := event(at, typ, "d", rcpt)
				e.TLS = tls
				evs = append(evs, e)
			}
		}
		add(6, now, store.EventDelivered, "a@Gmail.example", "TLSv1.3")
		add(2, now.Add(-3*time.Minute), store.EventDeferred, "b@gmail.example", "TLSv1.3")
		add(2, now.Add(-3*time.Minute), store.EventBounced, "c@gmail.example", "none")
		add(3, now.Add(-20*time.Minute), store.EventDeferred, "a@slow.example", "")
		add(1, now.Add(-20*time.Minute), store.EventDelivered, "a@slow.example", "TLSv1.2")
		add(9, now.Add(-3*time.Hour), store.EventDelivered, "a@old.example", "TLSv1.3")
		add(4, now, store.EventAccepted, "a@gmail.example", "")
		must(t, "AddEvents", s.AddEvents(ctx, evs))
		st := stats.New(s)

		ds, err := st.Destinations(ctx, "d", now.Add(-time.Hour), now, 10)
		must(t, "Destinations", err)
		want := []stats.Destination{
			{Domain: "gmail.example", Attempts: 10, Delivered: 6, Deferred: 2, Bounced: 2, DeferralRate: 0.2, BounceRate: 0.2, TLSShare: 0.8},
			{Domain: "slow.example", Attempts: 4, Delivered: 1, Deferred: 3, DeferralRate: 0.75, TLSShare: 0.25},
		}
		if !slices.Equal(ds, want) {
			t.Errorf("Destinations of the last hour:\n got  %+v\n want %+v", ds, want)
		}
		ds, err = st.Destinations(ctx, "d", now.Add(-24*time.Hour), now, 1)
		must(t, "Destinations", err)
		if len(ds) != 1 || ds[0].Domain != "gmail.example" {
			t.Errorf("Destinations of the day, limit 1: %+v", ds)
		}
		ds, err = st.Destinations(ctx, "d", now.Add(-24*time.Hour), now, 0)
		must(t, "Destinations", err)
		if len(ds) != 3 || ds[1].Domain != "old.example" {
			t.Errorf("Destinations of the day: %+v", ds)
		}

		ds, err = st.Destinations(ctx, "d", now.Add(-30*24*time.Hour), now, 0) // per day
		must(t, "Destinations", err)
		if len(ds) != 3 || ds[0] != want[0] || ds[1].Domain != "old.example" || ds[1].Delivered != 9 {
			t.Errorf("Destinations of 30 days: %+v", ds)
		}

		r, err := st.Rates(ctx, "d", 10*time.Minute, now)
		must(t, "Rates", err)
		if r.Counts != (stats.Counts{Accepted: 4, Delivered: 6, Deferred: 2, Bounced: 2}) || r.ByType[store.EventDeferred] != 2 ||
			len(r.ByType) != 4 || len(r.Destinations) != 1 || r.Destinations[0].Attempts != 10 {
			t.Errorf("Rates of 10 minutes: %+v", r)
		}
		if !r.Since.Equal(now.Add(-10*time.Minute).Truncate(time.Minute)) || !r.Until.Equal(now.Truncate(time.Minute).Add(time.Minute)) {
			t.Errorf("Rates window: %v to %v", r.Since, r.Until)
		}
		r, err = st.Rates(ctx, "d", 30*time.Minute, now)
		must(t, "Rates", err)
		if r.Counts.Deferred != 5 || len(r.Destinations) != 2 {
			t.Errorf("Rates of 30 minutes: %+v", r)
		}
		r, err = st.Rates(ctx, "d", 72*time.Hour, now)
		must(t, "Rates", err)
		if r.Counts.Delivered != 16 || len(r.Destinations) != 3 {
			t.Errorf("Rates of 72 hours: %+v", r)
		}
		if _, err := st.Rates(ctx, "d", 0, now); err == nil {
			t.Error("Rates with a zero window accepted")
		}
	})
}
