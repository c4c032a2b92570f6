// Package transport routes the recipients the queue hands over to where
// they go: the mailbox simulator, local mailboxes (Maildir), inbound HTTP
// routes, or the outbound SMTP client. It also keeps the per-destination
// throttle off local and simulated delivery.
package transport

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/heraldmail/herald/internal/delivery"
	"github.com/heraldmail/herald/internal/local"
	"github.com/heraldmail/herald/internal/local/httproute"
	"github.com/heraldmail/herald/internal/msgauth/inbound"
	"github.com/heraldmail/herald/internal/queue"
	"github.com/heraldmail/herald/internal/simulator"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Directory is what routing reads: local domains, mailboxes and inbound
// HTTP routes.
type Directory interface {
	IsLocalDomain(ctx context.Context, domain string) (bool, error)
	GetUser(ctx context.Context, address string) (store.User, error)
	GetRoute(ctx context.Context, address string) (store.Route, error)
}

// Transport implements queue.Transport.
type Transport struct {
	dir     Directory
	maildir *local.Maildir
	remote  *delivery.Client
	poster  *httproute.Poster
	log     *slog.Logger
	// complaints takes the mailbox simulator's complaints (SetComplaints).
	complaints Complainer
}

// New returns a Transport.
func New(dir Directory, maildir *local.Maildir, remote *delivery.Client, poster *httproute.Poster, log *slog.Logger) *Transport {
	return &Transport{dir: dir, maildir: maildir, remote: remote, poster: poster, log: log}
}

// Deliver delivers rcpts of msg, all in domain, and returns one attempt
// per recipient.
func (t *Transport) Deliver(ctx context.Context, msg *store.Message, domain string, rcpts []store.Recipient, body func() (io.ReadCloser, error)) []queue.Attempt {
	if simulator.IsDomain(domain) {
		// First, before any lookup: the simulator's mail never leaves
		// the process (see simulator.go).
		return deliverSimulated(rcpts)
	}
	isLocal, err := t.dir.IsLocalDomain(ctx, domain)
	if err != nil {
		return allTemporary(rcpts, "directory lookup failed")
	}
	if isLocal {
		folder := ""
		if inbound.Quarantined(msg) {
			folder = ".Junk"
		}
		return t.deliverLocal(ctx, msg, rcpts, folder, body)
	}
	req := &delivery.Request{
		MessageID: msg.ID,
		Sender:    msg.Sender,
		Ret:       msg.Ret,
		EnvID:     msg.EnvID,
		SMTPUTF8:  msg.SMTPUTF8,
		Size:      msg.Size,
		Domain:    domain,
		Body:      body,
	}
	for _, r := range rcpts {
		req.Recipients = append(req.Recipients, delivery.Recipient{ID: r.ID, Address: r.Address, Notify: r.Notify, ORCPT: r.ORCPT})
	}
	results := t.remote.Deliver(ctx, req)
	out := make([]queue.Attempt, 0, len(results))
	for _, r := range results {
		a := queue.Attempt{RecipientID: r.RecipientID, Code: r.Code, Enhanced: r.Enhanced, Text: r.Text,
			RemoteMTA: r.RemoteMTA, TLS: r.TLS, DSNPassedOn: r.DSNPassedOn}
		switch r.Status {
		case delivery.Delivered:
			a.Result = queue.Delivered
		case delivery.Permanent:
			a.Result = queue.Permanent
		default:
			a.Result = queue.Temporary
		}
		out = append(out, a)
	}
	return out
}

// deliverLocal writes the message into each recipient's Maildir. The
// recipients were expanded at acceptance, so each is a mailbox.
func (t *Transport) deliverLocal(ctx context.Context, msg *store.Message, rcpts []store.Recipient, folder string, body func() (io.ReadCloser, error)) []queue.Attempt {
	out := make([]queue.Attempt, 0, len(rcpts))
	for _, r := range rcpts {
		a := queue.Attempt{RecipientID: r.ID, RemoteMTA: "local"}
		if rt, err := t.dir.GetRoute(ctx, r.Address); err == nil && rt.Action == "http" {
			out = append(out, t.deliverHTTP(ctx, msg, r, rt, body))
			continue
		}
		if _, err := t.dir.GetUser(ctx, r.Address); err != nil {
			if errors.Is(err, store.ErrNotFound) {
				a.Result, a.Code, a.Enhanced, a.Text = queue.Permanent, 550, smtp.EnhancedCode{5, 1, 1}, "mailbox does not exist"
			} else {
				a.Result, a.Code, a.Enhanced, a.Text = queue.Temporary, 451, smtp.EnhancedCode{4, 3, 0}, "directory lookup failed"
			}
			out = append(out, a)
			continue
		}
		rc, err := body()
		if err == nil {
			err = t.maildir.Deliver(ctx, r.Address, local.Envelope{ReturnPath: msg.Sender, Folder: folder}, rc)
			rc.Close()
		}
		if e, ok := smtp.AsError(err); ok && e.Permanent() {
			// Maildir classifies its refusals: a loop (5.4.6) or a
			// mailbox it cannot hold (5.1.3) fails now instead of
			// being retried until the message expires.
			if e.Enhanced == local.ErrLoop.Enhanced {
				t.log.Warn("forwarding loop: message refused", "id", msg.ID, "rcpt", r.Address)
			} else {
				t.log.Error("local delivery refused", "id", msg.ID, "rcpt", r.Address, "err", err)
			}
			a.Result, a.Code, a.Enhanced, a.Text = queue.Permanent, e.Code, e.Enhanced, e.Message
		} else if err != nil {
			t.log.Error("local delivery failed", "rcpt", r.Address, "err", err)
			a.Result, a.Code, a.Enhanced, a.Text = queue.Temporary, 451, smtp.EnhancedCode{4, 3, 0}, "local delivery failed"
			if errors.Is(err, store.ErrStorageFull) {
				a.Code, a.Enhanced, a.Text = 452, smtp.EnhancedCode{4, 3, 1}, "mailbox storage full"
			}
		} else {
			a.Result, a.Code, a.Enhanced, a.Text = queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0}, "delivered to maildir"
		}
		out = append(out, a)
	}
	return out
}

// deliverHTTP posts a message for a routed address to its endpoint as JSON.
func (t *Transport) deliverHTTP(ctx context.Context, msg *store.Message, r store.Recipient, rt store.Route, body func() (io.ReadCloser, error)) queue.Attempt {
	a := queue.Attempt{RecipientID: r.ID, RemoteMTA: "http"}
	rc, err := body()
	if err == nil {
		err = t.poster.Post(ctx, rt.URL, rt.Secret, msg, r.Address, rc)
		rc.Close()
	}
	if err == nil {
		a.Result, a.Code, a.Enhanced, a.Text = queue.Delivered, 250, smtp.EnhancedCode{2, 0, 0}, "posted to HTTP route"
		return a
	}
	a.Result, a.Code, a.Enhanced, a.Text = queue.Temporary, 451, smtp.EnhancedCode{4, 4, 0}, "HTTP route failed"
	if e, ok := smtp.AsError(err); ok {
		a.Code, a.Enhanced, a.Text = e.Code, e.Enhanced, e.Message
		if e.Permanent() {
			a.Result = queue.Permanent
		}
	}
	t.log.Info("HTTP route delivery", "rcpt", r.Address, "err", err)
	return a
}

func allTemporary(rcpts []store.Recipient, text string) []queue.Attempt {
	out := make([]queue.Attempt, len(rcpts))
	for i, r := range rcpts {
		out[i] = queue.Attempt{RecipientID: r.ID, Result: queue.Temporary, Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Text: text}
	}
	return out
}
