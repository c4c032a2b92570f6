package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNodeInUse is wrapped by LockNode's error when a running node already
// acts under this handle's node name.
var ErrNodeInUse = errors.New("postgres store: node name in use by a running node")

// NodeInUseError is LockNode's error when another session holds the lock
// of the node name: it says who (as pg_stat_activity shows it).
type NodeInUseError struct {
	Node   string
	Holder string // "client 10.0.0.2, herald mx1, since 2026-12-02T10:00:00Z", or "" if unknown
}

// Error names the node and the holder.
func (e *NodeInUseError) Error() string {
	msg := fmt.Sprintf("node name %q is in use by a running node", e.Node)
	if e.Holder != "" {
		msg += " (" + e.Holder + ")"
	}
	return msg
}

// Unwrap makes errors.Is(err, ErrNodeInUse) true.
func (e *NodeInUseError) Unwrap() error { return ErrNodeInUse }

// Intervals of the node lock's connection check (variables for tests).
var (
	nodeLockCheck = 10 * time.Second
	nodeLockRetry = 2 * time.Second
)

// nodeLock is the session holding a node's advisory lock.
type nodeLock struct {
	mu     sync.Mutex
	conn   *pgx.Conn
	cancel context.CancelFunc
	done   chan struct{}
}

// nodeLockKey is the advisory lock of node: a 64-bit hash of the schema
// and the node name, in the one-bigint key space (apart from the two-int
// keys of the migration and DKIM locks).
const nodeLockKey = `hashtextextended(current_schema() || '/' || $1, 0)`

// LockNode takes, for as long as the handle is open, a session advisory
// lock on this handle's node name in this schema, so that a second running
// node with the same server.node_id is refused: it would release this
// node's leases at start-up and take over its destination connections. It
// fails with a *NodeInUseError when another session holds the lock. Only
// the server calls it; commands run beside the server under its node name.
//
// The lock lives on a connection of its own ("herald NODE lock" in
// pg_stat_activity), checked every 10 seconds; if the connection is lost
// (a database restart) the lock goes with it, and is taken again on a new
// connection. Should another node have taken the name meanwhile, that is
// logged as an error every check until it stops.
func (s *Store) LockNode(ctx context.Context) error {
	conn, err := s.takeNodeLock(ctx)
	if err != nil {
		return err
	}
	l := &s.nodeLock
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		conn.Close(context.Background())
		return nil // locked already (it is reentrant, but one session is enough)
	}
	lctx, cancel := context.WithCancel(context.Background())
	l.conn, l.cancel, l.done = conn, cancel, make(chan struct{})
	go s.keepNodeLock(lctx, nodeLockCheck, nodeLockRetry)
	return nil
}

// lockKeepalive is how the database notices that the node holding a lock
// is gone when its machine died without closing the connection (the
// kernel closes it for a process that exits, however it exits): TCP
// keepalives after 10 s idle, every 5 s, 3 probes, so that the node can
// start again on another machine within about 25 s instead of the
// operating system's default two hours. A URL that sets them wins.
var lockKeepalive = map[string]string{"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}

// takeNodeLock connects and takes the lock, or says who holds it.
func (s *Store) takeNodeLock(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.connFor("lock")
	for k, v := range lockKeepalive {
		if _, set := cfg.RuntimeParams[k]; !set {
			cfg.RuntimeParams[k] = v
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, classifyConnect(s.where, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(`+nodeLockKey+`)`, s.node).Scan(&ok); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres store %s: lock node %s: %w", s.where, s.node, err)
	}
	if ok {
		return conn, nil
	}
	// Who holds it: the advisory lock's key split in two 32-bit halves.
	var holder string
	err = conn.QueryRow(ctx, `SELECT concat_ws(', ', 'client ' || host(a.client_addr), nullif(a.application_name, ''),
			'since ' || to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'))
		FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1
			AND l.classid::bigint = (`+nodeLockKey+` >> 32) & 4294967295
			AND l.objid::bigint = `+nodeLockKey+` & 4294967295
		LIMIT 1`, s.node).Scan(&holder)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		holder = ""
	}
	conn.Close(context.Background())
	return nil, &NodeInUseError{Node: s.node, Holder: holder}
}

// keepNodeLock checks the lock's connection until ctx ends, taking the
// lock again on a new connection when it was lost.
func (s *Store) keepNodeLock(ctx context.Context, check, retry time.Duration) {
	l := &s.nodeLock
	defer close(l.done)
	wait := check
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		l.mu.Lock()
		conn := l.conn
		l.mu.Unlock()
		if conn != nil {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err := conn.Ping(cctx)
			cancel()
			if err == nil {
				wait = check
				continue
			}
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("the connection holding this node's lock was lost; taking the lock again", "node", s.node, "err", err)
			conn.Close(context.Background())
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		conn, err := s.takeNodeLock(cctx)
		cancel()
		l.mu.Lock()
		l.conn = conn
		l.mu.Unlock()
		switch {
		case err == nil:
			s.log.Info("this node's lock taken again", "node", s.node)
			wait = check
		case errors.Is(err, ErrNodeInUse):
			if ctx.Err() == nil {
				s.log.Error("another running node took this node's name while its lock was lost: two nodes now share server.node_id; stop one of them",
					"node", s.node, "err", err)
			}
			wait = check
		default:
			wait = retry
		}
	}
}

// unlockNode stops keeping the lock and closes its connection (which
// releases it).
func (s *Store) unlockNode() {
	l := &s.nodeLock
	l.mu.Lock()
	cancel, done := l.cancel, l.done
	l.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		l.conn.Close(context.Background())
		l.conn = nil
	}
}
