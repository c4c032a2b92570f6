package verp

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"sync"
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

func TestLoadOrCreateKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "verp.key")
	var (
		wg   sync.WaitGroup
		keys = make([][]byte, 8)
		errs = make([]error, 8)
	)
	for i := range keys {
		wg.Go(func() { keys[i], errs[i] = LoadOrCreateKey(path) })
	}
	wg.Wait()
	for i := range keys {
		if errs[i] != nil {
			t.Fatalf("LoadOrCreateKey: %v", errs[i])
		}
		if len(keys[i]) != KeySize || !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("key %d = %x, want %x", i, keys[i], keys[0])
		}
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", st.Mode().Perm())
	}
	again, err := LoadOrCreateKey(path)
	if err != nil || !bytes.Equal(again, keys[0]) {
		t.Errorf("reload = %x, %v", again, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("directory holds %d entries, want only the key", len(entries))
	}
	bad := filepath.Join(dir, "short.key")
	if err := os.WriteFile(bad, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(bad); err == nil {
		t.Error("short key accepted")
	}
	if _, err := LoadOrCreateKey(filepath.Join(dir, "missing", "k")); err == nil {
		t.Error("key in a missing directory created")
	}
}
