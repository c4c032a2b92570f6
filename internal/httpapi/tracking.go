package httpapi

import (
	"context"
	"errors"

	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/tracking"
)

// This file is open and click tracking of JSON messages (issue 12): the
// step of sendMessage that rewrites the HTML part (before the MIME
// message is built, so before DKIM signing), and the accounts' default.

// TrackingOptions is the tracking object of POST /v1/messages; a field
// left out takes the account's default (off unless set on the account).
type TrackingOptions struct {
	Opens  *bool `json:"opens,omitempty"`  // add a 1x1 pixel to the HTML part
	Clicks *bool `json:"clicks,omitempty"` // rewrite the HTML part's http(s) links
}

// Tracker rewrites a message's HTML part for open and click tracking
// (tracking.Tracker).
type Tracker interface {
	Rewrite(html string, t tracking.Target) (string, tracking.Result)
}

// trackMessage rewrites req.HTML for the tracking the message asks for,
// or its account's default: links through Herald and a pixel, with tokens
// naming the account, the queue ID the message will have and its
// recipient when it has only one. Text parts and raw uploads are never
// changed. The account's default is read once per request (ct), not once
// per message of a batch.
func (a *api) trackMessage(ctx context.Context, account, id string, req *MessageRequest, ct *content) error {
	opt := req.Tracking
	if opt == nil {
		opt = &TrackingOptions{}
	}
	if a.tracker == nil {
		if (opt.Opens != nil && *opt.Opens) || (opt.Clicks != nil && *opt.Clicks) {
			return errInvalid("tracking", "open and click tracking is not available on this server")
		}
		return nil
	}
	if req.HTML == "" {
		return nil
	}
	var want store.AccountTracking
	if opt.Opens == nil || opt.Clicks == nil {
		ct.trackingOnce.Do(func() {
			ac, err := a.p.GetAccount(ctx, account)
			switch {
			case err == nil:
				ct.tracking = ac.Tracking
			case !errors.Is(err, store.ErrNotFound):
				ct.trackingErr = err
			}
		})
		if ct.trackingErr != nil {
			return ct.trackingErr
		}
		want = ct.tracking
	}
	if opt.Opens != nil {
		want.Opens = *opt.Opens
	}
	if opt.Clicks != nil {
		want.Clicks = *opt.Clicks
	}
	if !want.Opens && !want.Clicks {
		return nil
	}
	tg := tracking.Target{Account: account, MessageID: id, Opens: want.Opens, Clicks: want.Clicks}
	if list := append(append(append([]string(nil), req.To...), req.Cc...), req.Bcc...); len(list) == 1 {
		if addr, err := parseMailbox("to", list[0]); err == nil {
			tg.Recipient = addr.Address
		}
	}
	req.HTML, _ = a.tracker.Rewrite(req.HTML, tg)
	return nil
}

// trackingPatch changes only the tracking settings given.
type trackingPatch struct {
	Opens  *bool `json:"opens,omitempty"`
	Clicks *bool `json:"clicks,omitempty"`
}

// patchTracking applies p to the account's tracking default and stores
// it; changed reports whether p asked for anything.
func (a *api) patchTracking(ctx context.Context, ac *store.Account, p *trackingPatch) (changed bool, err error) {
	if p == nil {
		return false, nil
	}
	t := ac.Tracking
	if p.Opens != nil {
		t.Opens = *p.Opens
	}
	if p.Clicks != nil {
		t.Clicks = *p.Clicks
	}
	if err := a.p.UpdateAccountTracking(ctx, ac.ID, t); err != nil {
		if errors.Is(err, store.ErrNotFound) {
			return true, errNotFound("no such account")
		}
		return true, err
	}
	ac.Tracking = t
	return true, nil
}
