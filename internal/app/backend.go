package app

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/local"
	"github.com/heraldmail/herald/internal/policy"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/smtpserver"
	"github.com/heraldmail/herald/internal/spool"
	"github.com/heraldmail/herald/internal/store"
)

// backend implements smtpserver.Backend: policy decisions, then the spool.
type backend struct {
	store     store.Store
	policy    *policy.Policy
	spool     *spool.Spool
	auth      *auth.Authenticator // AUTH with lockout, slow-down, cache and bounded hashing
	checks    *checker
	platform  *platform
	disk      *diskGuard // refuses new mail when the spool's disk is nearly full
	reportDir string     // DMARC aggregate reports kept here
	log       *slog.Logger
	metrics   *appMetrics
}

func (b *backend) client(c *smtpserver.Conn) policy.Client {
	return policy.Client{IP: c.RemoteAddr.Addr(), AuthUser: c.AuthUser}
}

// Connect accepts every client; connection caps are enforced by the
// listener before this point.
func (b *backend) Connect(ctx context.Context, c *smtpserver.Conn) error {
	b.metrics.sessions.Inc(c.Mode.String())
	return nil
}

// Authenticate checks a password, slowing and then locking out an address
// that keeps failing (see auth.Authenticator).
func (b *backend) Authenticate(ctx context.Context, c *smtpserver.Conn, username, password string) error {
	outcome, err := b.auth.Check(ctx, c.RemoteAddr.Addr(), username, password)
	switch outcome {
	case auth.LockedOut:
		b.log.Warn("auth refused: client locked out", "session", c.ID, "client", c.RemoteAddr.Addr().String(), "user", username)
		b.metrics.rejected.Inc("auth_lockout")
	case auth.Rejected:
		b.metrics.authFailures.Inc()
	}
	return err
}

// Mail checks the envelope sender: ownership for our users, SPF for mail
// from outside.
func (b *backend) Mail(ctx context.Context, c *smtpserver.Conn, env *smtpserver.Envelope) error {
	cl := b.client(c)
	if err := b.disk.check(env.Size); err != nil {
		b.metrics.rejected.Inc("storage_full")
		return err
	}
	if err := b.policy.CheckSender(ctx, cl, env.From); err != nil {
		b.reject(c, "sender", env.From, err)
		return err
	}
	if cl.AuthUser != "" {
		if err := b.platform.takeUser(ctx, cl.AuthUser); err != nil {
			b.reject(c, "rate", env.From, err)
			return err
		}
	}
	if !b.policy.MayRelay(cl) {
		env.Meta = b.checks.spf(ctx, cl.IP, c.HELO, env.From)
	}
	return nil
}

// Rcpt checks one recipient: local addresses must exist, others need relay
// permission.
func (b *backend) Rcpt(ctx context.Context, c *smtpserver.Conn, env *smtpserver.Envelope, r smtpserver.Rcpt) error {
	if b.platform.isVERP(r.Address) && b.isLocal(ctx, r.Address) {
		return nil // a bounce or complaint for a message we sent
	}
	cl := b.client(c)
	if err := b.policy.CheckRecipient(ctx, cl, r.Address); err != nil {
		b.reject(c, "recipient", r.Address, err)
		return err
	}
	local := b.isLocal(ctx, r.Address)
	if b.policy.MayRelay(cl) && !local {
		if err := b.platform.checkSuppressed(ctx, b.platform.accountOf(ctx, cl.AuthUser), r.Address); err != nil {
			b.reject(c, "suppressed", r.Address, err)
			return err
		}
	}
	if res, ok := env.Meta.(spfResults); ok && local {
		if err := b.checks.spfAtRcpt(ctx, res, cl.IP, smtp.DomainOf(r.Address)); err != nil {
			b.metrics.rejected.Inc("spf_fail")
			b.log.Info("rejected", "session", c.ID, "client", cl.IP.String(), "what", "recipient", "addr", r.Address,
				"from", env.From, "reason", "spf_fail")
			return err
		}
	}
	return nil
}

// isLocal reports whether addr is in a local domain.
func (b *backend) isLocal(ctx context.Context, addr string) bool {
	a, err := smtp.ParseAddress(addr)
	if err != nil {
		return false
	}
	ok, err := b.store.IsLocalDomain(ctx, a.Domain)
	return err == nil && ok
}

func (b *backend) reject(c *smtpserver.Conn, what, addr string, err error) {
	reason := what
	if e, ok := smtp.AsError(err); ok {
		switch {
		case e.Enhanced == smtp.EnhancedCode{5, 7, 1} && what == "recipient":
			reason = "relay_denied"
		case e.Enhanced == smtp.EnhancedCode{5, 7, 1}:
			reason = "sender_not_owned"
		case e.Enhanced == smtp.EnhancedCode{5, 1, 1}:
			reason = "unknown_recipient"
		case e.Temporary():
			reason = "temporary"
		}
	}
	b.metrics.rejected.Inc(reason)
	b.log.Info("rejected", "session", c.ID, "client", c.RemoteAddr.Addr().String(), "user", c.AuthUser,
		"what", what, "addr", addr, "reason", reason, "err", err)
}

// Deliver expands local recipients (aliases, catch-alls, forwards) and
// spools the message.
func (b *backend) Deliver(ctx context.Context, c *smtpserver.Conn, env *smtpserver.Envelope, body io.Reader) (string, error) {
	// Bounces and complaints to our VERP addresses are consumed here.
	var verps []string
	normal := env.Recipients[:0:0]
	for _, r := range env.Recipients {
		if b.platform.isVERP(r.Address) && b.isLocal(ctx, r.Address) {
			verps = append(verps, r.Address)
		} else {
			normal = append(normal, r)
		}
	}
	if len(verps) > 0 {
		data, err := io.ReadAll(body)
		if err != nil {
			return "", err
		}
		for _, v := range verps {
			if err := b.platform.consumeBounce(ctx, v, bytes.NewReader(data)); err != nil {
				b.log.Error("processing bounce", "session", c.ID, "rcpt", v, "err", err)
				e := smtp.ErrLocalError
				return "", &spool.Failure{Reply: &e, Cause: err}
			}
		}
		if len(normal) == 0 {
			return "bounce-processed", nil
		}
		body = bytes.NewReader(data)
	}
	rcpts, err := b.expand(ctx, normal)
	if err != nil {
		return "", err
	}
	msg := &store.Message{
		Sender:     env.From,
		Ret:        env.Ret,
		EnvID:      env.EnvID,
		ClientIP:   c.RemoteAddr.Addr().String(),
		HELO:       c.HELO,
		AuthUser:   c.AuthUser,
		Source:     c.Mode.String(),
		SMTPUTF8:   env.SMTPUTF8,
		Recipients: rcpts,
	}
	var procs []spool.Processor
	if cl := b.client(c); b.policy.MayRelay(cl) {
		// Our own users' and trusted clients' mail: sign it, charge it to
		// the user's account, and give it a VERP sender if so configured.
		msg.Account = b.platform.accountOf(ctx, cl.AuthUser)
		if b.platform.cfg.VERP == "all" && cl.AuthUser != "" {
			msg.ID = spool.NewID()
			msg.Sender = b.platform.verpSender(msg.ID, msg.Sender)
		}
		procs = append(procs, NewSigner(b.store, b.log))
	} else {
		if len(rcpts) > 0 {
			if a, err := b.store.DomainAccount(ctx, smtp.DomainOf(rcpts[0].Address)); err == nil {
				msg.Account = a
			}
		}
		// Mail from outside: authenticate it.
		spfRes, ok := env.Meta.(spfResults)
		if !ok {
			spfRes = b.checks.spf(ctx, cl.IP, c.HELO, env.From)
		}
		rcptDomain := ""
		if len(normal) > 0 {
			rcptDomain = smtp.DomainOf(normal[0].Address) // the policy of the domain addressed
		}
		procs = append(procs, b.checks.processor(ctx, cl.IP, c.HELO, env.From, spfRes, rcptDomain),
			&reportCatcher{dir: b.reportDir, log: b.log, complaint: b.platform.complaint})
	}
	id, err := b.spool.Accept(ctx, msg, body, procs...)
	if err != nil {
		if e, ok := smtp.AsError(err); ok && e.Enhanced == (smtp.EnhancedCode{5, 7, 1}) {
			b.metrics.rejected.Inc("dmarc_reject")
		}
		var f *spool.Failure
		if errors.As(err, &f) {
			b.log.Error("spool failed", "session", c.ID, "err", f.Cause)
			if errors.Is(err, store.ErrStorageFull) {
				b.metrics.rejected.Inc("storage_full")
			}
		}
		return "", err
	}
	b.metrics.accepted.Inc(c.Mode.String())
	b.log.Info("queued", "session", c.ID, "id", id, "from", env.From, "rcpts", len(rcpts), "size", msg.Size,
		"client", msg.ClientIP, "user", c.AuthUser)
	return id, nil
}

// expand turns the RCPT TO list into final recipients: local addresses go
// through aliases (each target keeps the original address as ORCPT for
// DSNs), remote ones are kept. Duplicates are removed.
func (b *backend) expand(ctx context.Context, in []smtpserver.Rcpt) ([]store.Recipient, error) {
	out := make([]store.Recipient, 0, len(in))
	seen := make(map[string]bool, len(in))
	add := func(addr, notify, orcpt string) {
		key := strings.ToLower(addr)
		if seen[key] {
			return
		}
		seen[key] = true
		out = append(out, store.Recipient{Address: addr, Notify: notify, ORCPT: orcpt})
	}
	for _, r := range in {
		addr, err := smtp.ParseAddress(r.Address)
		if err != nil {
			return nil, err
		}
		isLocal, err := b.store.IsLocalDomain(ctx, addr.Domain)
		if err != nil {
			e := smtp.ErrLocalError
			return nil, &spool.Failure{Reply: &e, Cause: err}
		}
		if !isLocal {
			add(r.Address, r.Notify, r.ORCPT)
			continue
		}
		if rt, err := b.store.GetRoute(ctx, addr.String()); err == nil && rt.Action == "http" {
			add(strings.ToLower(addr.String()), r.Notify, r.ORCPT)
			continue
		}
		targets, err := local.Expand(ctx, b.store, addr.String(), nil)
		if err != nil {
			if errors.Is(err, store.ErrNotFound) {
				// Removed between RCPT and DATA.
				e := smtp.ErrNoSuchUser
				return nil, &e
			}
			e := smtp.ErrLocalError
			return nil, &spool.Failure{Reply: &e, Cause: err}
		}
		orcpt := r.ORCPT
		if orcpt == "" && (len(targets) != 1 || !strings.EqualFold(targets[0], addr.String())) {
			orcpt = "rfc822;" + r.Address
		}
		for _, t := range targets {
			add(t, r.Notify, orcpt)
		}
	}
	return out, nil
}
