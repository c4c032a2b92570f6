package smtpserver

import (
	"encoding/base64"
	"errors"
	"strings"

	"github.com/emersion/go-sasl"

	"github.com/heraldmail/herald/internal/auth"
	"github.com/heraldmail/herald/internal/smtp"
)

var (
	errSASLSyntax    = &smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 5, 2}, Message: "Invalid authentication data"}
	errSASLCancelled = &smtp.Error{Code: 501, Enhanced: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication cancelled"}
	errSASLMech      = &smtp.Error{Code: 504, Enhanced: smtp.EnhancedCode{5, 5, 4}, Message: "Unrecognized authentication mechanism"}
	errAuthzid       = &smtp.Error{Code: 535, Enhanced: smtp.EnhancedCode{5, 7, 8}, Message: "Authorization identity not allowed"}
	errAuthTemp      = &smtp.Error{Code: 454, Enhanced: smtp.EnhancedCode{4, 7, 0}, Message: "Temporary authentication failure"}
)

// authenticate runs one SASL exchange (PLAIN or LOGIN) and returns the
// user name given and the outcome.
func (s *session) authenticate(arg string) (user string, err error) {
	f := strings.Fields(arg)
	if len(f) == 0 || len(f) > 2 {
		return "", errSASLSyntax
	}
	check := func(username, password string) error {
		user = username
		if err := s.srv.b.Authenticate(s.ctx, &s.c, username, password); err != nil {
			if _, ok := smtp.AsError(err); ok {
				return err
			}
			s.log.Error("backend error in Authenticate", "err", err)
			return errAuthTemp
		}
		return nil
	}
	var srv sasl.Server
	switch strings.ToUpper(f[0]) {
	case sasl.Plain:
		srv = sasl.NewPlainServer(func(identity, username, password string) error {
			if identity != "" && identity != username {
				user = username
				return errAuthzid
			}
			return check(username, password)
		})
	case auth.Login:
		srv = auth.NewLoginServer(check)
	default:
		return "", errSASLMech
	}
	var resp []byte
	if len(f) == 2 {
		if resp, err = decodeSASL(f[1]); err != nil {
			return "", errSASLSyntax
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		if err != nil {
			if _, ok := smtp.AsError(err); ok {
				return user, err
			}
			return user, errSASLSyntax
		}
		if done {
			return user, nil
		}
		s.reply(334, smtp.EnhancedCode{}, base64.StdEncoding.EncodeToString(challenge))
		line, err := s.readLine(saslLineLimit)
		switch {
		case errors.Is(err, errLineTooLong), errors.Is(err, errBadLine):
			return user, errSASLSyntax
		case err != nil:
			s.connFailed(err, "AUTH")
			return user, errSASLConn
		case line == "*":
			return user, errSASLCancelled
		}
		if resp, err = decodeSASL(line); err != nil {
			return user, errSASLSyntax
		}
	}
}
