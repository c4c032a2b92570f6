package auth

import (
	"fmt"
	"unicode/utf8"
)

// PasswordPolicyError says why a new password was refused.
type PasswordPolicyError struct {
	Chars, Bytes int // the password's length in characters and in bytes
	Min          int // the configured minimum, in characters
}

// Error says what the policy requires.
func (e *PasswordPolicyError) Error() string {
	if e.Bytes > MaxPasswordLen {
		return fmt.Sprintf("password too long: %d bytes, at most %d", e.Bytes, MaxPasswordLen)
	}
	return fmt.Sprintf("password too short: %d characters, at least %d required (auth.min_password_length; several random words make a long password that is easy to remember)", e.Chars, e.Min)
}

// CheckNewPassword reports whether pw may be set as a password: at least
// minChars characters, counted as Unicode code points (NIST SP 800-63B
// counts characters, so "pässwörd" is 8, not 10), and at most
// MaxPasswordLen bytes, the longest HashPassword accepts. It returns a
// *PasswordPolicyError otherwise.
func CheckNewPassword(pw string, minChars int) error {
	chars := utf8.RuneCountInString(pw)
	if chars < minChars || len(pw) > MaxPasswordLen {
		return &PasswordPolicyError{Chars: chars, Bytes: len(pw), Min: minChars}
	}
	return nil
}
