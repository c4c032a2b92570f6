package httpapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"strings"

	"github.com/heraldmail/herald/internal/message"
)

// Sandboxer runs a submission through every check of Submitter.Submit
// (sender domain, suppressions, rate limits, header rules, DKIM) without
// queueing it, and records a "sandboxed" event per recipient. Its errors
// are Submit's. A Submitter that implements it serves sandbox sends.
type Sandboxer interface {
	Sandbox(ctx context.Context, s *Submission) (SandboxResult, error)
}

// SandboxResult is what a real send of the submission would have been.
type SandboxResult struct {
	ID         string   // the queue ID it would have had (the events carry it)
	Recipients []string // final recipients it would queue (aliases expanded)
	Suppressed []string // recipients it would skip: on the suppression list
	Message    []byte   // the message as it would be queued (signed, Date and Message-ID added)
}

// maxSandboxRaw bounds the rendered message returned in a sandbox
// response; a larger one is described by its size only.
const maxSandboxRaw = 1 << 20

// sandboxResponse is the body of a 200 to a sandbox POST /v1/messages.
type sandboxResponse struct {
	ID         string   `json:"id"`
	Sandbox    bool     `json:"sandbox"`
	MessageID  string   `json:"message_id,omitempty"` // the RFC 5322 Message-ID
	Recipients []string `json:"recipients"`
	Suppressed []string `json:"suppressed"`
	Size       int      `json:"size"`
	Raw        string   `json:"raw,omitempty"` // base64 of the message, when at most maxSandboxRaw bytes
}

// sandbox answers a send with "sandbox": true: everything is checked and
// rendered, nothing is queued or sent. Idempotency keys are not used (a
// sandbox send changes nothing worth replaying, and must not take the key
// from the real send that follows it). It is charged to the rate limits
// like a real send (see submit.Pipeline.Sandbox).
func (a *api) sandbox(w http.ResponseWriter, r *http.Request, sub *Submission) error {
	sb, ok := a.sub.(Sandboxer)
	if !ok {
		return errInvalid("sandbox", "sandbox sends are not available on this server")
	}
	res, err := sb.Sandbox(r.Context(), sub)
	a.rateHeaders(w, r, sub.Account)
	if err != nil {
		return err
	}
	out := sandboxResponse{ID: res.ID, Sandbox: true, MessageID: messageID(res.Message), Recipients: res.Recipients,
		Suppressed: res.Suppressed, Size: len(res.Message)}
	if out.Recipients == nil {
		out.Recipients = []string{}
	}
	if out.Suppressed == nil {
		out.Suppressed = []string{}
	}
	if len(res.Message) <= maxSandboxRaw {
		out.Raw = base64.StdEncoding.EncodeToString(res.Message)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// messageID returns the Message-ID field of msg's header section, or "".
func messageID(msg []byte) string {
	end := bytes.Index(msg, []byte("\r\n\r\n"))
	if end < 0 {
		end = len(msg)
	}
	ids := message.FieldValues(message.Fields(msg[:end]), "Message-ID")
	if len(ids) == 0 {
		return ""
	}
	return strings.TrimSpace(ids[0])
}

// sandboxBatchResponse is the body of a 200 to a sandbox request with
// personalizations.
type sandboxBatchResponse struct {
	Sandbox  bool           `json:"sandbox"`
	BatchID  string         `json:"batch_id,omitempty"` // the batch_id given, if any
	Messages []batchMessage `json:"messages"`
}

// sandboxBatch checks and renders every personalization of a checked
// request as sendBatch would send it, queueing nothing and creating no
// batch: 200 with each message's would-be queue ID, Message-ID, size and
// suppressed recipients, or its refusal ("sandboxed" events are recorded
// as for a single sandbox send). Rendered messages are not returned: a
// batch's could be 1,000 times the size of one.
func (a *api) sandboxBatch(w http.ResponseWriter, r *http.Request, c *caller, req *MessageRequest, ct *content, sched *Submission) error {
	sb, ok := a.sub.(Sandboxer)
	if !ok {
		return errInvalid("sandbox", "sandbox sends are not available on this server")
	}
	ctx := r.Context()
	res := sandboxBatchResponse{Sandbox: true, BatchID: sched.BatchID, Messages: make([]batchMessage, len(req.Personalizations))}
	o := &outgoing{content: ct, batchID: sched.BatchID, sendAt: sched.SendAt}
	forEach(len(req.Personalizations), func(i int) {
		m, out := a.personalization(req, i, o)
		sub, msgID, err := a.prepare(ctx, c, m)
		var sr SandboxResult
		if err == nil {
			sr, err = sb.Sandbox(ctx, sub)
		}
		if err != nil {
			res.Messages[i] = a.refuse(out, sched.BatchID, i, err)
			return
		}
		out.ID, out.MessageID, out.Status, out.Size, out.Suppressed = sr.ID, msgID, batchSandboxed, len(sr.Message), sr.Suppressed
		res.Messages[i] = out
	})
	a.rateHeaders(w, r, c.account())
	if err := allRefused(res.Messages); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}
