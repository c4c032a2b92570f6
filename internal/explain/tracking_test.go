package explain

import (
	"context"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

func TestOpenedAndClickedAfterDelivery(t *testing.T) { both(t, testOpenedAndClickedAfterDelivery) }

// Opens and clicks after the delivery change nothing of the explanation:
// the recipient is still delivered, its last reply the SMTP one.
func testOpenedAndClickedAfterDelivery(t *testing.T, e *env) {
	m := e.enqueue("acme", time.Time{}, "bob@example.org")
	e.update(m, 0, store.Outcome{Status: store.StatusDelivered, Reply: "250 2.0.0 OK queued as 123", RemoteMTA: "mx.example.org"})
	e.clk.Advance(time.Minute)
	evs := []store.Event{
		{Time: e.clk.Now(), Type: store.EventOpened, Account: "acme", MessageID: m.ID, Recipient: "bob@example.org"},
		{Time: e.clk.Now(), Type: store.EventClicked, Account: "acme", MessageID: m.ID, Recipient: "bob@example.org", Reply: "https://shop.example.com/"},
	}
	if err := e.st.AddEvents(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
	x := e.explain(m.ID, "acme")
	if x.State != StateDelivered || len(x.Recipients) != 1 {
		t.Fatalf("explanation %+v", x)
	}
	if r := x.Recipients[0]; r.Status != StateDelivered || r.LastReply != "250 2.0.0 OK queued as 123" {
		t.Errorf("recipient %+v", r)
	}
	says(t, x.Summary, "bob@example.org: delivered", "OK queued as 123")
}
