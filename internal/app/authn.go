package app

import (
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// authenticator checks SMTP logins. (Being replaced by auth.Authenticator.)
type authenticator struct {
	users     store.Directory
	authFail  *ratelimit.AuthFailures
	authCache *authCache
	hashSlots chan struct{}
	log       *slog.Logger
}

func (b *authenticator) Authenticate(ctx context.Context, ip netip.Addr, username, password string) error {
	wait, locked := b.authFail.Check(ip)
	if locked {
		b.log.Warn("auth refused: client locked out", "client", ip.String(), "user", username)
		return smtp.Errorf(454, smtp.EnhancedCode{4, 7, 0}, "Too many authentication failures, try again later")
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	user := strings.ToLower(username)
	u, err := b.users.GetUser(ctx, user)
	ok := false
	switch {
	case err == nil && b.authCache.ok(user, password, u.PasswordHash, time.Now()):
		ok = true
	case err == nil:
		b.hashSlots <- struct{}{}
		ok, err = auth.CheckPassword(u.PasswordHash, password)
		<-b.hashSlots
		if err != nil {
			b.log.Error("auth: bad stored hash", "user", user, "err", err)
		}
		if ok {
			b.authCache.add(user, password, u.PasswordHash, time.Now())
		}
	case errors.Is(err, store.ErrNotFound):
		b.hashSlots <- struct{}{}
		auth.DummyCheck()
		<-b.hashSlots
	default:
		b.log.Error("auth: user lookup failed", "user", user, "err", err)
		e := smtp.ErrLocalError
		return &e
	}
	if !ok {
		b.authFail.Fail(ip)
		e := smtp.ErrAuthFailed
		return &e
	}
	b.authFail.Succeed(ip)
	return nil
}
