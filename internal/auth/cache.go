package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"sync"
	"time"
)

// cache remembers recent successful logins so that a client opening a
// session per message does not pay an argon2id check (tens of milliseconds
// and 19 MiB) each time, as Dovecot's auth cache does. It keeps, per user,
// a keyed MAC of the password (never the password) and the stored hash it
// was verified against: a password change or user deletion invalidates
// the entry, and entries expire after ttl.
type cache struct {
	key [32]byte
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[string]cacheEntry
}

type cacheEntry struct {
	mac     [32]byte
	hash    string // the stored password hash at verification time
	expires time.Time
}

// newCache returns a cache keeping entries for ttl, at most max of them.
func newCache(ttl time.Duration, max int) *cache {
	c := &cache{ttl: ttl, max: max, entries: make(map[string]cacheEntry)}
	_, _ = rand.Read(c.key[:]) // crypto/rand does not fail on supported platforms
	return c
}

func (c *cache) mac(user, password string) [32]byte {
	m := hmac.New(sha256.New, c.key[:])
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	var out [32]byte
	copy(out[:], m.Sum(nil))
	return out
}

// ok reports whether user logged in with password recently against the
// same stored hash.
func (c *cache) ok(user, password, storedHash string, now time.Time) bool {
	mac := c.mac(user, password)
	c.mu.Lock()
	e, found := c.entries[user]
	c.mu.Unlock()
	return found && now.Before(e.expires) && e.hash == storedHash && hmac.Equal(e.mac[:], mac[:])
}

// add records a successful login.
func (c *cache) add(user, password, storedHash string, now time.Time) {
	mac := c.mac(user, password)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for u, e := range c.entries { // drop expired entries, else any one
			if now.After(e.expires) || len(c.entries) >= c.max {
				delete(c.entries, u)
			}
			if len(c.entries) < c.max/2 {
				break
			}
		}
	}
	c.entries[user] = cacheEntry{mac: mac, hash: storedHash, expires: now.Add(c.ttl)}
}
