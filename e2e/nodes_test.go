package e2e

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/sqlite"
)

// A node starting up releases the leases it held when it stopped (its
// in-flight work is delivered at once) and never another node's. The data
// directory is seeded with one message whose first recipient is leased by
// this node and whose second by node "other", both for an hour.
func TestStartupReleasesOnlyOwnLeases(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dir := t.TempDir()
	now := time.Now()
	open := func(node string) *sqlite.Store {
		st, err := sqlite.Open(dir, sqlite.Options{Node: node, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	mine, other := open("node-a"), open("other")
	must(t, mine.AddDomain(ctx, "example.com"))
	for _, u := range []string{"mine@example.com", "theirs@example.com"} {
		must(t, mine.AddUser(ctx, store.User{Address: u, PasswordHash: "unused"}))
	}
	msg := &store.Message{ID: store.NewID(), Sender: "x@sender.test", Received: now.Add(-time.Minute), Source: "smtp",
		Recipients: []store.Recipient{{Address: "mine@example.com"}, {Address: "theirs@example.com"}}}
	body, err := mine.NewBody()
	must(t, err)
	io.WriteString(body, "Subject: leased\r\n\r\nhi\r\n")
	_, err = mine.Enqueue(ctx, msg, body, time.Time{})
	must(t, err)
	// "other" leases both, hands the first back, and this node leases it.
	lo, err := other.Lease(ctx, now, time.Hour, 10)
	if err != nil || len(lo) != 1 {
		t.Fatalf("other Lease = %d, %v", len(lo), err)
	}
	r1, r2 := msg.Recipients[0].ID, msg.Recipients[1].ID
	must(t, other.Update(ctx, msg.ID, lo[0].Token, []store.Outcome{{RecipientID: r1, Status: store.StatusQueued, NextAttempt: now}}))
	lm, err := mine.Lease(ctx, now, time.Hour, 10)
	if err != nil || len(lm) != 1 || len(lm[0].Message.Recipients) != 1 || lm[0].Message.Recipients[0].ID != r1 {
		t.Fatalf("node-a Lease = %+v, %v", lm, err)
	}
	must(t, mine.Close())
	must(t, other.Close())

	h := startHerald(t, func(c *config.Config) {
		c.Server.DataDir = dir
		c.Server.NodeID = "node-a"
	})
	// The first poll after start-up leases every due recipient of the
	// message at once: had "other"'s lease been released too, both would
	// be delivered together.
	if got := h.waitMaildir("mine@example.com", 1); !strings.Contains(got[0], "Subject: leased") {
		t.Fatalf("delivered:\n%s", got[0])
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		g, err := h.app.Store().Get(ctx, msg.ID)
		if errors.Is(err, store.ErrNotFound) {
			t.Fatal("message left the queue: the other node's recipient was delivered")
		}
		must(t, err)
		if g.Recipients[0].Status == store.StatusDelivered {
			if r := g.Recipients[1]; r.ID != r2 || r.Status != store.StatusQueued || r.Attempts != 0 {
				t.Errorf("other node's recipient = %+v, want queued, never attempted", r)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("this node's recipient not delivered: %+v", g.Recipients[0])
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := h.maildir("theirs@example.com"); len(got) != 0 {
		t.Errorf("other node's recipient got %d messages", len(got))
	}
}
