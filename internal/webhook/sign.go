package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Header names and the User-Agent of webhook requests.
const (
	HeaderSignature = "Herald-Signature"
	HeaderEventID   = "Herald-Event-Id"
	HeaderEventType = "Herald-Event-Type"
	// HeaderEventCount is sent with the requests of batched webhooks:
	// the number of events in the body's "events" array.
	HeaderEventCount = "Herald-Event-Count"
	UserAgent        = "Herald-Webhook/1"
)

// DefaultTolerance is the replay window Verify applies when given none.
const DefaultTolerance = 5 * time.Minute

// Errors returned by Verify.
var (
	ErrSignatureFormat   = errors.New("webhook: malformed signature header")
	ErrSignatureMismatch = errors.New("webhook: signature mismatch")
	ErrSignatureExpired  = errors.New("webhook: signature timestamp outside the tolerance window")
)

// Sign returns the Herald-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex(HMAC-SHA256(secret, "<t>.<body>"))>".
func Sign(secret string, t time.Time, body []byte) string {
	return SignAll([]string{secret}, t, body)
}

// SignAll is Sign with several secrets, as during a secret rotation: one
// v1 per secret, in the order given (the current secret first), all over
// the same "<t>.<body>": "t=<unix seconds>,v1=<new>,v1=<old>". A receiver
// that knows either secret verifies it (Verify accepts any v1).
func SignAll(secrets []string, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=" + ts)
	for _, s := range secrets {
		b.WriteString(",v1=")
		b.WriteString(hex.EncodeToString(mac(s, ts, body)))
	}
	return b.String()
}

func mac(secret, ts string, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write([]byte(ts))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a Herald-Signature header against body, as a receiver
// should: one of its v1 values must be the HMAC of "<t>.<body>" under
// secret, and t must be within tolerance of now (DefaultTolerance if
// tolerance <= 0). Unknown keys in the header are ignored. It returns
// ErrSignatureFormat, ErrSignatureMismatch or ErrSignatureExpired.
func Verify(secret string, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrSignatureFormat
		}
		switch k {
		case "t":
			if ts != "" {
				return ErrSignatureFormat
			}
			ts = v
		case "v1":
			b, err := hex.DecodeString(v)
			if err != nil || len(b) != sha256.Size {
				return ErrSignatureFormat
			}
			sigs = append(sigs, b)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return ErrSignatureFormat
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sec < 0 {
		return ErrSignatureFormat
	}
	want := mac(secret, ts, body)
	match := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			match = true
		}
	}
	if !match {
		return ErrSignatureMismatch
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed at %s, now %s", ErrSignatureExpired,
			time.Unix(sec, 0).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}
