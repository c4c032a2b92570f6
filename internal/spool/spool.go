// Package spool accepts messages into the queue: it assigns the queue ID,
// streams the body into the store, makes it durable, and hands the message
// straight to a delivery worker when one is free, so that the common case
// needs no polling.
package spool

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Dispatcher is the part of the queue scheduler the spool uses to hand over
// fresh messages without a round trip through polling.
type Dispatcher interface {
	// Reserve takes a free worker, if there is one.
	Reserve() bool
	// Unreserve returns a worker Reserve took that will not be used.
	Unreserve()
	// Submit hands the reserved worker a message enqueued leased to this
	// node, with the lease's token.
	Submit(store.Lease)
	// Notify says a message was stored without a reserved worker.
	Notify()
	// LeaseTimeout is how long a handed-over message is leased for (the
	// worker renews it).
	LeaseTimeout() time.Duration
}

// Spool writes accepted messages to the store.
type Spool struct {
	q     store.Queue
	disp  Dispatcher // may be nil (CLI tools): the server finds the message by polling
	clock clock.Clock
	guard func(size int64) error
}

// SetGuard installs a check run on every message's final size before it is
// committed (e.g. free disk space); its error refuses the message.
func (s *Spool) SetGuard(g func(size int64) error) { s.guard = g }

// New returns a spool writing to q. disp may be nil.
func New(q store.Queue, disp Dispatcher, clk clock.Clock) *Spool {
	return &Spool{q: q, disp: disp, clock: clk}
}

// Processor is store.Processor: a hook that sees a message as it streams
// into the spool.
type Processor = store.Processor

// MaxHeaderBytes bounds the header section the spool holds in memory for
// processors. A larger header is refused (552 5.3.4).
const MaxHeaderBytes = 1 << 20

var errHeaderTooLarge = smtp.Error{Code: 552, Enhanced: smtp.EnhancedCode{5, 3, 4}, Message: "Message header too large"}

// headerReaders are the buffered readers Accept reads header sections
// with, reused from message to message.
var headerReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}

// Accept stores msg with the body read from r, run through procs.
// msg.Received is set here, and msg.ID unless the caller chose it (NewID). It returns only when the message is on stable
// storage. Errors from reading r (an *smtp.Error for bad client data) and
// processor verdicts are returned as they are; a full disk becomes
// 452 4.3.1; other store failures 451 4.3.0.
func (s *Spool) Accept(ctx context.Context, msg *store.Message, r io.Reader, procs ...Processor) (string, error) {
	body, err := s.q.NewBody()
	if err != nil {
		return "", storeError(err)
	}
	fail := func(err error) (string, error) {
		body.Abort()
		for _, p := range procs {
			p.Abort()
		}
		if _, ok := smtp.AsError(err); ok {
			return "", err
		}
		return "", storeError(err)
	}
	var w io.Writer = body
	if len(procs) > 0 {
		br := headerReaders.Get().(*bufio.Reader)
		br.Reset(r)
		defer func() {
			br.Reset(nil)
			headerReaders.Put(br)
		}()
		hdr, err := readHeader(br, MaxHeaderBytes)
		if err != nil {
			return fail(err)
		}
		for _, p := range procs {
			if hdr, err = p.Header(ctx, msg, hdr); err != nil {
				return fail(err)
			}
		}
		ws := []io.Writer{body}
		for _, p := range procs {
			ws = append(ws, p)
		}
		w = io.MultiWriter(ws...)
		if _, err := w.Write(hdr); err != nil {
			return fail(err)
		}
		r = br
	}
	if _, err := io.Copy(w, r); err != nil {
		return fail(err)
	}
	for _, p := range procs {
		h, err := p.Finish(ctx, msg)
		if err != nil {
			return fail(err)
		}
		msg.Headers = append(msg.Headers, h...)
	}
	if s.guard != nil {
		if err := s.guard(body.Size()); err != nil {
			return fail(err)
		}
	}
	return s.Enqueue(ctx, msg, body)
}

// readHeader reads the header section, through the blank line that ends it
// (or to EOF for a message without a body), at most max bytes.
func readHeader(br *bufio.Reader, max int) ([]byte, error) {
	var hdr []byte
	lineStart := true
	for {
		line, err := br.ReadSlice('\n')
		hdr = append(hdr, line...)
		if len(hdr) > max {
			e := errHeaderTooLarge
			return nil, &e
		}
		switch {
		case err == nil:
			if lineStart && (len(line) == 2 && line[0] == '\r' || len(line) == 1) {
				return hdr, nil
			}
			lineStart = true
		case errors.Is(err, bufio.ErrBufferFull):
			lineStart = false // the rest of a long line follows
		case errors.Is(err, io.EOF):
			return hdr, nil
		default:
			return nil, err
		}
	}
}

// Enqueue stores msg with a body already written by the caller.
func (s *Spool) Enqueue(ctx context.Context, msg *store.Message, body store.Body) (string, error) {
	if msg.ID == "" {
		msg.ID = NewID()
	}
	msg.Received = s.clock.Now()
	msg.Size = body.Size()
	for i := range msg.Recipients {
		msg.Recipients[i].Status = store.StatusQueued
		msg.Recipients[i].NextAttempt = msg.Start()
	}
	// A scheduled message waits in the store, due at its SendAt: it is
	// never handed to a worker now, and the scheduler's poll leases it
	// then.
	scheduled := msg.SendAt.After(msg.Received)
	reserved := !scheduled && s.disp != nil && s.disp.Reserve()
	var until time.Time
	if reserved {
		until = msg.Received.Add(s.disp.LeaseTimeout())
	}
	token, err := s.q.Enqueue(ctx, msg, body, until)
	if err != nil {
		body.Abort()
		if reserved {
			s.disp.Unreserve()
		}
		return "", storeError(err)
	}
	if reserved {
		// The worker records the outcome (and renews) under the token of
		// the lease Enqueue took.
		s.disp.Submit(store.Lease{Message: msg, Until: until, Token: token})
	} else if s.disp != nil && !scheduled {
		s.disp.Notify()
	}
	return msg.ID, nil
}

// storeError maps a store failure to the reply the client sees.
func storeError(err error) error {
	if errors.Is(err, store.ErrStorageFull) {
		e := smtp.ErrStorageFull
		return &Failure{Reply: &e, Cause: err}
	}
	e := smtp.ErrLocalError
	return &Failure{Reply: &e, Cause: err}
}

// Failure is a spool failure: Reply is what the client is told, Cause is
// what the log gets.
type Failure struct {
	Reply *smtp.Error
	Cause error
}

func (f *Failure) Error() string { return fmt.Sprintf("%v: %v", f.Reply, f.Cause) }

// Unwrap exposes the reply and the cause to errors.Is/As.
func (f *Failure) Unwrap() []error { return []error{f.Reply, f.Cause} }

// NewID returns a new queue ID (store.NewID).
func NewID() string { return store.NewID() }
