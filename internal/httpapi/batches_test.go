package httpapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// TestSendAtAndBatchID: send_at is taken as RFC 3339 or Unix seconds, up
// to 72 hours ahead, a past time sends at once; batch_id must be a batch of
// the key's account that is not cancelled. What is valid reaches the
// Submitter.
func TestSendAtAndBatchID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	snd := e.key("acme", store.ScopeSend)
	now := e.clock.Now()
	b, err := e.st.CreateBatch(ctx, "acme", "acme-batch", now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateBatch(ctx, "other", "other-batch", now); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CreateBatch(ctx, "acme", "gone-batch", now); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.CancelBatch(ctx, "acme", "gone-batch", now); err != nil {
		t.Fatal(err)
	}
	msg := func(extra map[string]any) map[string]any {
		m := map[string]any{"from": "a@acme.example", "to": []string{"b@example.org"}, "text": "hi"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	in2h := now.Add(2 * time.Hour).Truncate(time.Second)
	for _, c := range []struct {
		name   string
		extra  map[string]any
		sendAt time.Time
		batch  string
	}{
		{"rfc3339", map[string]any{"send_at": in2h.Format(time.RFC3339)}, in2h, ""},
		{"rfc3339 offset", map[string]any{"send_at": in2h.In(time.FixedZone("x", 3600)).Format(time.RFC3339)}, in2h, ""},
		{"unix", map[string]any{"send_at": in2h.Unix()}, in2h, ""},
		{"unix string", map[string]any{"send_at": strconv.FormatInt(in2h.Unix(), 10)}, in2h, ""},
		{"72 hours", map[string]any{"send_at": now.Add(72 * time.Hour).Unix()}, now.Add(72 * time.Hour), ""},
		{"past sends now", map[string]any{"send_at": now.Add(-time.Hour).Format(time.RFC3339)}, time.Time{}, ""},
		{"null", map[string]any{"send_at": nil}, time.Time{}, ""},
		{"batch", map[string]any{"batch_id": b.ID, "send_at": in2h.Unix()}, in2h, b.ID},
	} {
		want(t, e.post("/v1/messages", snd, msg(c.extra)), 202)
		got := e.sub.last()
		if !got.SendAt.Equal(c.sendAt) || got.BatchID != c.batch {
			t.Errorf("%s: submitted send_at %s batch %q, want %s %q", c.name, got.SendAt, got.BatchID, c.sendAt, c.batch)
		}
	}
	n := e.sub.count()
	for _, c := range []struct {
		name  string
		extra map[string]any
		field string
	}{
		{"too far", map[string]any{"send_at": now.Add(72*time.Hour + time.Second).Unix()}, "send_at"},
		{"not a time", map[string]any{"send_at": "tomorrow"}, "send_at"},
		{"no zone", map[string]any{"send_at": "2026-03-01T14:00:00"}, "send_at"},
		{"object", map[string]any{"send_at": map[string]any{"t": 1}}, "send_at"},
		{"negative", map[string]any{"send_at": -5}, "send_at"},
		{"unknown batch", map[string]any{"batch_id": "nope"}, "batch_id"},
		{"another account's batch", map[string]any{"batch_id": "other-batch"}, "batch_id"},
		{"cancelled batch", map[string]any{"batch_id": "gone-batch"}, "batch_id"},
		{"bad batch id", map[string]any{"batch_id": "../x"}, "batch_id"},
	} {
		r := e.post("/v1/messages", snd, msg(c.extra))
		want(t, r, 400)
		if !strings.Contains(string(r.body), `"field":"`+c.field+`"`) {
			t.Errorf("%s: error %s does not name %s", c.name, r.body, c.field)
		}
	}
	if e.sub.count() != n {
		t.Errorf("refused sends reached the Submitter")
	}
}

// TestBatchesThroughHTTP pauses, resumes and cancels a batch of queued
// messages through the HTTP API over a real store: the queue's leases
// follow, the counts are reported, another account gets 404, and the
// cancellation's events are listed.
func TestBatchesThroughHTTP(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := context.Background()
	snd := e.key("acme", store.ScopeSend, store.ScopeRead)
	stranger := e.key("other", store.ScopeSend, store.ScopeRead, store.ScopeAdmin)
	r := e.post("/v1/batches", snd, nil)
	want(t, r, 201)
	var bv batchView
	r.json(t, &bv)
	if bv.State != store.BatchActive || r.header.Get("Location") != "/v1/batches/"+bv.ID {
		t.Fatalf("created %+v, Location %q", bv, r.header.Get("Location"))
	}
	now := e.clock.Now()
	enqueue := func(sendAt time.Time, rcpts ...string) *store.Message {
		t.Helper()
		body, err := e.st.NewBody()
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(body, "Subject: x\r\n\r\nhi\r\n")
		m := &store.Message{ID: store.NewID(), Sender: "a@acme.example", Received: now, Account: "acme", BatchID: bv.ID, SendAt: sendAt}
		for _, a := range rcpts {
			m.Recipients = append(m.Recipients, store.Recipient{Address: a})
		}
		if _, err := e.st.Enqueue(ctx, m, body, time.Time{}); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m1 := enqueue(time.Time{}, "r1@example.org", "r2@example.org")
	m2 := enqueue(now.Add(time.Hour), "r3@example.org")

	for _, p := range []string{"", "/pause", "/resume", "/cancel"} {
		method := "POST"
		if p == "" {
			method = "GET"
		}
		want(t, e.do(method, "/v1/batches/"+bv.ID+p, stranger, "", nil), 404)
	}
	r = e.post("/v1/batches/"+bv.ID+"/pause", snd, nil)
	want(t, r, 200)
	r.json(t, &bv)
	if bv.State != store.BatchPaused || bv.Pending.Held != 3 || bv.Pending.Queued != 3 || bv.Messages != 2 || bv.Recipients != 3 {
		t.Errorf("paused: %+v", bv)
	}
	if ls, err := e.st.Lease(ctx, now.Add(2*time.Hour), time.Minute, 10); err != nil || len(ls) != 0 {
		t.Fatalf("leased %d messages of a paused batch (err %v)", len(ls), err)
	}
	r = e.post("/v1/batches/"+bv.ID+"/resume", snd, nil)
	want(t, r, 200)
	r.json(t, &bv)
	if bv.State != store.BatchActive || bv.Pending.Held != 0 {
		t.Errorf("resumed: %+v", bv)
	}
	ls, err := e.st.Lease(ctx, now, time.Minute, 10)
	if err != nil || len(ls) != 1 || ls[0].Message.ID != m1.ID {
		t.Fatalf("after resume, leased %+v (err %v), want %s only (m2 is scheduled)", ls, err, m1.ID)
	}
	// m1 is in delivery: the cancellation removes m2's recipient now and
	// m1's when its delivery checks the batch.
	r = e.post("/v1/batches/"+bv.ID+"/cancel", snd, nil)
	want(t, r, 200)
	r.json(t, &bv)
	if bv.State != store.BatchCancelled || bv.Cancelled != 1 || bv.Pending.Queued != 2 {
		t.Errorf("cancelled: %+v", bv)
	}
	if _, err := e.st.Get(ctx, m2.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the scheduled message is still queued after the cancellation (err %v)", err)
	}
	r = e.get("/v1/events?type=cancelled", snd)
	want(t, r, 200)
	var page eventPage
	r.json(t, &page)
	if len(page.Events) != 1 || page.Events[0].Recipient != "r3@example.org" || page.Events[0].MessageID != m2.ID {
		t.Errorf("cancelled events %s", r.body)
	}
	if state, err := e.st.CheckBatch(ctx, m1.ID, bv.ID, ls[0].Token); err != nil || state != store.BatchCancelled {
		t.Errorf("CheckBatch = %q, %v", state, err)
	}
	r = e.get("/v1/batches/"+bv.ID, snd)
	want(t, r, 200)
	r.json(t, &bv)
	if bv.Cancelled != 3 || bv.Pending.Queued != 0 {
		t.Errorf("after the delivery's check: %+v", bv)
	}
	r = e.post("/v1/batches/"+bv.ID+"/resume", snd, nil)
	want(t, r, 409)
	if !strings.Contains(string(r.body), "batch_cancelled") {
		t.Errorf("resume of a cancelled batch: %s", r.body)
	}
}

// TestBatchesPerDayLimit: an account creates at most MaxBatchesPerDay
// batches a day, by POST /v1/batches or by requests with personalizations;
// beyond it both get 409 limit_reached and nothing is sent, and the next
// day it may create batches again.
func TestBatchesPerDayLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxBatchesPerDay: 2})
	tok := e.key(store.DefaultAccount, store.ScopeSend)
	want(t, e.post("/v1/batches", tok, nil), http.StatusCreated)
	batch := map[string]any{"from": "shop@example.com", "text": "hi",
		"personalizations": []map[string]any{{"to": []string{"ann@example.org"}}, {"to": []string{"bob@example.org"}}}}
	want(t, e.post("/v1/messages", tok, batch), http.StatusAccepted)
	n := e.sub.count()
	for _, r := range []resp{e.post("/v1/batches", tok, nil), e.post("/v1/messages", tok, batch)} {
		if code, _ := r.apiErr(t); r.status != http.StatusConflict || code != "limit_reached" {
			t.Errorf("over the limit: %d %s, want 409 limit_reached", r.status, r.body)
		}
	}
	if e.sub.count() != n {
		t.Errorf("a batch over the limit queued %d messages", e.sub.count()-n)
	}
	// Another account has its own limit; a day later the account may again.
	want(t, e.post("/v1/batches", e.key("acme", store.ScopeSend), nil), http.StatusCreated)
	e.clock.Advance(25 * time.Hour)
	want(t, e.post("/v1/batches", tok, nil), http.StatusCreated)
}
