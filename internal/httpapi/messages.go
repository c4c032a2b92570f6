package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	gomessage "github.com/emersion/go-message"
	gomail "github.com/emersion/go-message/mail"
	"github.com/emersion/go-message/textproto"
	"github.com/heraldmail/herald/internal/store"
)

// sendResponse is the body of a 202 to POST /v1/messages for one message.
type sendResponse struct {
	ID        string `json:"id"`                   // queue ID
	MessageID string `json:"message_id,omitempty"` // the Message-ID header field, angle brackets included
}

// outgoing is one message of a JSON send on its way to the Submitter:
// the request as it will be sent (for a batch, one personalization
// applied over the top level) and the content it shares with the other
// messages of the request.
type outgoing struct {
	req     *MessageRequest
	content *content
	batchID string    // the batch the message joins, "" for none
	sendAt  time.Time // when it is scheduled; zero sends at once
}

// prepare builds one message of a JSON send into its Submission and
// returns it with its Message-ID. The steps each message goes through are
// here, in order; a feature that changes a message adds its step. The
// stored template was rendered before the request was checked
// (renderTemplates).
func (a *api) prepare(ctx context.Context, c *caller, o *outgoing) (*Submission, string, error) {
	// The queue ID is chosen first: tracking and unsubscribe links name it.
	queueID := store.NewID()
	if err := a.trackMessage(ctx, c.account(), queueID, o.req, o.content); err != nil {
		return nil, "", err
	}
	b, err := writeMessage(o.req, o.content, a.cfg.Hostname, a.clock.Now(), a.cfg.MaxRecipients)
	if err != nil {
		return nil, "", err
	}
	sub := &Submission{ID: queueID, Account: c.account(), EnvelopeFrom: b.envelopeFrom, From: b.from, Recipients: b.recipients, Raw: b.raw,
		Tags: o.req.Tags, Metadata: o.req.Metadata, BatchID: o.batchID, SendAt: o.sendAt}
	if err := a.listUnsubscribe(ctx, c.account(), o.req, sub); err != nil {
		return nil, "", err
	}
	return sub, b.messageID, nil
}

// sendOne builds one message of a JSON send and submits it, returning its
// queue ID and Message-ID.
func (a *api) sendOne(ctx context.Context, c *caller, o *outgoing) (id, messageID string, err error) {
	sub, messageID, err := a.prepare(ctx, c, o)
	if err != nil {
		return "", "", err
	}
	id, err = a.sub.Submit(ctx, sub)
	if err != nil {
		return "", "", err
	}
	return id, messageID, nil
}

// sandboxOne builds one message of a JSON send like sendOne and answers
// with what a real send would have queued, queueing nothing (sandbox.go).
func (a *api) sandboxOne(w http.ResponseWriter, r *http.Request, c *caller, o *outgoing) error {
	sub, _, err := a.prepare(r.Context(), c, o)
	if err != nil {
		return err
	}
	return a.sandbox(w, r, sub)
}

// sendMessage handles POST /v1/messages: a JSON MessageRequest (one
// message, or a batch with personalizations), or a raw RFC 5322 message
// with Content-Type message/rfc822.
func (a *api) sendMessage(w http.ResponseWriter, r *http.Request, c *caller) error {
	a.allowUpload(w, r) // authenticated (send scope): the body may be large
	idemKey := r.Header.Get("Idempotency-Key")
	if idemKey != "" && !validIdemKey(idemKey) {
		return &Error{Status: http.StatusBadRequest, Code: "validation_failed", Field: "Idempotency-Key", Message: "an Idempotency-Key is 1 to 128 characters of letters, digits and -_.:"}
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	// The fingerprint binds an Idempotency-Key to this exact request: the
	// body is hashed as it is read.
	fp := newFingerprint(r)
	r.Body = struct {
		io.Reader
		io.Closer
	}{io.TeeReader(r.Body, fp), r.Body}
	// send queues the request's message(s) and returns the 202 body.
	var send func() (any, error)
	switch mt {
	case "message/rfc822":
		sub, err := a.rawSubmission(w, r)
		if err != nil {
			return err
		}
		sub.Account = c.account()
		if err := a.scheduleQuery(r.Context(), sub, r.URL.Query()); err != nil {
			return err
		}
		send = func() (any, error) {
			id, err := a.sub.Submit(r.Context(), sub)
			return sendResponse{ID: id, MessageID: rawMessageID(sub.Raw)}, err
		}
	case "application/json":
		for k := range r.URL.Query() {
			return errInvalid(k, "query parameter %q applies to raw uploads (message/rfc822) only; give the envelope in the JSON body", k)
		}
		var req MessageRequest
		if err := decodeJSON(w, r, a.cfg.MaxMessageBytes, &req); err != nil {
			return err
		}
		// The template is rendered first, so that the checks see the parts
		// as they will be sent; its problems and the request's are
		// answered together.
		var ec fieldErrors
		if err := a.renderTemplates(r.Context(), c.account(), &req, &ec); err != nil {
			return err
		}
		rendered := ec.empty()
		// send_at and batch_id: checked once, the same for every message.
		sched := &Submission{Account: c.account()}
		if err := collect(&ec, "", a.scheduleJSON(r.Context(), sched, &req)); err != nil {
			return err
		}
		a.schedulePersonalizations(&req, &ec)
		ct := checkRequest(&req, requestLimits{maxRcpts: a.cfg.MaxRecipients, maxBatchRcpts: a.cfg.MaxBatchRecipients, maxBatchBytes: a.cfg.MaxBatchBytes}, &ec)
		if !rendered {
			ec.drop("text") // the parts a failed template leaves empty are not a second problem
		}
		if err := ec.err(); err != nil {
			return err
		}
		switch {
		case req.Sandbox && req.Personalizations != nil:
			return a.sandboxBatch(w, r, c, &req, ct, sched)
		case req.Sandbox:
			return a.sandboxOne(w, r, c, &outgoing{req: &req, content: ct, sendAt: sched.SendAt, batchID: sched.BatchID})
		case req.Personalizations != nil:
			send = func() (any, error) {
				// Checked here, not before: a retry with the
				// Idempotency-Key replays without it.
				if err := a.batchRateCheck(r.Context(), c.account(), ct.batchRcpts); err != nil {
					return nil, err
				}
				return a.sendBatch(r.Context(), c, &req, ct, sched)
			}
		default:
			send = func() (any, error) {
				id, msgID, err := a.sendOne(r.Context(), c, &outgoing{req: &req, content: ct, sendAt: sched.SendAt, batchID: sched.BatchID})
				return sendResponse{ID: id, MessageID: msgID}, err
			}
		}
	default:
		return &Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "Content-Type must be application/json or message/rfc822"}
	}
	run := func() ([]byte, error) {
		res, err := send()
		if err != nil {
			return nil, err
		}
		return marshalJSON(res)
	}
	var body []byte
	var err error
	replayed := false
	if idemKey != "" {
		body, replayed, err = a.idempotent(r.Context(), c.account(), idemKey, fp.sum(), run)
	} else {
		body, err = run()
	}
	a.rateHeaders(w, r, c.account())
	if err != nil {
		return err
	}
	if replayed {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	var single sendResponse
	if json.Unmarshal(body, &single) == nil && single.ID != "" {
		w.Header().Set("Location", "/v1/messages/"+single.ID)
	}
	writeJSONBytes(w, http.StatusAccepted, body)
	return nil
}

// rawMessageID returns the Message-ID header field of a raw message, or
// "" (the acceptance path then adds one the API does not know).
func rawMessageID(raw []byte) string {
	th, err := textproto.ReadHeader(bufio.NewReader(bytes.NewReader(raw)))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(th.Get("Message-Id"))
}

// rateHeaders describes the account's sending limit (counted in
// recipients) on a send's response, as the cloud APIs do.
func (a *api) rateHeaders(w http.ResponseWriter, r *http.Request, account string) {
	if a.rates == nil {
		return
	}
	st, ok := a.rates.RateStatus(r.Context(), account)
	if !ok {
		return
	}
	h := w.Header()
	h.Set("X-RateLimit-Limit", strconv.Itoa(st.Limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(st.Remaining))
	h.Set("X-RateLimit-Reset", strconv.Itoa(int(math.Ceil(st.Reset.Seconds()))))
}

func validIdemKey(k string) bool {
	if len(k) == 0 || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

// Idempotency keys are kept with store.Platform.PutIdempotency, which only
// inserts. A key is a chain of slots: slot 0 is the key itself, slot n the
// key + "#n" (a client key cannot contain '#'). The request that inserts a
// slot's reservation ("res:UNIXTIME:FINGERPRINT") owns it and sends; it
// then records the outcome under slot + "#r": "json:" and the 202 body
// (older versions stored "ok:ID"), or "err" when the Submitter refused,
// which frees the key for the next slot (a retry after 429 must send). A
// batch some of whose messages were queued records its 202 body with the
// refusals, like any other. A retry reads the outcome by inserting
// "pending" there: finding a body it replays it; finding nothing, the
// owner is still at
// work (on another node, or it died) and the retry gets 409. Reservations
// older than the TTL are skipped. Requests on one node are serialised per
// key, so the usual sequential retries never see "pending".
//
// The fingerprint (see fingerprint) ties the key to one request: a request
// with another fingerprint gets 422 idempotency_key_reused instead of the
// first request's message ID, unless the first request was refused (then
// nothing was sent under the key and the next slot is free). Reservations
// written before fingerprints were recorded ("res:UNIXTIME") match any
// request, as they did then.
const (
	maxIdemSlots   = 20
	idemPending    = "pending"
	idemFailed     = "err"
	idemOKPrefix   = "ok:"   // older versions: the queue ID
	idemJSONPrefix = "json:" // the 202 body
	idemResPrefix  = "res:"
)

var (
	errIdemInProgress = &Error{Status: http.StatusConflict, Code: "idempotency_key_in_use", Message: "a request with this Idempotency-Key is in progress or did not complete; retry later or use a new key"}
	errIdemReused     = &Error{Status: http.StatusUnprocessableEntity, Code: "idempotency_key_reused", Field: "Idempotency-Key", Message: "this Idempotency-Key was used for a different request (method, path, query, Content-Type or body differ); use a new key for a new message"}
)

// parseReservation splits a stored reservation into its time and
// fingerprint ("" for reservations older than fingerprints).
func parseReservation(v string) (t time.Time, fp string, ok bool) {
	rest, ok := strings.CutPrefix(v, idemResPrefix)
	if !ok {
		return time.Time{}, "", false
	}
	sec, fp, _ := strings.Cut(rest, ":")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		return time.Time{}, "", false
	}
	return time.Unix(n, 0), fp, true
}

// idempotent runs send, which returns the 202 body, at most once per key
// and fingerprint, and returns its body or the first run's.
func (a *api) idempotent(ctx context.Context, account, key, fingerprint string, send func() ([]byte, error)) (body []byte, replayed bool, err error) {
	unlock := a.idem.lock(account + "\x00" + key)
	defer unlock()
	now := a.clock.Now()
	reservation := idemResPrefix + strconv.FormatInt(now.Unix(), 10) + ":" + fingerprint
	for n := 0; n < maxIdemSlots; n++ {
		slot := key
		if n > 0 {
			slot = key + "#" + strconv.Itoa(n)
		}
		stored, err := a.p.PutIdempotency(ctx, account, slot, reservation, now)
		if err == nil {
			body, err := send()
			outcome := idemFailed
			if err == nil {
				outcome = idemJSONPrefix + string(body)
			}
			// Record the outcome even if the client went away.
			if _, perr := a.p.PutIdempotency(context.WithoutCancel(ctx), account, slot+"#r", outcome, now); perr != nil && !errors.Is(perr, store.ErrExists) {
				a.log.Error("http api: recording idempotency outcome", "account", account, "key", key, "err", perr)
			}
			return body, false, err
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, false, fmt.Errorf("idempotency key: %w", err)
		}
		t, storedFP, ok := parseReservation(stored)
		if ok && now.Sub(t) >= a.cfg.IdempotencyTTL {
			continue // expired: the next slot starts a new window
		}
		mismatch := storedFP != "" && storedFP != fingerprint
		res, err := a.p.PutIdempotency(ctx, account, slot+"#r", idemPending, now)
		if err == nil {
			if mismatch {
				return nil, false, errIdemReused
			}
			return nil, false, errIdemInProgress
		}
		if !errors.Is(err, store.ErrExists) {
			return nil, false, fmt.Errorf("idempotency key: %w", err)
		}
		switch {
		case res == idemFailed:
			continue
		case mismatch:
			return nil, false, errIdemReused
		case strings.HasPrefix(res, idemJSONPrefix):
			return []byte(strings.TrimPrefix(res, idemJSONPrefix)), true, nil
		case strings.HasPrefix(res, idemOKPrefix):
			body, err := marshalJSON(sendResponse{ID: strings.TrimPrefix(res, idemOKPrefix)})
			return body, true, err
		default:
			return nil, false, errIdemInProgress
		}
	}
	return nil, false, &Error{Status: http.StatusConflict, Code: "idempotency_key_exhausted", Message: "too many failed attempts with this Idempotency-Key; use a new key"}
}

// fingerprint hashes the parts of a POST /v1/messages request that decide
// what is sent: method, path, query (canonical: keys sorted), media type
// with its parameters (canonical form) and the body bytes as received. Each
// part but the body, which comes last, is length-prefixed, so no two
// requests share a fingerprint by shifting bytes from one part to the next.
type fingerprint struct {
	h hash.Hash
}

func newFingerprint(r *http.Request) *fingerprint {
	f := &fingerprint{h: sha256.New()}
	ctype := r.Header.Get("Content-Type")
	if mt, params, err := mime.ParseMediaType(ctype); err == nil {
		ctype = mime.FormatMediaType(mt, params)
	}
	for _, part := range []string{r.Method, r.URL.Path, r.URL.Query().Encode(), ctype} {
		f.field(part)
	}
	return f
}

func (f *fingerprint) field(s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	f.h.Write(n[:])
	f.h.Write([]byte(s))
}

// Write adds body bytes.
func (f *fingerprint) Write(p []byte) (int, error) { return f.h.Write(p) }

// sum returns the fingerprint, base64url: it goes into the stored
// reservation.
func (f *fingerprint) sum() string {
	return base64.RawURLEncoding.EncodeToString(f.h.Sum(nil))
}

// rawSubmission reads a message/rfc822 upload. The envelope comes from the
// query: from (default: the From header's address) and to, repeatable
// (default: the To, Cc and Bcc header addresses); tag is repeatable. Bare
// LF line endings become CRLF; a Bcc field is removed.
func (a *api) rawSubmission(w http.ResponseWriter, r *http.Request) (*Submission, error) {
	q := r.URL.Query() // only from, to and tag: checked by wrap (route.params)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.cfg.MaxMessageBytes))
	if err != nil {
		return nil, err
	}
	raw, err := toCRLF(body)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReader(bytes.NewReader(raw))
	th, err := textproto.ReadHeader(br)
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_message", Message: "the message header cannot be parsed"}
	}
	h := gomail.Header{Header: gomessage.Header{Header: th}}
	froms, err := h.AddressList("From")
	if err != nil || len(froms) == 0 {
		return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_message", Field: "From", Message: "the message needs a valid From header field"}
	}
	hfrom, err := parseMailbox("From", froms[0].Address)
	if err != nil {
		return nil, err
	}
	sub := &Submission{From: hfrom.Address, EnvelopeFrom: hfrom.Address, Tags: q["tag"]}
	if v := q.Get("from"); v != "" {
		ef, err := parseMailbox("from", v)
		if err != nil {
			return nil, err
		}
		sub.EnvelopeFrom = ef.Address
	}
	var rcpts []string
	if to := q["to"]; len(to) > 0 {
		for i, s := range to {
			ad, err := parseMailbox(fmt.Sprintf("to[%d]", i), s)
			if err != nil {
				return nil, err
			}
			rcpts = append(rcpts, ad.Address)
		}
	} else {
		for _, f := range []string{"To", "Cc", "Bcc"} {
			list, err := h.AddressList(f)
			if err != nil {
				return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_message", Field: f, Message: "the " + f + " header field cannot be parsed"}
			}
			for i, ad := range list {
				pa, err := parseMailbox(fmt.Sprintf("%s[%d]", f, i), ad.Address)
				if err != nil {
					return nil, err
				}
				rcpts = append(rcpts, pa.Address)
			}
		}
	}
	seen := make(map[string]bool)
	for _, rc := range rcpts {
		if k := strings.ToLower(rc); !seen[k] {
			seen[k] = true
			sub.Recipients = append(sub.Recipients, rc)
		}
	}
	if len(sub.Recipients) == 0 {
		return nil, errInvalid("to", "no recipients: give ?to= or To/Cc/Bcc header fields")
	}
	if len(sub.Recipients) > a.cfg.MaxRecipients {
		return nil, errInvalid("to", "too many recipients (at most %d)", a.cfg.MaxRecipients)
	}
	if err := checkTags(sub.Tags, nil); err != nil {
		return nil, err
	}
	// Date and Message-ID, when missing, are added by the acceptance path
	// (as for every submission); only Bcc is the API's to remove.
	if th.Has("Bcc") {
		th.Del("Bcc")
		var out bytes.Buffer
		if err := textproto.WriteHeader(&out, th); err != nil {
			return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_message", Message: "the message header cannot be rewritten"}
		}
		if _, err := io.Copy(&out, br); err != nil {
			return nil, err
		}
		raw = out.Bytes()
	}
	sub.Raw = raw
	return sub, nil
}

// toCRLF turns bare LF into CRLF and refuses a bare CR.
func toCRLF(b []byte) ([]byte, error) {
	if len(b) == 0 {
		return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_message", Message: "empty message"}
	}
	lfs := bytes.Count(b, []byte{'\n'}) - bytes.Count(b, []byte("\r\n"))
	if bytes.Count(b, []byte{'\r'}) != bytes.Count(b, []byte("\r\n")) {
		return nil, &Error{Status: http.StatusBadRequest, Code: "invalid_message", Message: "bare CR in message: lines must end with CRLF or LF"}
	}
	if lfs == 0 {
		return b, nil
	}
	out := make([]byte, 0, len(b)+lfs)
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out, nil
}

// recipientView is one recipient's state in GET /v1/messages/{id}.
type recipientView struct {
	Address     string     `json:"address"`
	Status      string     `json:"status"`
	Attempts    int        `json:"attempts"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
	LastReply   string     `json:"last_reply,omitempty"`
	RemoteMTA   string     `json:"remote_mta,omitempty"`
	Updated     *time.Time `json:"updated_at,omitempty"`
}

// messageView is the body of GET /v1/messages/{id}.
type messageView struct {
	ID         string            `json:"id"`
	Sender     string            `json:"sender,omitempty"`
	Received   *time.Time        `json:"received,omitempty"`
	Size       int64             `json:"size,omitempty"`
	InQueue    bool              `json:"in_queue"`
	Tags       []string          `json:"tags,omitempty"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	Recipients []recipientView   `json:"recipients"`
	Events     []eventView       `json:"events"`
}

// maxTimeline bounds the events returned with a message.
const maxTimeline = 1000

func (a *api) getMessage(w http.ResponseWriter, r *http.Request, c *caller) error {
	id := r.PathValue("id")
	if id == "" || len(id) > 64 {
		return errNotFound("no such message")
	}
	evs, err := a.p.ListEvents(r.Context(), store.EventFilter{Account: c.account(), MessageID: id, Limit: maxTimeline})
	if err != nil {
		return err
	}
	m, err := a.msgs.Get(r.Context(), id)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	if m != nil && accountOf(m.Account) != c.account() {
		m = nil
	}
	if m == nil && len(evs) == 0 {
		return errNotFound("no such message")
	}
	v := messageView{ID: id, Recipients: []recipientView{}, Events: make([]eventView, 0, len(evs))}
	for _, e := range evs {
		v.Events = append(v.Events, toEventView(e))
	}
	if m != nil {
		v.InQueue = true
		v.Sender, v.Received, v.Size, v.Tags, v.Metadata = m.Sender, ts(m.Received), m.Size, m.Tags, m.Metadata
		for _, rc := range m.Recipients {
			rv := recipientView{Address: rc.Address, Status: string(rc.Status), Attempts: rc.Attempts, LastReply: rc.LastReply, RemoteMTA: rc.RemoteMTA, Updated: ts(rc.UpdatedAt)}
			if !rc.Status.Final() {
				rv.NextAttempt = ts(rc.NextAttempt)
			}
			v.Recipients = append(v.Recipients, rv)
		}
		writeJSON(w, http.StatusOK, v)
		return nil
	}
	// The message left the queue: every recipient's state is its last event.
	idx := make(map[string]int)
	for _, e := range evs {
		if v.Sender == "" {
			v.Sender, v.Tags, v.Metadata = e.Sender, e.Tags, e.Metadata
		}
		if e.Type == store.EventAccepted && v.Received == nil {
			v.Received = ts(e.Time)
		}
		if e.Recipient == "" {
			continue
		}
		i, ok := idx[e.Recipient]
		if !ok {
			i = len(v.Recipients)
			idx[e.Recipient] = i
			v.Recipients = append(v.Recipients, recipientView{Address: e.Recipient})
		}
		rv := &v.Recipients[i]
		if tracked(e.Type) {
			continue // opens and clicks say nothing of the delivery
		}
		if e.Type != store.EventComplained {
			rv.Status = eventStatus(e.Type)
		}
		if e.Attempt > rv.Attempts {
			rv.Attempts = e.Attempt
		}
		if e.Reply != "" {
			rv.LastReply = e.Reply
		}
		if e.RemoteMTA != "" {
			rv.RemoteMTA = e.RemoteMTA
		}
		rv.Updated = ts(e.Time)
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// eventStatus maps an event type to the recipient status it leaves.
func eventStatus(t string) string {
	switch t {
	case store.EventAccepted:
		return string(store.StatusQueued)
	case store.EventBounced:
		return string(store.StatusFailed)
	}
	return t // deferred, delivered, expired, suppressed, rejected
}

// accountOf treats an empty account as the default one.
func accountOf(a string) string {
	if a == "" {
		return store.DefaultAccount
	}
	return a
}

// ts returns nil for the zero time so it is omitted from JSON.
func ts(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// eventView is an event as the API shows it.
type eventView struct {
	ID        int64             `json:"id"`
	Time      time.Time         `json:"time"`
	Type      string            `json:"type"`
	MessageID string            `json:"message_id,omitempty"`
	Recipient string            `json:"recipient,omitempty"`
	Sender    string            `json:"sender,omitempty"`
	RemoteMTA string            `json:"remote_mta,omitempty"`
	Reply     string            `json:"reply,omitempty"`
	Enhanced  string            `json:"enhanced_status,omitempty"` // as in the webhook payload
	TLS       string            `json:"tls,omitempty"`
	Bounce    string            `json:"bounce,omitempty"`
	Attempt   int               `json:"attempt,omitempty"`
	Tags      []string          `json:"tags,omitempty"`
	Metadata  map[string]string `json:"metadata,omitempty"`
}

func toEventView(e store.Event) eventView {
	return eventView{ID: e.ID, Time: e.Time.UTC(), Type: e.Type, MessageID: e.MessageID, Recipient: e.Recipient,
		Sender: e.Sender, RemoteMTA: e.RemoteMTA, Reply: e.Reply, Enhanced: e.Enhanced, TLS: e.TLS,
		Bounce: e.Bounce, Attempt: e.Attempt, Tags: e.Tags, Metadata: e.Metadata}
}
