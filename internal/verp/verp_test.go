package verp

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var testKey = bytes.Repeat([]byte{0x42}, KeySize)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		id   string
		rcpt int64
	}{
		{"0123456789abcdef", 1},
		{"T00000000421234", 1 << 19},
		{"x", 0},
		{"x", -5},
		{strings.Repeat("q", MaxIDLen), 1<<20 - 1},
	} {
		addr := Encode(testKey, c.id, c.rcpt, "bounce.example.com")
		if addr == "" {
			t.Fatalf("Encode(%q, %d) = \"\"", c.id, c.rcpt)
		}
		local, domain, _ := strings.Cut(addr, "@")
		if domain != "bounce.example.com" || !strings.HasPrefix(local, "bounces+") {
			t.Errorf("Encode = %q", addr)
		}
		if len(local) > 64 {
			t.Errorf("local part %q is %d chars", local, len(local))
		}
		if local != strings.ToLower(local) {
			t.Errorf("local part %q is not lower case", local)
		}
		id, rcpt, ok := Decode(testKey, addr)
		if !ok || id != c.id || rcpt != c.rcpt {
			t.Errorf("Decode(%q) = %q %d %v, want %q %d", addr, id, rcpt, ok, c.id, c.rcpt)
		}
		if !IsVERP(local) || !IsVERP(addr) {
			t.Errorf("IsVERP(%q) = false", addr)
		}
	}
}

func TestCaseFolding(t *testing.T) {
	t.Parallel()
	addr := Encode(testKey, "0123456789abcdef", 77, "example.com")
	for _, a := range []string{strings.ToUpper(addr), "<" + addr + ">", "Bounces+" + strings.ToUpper(strings.TrimPrefix(addr, "bounces+"))} {
		id, rcpt, ok := Decode(testKey, a)
		if !ok || id != "0123456789abcdef" || rcpt != 77 {
			t.Errorf("Decode(%q) = %q %d %v", a, id, rcpt, ok)
		}
	}
}

func TestForgery(t *testing.T) {
	t.Parallel()
	addr := Encode(testKey, "0123456789abcdef", 77, "example.com")
	local, _, _ := strings.Cut(addr, "@")
	token := local[len("bounces+"):]
	// Change every character of the token in turn: no variant verifies.
	for i := range token {
		for _, r := range "ab7" {
			if rune(token[i]) == r {
				continue
			}
			forged := "bounces+" + token[:i] + string(r) + token[i+1:] + "@example.com"
			if id, rcpt, ok := Decode(testKey, forged); ok {
				t.Fatalf("forged %q decoded to %q %d", forged, id, rcpt)
			}
		}
	}
	// Another key, or another recipient's MAC, does not verify.
	other := bytes.Repeat([]byte{0x43}, KeySize)
	if _, _, ok := Decode(other, addr); ok {
		t.Error("decoded with a different key")
	}
	a2 := Encode(testKey, "0123456789abcdef", 78, "example.com")
	l2, _, _ := strings.Cut(a2, "@")
	spliced := local[:len(local)-13] + l2[len(l2)-13:] + "@example.com"
	if _, _, ok := Decode(testKey, spliced); ok {
		t.Error("spliced MAC decoded")
	}
}

func TestNotVERP(t *testing.T) {
	t.Parallel()
	for _, s := range []string{
		"", "bounces", "bounces+", "bounces+@example.com", "postmaster@example.com",
		"bounces+not!base32@example.com", "bounces+aaaa@example.com",
		"bounce+" + strings.Repeat("a", 40) + "@example.com",
		"bounces+" + strings.Repeat("a", 60) + "@example.com",
	} {
		if IsVERP(s) {
			t.Errorf("IsVERP(%q) = true", s)
		}
		if _, _, ok := Decode(testKey, s); ok {
			t.Errorf("Decode(%q) ok", s)
		}
	}
}

func TestTooLong(t *testing.T) {
	t.Parallel()
	if a := Encode(testKey, strings.Repeat("q", MaxIDLen+1), 1<<20-1, "example.com"); a != "" {
		t.Errorf("Encode with too long ID = %q", a)
	}
	if a := Encode(testKey, "", 1, "example.com"); a != "" {
		t.Errorf("Encode with empty ID = %q", a)
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	a, err := NewKey()
	if err != nil || CheckKey(a) != nil {
		t.Fatalf("NewKey: %x %v", a, err)
	}
	if b, _ := NewKey(); bytes.Equal(a, b) {
		t.Fatal("two new keys are equal")
	}
	for _, bad := range [][]byte{nil, []byte("short"), make([]byte, KeySize)} {
		if CheckKey(bad) == nil {
			t.Errorf("CheckKey(%x) accepted", bad)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "verp.key")
	if _, err := ReadKey(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: %v, want fs.ErrNotExist", err)
	}
	if err := os.WriteFile(path, a, 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadKey(path); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("ReadKey = %x, %v", got, err)
	}
	if err := os.WriteFile(path, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadKey(path); err == nil || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("short key file: %v", err)
	}
}
