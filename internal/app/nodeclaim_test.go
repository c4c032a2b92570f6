package app

import (
	"context"
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/exitcode"
	"github.com/heraldmail/herald/internal/store/postgres"
	"github.com/heraldmail/herald/internal/testutil/pgtest"
)

// On a shared store a second server with a node name in use is refused
// (it would release the first one's leases at start-up), leaving nothing
// open; a server with another name starts beside it, and once the first
// stops its name can be used again. Not parallel: it counts goroutines.
func TestNewRefusesSecondNodeName(t *testing.T) {
	_, dsn := pgtest.NewSchema(t)
	node := func(id string) *config.Config {
		cfg := goodConfig(filepath.Join(t.TempDir(), "data"))
		cfg.Store.URL, cfg.Server.NodeID = dsn, id
		return cfg
	}
	a, err := New(node("mx1"), quiet())
	if err != nil {
		t.Fatal(err)
	}
	baseline := runtime.NumGoroutine()
	_, err = New(node("mx1"), quiet())
	want := `another herald serve runs with this server.node_id`
	if exitcode.Of(err, -1) != exitcode.Unavailable || !strings.Contains(err.Error(), want) || !errors.Is(err, postgres.ErrNodeInUse) ||
		strings.Contains(err.Error(), "\n") {
		t.Errorf("second New as mx1: status %d, %v\nwant %d and one line with %q", exitcode.Of(err, -1), err, exitcode.Unavailable, want)
	}
	waitGoroutines(t, baseline)
	if _, err := a.Store().ListDomains(context.Background()); err != nil {
		t.Errorf("first node's store after the refused second: %v", err)
	}
	b, err := New(node("mx2"), quiet())
	if err != nil {
		t.Fatalf("New as mx2 beside mx1: %v", err)
	}
	stop(t, b)
	stop(t, a)
	c, err := New(node("mx1"), quiet())
	if err != nil {
		t.Fatalf("New as mx1 after the first mx1 stopped: %v", err)
	}
	stop(t, c)
}
