package auth

import (
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/textproto"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

func TestHashPasswordRoundTrip(t *testing.T) {
	t.Parallel()
	h, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("hash %q does not have the expected PHC prefix", h)
	}
	if parts := strings.Split(h, "$"); len(parts) != 6 {
		t.Fatalf("hash %q has %d fields, want 6", h, len(parts))
	}
	ok, err := CheckPassword(h, "correct horse")
	if err != nil || !ok {
		t.Fatalf("CheckPassword(right) = %v, %v; want true, nil", ok, err)
	}
	ok, err = CheckPassword(h, "correct horsf")
	if err != nil || ok {
		t.Fatalf("CheckPassword(wrong) = %v, %v; want false, nil", ok, err)
	}
	h2, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if h2 == h {
		t.Fatal("two hashes of the same password are equal: salt not random")
	}
}

func TestCheckPasswordUnicodeAndEmpty(t *testing.T) {
	t.Parallel()
	for _, pw := range []string{"", "pässwörd✓"} {
		h, err := HashPassword(pw)
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := CheckPassword(h, pw); err != nil || !ok {
			t.Errorf("CheckPassword(%q) = %v, %v", pw, ok, err)
		}
	}
	h, err := HashPassword("short")
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := CheckPassword(h, strings.Repeat("x", MaxPasswordLen+1)); ok || err != nil {
		t.Errorf("over-long password against argon2id = %v, %v; want false, nil", ok, err)
	}
	if _, err := HashPassword(strings.Repeat("x", MaxPasswordLen+1)); !errors.Is(err, ErrPasswordTooLong) {
		t.Errorf("HashPassword(too long) err = %v, want ErrPasswordTooLong", err)
	}
}

func TestCheckPasswordBcrypt(t *testing.T) {
	t.Parallel()
	raw, err := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	h2b := string(raw)
	for _, prefix := range []string{"$2a$", "$2b$", "$2y$"} {
		h := prefix + h2b[4:]
		if ok, err := CheckPassword(h, "s3cret"); err != nil || !ok {
			t.Errorf("%s: CheckPassword(right) = %v, %v", prefix, ok, err)
		}
		if ok, err := CheckPassword(h, "s3creT"); err != nil || ok {
			t.Errorf("%s: CheckPassword(wrong) = %v, %v", prefix, ok, err)
		}
	}
	if ok, err := CheckPassword(h2b, strings.Repeat("a", 100)); err != nil || ok {
		t.Errorf("bcrypt with over-long password = %v, %v; want false, nil", ok, err)
	}
}

func TestCheckPasswordMalformed(t *testing.T) {
	t.Parallel()
	salt := base64.RawStdEncoding.EncodeToString([]byte("0123456789abcdef"))
	key := base64.RawStdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	bad := []string{
		"",
		"plaintext",
		"$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=0$" + salt + "$" + key,
		"$argon2id$v=19$m=99999999,t=2,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=1000,p=1$" + salt + "$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1$!!!$" + key,
		"$argon2id$v=19$m=19456,t=2,p=1$" + salt,
		"$2a$10$tooshort",
	}
	for _, h := range bad {
		ok, err := CheckPassword(h, "x")
		if ok || !errors.Is(err, ErrUnknownHash) {
			t.Errorf("CheckPassword(%q) = %v, %v; want false, ErrUnknownHash", h, ok, err)
		}
	}
}

func TestDummyCheckTakesComparableTime(t *testing.T) {
	// Not parallel: it measures time.
	h, err := HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	// The dummy hash uses the same parameters as real hashes...
	prefix := func(s string) string { return s[:strings.LastIndex(s[:strings.LastIndex(s, "$")], "$")] }
	if prefix(dummyHash()) != prefix(h) {
		t.Fatalf("dummy hash parameters %q differ from %q", prefix(dummyHash()), prefix(h))
	}
	// ...and DummyCheck really runs it. Only a lower bound is checked: load
	// on the machine can only make DummyCheck slower, and a DummyCheck that
	// skipped the work would take microseconds, not milliseconds.
	measure := func(f func()) time.Duration {
		best := time.Duration(1<<63 - 1)
		for range 2 {
			start := time.Now()
			f()
			best = min(best, time.Since(start))
		}
		return best
	}
	real := measure(func() { _, _ = CheckPassword(h, "nope") })
	dummy := measure(DummyCheck)
	t.Logf("CheckPassword: %v, DummyCheck: %v", real, dummy)
	if dummy < real/5 {
		t.Fatalf("DummyCheck took %v, a real check %v: it does not do the work", dummy, real)
	}
}

func TestLoginServerSteps(t *testing.T) {
	t.Parallel()
	var gotUser, gotPass string
	srv := NewLoginServer(func(u, p string) error {
		gotUser, gotPass = u, p
		if p != "pw" {
			return errors.New("bad")
		}
		return nil
	})
	ch, done, err := srv.Next(nil)
	if err != nil || done || string(ch) != "Username:" {
		t.Fatalf("step 1 = %q, %v, %v", ch, done, err)
	}
	ch, done, err = srv.Next([]byte("alice@example.com"))
	if err != nil || done || string(ch) != "Password:" {
		t.Fatalf("step 2 = %q, %v, %v", ch, done, err)
	}
	ch, done, err = srv.Next([]byte("pw"))
	if err != nil || !done || ch != nil {
		t.Fatalf("step 3 = %q, %v, %v", ch, done, err)
	}
	if gotUser != "alice@example.com" || gotPass != "pw" {
		t.Fatalf("authenticator got %q/%q", gotUser, gotPass)
	}
	if _, _, err := srv.Next([]byte("more")); !errors.Is(err, sasl.ErrUnexpectedClientResponse) {
		t.Fatalf("extra step err = %v", err)
	}

	// Initial response carries the user name; a failing check is reported.
	srv = NewLoginServer(func(u, p string) error { return errors.New("denied") })
	ch, done, err = srv.Next([]byte("bob"))
	if err != nil || done || string(ch) != "Password:" {
		t.Fatalf("IR step = %q, %v, %v", ch, done, err)
	}
	if _, done, err = srv.Next([]byte("x")); err == nil || err.Error() != "denied" || !done {
		t.Fatalf("failing check = %v, %v", done, err)
	}

	// Over-long fields are refused without calling the authenticator.
	called := false
	srv = NewLoginServer(func(u, p string) error { called = true; return nil })
	if _, done, err = srv.Next(make([]byte, MaxPasswordLen+1)); !errors.Is(err, ErrLoginFieldTooLong) || !done || called {
		t.Fatalf("long user = %v, %v, called=%v", done, err, called)
	}
}

// The mechanism works inside go-smtp: real TCP on loopback, both with
// go-sasl's LOGIN client (initial response) and a raw exchange checking the
// base64 challenges on the wire.
type testBackend struct{}

func (testBackend) NewSession(*gosmtp.Conn) (gosmtp.Session, error) { return &testSession{}, nil }

type testSession struct{ user string }

func (s *testSession) AuthMechanisms() []string { return []string{Login} }
func (s *testSession) Auth(mech string) (sasl.Server, error) {
	if mech != Login {
		return nil, gosmtp.ErrAuthUnknownMechanism
	}
	return NewLoginServer(func(u, p string) error {
		if u == "alice@example.com" && p == "wonderland" {
			s.user = u
			return nil
		}
		return &gosmtp.SMTPError{Code: 535, EnhancedCode: gosmtp.EnhancedCode{5, 7, 8}, Message: "Authentication credentials invalid"}
	}), nil
}
func (s *testSession) Mail(string, *gosmtp.MailOptions) error { return nil }
func (s *testSession) Rcpt(string, *gosmtp.RcptOptions) error { return nil }
func (s *testSession) Data(r io.Reader) error                 { _, err := io.Copy(io.Discard, r); return err }
func (s *testSession) Reset()                                 {}
func (s *testSession) Logout() error                          { return nil }

func startSMTP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := gosmtp.NewServer(testBackend{})
	s.Domain = "localhost"
	s.AllowInsecureAuth = true // loopback test only; Herald requires TLS
	s.ReadTimeout = 5 * time.Second
	s.WriteTimeout = 5 * time.Second
	go func() { _ = s.Serve(ln) }()
	t.Cleanup(func() { _ = s.Close() })
	return ln.Addr().String()
}

func TestLoginWithGoSMTPClient(t *testing.T) {
	t.Parallel()
	addr := startSMTP(t)
	c, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Auth(sasl.NewLoginClient("alice@example.com", "wonderland")); err != nil {
		t.Fatalf("AUTH LOGIN with right password: %v", err)
	}

	c2, err := gosmtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	err = c2.Auth(sasl.NewLoginClient("alice@example.com", "wrong"))
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) || se.Code != 535 {
		t.Fatalf("AUTH LOGIN with wrong password: err = %v, want 535", err)
	}
}

func TestLoginRawWire(t *testing.T) {
	t.Parallel()
	addr := startSMTP(t)
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	tp := textproto.NewConn(conn)
	expect := func(code int, want string) {
		t.Helper()
		_, msg, err := tp.ReadResponse(code)
		if err != nil {
			t.Fatalf("want %d: %v", code, err)
		}
		if want != "" && msg != want {
			t.Fatalf("got %q, want %q", msg, want)
		}
	}
	send := func(line string) {
		t.Helper()
		if err := tp.PrintfLine("%s", line); err != nil {
			t.Fatal(err)
		}
	}
	b := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	expect(220, "")
	send("EHLO client.test")
	expect(250, "")
	send("AUTH LOGIN")
	expect(334, b("Username:"))
	send(b("alice@example.com"))
	expect(334, b("Password:"))
	send(b("wonderland"))
	expect(235, "")
}
