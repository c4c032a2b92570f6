package stats_test

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/stats"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/store/storetest"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// The Overview benchmark's data set: benchEvents events stored through
// AddEvents in batches of benchBatch (so the rollups are maintained as in
// production), spread over the 30 days before benchNow, of benchAccounts
// accounts sending to benchDomains domains, then compacted as the pruning
// job does, plus benchQueued pending messages.
const (
	benchEvents   = 1_000_000
	benchBatch    = 1000
	benchAccounts = 20
	benchDomains  = 500
	benchQueued   = 2000
	// benchFill names the data set in the cache: change it when the data
	// set changes.
	benchFill = "overview-v3"
)

var benchNow = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// benchEventsBatch returns batch i of the data set (deterministic): the
// batches are in time order, as the events of a server arrive, each one
// covering 1/(benchEvents/benchBatch) of the 30 days.
func benchEventsBatch(i int) []store.Event {
	r := rand.New(rand.NewPCG(uint64(i), 7))
	evs := make([]store.Event, benchBatch)
	const batches = benchEvents / benchBatch
	span := 30 * 24 * time.Hour / batches
	start := benchNow.Add(-30 * 24 * time.Hour).Add(time.Duration(i) * span)
	for j := range evs {
		at := start.Add(time.Duration(r.Int64N(int64(span))))
		e := store.Event{
			Time:      at,
			Account:   fmt.Sprintf("acct%d", r.IntN(benchAccounts)),
			MessageID: fmt.Sprintf("M%d-%d", i, j),
			Recipient: fmt.Sprintf("user%d@domain%d.example", r.IntN(1000), int(float64(benchDomains)*math.Pow(r.Float64(), 3))),
		}
		switch p := r.IntN(100); {
		case p < 40:
			e.Type = store.EventAccepted
		case p < 78:
			e.Type = store.EventDelivered
			e.TLS = "TLSv1.3"
			e.Queued = at.Add(-time.Duration(math.Exp(r.NormFloat64()*1.5+math.Log(2000)) * float64(time.Millisecond)))
		case p < 90:
			e.Type = store.EventDeferred
		case p < 96:
			e.Type = store.EventBounced
		case p < 98:
			e.Type = store.EventComplained
		default:
			e.Type = store.EventSuppressed
		}
		evs[j] = e
	}
	return evs
}

// fillBench stores the data set in s.
func fillBench(b *testing.B, s store.Store) {
	ctx := context.Background()
	start := time.Now()
	for i := range benchEvents / benchBatch {
		if err := s.AddEvents(ctx, benchEventsBatch(i)); err != nil {
			b.Fatalf("AddEvents: %v", err)
		}
	}
	added := time.Since(start)
	for i := range benchQueued {
		m := storetest.NewMessage(benchNow.Add(-time.Duration(benchQueued-i)*time.Second), "a@queued.example")
		m.Account = fmt.Sprintf("acct%d", i%benchAccounts)
		storetest.Enqueue(b, s, m, []byte("x\r\n"), time.Time{})
	}
	if _, err := s.CompactRollups(ctx, benchNow.Add(-store.RollupMinuteRetention), benchNow.Add(-store.RollupHourRetention),
		benchNow.Add(-store.RollupDayRetention)); err != nil {
		b.Fatalf("CompactRollups: %v", err)
	}
	b.Logf("filled %d events in %v (%.0f events/s through AddEvents)", benchEvents, added, float64(benchEvents)/added.Seconds())
}

// BenchmarkOverview measures Overview with 1,000,000 events stored: of
// every account (the operators' view) and of one account. The filled
// store is kept between runs (SQLite: a directory under the system's
// temporary directory; PostgreSQL: a schema of the test database), keyed
// by the data set and the schema version; delete it to fill again.
func BenchmarkOverview(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("herald-bench-%s-schema%d", benchFill, sqlite.SchemaVersion()))
		_, err := os.Stat(filepath.Join(dir, "filled"))
		fill := err != nil
		if fill {
			os.RemoveAll(dir)
		}
		s, err := sqlite.Open(dir, sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if fill {
			fillBench(b, s)
			if err := os.WriteFile(filepath.Join(dir, "filled"), nil, 0o600); err != nil {
				b.Fatal(err)
			}
		}
		benchOverview(b, s)
	})
	b.Run("postgres", func(b *testing.B) {
		schema := fmt.Sprintf("herald_bench_%s_schema%d", "overview_v3", postgres.SchemaVersion())
		filled := pgtest.Query[bool](b, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, schema+"_filled")
		if !filled {
			pgtest.Exec(b, `DROP SCHEMA IF EXISTS `+schema+` CASCADE`)
			pgtest.Exec(b, `CREATE SCHEMA `+schema)
		}
		s, err := postgres.Open(context.Background(), pgtest.WithSchema(b, pgtest.DSN(), schema), postgres.Options{Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		defer s.Close()
		if !filled {
			fillBench(b, s)
			for _, t := range []string{"rollup_counts", "rollup_latency", "rollup_dest", "messages", "recipients"} {
				// What autovacuum does in production: the minute rows
				// the compaction deleted and the versions the upserts
				// left are dead tuples until vacuumed.
				pgtest.Exec(b, `VACUUM ANALYZE `+schema+`.`+t)
			}
			pgtest.Exec(b, `CREATE SCHEMA `+schema+"_filled")
		}
		benchOverview(b, s)
	})
}

func benchOverview(b *testing.B, s store.Store) {
	ctx := context.Background()
	st := stats.New(s)
	for _, account := range []string{store.AllAccounts, "acct3"} {
		name := "account=" + account
		if account == "" {
			name = "account=all"
		}
		b.Run(name, func(b *testing.B) {
			o, err := st.Overview(ctx, account, benchNow)
			if err != nil {
				b.Fatal(err)
			}
			if o.Month.Total.Accepted == 0 || o.Hour.Total.Accepted == 0 || o.Month.Latency.Samples == 0 || o.Queue.Messages == 0 {
				b.Fatalf("overview of an empty store: %+v", o)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if _, err := st.Overview(ctx, account, benchNow); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed())/float64(time.Millisecond)/float64(b.N), "ms/op")
		})
	}
}
