package postgres

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// ErrNodeInUse is returned by ClaimNode when another running server holds
// the claim of this handle's node: two servers share one node name.
var ErrNodeInUse = errors.New("postgres store: the node name is in use by another running server")

// claimCheck is how often a held claim's connection is checked, and a lost
// one taken again.
const claimCheck = 5 * time.Second

// claimSQL takes the session-level advisory lock of a node of a schema
// (advisory locks are database-wide), without waiting.
const claimSQL = `SELECT pg_try_advisory_lock(hashtext('herald.node.' || $1), hashtext($2))`

// nodeClaim is the connection holding a node's claim.
type nodeClaim struct {
	every   time.Duration // claimCheck; tests shorten it before ClaimNode
	mu      sync.Mutex
	conn    *pgx.Conn
	cancel  context.CancelFunc
	done    chan struct{}
	stopped bool
}

// ClaimNode claims this handle's node for the running server until Close:
// a session-level advisory lock held on a connection of its own. A second
// server started with the same node name on the same store gets
// ErrNodeInUse instead of releasing the first one's leases at start-up
// (ReleaseLeases) and taking its recipients as its own. Commands do not
// claim: they run beside their node's server. If the connection is lost
// (a database restart), the claim is taken again; should another server
// have taken it meanwhile, that is logged as an error every claimCheck.
func (s *Store) ClaimNode(ctx context.Context) error {
	c := &s.claim
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return ErrClosed
	}
	if c.conn != nil {
		return nil
	}
	conn, err := s.claimOnce(ctx)
	if err != nil {
		return err
	}
	c.conn = conn
	lctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	go s.keepClaim(lctx)
	return nil
}

// claimKeepalive is how the database notices that the server holding a
// claim is gone when its machine died without closing the connection
// (the kernel closes it for a process that exits, however it exits):
// TCP keepalives after 10 s idle, every 5 s, 3 probes, so that the node
// can start again on another machine within about 25 s instead of the
// operating system's default two hours. A URL that sets them wins.
var claimKeepalive = map[string]string{"tcp_keepalives_idle": "10", "tcp_keepalives_interval": "5", "tcp_keepalives_count": "3"}

// claimOnce connects and takes the node's lock.
func (s *Store) claimOnce(ctx context.Context) (*pgx.Conn, error) {
	cfg := s.connFor("claim")
	for k, v := range claimKeepalive {
		if _, set := cfg.RuntimeParams[k]; !set {
			cfg.RuntimeParams[k] = v
		}
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres store: claim node %s: %w: %w", s.node, ErrUnavailable, err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, claimSQL, s.schema, s.node).Scan(&ok); err != nil {
		conn.Close(context.Background())
		return nil, fmt.Errorf("postgres store: claim node %s: %w", s.node, err)
	}
	if !ok {
		conn.Close(context.Background())
		return nil, fmt.Errorf("node %q of %s: %w", s.node, s.where, ErrNodeInUse)
	}
	return conn, nil
}

// keepClaim checks the claim's connection every claimCheck and claims the
// node again on a new one when it was lost, until ctx ends.
func (s *Store) keepClaim(ctx context.Context) {
	c := &s.claim
	defer close(c.done)
	every := c.every
	if every <= 0 {
		every = claimCheck
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		c.mu.Lock()
		conn := c.conn
		c.mu.Unlock()
		if conn != nil {
			pctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
			err := conn.Ping(pctx)
			cancel()
			if err == nil || ctx.Err() != nil {
				continue
			}
			conn.Close(context.Background())
			c.mu.Lock()
			c.conn = nil
			c.mu.Unlock()
		}
		cctx, cancel := context.WithTimeout(ctx, max(every, time.Second))
		conn, err := s.claimOnce(cctx)
		cancel()
		switch {
		case err == nil:
			c.mu.Lock()
			c.conn = conn
			c.mu.Unlock()
		case errors.Is(err, ErrNodeInUse):
			s.log.Error("another running server took this node's name while the database connection was lost: "+
				"nodes sharing a name release each other's leases when they start; give each its own server.node_id",
				"node", s.node)
		case ctx.Err() == nil:
			s.log.Warn("cannot claim this node's name again after the database connection was lost; retrying", "err", err)
		}
	}
}

// stop releases the claim (closing its connection) and ends the checks.
func (c *nodeClaim) stop() {
	c.mu.Lock()
	c.stopped = true
	cancel, done := c.cancel, c.done
	c.mu.Unlock()
	if cancel != nil {
		cancel()
		<-done
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		// Released now, not when the server process behind the closed
		// connection gets round to exiting: a restart may claim at once.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = c.conn.Exec(ctx, `SELECT pg_advisory_unlock_all()`)
		cancel()
		c.conn.Close(context.Background())
		c.conn = nil
	}
}
