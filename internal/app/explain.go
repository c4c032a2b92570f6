package app

import (
	"fmt"

	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/explain"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/throttle"
)

// ExplainConfig is what explanations of messages (GET
// /v1/messages/{id}/explain, herald queue explain) take from cfg: the
// queue lifetime, the delay warning, and the throttle's mapping of
// recipient domains to destinations (the big providers' table).
func ExplainConfig(cfg *config.Config) explain.Config {
	return explain.Config{
		MaxLifetime:    cfg.Queue.MaxLifetime,
		DelayWarning:   cfg.Queue.DelayWarning,
		DestinationKey: throttle.New(throttle.Config{}).Key,
	}
}

// ExplainStore returns st as the store explanations read: every backend
// also reads the queue's leases (store.QueueLeases).
func ExplainStore(st store.Store) (explain.Store, error) {
	ql, ok := st.(store.QueueLeases)
	if !ok {
		return nil, fmt.Errorf("explain: the store (%T) cannot read the queue's leases", st)
	}
	return struct {
		store.Store
		store.QueueLeases
	}{st, ql}, nil
}
