package ratelimit

import (
	"math"
	"sync"
	"time"
)

// Bucket is a keyed token-bucket limiter: each key (a user, a sender, a
// destination) gets burst tokens that refill at rate tokens per second. Keys
// whose bucket is full again are forgotten, and at most DefaultMaxEntries keys
// are remembered. It is safe for concurrent use.
type Bucket struct {
	rate  float64
	burst float64

	mu         sync.Mutex
	buckets    map[string]*bucketState
	maxEntries int
}

type bucketState struct {
	tokens float64
	last   time.Time
}

// NewBucket returns a limiter allowing burst events at once per key and rate
// events per second on average (e.g. 10.0/60 for ten messages a minute).
// rate <= 0 means no refill.
func NewBucket(rate float64, burst int) *Bucket {
	return &Bucket{rate: rate, burst: float64(burst), buckets: make(map[string]*bucketState), maxEntries: DefaultMaxEntries}
}

// Allow takes one token for key at the wall-clock time.
func (b *Bucket) Allow(key string) bool {
	ok, _ := b.AllowN(key, 1, time.Now())
	return ok
}

// AllowN takes n tokens for key at time now. If there are not enough, it
// takes none and returns false with the time after which they would be there
// (math.MaxInt64 if never).
func (b *Bucket) AllowN(key string, n int, now time.Time) (ok bool, retryAfter time.Duration) {
	need := float64(n)
	b.mu.Lock()
	defer b.mu.Unlock()
	s, found := b.buckets[key]
	if !found {
		if len(b.buckets) >= b.maxEntries {
			b.evictLocked(now)
		}
		s = &bucketState{tokens: b.burst, last: now}
		b.buckets[key] = s
	}
	s.refill(b, now)
	if s.tokens >= need {
		s.tokens -= need
		return true, 0
	}
	if b.rate <= 0 || need > b.burst {
		return false, time.Duration(math.MaxInt64)
	}
	return false, time.Duration((need - s.tokens) / b.rate * float64(time.Second))
}

func (s *bucketState) refill(b *Bucket, now time.Time) {
	if el := now.Sub(s.last); el > 0 {
		s.tokens = math.Min(b.burst, s.tokens+el.Seconds()*b.rate)
		s.last = now
	}
}

// evictLocked forgets full buckets (they are the same as unknown keys) and,
// if that freed less than a tenth of the capacity, arbitrary others.
func (b *Bucket) evictLocked(now time.Time) {
	for k, s := range b.buckets {
		s.refill(b, now)
		if s.tokens >= b.burst {
			delete(b.buckets, k)
		}
	}
	target := b.maxEntries - b.maxEntries/10
	for k := range b.buckets {
		if len(b.buckets) <= target {
			break
		}
		delete(b.buckets, k)
	}
}

// Len returns the number of keys currently remembered.
func (b *Bucket) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.buckets)
}
