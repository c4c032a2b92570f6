package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Error is an API error: an HTTP status, a stable snake_case code, a human
// message safe to show, and for validation errors the offending field
// ("to[2]", "attachments[0].content"). A validation of a whole request
// lists every problem in Errors; Field and Message are then the first's.
type Error struct {
	Status  int
	Code    string
	Message string
	Field   string
	// Errors lists every problem of a request that has several (each
	// with its field path, "personalizations[2].to[0]", "data.user.first");
	// Field and Message then describe the first. Empty for single errors.
	Errors []FieldError
	// RetryAfter, if positive, is sent as the Retry-After header.
	RetryAfter time.Duration
}

// FieldError is one problem of a request with several: the field (a
// JSON path such as "data.user.first" or "html") and what is wrong.
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

// Error implements error.
func (e *Error) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s (%s)", e.Code, e.Message, e.Field)
	}
	return e.Code + ": " + e.Message
}

var errInternal = &Error{Status: http.StatusInternalServerError, Code: "internal_error", Message: "internal error; the request was logged"}

func errNotFound(msg string) *Error {
	return &Error{Status: http.StatusNotFound, Code: "not_found", Message: msg}
}

func errInvalid(field, format string, args ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Code: "validation_failed", Field: field, Message: fmt.Sprintf(format, args...)}
}

func errForbidden(msg string) *Error {
	return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: msg}
}

// maxFieldErrors bounds the problems listed in one error response; a
// request with thousands of bad addresses gets the first ones.
const maxFieldErrors = 100

// fieldErrors collects the validation problems of a request, so that one
// answer lists them all. The same problem of the same field is kept once
// (a top-level field shared by every personalization is reported once).
type fieldErrors struct {
	list    []FieldError
	seen    map[FieldError]bool
	dropped int
}

// add records a problem of field.
func (fe *fieldErrors) add(field, format string, args ...any) {
	fe.addErr(FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

// addErr records a problem.
func (fe *fieldErrors) addErr(e FieldError) {
	if fe.seen[e] {
		return
	}
	if len(fe.list) >= maxFieldErrors {
		fe.dropped++
		return
	}
	if fe.seen == nil {
		fe.seen = make(map[FieldError]bool)
	}
	fe.seen[e] = true
	fe.list = append(fe.list, e)
}

// check records err if it is not nil: a validation *Error by its field
// and message (and its own list, if it has one).
func (fe *fieldErrors) check(err error) {
	if err == nil {
		return
	}
	var ae *Error
	if errors.As(err, &ae) {
		if len(ae.Errors) > 0 {
			for _, e := range ae.Errors {
				fe.addErr(e)
			}
			return
		}
		fe.addErr(FieldError{Field: ae.Field, Message: ae.Message})
		return
	}
	fe.addErr(FieldError{Message: err.Error()})
}

// empty reports whether no problem was found.
func (fe *fieldErrors) empty() bool { return len(fe.list) == 0 }

// err returns nil, or a 400 validation_failed listing every problem, its
// field and message those of the first.
func (fe *fieldErrors) err() error {
	if len(fe.list) == 0 {
		return nil
	}
	first := fe.list[0]
	return &Error{Status: http.StatusBadRequest, Code: "validation_failed", Field: first.Field, Message: first.Message,
		Errors: append([]FieldError(nil), fe.list...)}
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Code    string       `json:"code"`
	Message string       `json:"message"`
	Field   string       `json:"field,omitempty"`
	Errors  []FieldError `json:"errors,omitempty"`
}

func writeError(w http.ResponseWriter, e *Error) {
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(e.RetryAfter.Seconds()))))
	}
	if e.Status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="herald"`)
	}
	writeJSON(w, e.Status, errorBody{errorDetail{Code: e.Code, Message: e.Message, Field: e.Field, Errors: e.Errors}})
}

// fail maps any error to its API form and writes it; internal errors are
// logged, never shown.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := a.toAPIError(err)
	if e == errInternal {
		a.log.Error("http api: internal error", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, e)
}

func (a *api) toAPIError(err error) *Error {
	var ae *Error
	var rl *RateLimitError
	var fe *ForbiddenError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &rl):
		ra := rl.RetryAfter
		if ra < time.Second {
			ra = time.Second
		}
		return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", Message: rl.Error(), RetryAfter: ra}
	case errors.As(err, &fe):
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: fe.Message}
	case errors.As(err, &mbe):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large", Message: fmt.Sprintf("request body exceeds %d bytes", mbe.Limit)}
	}
	if se, ok := smtp.AsError(err); ok {
		return smtpToAPI(se)
	}
	switch {
	case errors.Is(err, store.ErrNotFound):
		return errNotFound("not found")
	case errors.Is(err, store.ErrExists):
		return &Error{Status: http.StatusConflict, Code: "conflict", Message: "already exists"}
	}
	return errInternal
}

// smtpToAPI maps a Submitter's SMTP reply: temporary failures are 503,
// policy (5.7.x) refusals 403, size 413, other permanent ones 422.
func smtpToAPI(se *smtp.Error) *Error {
	msg := fmt.Sprintf("%s (%d %s)", se.Message, se.Code, se.Enhanced)
	switch {
	case se.Enhanced == (smtp.EnhancedCode{4, 5, 3}):
		return &Error{Status: http.StatusBadRequest, Code: "validation_failed", Field: "to", Message: msg}
	case se.Temporary():
		if se.Enhanced == (smtp.EnhancedCode{4, 7, 1}) && strings.Contains(strings.ToLower(se.Message), "rate") {
			return &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", Message: msg, RetryAfter: time.Minute}
		}
		return &Error{Status: http.StatusServiceUnavailable, Code: "temporarily_unavailable", Message: msg, RetryAfter: 30 * time.Second}
	case se.Enhanced[1] == 7:
		return &Error{Status: http.StatusForbidden, Code: "forbidden", Message: msg}
	case se.Enhanced == (smtp.EnhancedCode{5, 3, 4}):
		return &Error{Status: http.StatusRequestEntityTooLarge, Code: "payload_too_large", Message: msg}
	case se.Enhanced[1] == 6:
		return &Error{Status: http.StatusBadRequest, Code: "invalid_message", Message: msg}
	}
	return &Error{Status: http.StatusUnprocessableEntity, Code: "rejected", Message: msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
}

// marshalJSON encodes v as writeJSON does, for a body that is kept (an
// idempotent send's response) and written later by writeJSONBytes.
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encoding response: %w", err)
	}
	return buf.Bytes(), nil
}

// writeJSONBytes writes a body encoded by marshalJSON.
func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// decodeJSON reads a JSON request body of at most limit bytes into v:
// application/json only, unknown fields and trailing data refused.
func decodeJSON(w http.ResponseWriter, r *http.Request, limit int64, v any) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &Error{Status: http.StatusUnsupportedMediaType, Code: "unsupported_media_type", Message: "Content-Type must be application/json"}
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Message: "unexpected data after the JSON object"}
	}
	return nil
}

// jsonError turns a decoding error into a 400 naming the field when known.
func jsonError(err error) error {
	var mbe *http.MaxBytesError
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &mbe):
		return err
	case errors.As(err, &te):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Field: te.Field, Message: fmt.Sprintf("%s: expected %s, got %s", te.Field, te.Type, te.Value)}
	case errors.As(err, &se):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Message: fmt.Sprintf("malformed JSON at byte %d", se.Offset)}
	case errors.Is(err, io.EOF):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Message: "empty request body"}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Message: "truncated JSON"}
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		f = strings.Trim(f, `"`)
		return &Error{Status: http.StatusBadRequest, Code: "unknown_field", Field: f, Message: fmt.Sprintf("unknown field %q", f)}
	}
	return &Error{Status: http.StatusBadRequest, Code: "invalid_json", Message: "invalid JSON"}
}
