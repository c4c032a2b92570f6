// Package httproute delivers a message for a local address to an HTTP
// endpoint: it parses the message (go-message) into JSON — envelope,
// decoded headers, addresses, subject, date, text and HTML bodies,
// attachments and the raw message — and POSTs it, signed like Herald's
// webhooks (see package webhook for the Herald-Signature header).
//
// A 2xx answer means delivered. Any other 4xx except 408 and 429 is a
// permanent failure (550 5.0.0; 413 gives 552 5.3.4); 5xx, 408, 429,
// redirects that are not followed, timeouts and connection errors are
// temporary (451 4.4.x) and the queue retries. Errors returned by Post
// wrap an *smtp.Error whose text is safe to put in a DSN.
package httproute

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
	"github.com/heraldmail/herald/internal/webhook"
)

// Request headers besides webhook.HeaderSignature.
const (
	HeaderMessageID = "Herald-Message-Id" // the queue ID
	UserAgent       = "Herald-Route/1"
)

// Defaults for Options.
const (
	DefaultTimeout  = 30 * time.Second
	DefaultMaxSize  = 25 << 20 // raw message bytes
	DefaultMaxParts = 100
)

// Options configure a Poster. Zero fields take the defaults.
type Options struct {
	Client   *http.Client  // default webhook.NewClient(Timeout); its redirect policy is replaced by webhook.CheckRedirect
	Clock    clock.Clock   // signature timestamps; default clock.Real
	Timeout  time.Duration // per request, DefaultTimeout
	MaxSize  int64         // largest raw message posted, DefaultMaxSize; larger is a permanent 552 5.3.4
	MaxParts int           // MIME parts parsed, DefaultMaxParts; later parts stay only in "raw"
}

// Poster posts messages to HTTP routes. It is safe for concurrent use.
type Poster struct {
	opt    Options
	client *http.Client
}

// New returns a Poster.
func New(opt Options) *Poster {
	if opt.Timeout <= 0 {
		opt.Timeout = DefaultTimeout
	}
	if opt.MaxSize <= 0 {
		opt.MaxSize = DefaultMaxSize
	}
	if opt.MaxParts <= 0 {
		opt.MaxParts = DefaultMaxParts
	}
	if opt.Clock == nil {
		opt.Clock = clock.Real{}
	}
	p := &Poster{opt: opt}
	if opt.Client == nil {
		p.client = webhook.NewClient(opt.Timeout)
	} else {
		p.client = webhook.SafeClient(opt.Client)
	}
	return p
}

// defaultClient is shared by Post calls without a client, so that they
// share connections.
var defaultClient = sync.OnceValue(func() *http.Client { return webhook.NewClient(DefaultTimeout) })

// Post delivers msg for rcpt to endpoint with default options and client
// (nil for a shared default one). See Poster.Post.
func Post(ctx context.Context, client *http.Client, endpoint, secret string, msg *store.Message, rcpt string, raw io.Reader) error {
	if client == nil {
		client = defaultClient()
	}
	return New(Options{Client: client}).Post(ctx, endpoint, secret, msg, rcpt, raw)
}

var (
	errTooBig   = smtp.Error{Code: 552, Enhanced: smtp.EnhancedCode{5, 3, 4}, Message: "Message too big for the HTTP route"}
	errBadRoute = smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 3, 5}, Message: "HTTP route misconfigured"}
	errRead     = smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 3, 0}, Message: "Local error reading the message"}
)

// Post parses the raw message (as stored, Herald's added headers
// included) and POSTs its JSON form (Payload) for recipient rcpt to
// endpoint, signed with secret unless it is empty. It returns nil once
// the endpoint answered 2xx; otherwise an error wrapping an *smtp.Error
// that classifies the failure as temporary or permanent.
func (p *Poster) Post(ctx context.Context, endpoint, secret string, msg *store.Message, rcpt string, raw io.Reader) error {
	if u, err := url.Parse(endpoint); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		e := errBadRoute
		return fmt.Errorf("httproute: invalid URL: %w", &e)
	}
	data, err := io.ReadAll(io.LimitReader(raw, p.opt.MaxSize+1))
	if err != nil {
		e := errRead
		return fmt.Errorf("httproute: reading message %s: %v: %w", msg.ID, err, &e)
	}
	if int64(len(data)) > p.opt.MaxSize {
		e := errTooBig
		return fmt.Errorf("httproute: message %s over %d bytes: %w", msg.ID, p.opt.MaxSize, &e)
	}
	body, err := json.Marshal(Parse(msg, rcpt, data, p.opt.MaxParts))
	if err != nil {
		e := errRead
		return fmt.Errorf("httproute: encoding message %s: %v: %w", msg.ID, err, &e)
	}

	ctx, cancel := context.WithTimeout(ctx, p.opt.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
	if err != nil {
		e := errBadRoute
		return fmt.Errorf("httproute: %v: %w", err, &e)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", UserAgent)
	req.Header.Set(HeaderMessageID, msg.ID)
	if secret != "" {
		req.Header.Set(webhook.HeaderSignature, webhook.Sign(secret, p.opt.Clock.Now(), body))
	}
	code, text := webhook.Do(p.client, req, 64<<10)
	if text == "" {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		text = "timeout after " + p.opt.Timeout.String()
	}
	return fmt.Errorf("httproute: POST to %s: %s: %w", req.URL.Host, text, classify(code))
}

// classify maps an HTTP status (0: no response) to an SMTP error.
func classify(code int) *smtp.Error {
	switch {
	case code == 0:
		return &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 1}, Message: "HTTP route endpoint did not answer, will retry"}
	case code == http.StatusRequestEntityTooLarge:
		return &smtp.Error{Code: 552, Enhanced: smtp.EnhancedCode{5, 3, 4}, Message: "HTTP route endpoint refused the message size (HTTP 413)"}
	case code >= 400 && code < 500 && code != http.StatusRequestTimeout && code != http.StatusTooManyRequests:
		return &smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 0, 0}, Message: "HTTP route endpoint rejected the message (HTTP " + strconv.Itoa(code) + ")"}
	default:
		return &smtp.Error{Code: 451, Enhanced: smtp.EnhancedCode{4, 4, 0}, Message: "HTTP route endpoint failed (HTTP " + strconv.Itoa(code) + "), will retry"}
	}
}
