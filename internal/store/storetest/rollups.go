package storetest

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// rollupTests is the part of the suite for store.Rollups on one node.
var rollupTests = []test{
	{"Counts", testRollupCounts},
	{"QueueEvents", testRollupQueueEvents},
	{"Latency", testRollupLatency},
	{"Destinations", testRollupDestinations},
	{"CompactKeepsHours", testRollupCompact},
	{"AccountQueue", testRollupAccountQueue},
	{"BadQuery", testRollupBadQuery},
	{"DeleteAccount", testRollupDeleteAccount},
}

// rollupNodeTests covers two nodes writing the same buckets.
var rollupNodeTests = []nodeTest{
	{"RollupsConcurrent", testNodesRollupsConcurrent},
}

// counts returns EventCounts of q as "bucket type n" strings (bucket as
// HH:MM, or "all" for the whole range).
func counts(t *testing.T, s store.Store, q store.RollupQuery) []string {
	t.Helper()
	cs, err := s.EventCounts(context.Background(), q)
	must(t, "EventCounts", err)
	out := make([]string, len(cs))
	for i, c := range cs {
		b := "all"
		if !c.Bucket.IsZero() {
			b = c.Bucket.UTC().Format("01-02T15:04")
		}
		out[i] = fmt.Sprintf("%s %s %d", b, c.Type, c.N)
	}
	return out
}

func expectStrings(t *testing.T, what string, got, want []string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got  %q\n want %q", what, got, want)
	}
}

func ev(at time.Time, typ, account, rcpt string) store.Event {
	return store.Event{Time: at, Type: typ, Account: account, Recipient: rcpt, MessageID: "M"}
}

func testRollupCounts(t *testing.T, s store.Store) {
	ctx := context.Background()
	var evs []store.Event
	for range 3 {
		evs = append(evs, ev(base.Add(10*time.Second), store.EventAccepted, "a", "x@a.example"))
	}
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{
		ev(base.Add(70*time.Second), store.EventDelivered, "a", "x@a.example"),
		ev(base.Add(119*time.Second), store.EventDelivered, "a", "y@a.example"),
		ev(base.Add(3700*time.Second), store.EventBounced, "a", "x@a.example"),
		ev(base.Add(20*time.Second), store.EventAccepted, "b", "x@b.example"),
		ev(base.Add(30*time.Second), store.EventComplained, "b", "x@b.example"),
	}))
	// An event in the previous minute and hour: outside the ranges below.
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{ev(base.Add(-time.Second), store.EventAccepted, "a", "z@a.example")}))

	q := store.RollupQuery{Account: "a", Res: store.RollupMinute, Since: base.Add(30 * time.Second), Until: base.Add(2 * time.Hour)}
	expectStrings(t, "minutes of a", counts(t, s, q), []string{
		"11-26T12:00 accepted 3", "11-26T12:01 delivered 2", "11-26T13:01 bounced 1"})
	q.Account = "b"
	expectStrings(t, "minutes of b", counts(t, s, q), []string{
		"11-26T12:00 accepted 1", "11-26T12:00 complained 1"})
	q.Account = store.AllAccounts
	expectStrings(t, "minutes of all accounts", counts(t, s, q), []string{
		"11-26T12:00 accepted 4", "11-26T12:00 complained 1", "11-26T12:01 delivered 2", "11-26T13:01 bounced 1"})
	q.Account = "nobody"
	expectStrings(t, "minutes of an account without events", counts(t, s, q), []string{})

	q = store.RollupQuery{Account: "a", Res: store.RollupHour, Since: base, Until: base.Add(2 * time.Hour)}
	expectStrings(t, "hours of a", counts(t, s, q), []string{
		"11-26T12:00 accepted 3", "11-26T12:00 delivered 2", "11-26T13:00 bounced 1"})
	q.Since = base.Add(-time.Hour)
	q.Account = store.AllAccounts
	q.Step = 24 * time.Hour
	expectStrings(t, "days of all accounts", counts(t, s, q), []string{
		"11-26T00:00 accepted 5", "11-26T00:00 bounced 1", "11-26T00:00 complained 1", "11-26T00:00 delivered 2"})
	q.Total = true
	expectStrings(t, "whole range of all accounts", counts(t, s, q), []string{
		"all accepted 5", "all bounced 1", "all complained 1", "all delivered 2"})
	// Until is exclusive, rounded up to whole buckets.
	q = store.RollupQuery{Account: "a", Res: store.RollupMinute, Since: base, Until: base.Add(60 * time.Second)}
	expectStrings(t, "first minute of a", counts(t, s, q), []string{"11-26T12:00 accepted 3"})
	q.Until = base.Add(61 * time.Second)
	expectStrings(t, "first minute and a second of a", counts(t, s, q), []string{"11-26T12:00 accepted 3", "11-26T12:01 delivered 2"})
}

func testRollupQueueEvents(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "qa")
	received := time.Now().Add(-90 * time.Second)
	m := NewMessage(received, "r1@Dest.example", "r2@dest.example", "r3@other.example")
	m.Account = "qa"
	token := Enqueue(t, s, m, []byte("body\r\n"), time.Now().Add(time.Minute))
	start := time.Now()
	must(t, "Update", s.Update(ctx, m.ID, token, []store.Outcome{
		{RecipientID: m.Recipients[0].ID, Status: store.StatusDelivered, TLS: "TLSv1.3 TLS_AES_128_GCM_SHA256"},
		{RecipientID: m.Recipients[1].ID, Status: store.StatusDeferred, NextAttempt: time.Now().Add(time.Hour), TLS: "none"},
		{RecipientID: m.Recipients[2].ID, Status: store.StatusFailed, TLS: "TLSv1.2"},
	}))
	end := time.Now()
	q := store.RollupQuery{Account: "qa", Res: store.RollupHour, Since: received.Add(-time.Hour), Until: end.Add(time.Hour), Total: true}
	expectStrings(t, "counts of the queue's events", counts(t, s, q), []string{
		"all accepted 3", "all bounced 1", "all deferred 1", "all delivered 1"})
	for _, res := range []time.Duration{store.RollupMinute, store.RollupHour} {
		q := store.RollupQuery{Account: "qa", Res: res, Since: received.Add(-time.Hour), Until: end.Add(time.Hour), Total: true}
		lat, err := s.LatencyCounts(ctx, q)
		must(t, "LatencyCounts", err)
		lo, hi := store.LatencyBin(start.Sub(received)), store.LatencyBin(end.Sub(received))
		if len(lat) != 1 || lat[0].N != 1 || lat[0].Bin < lo || lat[0].Bin > hi {
			t.Errorf("latency of the delivered recipient at %v: %+v, want one in bins %d-%d", res, lat, lo, hi)
		}
		ds, err := s.DestCounts(ctx, q, 10)
		must(t, "DestCounts", err)
		want := []store.DestCount{
			{Domain: "dest.example", Attempts: 2, Delivered: 1, Deferred: 1, TLS: 1},
			{Domain: "other.example", Attempts: 1, Bounced: 1, TLS: 1},
		}
		if !slices.Equal(ds, want) {
			t.Errorf("destinations at %v: %+v, want %+v", res, ds, want)
		}
	}
	// The same events counted for all accounts.
	q.Account = store.AllAccounts
	expectStrings(t, "counts of all accounts", counts(t, s, q), []string{
		"all accepted 3", "all bounced 1", "all deferred 1", "all delivered 1"})
}

func testRollupLatency(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := make(map[int]int64)
	var evs []store.Event
	for i := range 200 {
		d := time.Duration(37*i+3) * time.Millisecond
		if i%50 == 0 {
			d = time.Duration(i) * time.Hour // long tails: up to 150 h
		}
		at := base.Add(time.Duration(i) * time.Second)
		e := ev(at, store.EventDelivered, "lat", "r@x.example")
		e.Queued = at.Add(-d)
		evs = append(evs, e)
		want[store.LatencyBin(d)]++
	}
	// A delivered event without Queued has no latency.
	evs = append(evs, ev(base, store.EventDelivered, "lat", "r@x.example"))
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	for _, res := range []time.Duration{store.RollupMinute, store.RollupHour} {
		lat, err := s.LatencyCounts(ctx, store.RollupQuery{Account: "lat", Res: res, Since: base, Until: base.Add(time.Hour), Total: true})
		must(t, "LatencyCounts", err)
		got := make(map[int]int64)
		for i, c := range lat {
			if !c.Bucket.IsZero() {
				t.Errorf("LatencyCounts without a step: bucket %v", c.Bucket)
			}
			if i > 0 && lat[i-1].Bin >= c.Bin {
				t.Errorf("LatencyCounts not ordered by bin: %+v", lat)
			}
			got[c.Bin] = c.N
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("latency histogram at %v:\n got  %v\n want %v", res, got, want)
		}
	}
	// Per minute step: 200 events over 200 s are 4 minutes.
	lat, err := s.LatencyCounts(ctx, store.RollupQuery{Account: "lat", Res: store.RollupMinute, Since: base,
		Until: base.Add(time.Hour), Step: store.RollupMinute})
	must(t, "LatencyCounts", err)
	per := make(map[time.Time]int64)
	for _, c := range lat {
		per[c.Bucket] += c.N
	}
	if len(per) != 4 || per[base] != 60 || per[base.Add(3*time.Minute)] != 20 {
		t.Errorf("latency per minute: %v", per)
	}
}

func testRollupDestinations(t *testing.T, s store.Store) {
	ctx := context.Background()
	var evs []store.Event
	add := func(n int, typ, rcpt, tls string) {
		for range n {
			e := ev(base, typ, "d", rcpt)
			e.TLS = tls
			evs = append(evs, e)
		}
	}
	add(5, store.EventDelivered, "a@Big.EXAMPLE", "TLSv1.3")
	add(3, store.EventDeferred, "b@big.example", "none")
	add(2, store.EventBounced, "c@big.example", "")
	add(4, store.EventDelivered, `"odd@local"@small.example`, "TLSv1.2")
	add(4, store.EventDelivered, "z@tie.example", "")
	add(7, store.EventAccepted, "a@big.example", "") // not an attempt
	add(1, store.EventExpired, "a@big.example", "")  // not an attempt
	must(t, "AddEvents", s.AddEvents(ctx, evs))
	q := store.RollupQuery{Account: "d", Res: store.RollupMinute, Since: base, Until: base.Add(time.Minute)}
	ds, err := s.DestCounts(ctx, q, 0)
	must(t, "DestCounts", err)
	want := []store.DestCount{
		{Domain: "big.example", Attempts: 10, Delivered: 5, Deferred: 3, Bounced: 2, TLS: 5},
		{Domain: "small.example", Attempts: 4, Delivered: 4, TLS: 4},
		{Domain: "tie.example", Attempts: 4, Delivered: 4},
	}
	if !slices.Equal(ds, want) {
		t.Errorf("DestCounts:\n got  %+v\n want %+v", ds, want)
	}
	ds, err = s.DestCounts(ctx, q, 1)
	must(t, "DestCounts", err)
	if !slices.Equal(ds, want[:1]) {
		t.Errorf("DestCounts limit 1: %+v", ds)
	}
	q.Account = store.AllAccounts
	q.Res = store.RollupHour
	ds, err = s.DestCounts(ctx, q, 1000)
	must(t, "DestCounts", err)
	if !slices.Equal(ds, want) {
		t.Errorf("DestCounts of all accounts per hour:\n got  %+v\n want %+v", ds, want)
	}
}

func testRollupCompact(t *testing.T, s store.Store) {
	ctx := context.Background()
	ancient, old, mid, recent := base.Add(-500*24*time.Hour), base.Add(-100*24*time.Hour), base.Add(-72*time.Hour), base.Add(-time.Hour)
	for _, at := range []time.Time{ancient, old, mid, recent} {
		e := ev(at, store.EventDelivered, "c", "r@x.example")
		e.Queued = at.Add(-time.Second)
		must(t, "AddEvents", s.AddEvents(ctx, []store.Event{e, ev(at, store.EventAccepted, "c", "r@x.example")}))
	}
	all := func(res time.Duration) store.RollupQuery {
		return store.RollupQuery{Account: "c", Res: res, Since: ancient.Add(-24 * time.Hour), Until: base, Total: true}
	}
	for _, res := range []time.Duration{store.RollupMinute, store.RollupHour, store.RollupDay} {
		expectStrings(t, fmt.Sprint(res, " before compaction"), counts(t, s, all(res)),
			[]string{"all accepted 4", "all delivered 4"})
	}
	// Pruning every event changes no rollup.
	if _, err := s.PruneEvents(ctx, base.Add(time.Hour)); err != nil {
		t.Fatalf("PruneEvents: %v", err)
	}
	expectStrings(t, "minutes after pruning the events", counts(t, s, all(store.RollupMinute)),
		[]string{"all accepted 4", "all delivered 4"})

	n, err := s.CompactRollups(ctx, base.Add(-store.RollupMinuteRetention), base.Add(-store.RollupHourRetention),
		base.Add(-store.RollupDayRetention))
	must(t, "CompactRollups", err)
	// Minute rows of ancient, old and mid, hour rows of ancient and old,
	// day rows of ancient, each per account and for all accounts, each
	// 4 rows: counts of 2 types, 1 latency bin, 1 destination.
	if want := (3 + 2 + 1) * 2 * 4; n != want {
		t.Errorf("CompactRollups deleted %d rows, want %d", n, want)
	}
	expectStrings(t, "days after compaction", counts(t, s, all(store.RollupDay)),
		[]string{"all accepted 3", "all delivered 3"})
	expectStrings(t, "minutes after compaction", counts(t, s, all(store.RollupMinute)),
		[]string{"all accepted 1", "all delivered 1"})
	expectStrings(t, "hours after compaction", counts(t, s, all(store.RollupHour)),
		[]string{"all accepted 2", "all delivered 2"})
	q := all(store.RollupHour)
	q.Step, q.Total = 24*time.Hour, false
	expectStrings(t, "days of hours after compaction", counts(t, s, q),
		[]string{"11-23T00:00 accepted 1", "11-23T00:00 delivered 1", "11-26T00:00 accepted 1", "11-26T00:00 delivered 1"})
	lat, err := s.LatencyCounts(ctx, all(store.RollupHour))
	must(t, "LatencyCounts", err)
	if len(lat) != 1 || lat[0].N != 2 || lat[0].Bin != store.LatencyBin(time.Second) {
		t.Errorf("latency hours after compaction: %+v", lat)
	}
	ds, err := s.DestCounts(ctx, all(store.RollupHour), 10)
	must(t, "DestCounts", err)
	if len(ds) != 1 || ds[0].Delivered != 2 {
		t.Errorf("destination hours after compaction: %+v", ds)
	}
	// A second compaction has nothing left to do.
	if n, err := s.CompactRollups(ctx, base.Add(-store.RollupMinuteRetention), base.Add(-store.RollupHourRetention),
		base.Add(-store.RollupDayRetention)); err != nil || n != 0 {
		t.Errorf("second CompactRollups: %d, %v", n, err)
	}
}

func testRollupAccountQueue(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "q1")
	for i, acct := range []string{"q1", "q1", ""} {
		m := NewMessage(base.Add(time.Duration(i-10)*time.Minute), "a@x.example", "b@x.example")
		m.Account = acct
		Enqueue(t, s, m, []byte("x\r\n"), time.Time{})
	}
	q, err := s.AccountQueue(ctx, "q1")
	must(t, "AccountQueue", err)
	if q.Messages != 2 || q.Recipients != 4 || !q.Oldest.Equal(base.Add(-10*time.Minute)) {
		t.Errorf("AccountQueue(q1) = %+v", q)
	}
	q, err = s.AccountQueue(ctx, store.AllAccounts)
	must(t, "AccountQueue", err)
	if q.Messages != 3 || q.Recipients != 6 || !q.Oldest.Equal(base.Add(-10*time.Minute)) {
		t.Errorf("AccountQueue(all) = %+v", q)
	}
	q, err = s.AccountQueue(ctx, "empty")
	must(t, "AccountQueue", err)
	if q != (store.AccountQueue{}) {
		t.Errorf("AccountQueue(empty) = %+v", q)
	}
}

func testRollupBadQuery(t *testing.T, s store.Store) {
	ctx := context.Background()
	for _, q := range []store.RollupQuery{
		{Res: time.Second, Since: base, Until: base.Add(time.Hour)},
		{Res: store.RollupHour, Step: 90 * time.Minute, Since: base, Until: base.Add(time.Hour)},
		{Res: store.RollupMinute, Step: -time.Minute, Since: base, Until: base.Add(time.Hour)},
	} {
		if _, err := s.EventCounts(ctx, q); err == nil {
			t.Errorf("EventCounts(%+v) accepted", q)
		}
		if _, err := s.LatencyCounts(ctx, q); err == nil {
			t.Errorf("LatencyCounts(%+v) accepted", q)
		}
	}
	if _, err := s.DestCounts(ctx, store.RollupQuery{Res: 2 * time.Hour}, 10); err == nil {
		t.Error("DestCounts with a two-hour resolution accepted")
	}
}

// concBatch is batch b of a writer of testNodesRollupsConcurrent.
func concBatch(b, n int) []store.Event {
	evs := make([]store.Event, n)
	for i := range evs {
		acct := []string{"ca", "cb"}[(b+i)%2]
		typ := []string{store.EventDelivered, store.EventDeferred}[i%2]
		evs[i] = ev(base.Add(time.Duration(i%3)*time.Minute), typ, acct, fmt.Sprintf("r%d@d%d.example", i, i%2))
		evs[i].Queued = evs[i].Time.Add(-time.Second)
	}
	return evs
}

// testNodesRollupsConcurrent has two nodes add events and enqueue messages
// into the same buckets at once: every event is counted exactly once.
func testNodesRollupsConcurrent(t *testing.T, s store.Store, open func(string) store.Store) {
	ctx := context.Background()
	n2 := open("n2")
	const workers, batches, perBatch, msgs = 4, 25, 20, 10
	now := time.Now()
	// What the writers add, counted here.
	type key struct {
		minute    time.Time
		typ, acct string
	}
	want := make(map[key]int64)
	var wantCA int64
	for range workers {
		for b := range batches {
			for _, e := range concBatch(b, perBatch) {
				want[key{e.Time, e.Type, ""}]++
				if e.Account == "ca" {
					want[key{base, e.Type, "ca"}]++
					wantCA++
				}
			}
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*workers)
	for w := range workers {
		st := []store.Store{s, n2}[w%2]
		wg.Add(2)
		go func() {
			defer wg.Done()
			for b := range batches {
				if err := st.AddEvents(ctx, concBatch(b, perBatch)); err != nil {
					errs <- fmt.Errorf("AddEvents: %w", err)
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for range msgs {
				m := NewMessage(now, "a@q.example", "b@q.example")
				m.Account = "ca"
				if _, err := EnqueueErr(st, m, []byte("x\r\n"), time.Time{}); err != nil {
					errs <- fmt.Errorf("Enqueue: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	var wantAll, wantCAStr []string
	for m := range 3 {
		for _, typ := range []string{store.EventDeferred, store.EventDelivered} {
			at := base.Add(time.Duration(m) * time.Minute)
			wantAll = append(wantAll, fmt.Sprintf("%s %s %d", at.Format("01-02T15:04"), typ, want[key{at, typ, ""}]))
		}
	}
	for _, typ := range []string{store.EventDeferred, store.EventDelivered} {
		wantCAStr = append(wantCAStr, fmt.Sprintf("11-26T12:00 %s %d", typ, want[key{base, typ, "ca"}]))
	}
	for _, st := range []store.Store{s, n2} {
		q := store.RollupQuery{Account: store.AllAccounts, Res: store.RollupMinute, Since: base, Until: base.Add(time.Hour)}
		expectStrings(t, "all accounts", counts(t, st, q), wantAll)
		q.Res, q.Account = store.RollupHour, "ca"
		expectStrings(t, "account ca", counts(t, st, q), wantCAStr)
		lat, err := st.LatencyCounts(ctx, q)
		must(t, "LatencyCounts", err)
		if len(lat) != 1 || lat[0].N != want[key{base, store.EventDelivered, "ca"}] {
			t.Errorf("latency of ca: %+v, want %d in one bin", lat, want[key{base, store.EventDelivered, "ca"}])
		}
		ds, err := st.DestCounts(ctx, q, 10)
		must(t, "DestCounts", err)
		if len(ds) != 2 || ds[0].Attempts+ds[1].Attempts != wantCA {
			t.Errorf("destinations of ca: %+v, want %d attempts", ds, wantCA)
		}
		q = store.RollupQuery{Account: "ca", Res: store.RollupHour, Since: now.Add(-time.Hour), Until: now.Add(time.Hour), Total: true}
		expectStrings(t, "accepted by both nodes", counts(t, st, q), []string{
			fmt.Sprintf("all accepted %d", 2*workers*msgs)})
	}
}

// testRollupDeleteAccount: a deleted account's rollups go with it; those
// of all accounts keep its events.
func testRollupDeleteAccount(t *testing.T, s store.Store) {
	ctx := context.Background()
	addAccount(t, s, "gone")
	e := ev(base, store.EventDelivered, "gone", "r@x.example")
	e.Queued = base.Add(-time.Second)
	must(t, "AddEvents", s.AddEvents(ctx, []store.Event{e, ev(base, store.EventAccepted, "kept", "r@x.example")}))
	if _, err := s.DeleteAccount(ctx, "gone", true); err != nil {
		t.Fatalf("DeleteAccount: %v", err)
	}
	for _, res := range []time.Duration{store.RollupMinute, store.RollupHour} {
		q := store.RollupQuery{Account: "gone", Res: res, Since: base, Until: base.Add(time.Hour), Total: true}
		expectStrings(t, "counts of the deleted account", counts(t, s, q), []string{})
		lat, err := s.LatencyCounts(ctx, q)
		must(t, "LatencyCounts", err)
		ds, err := s.DestCounts(ctx, q, 10)
		must(t, "DestCounts", err)
		if len(lat) != 0 || len(ds) != 0 {
			t.Errorf("rollups of the deleted account at %v: %+v, %+v", res, lat, ds)
		}
		q.Account = store.AllAccounts
		expectStrings(t, "counts of all accounts", counts(t, s, q), []string{"all accepted 1", "all delivered 1"})
	}
}
