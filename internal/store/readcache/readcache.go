// Package readcache holds the small in-memory caches both store backends
// keep in front of their databases: values that rarely change, reused for
// a short time (TTL), and the bodies of messages handed to a local worker
// (Handoff).
//
// Every read that can be skipped on the acceptance and delivery path
// matters: a small read costs SQLite a read transaction and PostgreSQL a
// round trip, and a relayed message made three of them (its account's
// limits at MAIL, its body for the first attempt, the DKIM keys of its
// From domain) besides its writes.
package readcache

import (
	"slices"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/store"
)

// TTLDuration is how long a TTL cache reuses a value: a change made by
// another process (a command, another node) is seen within this time, a
// change of the handle that owns the cache at once (Forget).
const TTLDuration = time.Second

// maxTTLEntries bounds a TTL cache: past it, the cache starts over.
const maxTTLEntries = 4096

// TTL is a small map of values read from the database at some time. A read
// racing a change of its handle is not kept (see Forget). The zero value
// is ready to use.
type TTL[V any] struct {
	mu      sync.Mutex
	m       map[string]ttlEntry[V]
	version uint64
}

type ttlEntry[V any] struct {
	v      V
	loaded time.Time
}

// get returns the value of key if it was read less than TTLDuration ago,
// and the version to pass to put after reading it.
func (c *TTL[V]) get(key string) (v V, ok bool, version uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[key]
	if ok && time.Since(e.loaded) < TTLDuration {
		return e.v, true, c.version
	}
	return v, false, c.version
}

// put stores a value read at version (from get) unless the handle changed
// the table since.
func (c *TTL[V]) put(key string, v V, version uint64, loaded time.Time) {
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

// Forget drops every value; the handle calls it after each change of the
// table the values come from, so its own changes are seen at once.
func (c *TTL[V]) Forget() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
	c.version++
}

// Read returns the value of key from c, or reads it with read and keeps it
// (errors are not kept). The value is shared: a caller must not change
// what it points to.
func Read[V any](c *TTL[V], key string, read func() (V, error)) (V, error) {
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

// HandoffMaxBytes bounds the bodies a Handoff keeps; a body that does not
// fit is read from the database as any other.
const HandoffMaxBytes = 32 << 20

// Handoff holds the whole stored form (prepended header fields and body)
// of the messages with an inline body that its handle enqueued leased (the
// direct hand-off to a worker of this node) or leased: the worker reads the
// body from memory instead of the database. An entry serves until the
// lease it was taken with ends, and is dropped when the handle records an
// outcome of the message or deletes it. A body is never changed once
// stored, so the copy is the stored one; a message deleted meanwhile by
// another node is found gone when the worker records its outcome, as if it
// had been deleted just after the body was read. The zero value is ready
// to use.
type Handoff struct {
	mu    sync.Mutex
	m     map[string]handoffBody
	bytes int
	puts  int
}

type handoffBody struct {
	data  []byte
	until time.Time
}

// Put keeps data for id until its lease ends at until. data must not be
// changed afterwards.
func (c *Handoff) Put(id string, data []byte, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.puts++; c.puts%1024 == 0 || c.bytes+len(data) > HandoffMaxBytes {
		c.sweep(time.Now())
		if c.bytes+len(data) > HandoffMaxBytes {
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

// Get returns the body of id if it is held and its lease has not ended.
func (c *Handoff) Get(id string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[id]
	if !ok || !time.Now().Before(e.until) {
		return nil, false
	}
	return e.data, true
}

// Drop forgets the body of id.
func (c *Handoff) Drop(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[id]; ok {
		c.bytes -= len(e.data)
		delete(c.m, id)
	}
}

// Clear forgets every body.
func (c *Handoff) Clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m, c.bytes = nil, 0
}

// Bytes returns the size of the bodies held.
func (c *Handoff) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// sweep drops the bodies whose leases ended (their worker never recorded
// an outcome here: it lost the lease, or gave up). c.mu is held.
func (c *Handoff) sweep(now time.Time) {
	for id, e := range c.m {
		if !now.Before(e.until) {
			c.bytes -= len(e.data)
			delete(c.m, id)
		}
	}
}

// CloneKeys returns a deep copy of keys (cached, shared) for a caller, who
// may change it.
func CloneKeys(keys []store.DKIMKey) []store.DKIMKey {
	out := slices.Clone(keys)
	for i := range out {
		out[i].PrivateKey = slices.Clone(out[i].PrivateKey)
	}
	return out
}
