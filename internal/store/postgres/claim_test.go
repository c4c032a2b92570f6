package postgres

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A node name is claimed by one server per schema: a second handle of the
// same node is refused with ErrNodeInUse, other names and the same name in
// another schema are not; the claim's session has short TCP keepalives; a
// claim whose connection was cut is taken again; Close releases it at once.
func TestClaimNode(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dsn := newSchema(t)
	open := func(dsn, node string) *Store {
		s := openTest(t, dsn, Options{Node: node})
		t.Cleanup(func() { s.Close() })
		return s
	}
	first, second := open(dsn, "n-claim"), open(dsn, "n-claim")
	first.claim.every = 20 * time.Millisecond
	if err := first.ClaimNode(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.ClaimNode(ctx); err != nil {
		t.Errorf("claiming again on the same handle: %v", err)
	}
	// A dead machine's claim is noticed in seconds, not in two hours.
	var idle string
	first.claim.mu.Lock()
	err := first.claim.conn.QueryRow(ctx, `SHOW tcp_keepalives_idle`).Scan(&idle)
	first.claim.mu.Unlock()
	if err != nil || idle != "10" {
		t.Errorf("tcp_keepalives_idle of the claim's session = %q, %v; want 10", idle, err)
	}
	if err := second.ClaimNode(ctx); !errors.Is(err, ErrNodeInUse) {
		t.Fatalf("second handle of the node: %v, want ErrNodeInUse", err)
	}
	if err := open(dsn, "m-claim").ClaimNode(ctx); err != nil {
		t.Errorf("another node name: %v", err)
	}
	if err := open(newSchema(t), "n-claim").ClaimNode(ctx); err != nil {
		t.Errorf("the same name in another schema: %v", err)
	}

	// A database restart or failover cuts the claim's connection: it is
	// taken again.
	first.claim.mu.Lock()
	pid := first.claim.conn.PgConn().PID()
	first.claim.mu.Unlock()
	if n := terminate(t, `pid = $1 AND application_name = 'herald n-claim claim'`, int64(pid)); n != 1 {
		t.Fatalf("terminated %d claim sessions", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		first.claim.mu.Lock()
		back := first.claim.conn != nil && first.claim.conn.PgConn().PID() != pid
		first.claim.mu.Unlock()
		if back {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the claim was not taken again after its connection was cut")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := second.ClaimNode(ctx); !errors.Is(err, ErrNodeInUse) {
		t.Fatalf("second handle after the first reclaimed: %v, want ErrNodeInUse", err)
	}

	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	if err := second.ClaimNode(ctx); err != nil {
		t.Errorf("claim after the first handle closed: %v", err)
	}
	if err := first.ClaimNode(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("ClaimNode on a closed handle: %v, want ErrClosed", err)
	}
}
