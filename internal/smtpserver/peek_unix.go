//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package smtpserver

import (
	"net"
	"syscall"
	"time"
)

// kernelPending reports whether the socket under c has received bytes not
// yet read, without reading them or waiting (recv with MSG_PEEK and
// MSG_DONTWAIT). It reports false for connections without a socket.
func kernelPending(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	// RawConn.Read refuses to run once the read deadline has passed (as it
	// has after a pregreet wait); nothing below blocks, so clear it. The
	// next read sets its own.
	_ = c.SetReadDeadline(time.Time{})
	pending := false
	var b [1]byte
	_ = rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		pending = err == nil && n > 0 // n == 0: the client closed, it did not talk
		return true                   // never wait for readiness
	})
	return pending
}
