package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// A node name is held by one running node: a second LockNode under it is
// refused with the holder named, another name is not, and the lock goes
// with the handle. A lost lock connection (a database restart) is replaced
// and the lock taken again.
func TestLockNode(t *testing.T) {
	old := nodeLockCheck
	defer func() { nodeLockCheck = old }() // after every handle closed
	nodeLockCheck = 20 * time.Millisecond
	ctx := context.Background()
	dsn := newSchema(t)
	a := openTest(t, dsn, Options{Node: "mx1"})
	defer a.Close()
	if err := a.LockNode(ctx); err != nil {
		t.Fatal(err)
	}
	b := openTest(t, dsn, Options{Node: "mx1"})
	defer b.Close()
	err := b.LockNode(ctx)
	var inUse *NodeInUseError
	if !errors.As(err, &inUse) || !errors.Is(err, ErrNodeInUse) || inUse.Node != "mx1" ||
		!strings.Contains(inUse.Holder, "herald mx1 lock") || !strings.Contains(inUse.Holder, "client 127.0.0.1") {
		t.Fatalf("second node mx1: %v (holder %q)", err, inUse.Holder)
	}
	c := openTest(t, dsn, Options{Node: "mx2"})
	if err := c.LockNode(ctx); err != nil {
		t.Fatalf("another name: %v", err)
	}
	c.Close()
	// Another schema is another cluster: the same name is free there.
	d := openTest(t, newSchema(t), Options{Node: "mx1"})
	if err := d.LockNode(ctx); err != nil {
		t.Fatalf("the same name in another schema: %v", err)
	}
	d.Close()

	// The lock's connection is killed; it is taken again.
	pid := count(t, a, `SELECT pid FROM pg_stat_activity WHERE application_name = 'herald mx1 lock'`)
	if _, err := b.pool.Exec(ctx, `SELECT pg_terminate_backend($1)`, pid); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := count(t, a, `SELECT count(*) FROM pg_stat_activity WHERE application_name = 'herald mx1 lock' AND pid <> $1`, pid)
		if n == 1 && errors.Is(b.LockNode(ctx), ErrNodeInUse) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lock was not taken again after its connection was killed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	a.Close()
	if err := b.LockNode(ctx); err != nil {
		t.Fatalf("after the holder closed: %v", err)
	}
}
