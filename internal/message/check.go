// Package message reads and checks message content as it arrives from an
// SMTP client: a strict DATA reader (only CRLF.CRLF ends the data, bare CR,
// bare LF and NUL are refused), a BDAT content reader with the same checks,
// a streaming header-section scanner and a Message-ID generator. Everything
// streams: no reader here holds a message in memory.
package message

import (
	"github.com/heraldmail/herald/internal/smtp"
)

// DefaultMaxLineLength is the RFC 5321 §4.5.3.1.6 text line limit: 998
// characters plus CRLF.
const DefaultMaxLineLength = 1000

// Limits bounds what a client may send as message content.
type Limits struct {
	MaxBytes      int64 // content bytes after dot-unstuffing; 0 means no limit
	MaxLineLength int   // bytes per line including CRLF; 0 means DefaultMaxLineLength
	MaxReceived   int   // Received fields allowed in the header section; 0 means no check
}

// Errors returned by the readers. Each is an *smtp.Error that can be sent to
// the client as it is.
var (
	ErrBareLineFeed  = ptr(smtp.ErrBareLineFeed)
	ErrNUL           = &smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 6, 0}, Message: "NUL byte in message"}
	ErrLineTooLong   = &smtp.Error{Code: 550, Enhanced: smtp.EnhancedCode{5, 6, 0}, Message: "Line too long: at most 998 characters per line"}
	ErrMessageTooBig = ptr(smtp.ErrMessageTooBig)
	ErrLoopDetected  = ptr(smtp.ErrLoopDetected)
)

func ptr(e smtp.Error) *smtp.Error { return &e }

// checker validates message content (CRLF line endings, dot-stuffing
// already removed) as it streams by.
type checker struct {
	lim     Limits
	n       int64
	lineLen int
	prevCR  bool
	hdr     *HeaderScanner
}

func newChecker(lim Limits) checker {
	if lim.MaxLineLength <= 0 {
		lim.MaxLineLength = DefaultMaxLineLength
	}
	c := checker{lim: lim}
	if lim.MaxReceived > 0 {
		c.hdr = NewHeaderScanner("Received")
	}
	return c
}

// check validates p, which follows everything given before. It returns the
// first rule broken, if any.
func (c *checker) check(p []byte) *smtp.Error {
	c.n += int64(len(p))
	if c.lim.MaxBytes > 0 && c.n > c.lim.MaxBytes {
		return ErrMessageTooBig
	}
	for _, b := range p {
		if b > '\r' && !c.prevCR { // the common case
			c.lineLen++
			if c.lineLen > c.lim.MaxLineLength {
				return ErrLineTooLong
			}
			continue
		}
		if c.prevCR && b != '\n' {
			return ErrBareLineFeed
		}
		c.lineLen++
		switch b {
		case '\r':
			c.prevCR = true
			continue
		case '\n':
			if !c.prevCR {
				return ErrBareLineFeed
			}
			if c.lineLen > c.lim.MaxLineLength {
				return ErrLineTooLong
			}
			c.lineLen = 0
		case 0:
			return ErrNUL
		}
		c.prevCR = false
		if c.lineLen > c.lim.MaxLineLength {
			return ErrLineTooLong
		}
	}
	if c.hdr != nil && !c.hdr.Done() {
		c.hdr.Write(p)
		if c.hdr.Count("Received") > c.lim.MaxReceived {
			return ErrLoopDetected
		}
	}
	return nil
}

// finish checks the end of the content.
func (c *checker) finish() *smtp.Error {
	if c.prevCR {
		return ErrBareLineFeed
	}
	return nil
}
