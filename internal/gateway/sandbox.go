package gateway

import (
	"context"

	"github.com/heraldmail/herald/internal/httpapi"
)

// Sandbox implements httpapi.Sandboxer: the API message goes through every
// check of the pipeline, as Submit's does, without being queued.
func (g *API) Sandbox(ctx context.Context, s *httpapi.Submission) (httpapi.SandboxResult, error) {
	req := submitRequest(s)
	res, err := g.Pipeline.Sandbox(ctx, req)
	if err != nil {
		return httpapi.SandboxResult{}, apiError(err)
	}
	return httpapi.SandboxResult{ID: res.ID, Recipients: res.Recipients, Suppressed: res.Suppressed, Message: res.Message}, nil
}
