package submit

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/heraldmail/herald/internal/ratelimit"
	"github.com/heraldmail/herald/internal/smtp"
)

// RateStatus is an account's sending limit as the API reports it
// (X-RateLimit-Limit, -Remaining, -Reset).
type RateStatus = ratelimit.Status

// rateKey is one limiter a transaction is charged to.
type rateKey struct {
	key    string
	limits ratelimit.Limits
	whose  string // for the refusal text
}

// rateKeys returns the limiters of the identity: a user's own limits and
// its account's; an API key's or a trusted client's account. Mail from
// anonymous peers and Herald's own mail are not rate limited here.
func (t *Tx) rateKeys(ctx context.Context) ([]rateKey, error) {
	if t.ratesSet {
		return t.rates, nil
	}
	keys, err := t.lookupRateKeys(ctx)
	if err == nil {
		t.rates, t.ratesSet = keys, true
	}
	return keys, err
}

func (t *Tx) lookupRateKeys(ctx context.Context) ([]rateKey, error) {
	var keys []rateKey
	switch t.ident.Kind {
	case Anonymous, System:
		return nil, nil
	case User:
		keys = append(keys, rateKey{key: "user:" + t.ident.User, limits: t.p.cfg.UserLimits, whose: "user " + t.ident.User})
	}
	acct, err := t.p.st.GetAccount(ctx, t.ident.account())
	if err != nil {
		return nil, fmt.Errorf("account %s: %w", t.ident.account(), err)
	}
	l := ratelimit.Limits{PerMinute: acct.Limits.PerMinute, PerHour: acct.Limits.PerHour, PerDay: acct.Limits.PerDay}
	return append(keys, rateKey{key: "account:" + acct.ID, limits: l, whose: "account " + acct.ID}), nil
}

// hasLimit reports whether l limits anything.
func hasLimit(l ratelimit.Limits) bool {
	return l.PerMinute > 0 || l.PerHour > 0 || l.PerDay > 0
}

// checkRates refuses early (at MAIL FROM) an identity that could not send
// n more recipients now; it counts nothing (one read of each limited
// key's slots).
func (t *Tx) checkRates(ctx context.Context, n int) error {
	keys, err := t.rateKeys(ctx)
	if err != nil {
		return internal(err)
	}
	now := t.p.clock.Now()
	for _, k := range keys {
		if !hasLimit(k.limits) {
			continue
		}
		slots, err := t.p.st.RateSlots(ctx, k.key, now)
		if err != nil {
			return internal(fmt.Errorf("sending rate of %s: %w", k.whose, err))
		}
		if ok, wait := ratelimit.Check(slots, k.limits, n, now); !ok {
			return t.rateRefusal(k, n, wait, ratelimit.StatusOf(slots, k.limits, now))
		}
	}
	return nil
}

// takeRates charges n recipients to every limiter of the identity in the
// store (the same windows on every node), all or nothing per limiter, and
// returns the account limit's state afterwards. A charge is one statement
// of the store; with two limited keys (a user and its account) both are
// checked first, so that a refusal of the second does not charge the
// first, unless a concurrent message got in between.
func (t *Tx) takeRates(ctx context.Context, n int) (RateStatus, error) {
	keys, err := t.rateKeys(ctx)
	if err != nil {
		return RateStatus{}, internal(err)
	}
	limited := 0
	for _, k := range keys {
		if hasLimit(k.limits) {
			limited++
		}
	}
	if limited > 1 {
		if err := t.checkRates(ctx, n); err != nil {
			return RateStatus{}, err
		}
	}
	var st RateStatus
	for _, k := range keys {
		if !hasLimit(k.limits) {
			st = RateStatus{}
			continue
		}
		now := t.p.clock.Now()
		ok, slots, err := t.p.st.TakeRate(ctx, k.key, k.limits, n, now)
		if err != nil {
			return RateStatus{}, internal(fmt.Errorf("sending rate of %s: %w", k.whose, err))
		}
		st = ratelimit.StatusOf(slots, k.limits, now)
		if !ok {
			// Over the limit (or a concurrent message took the room).
			_, wait := ratelimit.Check(slots, k.limits, n, now)
			return RateStatus{}, t.rateRefusal(k, n, wait, st)
		}
	}
	return st, nil
}

func (t *Tx) rateRefusal(k rateKey, n int, wait time.Duration, st RateStatus) *Refusal {
	if wait == time.Duration(math.MaxInt64) {
		// More recipients than a whole window allows: never possible.
		r := refuse(ReasonRateLimit, 550, smtp.EnhancedCode{5, 7, 1},
			"The message has %d recipients; the sending limit of %s allows at most %d per %s", n, k.whose, st.Limit, windowName(st.Window))
		r.Rate = &st
		return r
	}
	if wait <= 0 {
		wait = time.Second // refused by the store while its slots, read after, show room: a concurrent change
	}
	r := refuse(ReasonRateLimit, 451, smtp.EnhancedCode{4, 7, 1},
		"Sending rate limit of %s exceeded, try again in %s", k.whose, wait.Round(time.Second))
	r.RetryAfter, r.Rate = wait, &st
	return r
}

func windowName(d time.Duration) string {
	switch d {
	case time.Minute:
		return "minute"
	case time.Hour:
		return "hour"
	}
	return "day"
}

// AccountRate returns the state of an account's tightest sending limit
// (a zero Limit when it has none).
func (p *Pipeline) AccountRate(ctx context.Context, account string) (RateStatus, error) {
	acct, err := p.st.GetAccount(ctx, account)
	if err != nil {
		return RateStatus{}, err
	}
	l := ratelimit.Limits{PerMinute: acct.Limits.PerMinute, PerHour: acct.Limits.PerHour, PerDay: acct.Limits.PerDay}
	if !hasLimit(l) {
		return RateStatus{}, nil
	}
	now := p.clock.Now()
	slots, err := p.st.RateSlots(ctx, "account:"+acct.ID, now)
	if err != nil {
		return RateStatus{}, err
	}
	return ratelimit.StatusOf(slots, l, now), nil
}
