// Package gateway connects Herald's entry points to its one acceptance
// path (package submit): it translates an SMTP session's commands and an
// HTTP API submission into pipeline transactions, and the pipeline's
// refusals back into each protocol's answers. It holds no rules of its own;
// they live in submit (what may be accepted) and auth (who may log in).
package gateway

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/netip"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/dnsbl"
	"github.com/heraldmail/herald/internal/metrics"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/smtpserver"
	"github.com/heraldmail/herald/internal/submit"
)

// Authenticator checks a login from a client address (auth.Authenticator).
// Its errors are *smtp.Error replies.
type Authenticator interface {
	Check(ctx context.Context, ip netip.Addr, username, password string) (auth.Outcome, error)
}

// Metrics are the counters the SMTP gateway keeps (any may be nil).
type Metrics struct {
	Sessions     *metrics.CounterVec // by listener
	Accepted     *metrics.CounterVec // by listener
	Rejected     *metrics.CounterVec // by reason
	AuthFailures *metrics.CounterVec // no labels
}

// SMTP implements smtpserver.Backend over a pipeline.
type SMTP struct {
	Pipeline *submit.Pipeline
	Auth     Authenticator
	Log      *slog.Logger
	Metrics  Metrics
}

func inc(c *metrics.CounterVec, labels ...string) {
	if c != nil {
		c.Inc(labels...)
	}
}

// Connect accepts every client (connection caps are enforced by the
// listener before this point) and starts its DNS list lookups, whose
// verdict the pipeline applies at RCPT.
func (g *SMTP) Connect(ctx context.Context, c *smtpserver.Conn) error {
	inc(g.Metrics.Sessions, c.Mode.String())
	if l := g.Pipeline.Screen(ctx, c.RemoteAddr.Addr(), c.Mode.String()); l != nil {
		c.Meta = l
	}
	return nil
}

// Authenticate checks a login (the listener calls it only over TLS).
func (g *SMTP) Authenticate(ctx context.Context, c *smtpserver.Conn, username, password string) error {
	outcome, err := g.Auth.Check(ctx, c.RemoteAddr.Addr(), username, password)
	switch outcome {
	case auth.LockedOut:
		g.Log.Warn("auth refused: client locked out", "session", c.ID, "client", c.RemoteAddr.Addr().String(), "user", username)
		inc(g.Metrics.Rejected, "auth_lockout")
	case auth.Rejected:
		inc(g.Metrics.AuthFailures)
	}
	return err
}

// Mail starts a pipeline transaction for the session's identity.
func (g *SMTP) Mail(ctx context.Context, c *smtpserver.Conn, env *smtpserver.Envelope) error {
	id := g.Pipeline.Network(c.RemoteAddr.Addr(), c.AuthUser, c.HELO, c.Mode.String())
	id.Blocklists, _ = c.Meta.(*dnsbl.Lookup)
	tx, err := g.Pipeline.Begin(ctx, id)
	if err == nil {
		err = tx.Mail(ctx, submit.Mail{From: env.From, Ret: env.Ret, EnvID: env.EnvID, SMTPUTF8: env.SMTPUTF8, Size: env.Size})
	}
	if err != nil {
		g.refused(c, "sender", env.From, err)
		return err
	}
	env.Meta = tx
	return nil
}

// Rcpt adds a recipient to the transaction.
func (g *SMTP) Rcpt(ctx context.Context, c *smtpserver.Conn, env *smtpserver.Envelope, r smtpserver.Rcpt) error {
	tx, ok := env.Meta.(*submit.Tx)
	if !ok {
		e := smtp.ErrLocalError
		return &e
	}
	if err := tx.Rcpt(ctx, submit.Recipient{Address: r.Address, Notify: r.Notify, ORCPT: r.ORCPT}); err != nil {
		g.refused(c, "recipient", r.Address, err)
		return err
	}
	return nil
}

// Deliver runs the message through the rest of the pipeline.
func (g *SMTP) Deliver(ctx context.Context, c *smtpserver.Conn, env *smtpserver.Envelope, body io.Reader) (string, error) {
	tx, ok := env.Meta.(*submit.Tx)
	if !ok {
		e := smtp.ErrLocalError
		return "", &e
	}
	res, err := tx.Data(ctx, body)
	if err != nil {
		g.refused(c, "message", env.From, err)
		return "", err
	}
	if res.ID == "" {
		// Only feedback reports: consumed, nothing queued.
		return "report-processed", nil
	}
	inc(g.Metrics.Accepted, c.Mode.String())
	// smtpserver logs the acceptance at info ("message accepted", with
	// the session, client, sender, size and user); this adds the final
	// recipient count after aliases.
	g.Log.Debug("queued", "session", c.ID, "id", res.ID, "from", env.From, "rcpts", res.Queued,
		"client", c.RemoteAddr.Addr().String(), "user", c.AuthUser)
	return res.ID, nil
}

// refused counts and logs a refusal. Internal causes are logged here and
// never reach the client.
func (g *SMTP) refused(c *smtpserver.Conn, what, addr string, err error) {
	reason := submit.ReasonTemporary
	var r *submit.Refusal
	if errors.As(err, &r) {
		reason = r.Reason
	}
	inc(g.Metrics.Rejected, reason)
	attrs := []any{"session", c.ID, "client", c.RemoteAddr.Addr().String(), "user", c.AuthUser,
		"what", what, "addr", addr, "reason", reason, "err", err}
	if r != nil && r.Cause != nil {
		g.Log.Error("refused after a local failure", attrs...)
		return
	}
	g.Log.Info("rejected", attrs...)
}
