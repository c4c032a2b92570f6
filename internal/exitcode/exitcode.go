// Package exitcode carries a process exit status with an error, so that the
// command that finally prints the error can exit with a status that tells
// systemd and scripts what kind of failure it was. The values are those of
// sysexits(3), as sendmail and Postfix use them.
//
// The mapping Herald uses:
//
//	 0  OK           success
//	 1  Failure      a command failed for an ordinary reason (not found, already exists)
//	 2  Usage        command-line mistake (as Go's flag package; not EX_USAGE)
//	65  DataErr      input refused: an empty password or one shorter than
//	                 auth.min_password_length; herald.db or verp.key that is not what
//	                 herald wrote (damaged, another file)
//	66  NoInput      tls.cert_file or tls.key_file missing or not a file; a command
//	                 that needs an existing store finds none
//	67  NoUser       server.user (or the default "herald" when set) does not exist
//	69  Unavailable  a listen port taken, a listen address not on this host, the data
//	                 directory in use by a running herald serve
//	70  Software     an unexpected error (a store failure nothing else explains)
//	71  OSErr        a listener failed while serving, or binding failed otherwise
//	72  OSFile       /etc/resolv.conf missing or empty while dns.resolver is unset
//	73  CantCreat    the data directory, a file in it or the log file cannot be created
//	                 or written: not a directory, read-only file system, disk full
//	74  IOErr        the disk reported an I/O error (EIO)
//	75  TempFail     the store stayed locked by another process: try again
//	77  NoPerm       permission denied: the data directory, a TLS file or the log file
//	                 for the user herald runs as, or a port below 1024 without
//	                 CAP_NET_BIND_SERVICE
//	78  Config       a configuration error (file, value, TLS pair that does not parse
//	                 or match, dns.resolver, a listen host that does not resolve), or a
//	                 store written by a newer herald
package exitcode

import (
	"errors"
	"strconv"
)

// Exit statuses (sysexits(3) from 64 on).
const (
	OK          = 0
	Failure     = 1
	Usage       = 2
	DataErr     = 65 // EX_DATAERR
	NoInput     = 66 // EX_NOINPUT
	NoUser      = 67 // EX_NOUSER
	Unavailable = 69 // EX_UNAVAILABLE
	Software    = 70 // EX_SOFTWARE
	OSErr       = 71 // EX_OSERR
	OSFile      = 72 // EX_OSFILE
	CantCreat   = 73 // EX_CANTCREAT
	IOErr       = 74 // EX_IOERR
	TempFail    = 75 // EX_TEMPFAIL
	NoPerm      = 77 // EX_NOPERM
	Config      = 78 // EX_CONFIG
)

// Error is an error with the exit status it calls for. Msg, when set,
// replaces the wrapped error's text (a one-line description of what failed,
// where and what to do); the wrapped error stays reachable with errors.Is
// and errors.As.
type Error struct {
	Code int
	Msg  string
	Err  error
}

// Error returns Msg, or the wrapped error's text.
func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	if e.Err == nil {
		return "exit status " + strconv.Itoa(e.Code)
	}
	return e.Err.Error()
}

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// With returns err marked with code, keeping its text. It returns nil for a
// nil err and err itself when it already carries a code.
func With(code int, err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	return &Error{Code: code, Err: err}
}

// New returns an error with code whose text is msg and which wraps err
// (which may be nil).
func New(code int, msg string, err error) error {
	return &Error{Code: code, Msg: msg, Err: err}
}

// Of returns the exit status err calls for: the code of the first Error in
// its chain, else fallback. Of(nil, _) is OK.
func Of(err error, fallback int) int {
	if err == nil {
		return OK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return fallback
}
