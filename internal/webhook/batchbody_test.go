package webhook

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// TestBatchBodyBounded: a batch whose events would pass MaxBatchBody is
// cut at an event boundary (never below one event), and the body is the
// same JSON a BatchPayload encodes to.
func TestBatchBodyBounded(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 1000)
	var batch []store.WebhookDelivery
	for i := range 50 {
		batch = append(batch, store.WebhookDelivery{ID: int64(i + 1), Event: store.Event{ID: int64(i + 1), Type: "delivered",
			Time: time.Unix(1700000000, 0).UTC(), Metadata: map[string]string{"k": big}}})
	}
	body, n, err := batchBody(batch, 10_000)
	if err != nil {
		t.Fatal(err)
	}
	if n < 2 || n >= len(batch) || len(body) > 10_000 {
		t.Fatalf("%d events in %d bytes, want a cut below 10,000 bytes", n, len(body))
	}
	var got BatchPayload
	if err := json.Unmarshal(body, &got); err != nil || len(got.Events) != n {
		t.Fatalf("body does not decode to %d events: %v", n, err)
	}
	want := BatchPayload{}
	for _, wd := range batch[:n] {
		want.Events = append(want.Events, NewPayload(wd.Event))
	}
	wantBody, _ := json.Marshal(want)
	if !bytes.Equal(body, wantBody) {
		t.Errorf("body differs from a BatchPayload's encoding")
	}
	// One event larger than the bound still goes, alone.
	if _, n, _ := batchBody(batch, 100); n != 1 {
		t.Errorf("%d events under a bound smaller than one, want 1", n)
	}
}
