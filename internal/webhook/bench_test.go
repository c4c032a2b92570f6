package webhook_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
	"github.com/heraldmail/herald/internal/webhook"
)

// BenchmarkBatchThroughput measures events per second delivered to a
// local receiver (which verifies every signature) from a real SQLite
// store by a dispatcher with the default 4 workers, one event per request
// against batches of up to 100:
//
//	go test -run '^$' -bench BatchThroughput -benchtime 3x ./internal/webhook/
func BenchmarkBatchThroughput(b *testing.B) {
	const n = 5000
	for _, size := range []int{1, 100} {
		b.Run(fmt.Sprintf("max_events=%d", size), func(b *testing.B) {
			var rate float64
			for range b.N {
				st, err := sqlite.Open(b.TempDir(), sqlite.Options{Logger: slog.New(slog.DiscardHandler)})
				if err != nil {
					b.Fatal(err)
				}
				var got, posts atomic.Int64
				done := make(chan struct{})
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					body, _ := io.ReadAll(r.Body)
					if err := webhook.Verify("sec", r.Header.Get(webhook.HeaderSignature), body, time.Now(), time.Minute); err != nil {
						w.WriteHeader(http.StatusUnauthorized)
						return
					}
					k := 1
					if size > 1 {
						var bp webhook.BatchPayload
						if err := json.Unmarshal(body, &bp); err != nil {
							w.WriteHeader(http.StatusBadRequest)
							return
						}
						k = len(bp.Events)
					}
					posts.Add(1)
					if got.Add(int64(k)) == n {
						close(done)
					}
				}))
				ctx := context.Background()
				if err := st.AddWebhook(ctx, store.Webhook{ID: "wh", Account: store.DefaultAccount, URL: srv.URL, Secret: "sec", BatchMax: size}); err != nil {
					b.Fatal(err)
				}
				t0 := time.Now()
				for i := 0; i < n; i += 1000 {
					evs := make([]store.Event, 1000)
					for j := range evs {
						evs[j] = store.Event{Type: store.EventDelivered, Time: t0, Recipient: fmt.Sprintf("r%d@example.org", i+j)}
					}
					if err := st.AddEvents(ctx, evs); err != nil {
						b.Fatal(err)
					}
				}
				d := webhook.New(st, webhook.Options{Logger: slog.New(slog.DiscardHandler)})
				runCtx, cancel := context.WithCancel(ctx)
				stopped := make(chan struct{})
				start := time.Now()
				go func() { d.Run(runCtx); close(stopped) }()
				d.Wake()
				select {
				case <-done:
				case <-time.After(5 * time.Minute):
					b.Fatalf("only %d of %d events delivered", got.Load(), n)
				}
				rate += float64(n) / time.Since(start).Seconds()
				b.ReportMetric(float64(posts.Load()), "requests")
				cancel()
				<-stopped
				srv.Close()
				st.Close()
			}
			b.ReportMetric(rate/float64(b.N), "events/s")
		})
	}
}
