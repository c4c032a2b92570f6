package ratelimit

import (
	"errors"
	"net/netip"
	"sync"
)

// Errors returned by ConnLimiter.Acquire, telling which limit was hit.
var (
	ErrTotalConnections = errors.New("ratelimit: too many connections")
	ErrIPConnections    = errors.New("ratelimit: too many connections from this address")
)

// ConnLimiter caps concurrent connections, in total and per client key (see
// Key: the address for IPv4, the /64 for IPv6). It is safe for concurrent
// use; a single mutex guards it, held only for a map update.
type ConnLimiter struct {
	total, perIP int

	mu    sync.Mutex
	n     int
	perIn map[netip.Prefix]int
}

// NewConnLimiter returns a limiter allowing total connections in all and
// perIP from one client key. A limit < 1 means unlimited.
func NewConnLimiter(total, perIP int) *ConnLimiter {
	return &ConnLimiter{total: total, perIP: perIP, perIn: make(map[netip.Prefix]int)}
}

// Acquire takes a slot for a connection from ip. On success the returned
// release must be called when the connection ends; calling it more than once
// is harmless. On failure err is ErrTotalConnections or ErrIPConnections.
func (l *ConnLimiter) Acquire(ip netip.Addr) (release func(), err error) {
	k := Key(ip)
	l.mu.Lock()
	if l.total > 0 && l.n >= l.total {
		l.mu.Unlock()
		return nil, ErrTotalConnections
	}
	if l.perIP > 0 && l.perIn[k] >= l.perIP {
		l.mu.Unlock()
		return nil, ErrIPConnections
	}
	l.n++
	l.perIn[k]++
	l.mu.Unlock()

	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			l.n--
			if c := l.perIn[k] - 1; c > 0 {
				l.perIn[k] = c
			} else {
				delete(l.perIn, k)
			}
			l.mu.Unlock()
		})
	}, nil
}

// Active returns the number of connections holding a slot.
func (l *ConnLimiter) Active() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// ActiveFrom returns the number of connections holding a slot for ip's key.
func (l *ConnLimiter) ActiveFrom(ip netip.Addr) int {
	k := Key(ip)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.perIn[k]
}
