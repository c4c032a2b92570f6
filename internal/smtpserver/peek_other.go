//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package smtpserver

import "net"

// kernelPending cannot look into the socket on this system: early talkers
// are caught only by the pregreet wait.
func kernelPending(c net.Conn) bool { return false }
