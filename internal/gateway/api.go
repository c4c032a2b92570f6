package gateway

import (
	"bytes"
	"context"
	"errors"

	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/submit"
)

// API implements httpapi.Submitter and httpapi.RateLimits over a pipeline:
// an API key sends as its account, through the same path as SMTP.
type API struct {
	Pipeline *submit.Pipeline
}

// Submit queues an API message.
func (g *API) Submit(ctx context.Context, s *httpapi.Submission) (string, error) {
	req := submitRequest(s)
	res, err := g.Pipeline.Submit(ctx, req)
	if err != nil {
		return "", apiError(err)
	}
	return res.ID, nil
}

// RateStatus reports an account's tightest sending limit.
func (g *API) RateStatus(ctx context.Context, account string) (httpapi.RateStatus, bool) {
	st, err := g.Pipeline.AccountRate(ctx, account)
	if err != nil || st.Limit == 0 {
		return httpapi.RateStatus{}, false
	}
	return httpapi.RateStatus{Limit: st.Limit, Remaining: st.Remaining, Reset: st.Reset}, true
}

// apiError gives the API's error types to refusals the HTTP status must
// express precisely: rate limits (429 with Retry-After) and senders the
// account may not use (403). The rest are *smtp.Error replies, which the
// API maps by their codes.
func apiError(err error) error {
	var r *submit.Refusal
	if !errors.As(err, &r) {
		return err
	}
	switch {
	case r.Reason == submit.ReasonRateLimit && r.RetryAfter > 0:
		return &httpapi.RateLimitError{RetryAfter: r.RetryAfter, Message: r.Reply.Message}
	case r.Reason == submit.ReasonSenderNotAllowed && r.Reply.Permanent():
		return &httpapi.ForbiddenError{Message: r.Reply.Message}
	}
	return err
}

// submitRequest is the pipeline's request for an API message: the API key's
// account as the identity, the envelope sender (the From address when the
// API gave none) and everything the API chose for the message.
func submitRequest(s *httpapi.Submission) *submit.Request {
	from := s.EnvelopeFrom
	if from == "" {
		from = s.From
	}
	req := &submit.Request{
		Identity: submit.Identity{Kind: submit.APIKey, Account: s.Account, Source: "api"},
		ID:       s.ID,
		From:     from,
		Body:     bytes.NewReader(s.Raw),
		Tags:     s.Tags,
		Metadata: s.Metadata,
		SendAt:   s.SendAt,
		BatchID:  s.BatchID,

		UnsubscribeGroup: s.UnsubscribeGroup,
	}
	for _, r := range s.Recipients {
		req.Recipients = append(req.Recipients, submit.Recipient{Address: r})
	}
	return req
}
