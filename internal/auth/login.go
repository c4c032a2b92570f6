package auth

import (
	"errors"

	"github.com/emersion/go-sasl"
)

// Login is the SASL mechanism name of the LOGIN mechanism.
const Login = "LOGIN"

// maxLoginField bounds the user name and the password given to LOGIN.
const maxLoginField = MaxPasswordLen

// ErrLoginFieldTooLong is returned by the LOGIN server when a user name or
// password is longer than MaxPasswordLen bytes.
var ErrLoginFieldTooLong = errors.New("auth: LOGIN user name or password too long")

// LoginAuthenticator checks a user name and password. Its error is returned
// by the mechanism unchanged, so go-smtp answers with it: return a
// *gosmtp.SMTPError (e.g. 535 5.7.8) to control the reply.
type LoginAuthenticator func(username, password string) error

// NewLoginServer returns a server for the (obsolete but widely used) LOGIN
// mechanism described in draft-murchison-sasl-login. It asks "Username:"
// then "Password:" (go-smtp base64-encodes the challenges and decodes the
// responses), and calls authenticate once both are known. An initial response
// ("AUTH LOGIN <base64 user>") is taken as the user name, as clients such as
// go-sasl's LOGIN client send it.
func NewLoginServer(authenticate LoginAuthenticator) sasl.Server {
	return &loginServer{authenticate: authenticate}
}

type loginState int

const (
	loginStart loginState = iota
	loginWantUser
	loginWantPass
	loginDone
)

type loginServer struct {
	authenticate LoginAuthenticator
	state        loginState
	username     string
}

var (
	challengeUser = []byte("Username:")
	challengePass = []byte("Password:")
)

// Next implements sasl.Server.
func (s *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	switch s.state {
	case loginStart:
		if response == nil {
			s.state = loginWantUser
			return challengeUser, false, nil
		}
		return s.takeUser(response)
	case loginWantUser:
		return s.takeUser(response)
	case loginWantPass:
		s.state = loginDone
		if len(response) > maxLoginField {
			return nil, true, ErrLoginFieldTooLong
		}
		if err := s.authenticate(s.username, string(response)); err != nil {
			return nil, true, err
		}
		return nil, true, nil
	default:
		return nil, true, sasl.ErrUnexpectedClientResponse
	}
}

func (s *loginServer) takeUser(response []byte) ([]byte, bool, error) {
	if len(response) > maxLoginField {
		s.state = loginDone
		return nil, true, ErrLoginFieldTooLong
	}
	s.username = string(response)
	s.state = loginWantPass
	return challengePass, false, nil
}
