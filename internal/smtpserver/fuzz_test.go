package smtpserver

import (
	"io"
	"net"
	"testing"
	"time"
)

// FuzzSession plays random bytes as a client against a session on a
// net.Pipe: the server must never panic or hang.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"EHLO x\r\nMAIL FROM:<a@example.com> SIZE=10 RET=FULL ENVID=x+2B\r\nRCPT TO:<b@example.org> NOTIFY=NEVER\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO x\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nBDAT 5\r\nab\ncdBDAT 0 LAST\r\n",
		"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<postmaster>\r\nDATA\r\n\n.\n\r.\r\r\n.\n.\r\n",
		"EHLO x\r\nSTARTTLS\r\nMAIL FROM:<a@b>\r\n",
		"EHLO x\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH LOGIN\r\n*\r\n",
		"\x00\xff\r\nFOO\r\n" + "RCPT TO:<\"a>b\"@x>\r\n",
	} {
		f.Add([]byte(s))
	}
	srvTLS, _ := testTLS(f)
	b := newBackend()
	srv := New(Config{Hostname: "fuzz.test", TLSConfig: srvTLS, IdleTimeout: time.Second,
		DataTimeout: time.Second, MaxMessageBytes: 4096, MaxErrors: 8, MaxRecipients: 3}, b)
	f.Fuzz(func(t *testing.T, in []byte) {
		cli, sv := net.Pipe()
		done := make(chan struct{})
		srv.wg.Add(1)
		go func() {
			srv.handle(sv)
			close(done)
		}()
		go io.Copy(io.Discard, cli)
		_ = cli.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = cli.Write(in)
		cli.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("session did not end")
		}
		if p := srv.Stats().Panics; p != 0 {
			t.Fatalf("%d panics", p)
		}
	})
}
