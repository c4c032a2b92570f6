package dnsbl

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/resolve"
)

// cache keeps list answers (listed and not listed) for their TTL, clamped
// to [minTTL, maxTTL], and at most size of them. Failures are not kept.
type cache struct {
	mu             sync.Mutex
	entries        map[cacheKey]cacheEntry
	size           int
	minTTL, maxTTL time.Duration
	clk            clock.Clock
}

type cacheKey struct {
	name string
	txt  bool
}

type cacheEntry struct {
	ans      resolve.Answer
	notFound bool
	expires  time.Time
}

func newCache(size int, minTTL, maxTTL time.Duration, clk clock.Clock) *cache {
	return &cache{entries: make(map[cacheKey]cacheEntry), size: size, minTTL: minTTL, maxTTL: maxTTL, clk: clk}
}

// notFound is the error a cached "no such name" answer returns.
var errCachedNotFound = errors.New("dnsbl: cached: no such name")

// peek returns a live cached answer, without asking.
func (c *cache) peek(name string, txt bool) (resolve.Answer, bool, error) {
	now := c.clk.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[cacheKey{name, txt}]
	if !ok || !now.Before(e.expires) {
		return resolve.Answer{}, false, nil
	}
	if e.notFound {
		return resolve.Answer{}, true, errors.Join(resolve.ErrNotFound, errCachedNotFound)
	}
	return e.ans, true, nil
}

// lookup answers from the cache or with ask, keeping what ask returns.
func (c *cache) lookup(ctx context.Context, name string, txt bool,
	ask func(context.Context, string) (resolve.Answer, error)) (resolve.Answer, error) {
	if ans, ok, err := c.peek(name, txt); ok {
		return ans, err
	}
	ans, err := ask(ctx, name)
	notFound := errors.Is(err, resolve.ErrNotFound)
	if err != nil && !notFound {
		return ans, err
	}
	ttl := min(max(ans.TTL, c.minTTL), c.maxTTL)
	c.put(cacheKey{name, txt}, cacheEntry{ans: ans, notFound: notFound, expires: c.clk.Now().Add(ttl)})
	return ans, err
}

// put stores e, making room first: expired entries go, then, if the cache
// is still full, a tenth of it chosen arbitrarily (map order), so an
// address scan cannot grow it without bound and a full cache is swept once
// per size/10 insertions, not at each.
func (c *cache) put(k cacheKey, e cacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[k]; !ok && len(c.entries) >= c.size {
		now := c.clk.Now()
		for key, old := range c.entries {
			if !now.Before(old.expires) {
				delete(c.entries, key)
			}
		}
		for key := range c.entries {
			if len(c.entries) < c.size-c.size/10 {
				break
			}
			delete(c.entries, key)
		}
	}
	c.entries[k] = e
}

// len returns the number of entries (for tests).
func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.entries)
}
