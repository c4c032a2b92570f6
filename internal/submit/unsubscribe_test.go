package submit_test

import (
	"context"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
)

// A message of an unsubscribe group skips recipients suppressed in that
// group or globally, and sends to those suppressed only in another group;
// a message without a group checks the global list only.
func TestGroupSuppressions(t *testing.T) {
	t.Parallel()
	e := setup(t, submit.Config{})
	ctx := context.Background()
	for _, s := range []store.Suppression{
		{Account: "acme", Address: "news-only@remote.test", Group: "news", Reason: store.SuppressUnsubscribe},
		{Account: "acme", Address: "alerts-only@remote.test", Group: "alerts", Reason: store.SuppressUnsubscribe},
		{Account: "acme", Address: "global@remote.test", Reason: store.SuppressUnsubscribe},
	} {
		if err := e.st.AddSuppression(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	rcpts := []string{"news-only@remote.test", "alerts-only@remote.test", "global@remote.test", "ok@remote.test"}
	for _, c := range []struct {
		group string
		want  string // suppressed
	}{
		{"news", "news-only@remote.test global@remote.test"},
		{"alerts", "alerts-only@remote.test global@remote.test"},
		{"", "global@remote.test"},
	} {
		req := &submit.Request{Identity: apiKey("acme"), From: "app@example.test", Body: strings.NewReader("From: app@example.test\r\n\r\nx\r\n"),
			UnsubscribeGroup: c.group, ID: store.NewID()}
		for _, r := range rcpts {
			req.Recipients = append(req.Recipients, submit.Recipient{Address: r})
		}
		res, err := e.p.Submit(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(res.Suppressed, " "); got != c.want || res.ID != req.ID {
			t.Errorf("group %q: suppressed %q (id %s), want %q (id %s)", c.group, got, res.ID, c.want, req.ID)
		}
		evs, _ := e.st.ListEvents(ctx, store.EventFilter{Account: "acme", MessageID: req.ID, Types: []string{store.EventSuppressed}})
		if len(evs) != len(strings.Fields(c.want)) {
			t.Errorf("group %q: %d suppressed events", c.group, len(evs))
		}
	}
}
