// Package smtp holds the SMTP vocabulary shared by every Herald stage:
// replies with enhanced status codes, mailbox addresses and ESMTP parameters.
// It imports nothing else of Herald's.
package smtp

import (
	"errors"
	"fmt"
)

// EnhancedCode is an RFC 3463 enhanced status code such as 5.7.1.
type EnhancedCode [3]int

// String formats the code as "class.subject.detail".
func (c EnhancedCode) String() string {
	return fmt.Sprintf("%d.%d.%d", c[0], c[1], c[2])
}

// Error is the one error type that crosses stage boundaries in Herald.
// It carries an SMTP reply code, an enhanced status code and a text that is
// safe to show to the peer (it never contains internal details).
type Error struct {
	Code     int          // basic reply code, e.g. 550
	Enhanced EnhancedCode // enhanced status code, e.g. {5,7,1}
	Message  string       // human text, safe to send to the client
}

// Errorf builds an *Error with a formatted message.
func Errorf(code int, enhanced EnhancedCode, format string, args ...any) *Error {
	return &Error{Code: code, Enhanced: enhanced, Message: fmt.Sprintf(format, args...)}
}

// Error implements the error interface as "550 5.7.1 text".
func (e *Error) Error() string {
	return fmt.Sprintf("%d %s %s", e.Code, e.Enhanced, e.Message)
}

// Temporary reports whether the error is a transient (4xx) failure.
func (e *Error) Temporary() bool { return e.Code >= 400 && e.Code < 500 }

// Permanent reports whether the error is a permanent (5xx) failure.
func (e *Error) Permanent() bool { return e.Code >= 500 }

// AsError returns the *Error inside err, if any.
func AsError(err error) (*Error, bool) {
	var e *Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// Common replies. They are values, not pointers, so callers cannot mutate the
// shared copy; take the address of a copy when an error is needed.
var (
	ErrRelayDenied     = Error{550, EnhancedCode{5, 7, 1}, "Relaying denied: authentication required"}
	ErrSenderNotOwned  = Error{550, EnhancedCode{5, 7, 1}, "Sender address not allowed for this user"}
	ErrNoSuchUser      = Error{550, EnhancedCode{5, 1, 1}, "No such user here"}
	ErrTooManyRcpts    = Error{452, EnhancedCode{4, 5, 3}, "Too many recipients"}
	ErrMessageTooBig   = Error{552, EnhancedCode{5, 3, 4}, "Message size exceeds fixed limit"}
	ErrLoopDetected    = Error{554, EnhancedCode{5, 4, 6}, "Too many Received headers: mail loop detected"}
	ErrStorageFull     = Error{452, EnhancedCode{4, 3, 1}, "Insufficient system storage, try again later"}
	ErrLocalError      = Error{451, EnhancedCode{4, 3, 0}, "Local error in processing, try again later"}
	ErrBareLineFeed    = Error{550, EnhancedCode{5, 6, 0}, "Bare CR or LF in message: lines must end with CRLF"}
	ErrAuthRequiresTLS = Error{530, EnhancedCode{5, 7, 0}, "Must issue a STARTTLS command first"}
	ErrAuthFailed      = Error{535, EnhancedCode{5, 7, 8}, "Authentication credentials invalid"}
	ErrTooManyErrors   = Error{421, EnhancedCode{4, 7, 0}, "Too many errors, closing connection"}
	ErrRateLimited     = Error{451, EnhancedCode{4, 7, 1}, "Rate limit exceeded, try again later"}
)
