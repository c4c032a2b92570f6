package transport

import (
	"context"
	"time"

	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/simulator"
	"github.com/heraldmail/herald/internal/throttle"
)

// RemoteThrottle applies per-destination traffic shaping to remote
// domains only; local delivery and the mailbox simulator are never held
// back. It implements the queue's throttle.
type RemoteThrottle struct {
	T   *throttle.Throttle
	Dir interface {
		IsLocalDomain(ctx context.Context, domain string) (bool, error)
	}
}

func (r *RemoteThrottle) local(domain string) bool {
	if simulator.IsDomain(domain) {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ok, err := r.Dir.IsLocalDomain(ctx, domain)
	return err == nil && ok
}

// Acquire asks the throttle for a slot of a remote destination.
func (r *RemoteThrottle) Acquire(domain string) (func(), time.Duration, bool) {
	if r.local(domain) {
		return func() {}, 0, true
	}
	return r.T.Acquire(domain)
}

// Observe reports an attempt's outcome to the throttle. Only replies from
// the destination's own server count: Herald's own deferrals (MTA-STS,
// DANE, DNS or connection failures) carry no remote MTA.
func (r *RemoteThrottle) Observe(domain string, a queue.Attempt) {
	remote := a.RemoteMTA != "" && a.RemoteMTA != "local" && a.RemoteMTA != "http" && a.RemoteMTA != simulatorMTA
	r.T.Observe(domain, throttle.Reply{Code: a.Code, Enhanced: a.Enhanced, Text: a.Text, Remote: remote})
}
