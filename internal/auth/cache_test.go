package auth

import (
	"testing"
	"time"
)

func TestCache(t *testing.T) {
	t.Parallel()
	c := newCache(time.Minute, 4)
	now := time.Now()
	if c.ok("a@x.test", "pw", "$hash1", now) {
		t.Fatal("empty cache said ok")
	}
	c.add("a@x.test", "pw", "$hash1", now)
	if !c.ok("a@x.test", "pw", "$hash1", now.Add(30*time.Second)) {
		t.Error("cached login not recognised")
	}
	if c.ok("a@x.test", "other", "$hash1", now) {
		t.Error("wrong password accepted from the cache")
	}
	if c.ok("a@x.test", "pw", "$hash2", now) {
		t.Error("cache survived a password change")
	}
	if c.ok("a@x.test", "pw", "$hash1", now.Add(2*time.Minute)) {
		t.Error("expired entry accepted")
	}
	if c.ok("b@x.test", "pw", "$hash1", now) {
		t.Error("entry of another user accepted")
	}
	for i := range 20 {
		c.add(string(rune('a'+i))+"@y.test", "pw", "h", now)
	}
	if len(c.entries) > 4 {
		t.Errorf("cache holds %d entries, max 4", len(c.entries))
	}
}
