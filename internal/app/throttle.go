package app

import (
	"context"
	"time"

	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/throttle"
)

// remoteThrottle applies per-destination traffic shaping to remote domains
// only; local delivery is never held back.
type remoteThrottle struct {
	t   *throttle.Throttle
	dir store.Directory
}

func (r *remoteThrottle) local(domain string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := r.dir.IsLocalDomain(ctx, domain)
	return err == nil && ok
}

func (r *remoteThrottle) Acquire(domain string) (func(), time.Duration, bool) {
	if r.local(domain) {
		return func() {}, 0, true
	}
	return r.t.Acquire(domain)
}

func (r *remoteThrottle) Observe(domain string, a queue.Attempt) {
	remote := a.RemoteMTA != "" && a.RemoteMTA != "local" && a.RemoteMTA != "http"
	r.t.Observe(domain, throttle.Reply{Code: a.Code, Enhanced: a.Enhanced, Text: a.Text, Remote: remote})
}
