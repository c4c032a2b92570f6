package app

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/config"
	"github.com/heraldmail/herald/internal/diskguard"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/feedback"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/startup"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/submit"
)

// PipelineDeps are the parts of a node the acceptance path is built on.
type PipelineDeps struct {
	Store    submit.Store
	Spool    submit.Spool
	Feedback submit.Feedback
	Inbound  submit.Inbound
	Guard    func(size int64) error
	Clock    clock.Clock
	Logger   *slog.Logger
	// Blocklists screens MX clients on DNS lists (nil: none).
	Blocklists *dnsbl.Checker
}

// NewPipeline builds the acceptance path from the configuration: the
// serving node and `herald sendmail` use the same one.
func NewPipeline(cfg *config.Config, d PipelineDeps) *submit.Pipeline {
	p := cfg.Platform
	return submit.New(submit.Config{
		Hostname:       cfg.Server.Hostname,
		MaxMessageSize: cfg.Limits.MaxMessageSize,
		MaxRecipients:  cfg.Limits.MaxRecipients,
		RelayAllow:     cfg.Relay.Allow,
		VERP:           p.VERP,
		UserLimits:     ratelimit.Limits{PerMinute: p.UserPerMinute, PerHour: p.UserPerHour, PerDay: p.UserPerDay},
	}, submit.Deps{
		Store: d.Store, Spool: d.Spool, Feedback: d.Feedback, Inbound: d.Inbound,
		Guard: d.Guard, Clock: d.Clock, Logger: d.Logger, Blocklists: d.Blocklists,
	})
}

// postmaster is who gets undeliverable notifications.
func postmaster(cfg *config.Config) string {
	if cfg.Server.Postmaster != "" {
		return cfg.Server.Postmaster
	}
	return "postmaster@" + cfg.Server.Hostname
}

// apiMessageBytes bounds an API send request: the largest message as JSON
// with base64 attachments (4/3 of it) plus room for the JSON itself.
func apiMessageBytes(maxMessage int64) int64 {
	return maxMessage/3*4 + 1<<20
}

// DMARCReportDir is where an earlier Herald kept the DMARC aggregate
// reports it received; New imports them into the store once.
func DMARCReportDir(cfg *config.Config) string {
	return filepath.Join(cfg.Server.DataDir, "dmarc-reports")
}

// loadVERPKey returns the VERP key of the cluster, kept in the store; a
// data directory's verp.key of an earlier Herald is imported into a store
// that has none (feedback.LoadKey).
func loadVERPKey(cfg *config.Config, st store.Secrets, log *slog.Logger) ([]byte, error) {
	legacy := filepath.Join(cfg.Server.DataDir, "verp.key")
	key, err := feedback.LoadKey(context.Background(), st, legacy, log)
	var kf *feedback.KeyFileError
	switch {
	case errors.As(err, &kf):
		return nil, startup.KeyFile("VERP key", legacy, cfg.Server.DataDir, err)
	case err != nil:
		return nil, storeError(cfg, err)
	}
	return key, nil
}

// NewLocalPipeline builds the acceptance path for a command that writes
// into the data directory directly (`herald sendmail`): no queue worker
// (the server picks the message up), no inbound checks (nothing comes
// from the network).
func NewLocalPipeline(cfg *config.Config, st store.Store, log *slog.Logger) (*submit.Pipeline, error) {
	key, err := loadVERPKey(cfg, st, log)
	if err != nil {
		return nil, err
	}
	guard := diskguard.New(cfg.Server.DataDir, cfg.Limits.QueueMinFree, log)
	sp := spool.New(st, nil, clock.Real{})
	sp.SetGuard(guard.Check)
	return NewPipeline(cfg, PipelineDeps{Store: st, Spool: sp, Feedback: feedback.New(st, key, nil, log),
		Guard: guard.Check, Logger: log}), nil
}
