package postgres

import (
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

// Every round trip to the database costs the node and the server about as
// much CPU as a small read costs SQLite, and a relayed message made four
// besides its two writes. What a message's acceptance reads that rarely
// changes (its account, the DKIM keys of its From domain) is kept for
// readcache.TTLDuration, like the local domains: a change made on another node (or
// by a command) is seen within that time, this handle's own changes at
// once. And the body of a message enqueued leased or leased, which a local
// worker reads a moment later, is kept until that worker is done with it.

// readCaches holds the reads of a handle reused for readcache.TTLDuration.
type readCaches struct {
	accounts readcache.TTL[store.Account]
	dkim     readcache.TTL[[]store.DKIMKey]
}
