package gateway

import (
	"bytes"
	"context"

	"github.com/heraldmail/herald/internal/httpapi"
	"github.com/heraldmail/herald/internal/submit"
)

// Sandbox implements httpapi.Sandboxer: the API message goes through every
// check of the pipeline, as Submit's does, without being queued.
func (g *API) Sandbox(ctx context.Context, s *httpapi.Submission) (httpapi.SandboxResult, error) {
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

		UnsubscribeGroup: s.UnsubscribeGroup,
	}
	for _, r := range s.Recipients {
		req.Recipients = append(req.Recipients, submit.Recipient{Address: r})
	}
	res, err := g.Pipeline.Sandbox(ctx, req)
	if err != nil {
		return httpapi.SandboxResult{}, apiError(err)
	}
	return httpapi.SandboxResult{ID: res.ID, Recipients: res.Recipients, Suppressed: res.Suppressed, Message: res.Message}, nil
}
