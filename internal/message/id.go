package message

import (
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"strings"
	"time"
)

var idEncoding = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// NewID returns a new globally unique Message-ID value, angle brackets
// included, such as "<01hx3k...@mail.example.com>". The left part is the
// time in nanoseconds followed by 80 random bits.
func NewID(hostname string) string {
	var b [18]byte
	binary.BigEndian.PutUint64(b[:8], uint64(time.Now().UnixNano()))
	_, _ = rand.Read(b[8:]) // crypto/rand.Read never fails (Go 1.24+)
	host := strings.Trim(hostname, "<>@ \t\r\n")
	if host == "" {
		host = "localhost"
	}
	return "<" + idEncoding.EncodeToString(b[:]) + "@" + host + ">"
}
