package explain

import (
	"context"
	"testing"

	"github.com/heraldmail/herald/internal/store"
)

func TestSandboxed(t *testing.T) { both(t, testSandboxed) }

// A sandbox send's message is explained from its sandboxed events.
func testSandboxed(t *testing.T, e *env) {
	ctx := context.Background()
	if err := e.st.AddEvents(ctx, []store.Event{{Time: e.clk.Now(), Type: store.EventSandboxed, Account: "acme", MessageID: "SBX1",
		Recipient: "bob@example.org", Sender: "a@acme.example", Reply: "sandbox: not sent; a real send would queue it"}}); err != nil {
		t.Fatal(err)
	}
	x := e.explain("SBX1", "acme")
	if x.State != StateSandboxed || x.InQueue || x.Recipients[0].Status != StateSandboxed {
		t.Fatalf("state %q in_queue %v recipient %+v, want sandboxed", x.State, x.InQueue, x.Recipients[0])
	}
	says(t, x.Summary, "a sandbox send, nothing was queued or sent")
	says(t, x.Recipients[0].Sentences, "bob@example.org: a sandbox send", "a real send would queue it")
}
