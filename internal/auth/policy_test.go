package auth

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckNewPassword(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, pw string
		ok       bool
		want     string
	}{
		{"five characters", "short", false, "password too short: 5 characters, at least 12 required"},
		{"eleven ASCII", "abcdefghijk", false, "11 characters"},
		{"twelve ASCII", "abcdefghijkl", true, ""},
		// 11 characters but 22 bytes: counted as characters, refused.
		{"eleven two-byte characters", strings.Repeat("é", 11), false, "11 characters"},
		{"twelve two-byte characters", strings.Repeat("é", 12), true, ""},
		{"twelve emoji", strings.Repeat("🔑", 12), true, ""},
		{"too long", strings.Repeat("a", MaxPasswordLen+1), false, "password too long: 1025 bytes, at most 1024"},
		{"longest", strings.Repeat("a", MaxPasswordLen), true, ""},
	}
	for _, tt := range tests {
		err := CheckNewPassword(tt.pw, 12)
		var pe *PasswordPolicyError
		switch {
		case tt.ok && err != nil:
			t.Errorf("%s: refused: %v", tt.name, err)
		case !tt.ok && (!errors.As(err, &pe) || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: %v, want a PasswordPolicyError saying %q", tt.name, err, tt.want)
		}
	}
}
