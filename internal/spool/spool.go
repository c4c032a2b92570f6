// Package spool accepts messages into the queue: it assigns the queue ID,
// streams the body into the store, makes it durable, and hands the message
// straight to a delivery worker when one is free, so that the common case
// needs no polling.
package spool

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/heraldmail/herald/internal/clock"
	"github.com/heraldmail/herald/internal/smtp"
	"github.com/heraldmail/herald/internal/store"
)

// Dispatcher is the part of the queue scheduler the spool uses to hand over
// fresh messages without a round trip through polling.
type Dispatcher interface {
	Reserve() bool
	Unreserve()
	Submit(store.Lease)
	LeaseDuration() time.Duration
}

// Spool writes accepted messages to the store.
type Spool struct {
	q     store.Queue
	disp  Dispatcher // may be nil (CLI tools): the server finds the message by polling
	clock clock.Clock
}

// New returns a spool writing to q. disp may be nil.
func New(q store.Queue, disp Dispatcher, clk clock.Clock) *Spool {
	return &Spool{q: q, disp: disp, clock: clk}
}

// Accept stores msg with the body read from r. msg.ID and msg.Received are
// set here. It returns only when the message is on stable storage. Errors
// from reading r (an *smtp.Error for bad client data) are returned as they
// are; a full disk becomes 452 4.3.1; other store failures 451 4.3.0.
func (s *Spool) Accept(ctx context.Context, msg *store.Message, r io.Reader) (string, error) {
	body, err := s.q.NewBody()
	if err != nil {
		return "", storeError(err)
	}
	if _, err := io.Copy(body, r); err != nil {
		body.Abort()
		if _, ok := smtp.AsError(err); ok {
			return "", err
		}
		return "", storeError(err)
	}
	return s.Enqueue(ctx, msg, body)
}

// Enqueue stores msg with a body already written by the caller.
func (s *Spool) Enqueue(ctx context.Context, msg *store.Message, body store.Body) (string, error) {
	msg.ID = NewID()
	msg.Received = s.clock.Now()
	msg.Size = body.Size()
	for i := range msg.Recipients {
		msg.Recipients[i].Status = store.StatusQueued
		msg.Recipients[i].NextAttempt = msg.Received
	}
	reserved := s.disp != nil && s.disp.Reserve()
	var until time.Time
	if reserved {
		until = msg.Received.Add(s.disp.LeaseDuration())
	}
	if err := s.q.Enqueue(ctx, msg, body, until); err != nil {
		body.Abort()
		if reserved {
			s.disp.Unreserve()
		}
		return "", storeError(err)
	}
	if reserved {
		s.disp.Submit(store.Lease{Message: msg, Until: until})
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

var (
	idCounter atomic.Uint32
	idEnc     = base32.HexEncoding.WithPadding(base32.NoPadding)
)

func init() {
	var b [4]byte
	_, _ = rand.Read(b[:])
	idCounter.Store(binary.BigEndian.Uint32(b[:]))
}

// NewID returns a new queue ID: 16 characters, sortable by creation time
// (nanoseconds), unique within a process by a counter and across processes
// by its random start.
func NewID() string {
	var b [10]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint16(b[8:], uint16(idCounter.Add(1)))
	return idEnc.EncodeToString(b[:])
}
