package sqlite

import (
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/store/readcache"
)

// A small read costs a read transaction of the pool (about 70 µs of CPU
// on the project's machine), and a relayed message made three that rarely
// change: its account (rate limits at MAIL), the DKIM keys of its From
// domain, and its body read back for the first attempt a moment after it
// was written. Accounts and DKIM keys are kept for readcache.TTLDuration,
// like the local domains: a change made by another process (a command) is
// seen within that time, this handle's own changes at once. The inline
// body of a message enqueued leased is kept until its worker is done with
// it (readcache.Handoff).

// readCaches holds the reads of a handle reused for readcache.TTLDuration.
type readCaches struct {
	accounts readcache.TTL[store.Account]
	dkim     readcache.TTL[[]store.DKIMKey]
}
