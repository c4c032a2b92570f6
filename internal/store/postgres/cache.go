package postgres

import (
	"slices"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// Every round trip to the database costs the node and the server about as
// much CPU as a small read costs SQLite, and a relayed message made four
// besides its two writes. What a message's acceptance reads that rarely
// changes (its account, the DKIM keys of its From domain) is kept for
// readCacheTTL, like the local domains: a change made on another node (or
// by a command) is seen within that time, this handle's own changes at
// once. And the body of a message enqueued leased or leased, which a local
// worker reads a moment later, is kept until that worker is done with it.

// readCacheTTL is how long accounts and DKIM keys read from the database
// are reused.
const readCacheTTL = domainCacheTTL

// ttlCache is a small map of values read from the database at some time.
// A read racing a change of this handle is not stored (version).
type ttlCache[V any] struct {
	mu      sync.Mutex
	m       map[string]ttlEntry[V]
	version uint64
}

type ttlEntry[V any] struct {
	v      V
	loaded time.Time
}

// maxTTLEntries bounds a ttlCache: past it, the cache starts over.
const maxTTLEntries = 4096

// get returns the value of key if it was read less than readCacheTTL ago,
// and the version to pass to put after reading it.
func (c *ttlCache[V]) get(key string) (v V, ok bool, version uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if ok && time.Since(e.loaded) < readCacheTTL {
		return e.v, true, c.version
	}
	return v, false, c.version
}

// put stores a value read at version (from get) unless this handle
// changed the table since.
func (c *ttlCache[V]) put(key string, v V, version uint64, loaded time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != version {
		return
	}
	if c.m == nil || len(c.m) >= maxTTLEntries {
		c.m = make(map[string]ttlEntry[V])
	}
	c.m[key] = ttlEntry[V]{v: v, loaded: loaded}
}

// forget drops everything after a change of this handle.
func (c *ttlCache[V]) forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
	c.version++
}

// cachedRead returns the value of key from c, or reads it with read and
// keeps it (not errors).
func cachedRead[V any](c *ttlCache[V], key string, read func() (V, error)) (V, error) {
	v, ok, version := c.get(key)
	if ok {
		return v, nil
	}
	start := time.Now()
	v, err := read()
	if err == nil {
		c.put(key, v, version, start)
	}
	return v, err
}

// readCaches holds the reads of a handle reused for readCacheTTL.
type readCaches struct {
	accounts ttlCache[store.Account]
	dkim     ttlCache[[]store.DKIMKey]
}

// activeKeys returns a copy of keys for a caller (who may change it).
func activeKeys(keys []store.DKIMKey) []store.DKIMKey {
	out := slices.Clone(keys)
	for i := range out {
		out[i].PrivateKey = slices.Clone(out[i].PrivateKey)
	}
	return out
}

// handoffMaxBytes bounds the bodies kept for local workers; a body that
// does not fit is read from the database as any other.
const handoffMaxBytes = 32 << 20

// handoffCache holds the whole stored form (prepended header fields and
// body) of the messages with an inline body that this handle enqueued
// leased (the direct hand-off to a worker of this node) or leased: the
// worker reads the body at once. The leased body comes with the lease's
// query, instead of a round trip of its own per message. An entry serves
// OpenBody until the lease it was taken with ends, and
// is dropped when this handle records an outcome of the message or deletes
// it. A body is never changed once stored, so the copy is the stored one;
// a message deleted meanwhile by another node is found gone when the
// worker records its outcome, as if it had been deleted just after the
// body was read.
type handoffCache struct {
	mu    sync.Mutex
	m     map[string]handoffBody
	bytes int
	puts  int
}

type handoffBody struct {
	data  []byte
	until time.Time
}

// put keeps data for id until its lease ends at until.
func (c *handoffCache) put(id string, data []byte, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.puts++; c.puts%1024 == 0 || c.bytes+len(data) > handoffMaxBytes {
		c.sweep(time.Now())
		if c.bytes+len(data) > handoffMaxBytes {
			return
		}
	}
	if c.m == nil {
		c.m = make(map[string]handoffBody)
	}
	if old, ok := c.m[id]; ok {
		c.bytes -= len(old.data)
	}
	c.m[id] = handoffBody{data: data, until: until}
	c.bytes += len(data)
}

// get returns the body of id if it is held and its lease has not ended.
func (c *handoffCache) get(id string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || !time.Now().Before(e.until) {
		return nil, false
	}
	return e.data, true
}

// drop forgets the body of id.
func (c *handoffCache) drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.bytes -= len(e.data)
		delete(c.m, id)
	}
}

// clear forgets every body.
func (c *handoffCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.bytes = nil, 0
}

// sweep drops the bodies whose leases ended (their worker never recorded
// an outcome here: it lost the lease, or gave up). c.mu is held.
func (c *handoffCache) sweep(now time.Time) {
	for id, e := range c.m {
		if !now.Before(e.until) {
			c.bytes -= len(e.data)
			delete(c.m, id)
		}
	}
}
