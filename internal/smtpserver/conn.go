package smtpserver

import (
	"errors"
	"net"
	"os"
	"time"
)

// errShuttingDown is returned by reads of an idle session once the server
// is shutting down.
var errShuttingDown = errors.New("smtpserver: shutting down")

// deadlineConn sets the read deadline before every read of the raw
// connection, so a timeout bounds the silence between bytes (idle or data
// timeout) rather than a whole transfer, capped by the session deadline
// (see session.readEnd). It is used from the session goroutine only.
type deadlineConn struct {
	net.Conn
	s       *session
	timeout time.Duration
	// until, when set, is the deadline of every read instead (the end of
	// the pregreet wait; a past time makes reads return at once).
	until time.Time
}

func (d *deadlineConn) Read(p []byte) (int, error) {
	for {
		if d.s.srv.closing.Load() && !d.s.busy.Load() {
			return 0, errShuttingDown
		}
		dl := time.Now().Add(d.timeout)
		if !d.until.IsZero() {
			dl = d.until
		}
		if end := d.s.readEnd(); dl.After(end) {
			dl = end
		}
		if err := d.Conn.SetReadDeadline(dl); err != nil {
			return 0, err
		}
		n, err := d.Conn.Read(p)
		if n == 0 && isTimeout(err) && d.s.srv.closing.Load() && time.Now().Before(dl) {
			continue // woken by Shutdown: go on if inside a transaction
		}
		return n, err
	}
}

func (d *deadlineConn) Write(p []byte) (int, error) {
	if err := d.Conn.SetWriteDeadline(time.Now().Add(d.s.srv.cfg.IdleTimeout)); err != nil {
		return 0, err
	}
	return d.Conn.Write(p)
}

// flushReader flushes pending replies before blocking for client input:
// pipelined commands are answered in one write, and nothing is left unsent
// while the server waits.
type flushReader struct{ s *session }

func (f flushReader) Read(p []byte) (int, error) {
	if c := f.s.carry; c != nil {
		if c.Len() > 0 {
			return c.Read(p)
		}
		f.s.carry = nil
	}
	if err := f.s.bw.Flush(); err != nil {
		return 0, err
	}
	return f.s.conn.Read(p)
}

func isTimeout(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
